"""
The bundle as MONAI and model-zoo see it: its files and metadata against MONAI's official schema, model-zoo's offline
checks (``verify_net_in_out``, ``ckpt_export``, workflow properties, ``monai.bundle.load``), and the README's
``python -m monai.bundle run`` / ``torchrun`` commands for training and evaluation, in subprocesses on the CPU.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
import warnings

import jsonschema
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.utils import set_determinism
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

import synthetic_trees
from anomalyclip_med.bundle import as_bool, prompt_dataset, resume_mode
from anomalyclip_med.errors import InputError
from anomalyclip_med.network import OUTPUT_CHANNELS, AnomalyCLIPNet
from anomalyclip_med.training import TrainSettings, compute_losses, make_optimizer, train
from conftest import TESTS, TINY_CLIP_JSON

REPO = TESTS.parent
BUNDLE = REPO / "bundles" / "anomalyclip_zeroshot"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "bundles" / "metadata_schema.json"
TINY = {"backbone": str(TINY_CLIP_JSON), "backbone_weights": "none", "image_size": 56}
TINY_ARGS = [a for k, v in TINY.items() for a in (f"--{k}", str(v))]
# MONAI's meta_schema_20240725.json, byte for byte (see bundles/metadata_schema.md)
SCHEMA_SHA256 = "cd64aa8a5904426f6fc6855dabe46af8c742d5bad644b4e9cfb78ebad09ad678"
CONFIG_FILES = ("inference.json", "train.json", "evaluate.json", "multi_gpu_train.json", "multi_gpu_evaluate.json",
                "metadata.json")
README_SECTIONS = ("Model Overview", "Data", "Training configuration", "Performance", "MONAI Bundle Commands",
                   "References", "License")


def _python(*args, cmd=("-m", "monai.bundle")):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *cmd, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny MVTec-layout dataset (10 test images, 6 anomalous with masks) and trained-looking prompts: the
    authors' checkpoint format with tensors that differ from a fresh initialisation, converted to models/model.pt
    by the command line as a user does."""
    root = tmp_path_factory.mktemp("bundle_monai")
    mvtec = synthetic_trees.mvtec(root / "mvtec")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = AnomalyCLIPNet(**TINY)
    generator = torch.Generator().manual_seed(5)
    learned = {k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
               for k, v in net.anomalyclip.prompt_learner.state_dict().items()}
    authors = root / "epoch_15.pth"
    torch.save({"prompt_learner": {**learned, "compound_prompt_projections.0.weight": torch.zeros(2, 2)}}, authors)
    model_pt = root / "model.pt"
    proc = _python("convert-prompts", authors, "--out", model_pt, cmd=("-m", "anomalyclip_med"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    bundle_zip = root / "anomalyclip_zeroshot.zip"
    proc = _python("export-bundle", "--bundle", BUNDLE, "--prompts", authors, "--out", bundle_zip,
                   cmd=("-m", "anomalyclip_med"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "mvtec": mvtec, "authors": authors, "learned": learned, "model_pt": model_pt,
            "zip": bundle_zip}


def test_required_files_readme_sections_and_json_formatting():
    for rel in ("configs/metadata.json", "configs/inference.json", "configs/logging.conf", "LICENSE",
                "docs/README.md", "docs/data_license.txt", "large_files.yml"):
        assert (BUNDLE / rel).is_file(), rel
    for name in CONFIG_FILES:  # pre-commit's pretty-format-json --indent=4 --no-sort-keys leaves them unchanged
        text = (CONFIGS / name).read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=4, ensure_ascii=False) + "\n", name
    headings = [line.lstrip("#").strip() for line in (BUNDLE / "docs" / "README.md").read_text().splitlines()
                if line.startswith("#")]
    for section in README_SECTIONS:
        assert section in headings, section
    licence = (BUNDLE / "docs" / "data_license.txt").read_text()
    assert "CC BY-NC-SA 4.0" in licence and "CC BY 4.0" in licence and "MVTec AD" in licence and "VisA" in licence


def test_metadata_against_monai_schema():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(SCHEMA.read_text())
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    jsonschema.Draft201909Validator(schema).validate(meta)
    for key in ("schema", "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                "task", "description", "authors", "copyright", "network_data_format"):
        assert key in meta, key
    assert meta["schema"].endswith("meta_schema_20240725.json") and meta["version"] in meta["changelog"]
    # the deprecated name would be renamed over the required packages by MONAI >= 1.5
    assert "optional_packages_version" not in meta
    assert {"anomalyclip_med", "open_clip_torch", "pytorch-ignite"} <= set(meta["required_packages_version"])
    fmt = meta["network_data_format"]
    for tensor in [*fmt["inputs"].values(), *fmt["outputs"].values()]:
        for key in ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range"):
            assert key in tensor, key
        assert len(tensor["channel_def"]) == tensor["num_channels"]
    assert fmt["inputs"]["image"]["num_channels"] == 3
    assert fmt["outputs"]["pred"]["num_channels"] == len(OUTPUT_CHANNELS) == 2
    # every number in eval_metrics says where it comes from
    numbers = {k for k, v in meta["eval_metrics"].items() if isinstance(v, (int, float))}
    assert numbers and all(k.startswith("published_") for k in numbers)
    assert "Table" in meta["eval_metrics"]["source_of_published"]
    bad = dict(meta, network_data_format={"inputs": {"image": {"type": "image"}}, "outputs": {}})
    with pytest.raises(jsonschema.ValidationError):  # the schema's tensor constraints are enforced
        jsonschema.Draft201909Validator(schema).validate(bad)


def test_boolean_overrides_read_one_way():
    for text, value in (("true", True), ("True", True), ("TRUE", True), (True, True),
                        ("false", False), ("False", False), (" false ", False), (False, False)):
        assert as_bool(text) is value
    with pytest.raises(InputError, match="expected a boolean"):
        as_bool("flase")
    # the inference overrides continue / overwrite become the batch runner's resume mode, as score's flags
    assert [resume_mode(c, o) for c, o in ((False, False), (True, False), (False, True))] == \
        ["refuse", "continue", "overwrite"]
    with pytest.raises(InputError, match="choose one of --continue true"):
        resume_mode(True, True)
    # every boolean setting of every config reaches its component through as_bool
    checked = set()
    for name in CONFIG_FILES[:-1]:
        text = (CONFIGS / name).read_text()
        parser = ConfigParser()
        stack = {"evaluate.json": ["train.json"], "multi_gpu_train.json": ["train.json"],
                 "multi_gpu_evaluate.json": ["train.json", "evaluate.json"]}.get(name, [])
        parser.read_config([str(CONFIGS / f) for f in [*stack, name]])
        for key, value in json.loads(text).items():
            # a setting: a literal, or a default read from the package's option dataclasses
            setting = (re.fullmatch(r"\$anomalyclip_med(\.\w+)+", value) if isinstance(value, str)
                       else not isinstance(value, (dict, list)))
            if setting and "#" not in key and key != "save_execute_config":  # MONAI's own tracking option
                if isinstance(parser.get_parsed_content(key), bool):
                    uses = text.count(f"@{key}")
                    assert uses and uses == text.count(f"as_bool(@{key})"), (name, key)
                    checked.add(key)
    assert {"skip_empty", "body_mask", "progress", "find_unused_parameters"} <= checked


def test_model_zoo_checks(data):
    """verify_metadata, verify_net_in_out, ckpt_export (traced), check_properties, monai.bundle.load."""
    scans = BUNDLE / "sample_data" / "images"
    work = data["root"] / "checks"
    work.mkdir()
    proc = _python(TESTS / "bundle_checks.py", BUNDLE, SCHEMA, data["model_pt"], data["zip"], work, TINY_CLIP_JSON,
                   data["mvtec"], scans, cmd=())
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULTS ", 1)[1])
    assert results["check_properties"] == {"train": [], "evaluate": [], "inference": []}
    assert results["ts_shape"] == [3, 2, 56, 56]
    assert results["ts_max_abs_diff"] <= 1e-4
    assert results["load_type"] == "BundleNetwork" and results["load_max_abs_diff"] <= 1e-6
    # the exported network holds the converted prompts, not a fresh initialisation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = AnomalyCLIPNet(**TINY).eval()
        loaded = AnomalyCLIPNet(**TINY)
    loaded.load_state_dict(torch.load(data["model_pt"], weights_only=True))
    batch = torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = loaded.eval()(batch)[:, 1, 0, 0]
        assert np.allclose(results["eager_image_scores"], want.numpy(), atol=1e-6)
        assert not torch.allclose(fresh(batch)[:, 1, 0, 0], want, atol=1e-4)


def _tensorboard_scalars(folder, tag):
    events = EventAccumulator(str(folder))
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


def test_train_two_steps_equal_training_package_then_evaluate(data, tmp_path, single_thread):
    """Two optimiser steps through train.json give the losses and prompts of anomalyclip_med.training; then
    evaluate.json (train.json's validate section, overridden) scores the trained prompts."""
    ckpt, logs = tmp_path / "models", tmp_path / "logs"
    proc = _python("run", "--config_file", CONFIGS / "train.json", "--bundle_root", BUNDLE, "--dataset", "mvtec",
                   "--dataset_dir", data["mvtec"], "--ckpt_dir", ckpt, "--output_dir", logs, *TINY_ARGS,
                   "--batch_size", "5", "--max_epochs", "1", "--val_interval", "1", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    bundle_losses = _tensorboard_scalars(logs, "train_loss")
    bundle_prompts = torch.load(ckpt / "model_final.pt", weights_only=True)
    assert (ckpt / "model.pt").is_file()  # the validation's best image AUROC

    # the same two steps with the package: compute_losses + make_optimizer, the data order of train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = AnomalyCLIPNet(**TINY)
    model = net.anomalyclip
    dataset = prompt_dataset("mvtec", data["mvtec"], 56)
    set_determinism(seed=111)
    optimizer = make_optimizer(model)
    loader = DataLoader(dataset, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(111))
    losses = []
    model.train()
    for batch in loader:
        step = compute_losses(model, batch["image"], batch["mask"], batch["label"])
        optimizer.zero_grad()
        step["total"].backward()
        optimizer.step()
        losses.append(step["total"].item())
    assert len(bundle_losses) == len(losses) == 2
    assert np.allclose(bundle_losses, losses, atol=1e-5, rtol=0)
    for key, value in net.state_dict().items():
        assert torch.allclose(bundle_prompts[key], value, atol=1e-5, rtol=0), key
    # and train() itself ends at the same prompts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = AnomalyCLIPNet(**TINY)
    result = train(reference.anomalyclip, dataset, tmp_path / "reference", TrainSettings(epochs=1, batch_size=5,
                                                                                        progress=False))
    assert abs(result.history[0]["total"] - np.mean(bundle_losses)) <= 1e-5
    reference.load_state_dict(torch.load(result.checkpoint, weights_only=True))
    for key, value in reference.state_dict().items():
        assert torch.allclose(bundle_prompts[key], value, atol=1e-5, rtol=0), key

    # evaluate.json: the network is built from the trained prompts (network_def#prompts), MetricsSaver writes the metric
    out = tmp_path / "eval"
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']"
    proc = _python("run", "--config_file", configs, "--bundle_root", BUNDLE, "--dataset", "mvtec", "--dataset_dir",
                   data["mvtec"], "--ckpt_dir", ckpt, "--output_dir", out, *TINY_ARGS, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert rows[0][0] == "val_image_auroc" and 0.0 <= float(rows[0][1]) <= 1.0


def test_torchrun_two_processes_train_and_evaluate(data, tmp_path):
    """multi_gpu_train.json / multi_gpu_evaluate.json under torchrun: gloo on the CPU (NCCL on GPUs)."""
    ckpt = tmp_path / "models"
    common = ["--bundle_root", BUNDLE, "--dataset", "mvtec", "--dataset_dir", data["mvtec"], "--ckpt_dir", ckpt,
              "--output_dir", tmp_path / "logs", *TINY_ARGS,
              # the tiny test backbone has fewer text layers than deep prompts: some prompts get no gradient
              "--find_unused_parameters", "true"]
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "monai.bundle")
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    proc = _python("run", "--config_file", configs, *common, "--batch_size", "3", "--max_epochs", "1",
                   "--val_interval", "1", cmd=torchrun)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # each rank took 5 of the 10 images in batches of 3: two iterations per rank, logged by rank 0 only
    log = proc.stdout + proc.stderr
    assert log.count("Iter: 1/2") == 1 and log.count("Iter: 2/2") == 1 and "Iter: 1/1" not in log
    trained = torch.load(ckpt / "model_final.pt", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = AnomalyCLIPNet(**TINY).state_dict()
    assert set(trained) == set(fresh)
    assert not torch.allclose(trained["anomalyclip.prompt_learner.ctx_pos"], fresh["anomalyclip.prompt_learner.ctx_pos"])
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}','{CONFIGS / 'multi_gpu_evaluate.json'}']"
    proc = _python("run", "--config_file", configs, *common, "--output_dir", tmp_path / "eval", cmd=torchrun)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.reader((tmp_path / "eval" / "metrics.csv").open()))
    assert rows[0][0] == "val_image_auroc" and 0.0 <= float(rows[0][1]) <= 1.0
