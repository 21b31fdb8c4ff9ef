"""
MONAI model-zoo's offline checks of a bundle, run in one process (tests/test_bundle_monai.py starts it as a
subprocess): metadata against the schema, ``verify_net_in_out``, ``ckpt_export`` (traced TorchScript) against the
eager network, ``ConfigWorkflow.check_properties`` for train / evaluate / inference, and ``monai.bundle.load`` of
an exported bundle zip with ``net_override``. Prints one JSON object of results.

Usage: python bundle_checks.py BUNDLE SCHEMA MODEL_PT ZIP WORKDIR TINY_CLIP_JSON MVTEC_TREE SCANS_DIR
"""

from __future__ import annotations

import json
import sys
import warnings
import zipfile
from pathlib import Path

import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, load, verify_metadata, verify_net_in_out

warnings.simplefilter("ignore")
bundle, schema, model_pt, bundle_zip, work, tiny, mvtec, scans = map(Path, sys.argv[1:9])
configs = bundle / "configs"
meta = str(configs / "metadata.json")
tiny_net = {"backbone": str(tiny), "backbone_weights": "none", "image_size": 56}
# the network built from the config alone, its prompts loaded afterwards from MODEL_PT (the bundle's own prompts are
# models/model.pt, which this source tree does not hold)
tiny_untrained = {**tiny_net, "prompts": "untrained"}
results: dict = {}

verify_metadata(meta_file=meta, filepath=str(schema))
results["verify_metadata"] = "ok"

verify_net_in_out(net_id="network_def", meta_file=meta, config_file=str(configs / "inference.json"),
                  bundle_root=str(bundle), p=4, n=2, **tiny_untrained)
results["verify_net_in_out"] = "ok"

# TorchScript by tracing at a fixed input size, then the same batch through the traced and the eager network
ts_file = work / "model.ts"
ckpt_export(net_id="network_def", filepath=str(ts_file), ckpt_file=str(model_pt), meta_file=meta,
            config_file=str(configs / "inference.json"), bundle_root=str(bundle), use_trace=True,
            input_shape=[1, 3, 56, 56], **tiny_untrained)
parser = ConfigParser()
parser.read_config(str(configs / "inference.json"))
parser.update({"bundle_root": str(bundle), **tiny_untrained})
eager = parser.get_parsed_content("network_def")
eager.load_state_dict(torch.load(model_pt, weights_only=True))
eager.eval()
traced = torch.jit.load(str(ts_file))
batch = torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    want, got = eager(batch), traced(batch)
results["ts_shape"] = list(got.shape)
results["ts_max_abs_diff"] = float((want - got).abs().max())
results["eager_image_scores"] = want[:, 1, 0, 0].tolist()

# the properties MONAI's workflows require
props = {}
for name, files, kind in (
    ("train", ["train.json"], "train"),
    ("evaluate", ["train.json", "evaluate.json"], "train"),
    ("inference", ["inference.json"], "infer"),
):
    # every output under WORKDIR: the configs' defaults (output_dir, ckpt_dir) are folders of the bundle itself,
    # which tests running beside this one read
    data = ({"dataset_dir": str(scans), "prompts": "untrained", "output_dir": str(work / "infer_out")} if kind == "infer"
            else {"dataset_dir": str(mvtec), "ckpt_dir": str(work), "output_dir": str(work / f"{name}_logs"),
                  **({"prompts": str(model_pt)} if name == "evaluate" else {})})
    workflow = ConfigWorkflow(config_file=[str(configs / f) for f in files], meta_file=meta, workflow_type=kind,
                              logging_file=str(configs / "logging.conf"), bundle_root=str(bundle), **tiny_net, **data)
    workflow.initialize()
    props[name] = workflow.check_properties()
results["check_properties"] = props

# monai.bundle.load of the exported zip (extracted as MONAI's download does), with net_override
with zipfile.ZipFile(bundle_zip) as z:
    z.extractall(work / "bundles")
name = zipfile.ZipFile(bundle_zip).namelist()[0].split("/")[0]
loaded = load(name=name, bundle_dir=str(work / "bundles"), source="monaihosting", net_override=tiny_net)
with torch.no_grad():
    results["load_type"] = type(loaded).__name__
    results["load_max_abs_diff"] = float((loaded.eval()(batch) - want).abs().max())
print("RESULTS " + json.dumps(results))
