"""
``inference.json``'s volume-level contract, driven as MONAI Deploy's ``MonaiBundleInferenceOperator`` (and MONAI
Label's ``BundleInferTask``) drive a bundle: ``network_def``, ``preprocessing``, ``inferer`` and ``postprocessing``
parsed from the config and called on one volume in memory, compared with ``anomalyclip-med score`` on the same file.

``_operator_call`` follows the operator's ``compute`` (monai-deploy-app-sdk,
``monai/deploy/operators/monai_bundle_inference_operator.py``): the input and output names are the first keys of
``network_data_format`` in metadata.json; transforms whose class name holds ``LoadImage``/``SaveImage`` are dropped;
a dictionary ``preprocessing`` runs on ``{"image": value}``; the input gets a batch dimension and goes to the
config's ``device``; ``inferer(inputs=..., network=...)`` runs under ``torch.no_grad``; the postprocessing gets
``{"pred": ensure_tuple(output)[0], **preprocessed inputs}`` (MONAI Label's ``run_inferer`` takes ``outputs[0]``
too) and the operator sends its ``pred``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.data.utils import orientation_ras_lps
from monai.transforms import Compose, MapTransform
from monai.utils import ensure_tuple

from anomalyclip_med.errors import InputError
from anomalyclip_med.inference import ScoringOptions, VolumeAnomalyInferer
from anomalyclip_med.calibration import Decision
from anomalyclip_med.transforms import AnomalyOutputs, AnomalyOutputsd, LoadScan, LoadScand
from conftest import TESTS, TINY_CLIP_JSON, tiny_model
from scan_data import oblique_affine, save_nifti, synthetic_head_ct

REPO = TESTS.parent
BUNDLE = REPO / "bundles" / "anomalyclip_zeroshot"
CONFIGS = BUNDLE / "configs"
THRESHOLD, BATCH_SIZE = 0.3, 3
OVERRIDES = {"backbone": str(TINY_CLIP_JSON), "backbone_weights": "none", "prompts": "untrained", "image_size": 56,
             "device": "cpu", "precision": "fp32", "threshold": THRESHOLD, "batch_size": BATCH_SIZE}


def _bundle_parser() -> ConfigParser:
    """The operator's ``get_bundle_config`` (metadata, then the inference config, parsed), with overrides."""
    parser = ConfigParser()
    parser.read_meta(CONFIGS / "metadata.json")
    parser.read_config(CONFIGS / "inference.json")
    parser.update({"bundle_root": str(BUNDLE), **OVERRIDES})
    parser.parse()
    return parser


def _compose(parser: ConfigParser, name: str) -> Compose:
    compose = parser.get_parsed_content(name) if parser.get(name) is not None else Compose([])
    compose.transforms = tuple(t for t in compose.transforms
                               if not any(bad in type(t).__name__ for bad in ("LoadImage", "SaveImage")))
    return compose


def _operator_call(parser: ConfigParser, network: torch.nn.Module, value) -> dict:
    meta = parser["_meta_"]["network_data_format"]
    (first_input, *_), (first_output, *_) = list(meta["inputs"]), list(meta["outputs"])
    device = parser.get_parsed_content("device") if parser.get("device") is not None else torch.device("cpu")
    inferer = parser.get_parsed_content("inferer")
    pre, post = _compose(parser, "preprocessing"), _compose(parser, "postprocessing")
    assert isinstance(pre.transforms[0], MapTransform) and isinstance(post.transforms[0], MapTransform)
    with torch.no_grad():
        inputs = pre({first_input: value})
        kept = inputs[first_input]
        batch = inputs.pop(first_input)[None].to(device)
        outputs = inferer(inputs=batch, network=network)
        inputs[first_input] = kept
        data = {first_output: ensure_tuple(outputs)[0]}
        data.update(inputs)
        return post(data)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A CT-like scan with an oblique affine, scored by ``anomalyclip-med score``; the bundle's parser and network
    (``network_def`` with ``models/model.pt`` loaded as MONAI Label loads it)."""
    tmp = tmp_path_factory.mktemp("deploy")
    source = save_nifti(synthetic_head_ct(), oblique_affine(), tmp / "head.nii.gz")
    out = tmp / "cli"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "anomalyclip_med", "score", str(source), "--out", str(out), "--backbone",
         str(TINY_CLIP_JSON), "--backbone-weights", "none", "--prompts", "untrained", "--image-size", "56",
         "--device", "cpu", "--precision", "fp32", "--threshold", str(THRESHOLD), "--batch-size", str(BATCH_SIZE),
         "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parser = _bundle_parser()
    network = parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), tmp / "model.pt")
    network.load_state_dict(torch.load(tmp / "model.pt", map_location="cpu"))
    network = network.to(parser.get_parsed_content("device")).eval()
    return {
        "source": source, "parser": parser, "network": network,
        "map": np.asarray(nib.load(out / "head_anomaly_map.nii.gz").dataobj),
        "seg": np.asarray(nib.load(out / "head_anomaly_seg.nii.gz").dataobj),
        "report": json.loads((out / "head_scores.json").read_text()),
    }


def _deploy_image(source, lps: bool = False) -> MetaTensor:
    """The scan as the operator makes its input from an in-memory image: an array without a channel dimension
    and a metadata dict (``MetaTensor.ensure_torch_and_prune_meta``); ``lps``: the affine in LPS space, as its
    DICOM series loader gives it."""
    img = nib.load(source)
    affine = orientation_ras_lps(img.affine) if lps else img.affine
    meta = {"affine": affine.copy(), "original_affine": affine.copy(), "spatial_shape": np.asarray(img.shape),
            "original_channel_dim": "no_channel", **({"space": "LPS"} if lps else {})}
    return MetaTensor.ensure_torch_and_prune_meta(np.asarray(img.dataobj, dtype=np.float32), meta)


@pytest.mark.parametrize("given", ["path", "metatensor", "metatensor_lps"])
def test_deploy_operator_call_of_inference_json_gives_the_score_command_outputs(case, given):
    source = case["source"]
    value = str(source) if given == "path" else _deploy_image(source, lps=given.endswith("lps"))
    before = value.clone() if isinstance(value, torch.Tensor) else None
    result = _operator_call(case["parser"], case["network"], value)

    amap, seg = result["anomaly_map"], result["pred"]
    assert isinstance(amap, MetaTensor) and isinstance(seg, MetaTensor)
    assert amap.dtype == torch.float32 and seg.dtype == torch.uint8
    assert amap.shape == seg.shape == (1, *nib.load(source).shape)
    diff = float(np.abs(amap[0].numpy() - case["map"]).max())
    assert diff <= 1e-6, diff
    assert np.array_equal(seg[0].numpy(), case["seg"])
    assert 0 < int(case["seg"].sum()) < case["seg"].size  # the labelmap holds both labels: the threshold is tested
    report = case["report"]
    assert amap.meta["scan_score"] == pytest.approx(report["scan_score"], abs=1e-6)
    assert np.allclose(amap.meta["slice_scores"], report["slice_scores"], atol=1e-6)
    assert amap.meta["scored_slices"].tolist() == report["scored"]
    # in the input's geometry: the file's affine (RAS, as LoadImage reads; an LPS input is given back in RAS)
    for out in (amap, seg):
        assert np.allclose(np.asarray(out.affine), nib.load(source).affine, atol=1e-6)
    if before is not None:  # the caller's volume is not modified
        assert torch.equal(value.as_tensor(), before.as_tensor())


def test_deploy_operator_call_with_the_traced_export(case):
    """MONAI Deploy runs the network its app context loads, the TorchScript export (``ckpt_export --use_trace``):
    the same maps as ``score`` to the traced network's tolerance (verify_net_in_out's 1e-4)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constants and Python values
        traced = torch.jit.trace(case["network"], torch.zeros(1, 3, 56, 56))
    result = _operator_call(case["parser"], traced, _deploy_image(case["source"]))
    amap, seg = result["anomaly_map"][0].numpy(), result["pred"][0].numpy()
    assert float(np.abs(amap - case["map"]).max()) <= 1e-4
    assert result["anomaly_map"].meta["scan_score"] == pytest.approx(case["report"]["scan_score"], abs=1e-4)
    clear = np.abs(case["map"] - THRESHOLD) > 1e-4  # voxels not within the tolerance of the threshold
    assert np.array_equal(seg[clear], case["seg"][clear])
    with pytest.raises(ValueError, match="image_size"):
        VolumeAnomalyInferer()(torch.zeros(1, 1, 8, 8, 4), traced)


def test_bundle_keeps_the_batch_inferer_for_its_run(case):
    parser = case["parser"]
    assert isinstance(parser.get_parsed_content("inferer"), VolumeAnomalyInferer)
    assert parser["evaluator"]["inferer"] == "@batch_inferer"
    assert parser["batch_inferer"]["_target_"].endswith("CaseInferer")
    inferer = parser.get_parsed_content("inferer")
    assert inferer.scoring.threshold == THRESHOLD and inferer.scoring.batch_size == BATCH_SIZE


def test_volume_inferer_keeps_the_batch_dimension_and_the_network_mode():
    model = tiny_model()
    volume = LoadScan()(synthetic_head_ct(shape=(20, 18, 8))[None])
    inferer = VolumeAnomalyInferer(ScoringOptions(skip_empty=False, body_mask=False, aggregation="max"))
    model.train()
    batched = inferer(volume[None], model)
    assert model.training  # eval mode for the call only
    model.eval()
    single = inferer(volume, model)
    assert batched.shape == (1, 1, 20, 18, 8) and single.shape == (1, 20, 18, 8)
    assert torch.equal(batched[0].as_tensor(), single.as_tensor())
    assert not batched.requires_grad and 0 <= float(single.min()) and float(single.max()) <= 1
    # the two halves an engine overlaps give the same
    plan = inferer.prepare(volume, model)
    scored = inferer.compute(volume, plan, model)
    assert np.array_equal(scored.result.anomaly_map, single[0].numpy())
    assert scored.scan_score == single.meta["scan_score"] == pytest.approx(scored.result.slice_scores.max())
    assert single.meta["slice_axis"] == 2 and single.meta["scored_slices"].all()
    with pytest.raises(ValueError, match="single-channel volume"):
        inferer(torch.zeros(2, 20, 18, 8), model)


def test_load_scan_passes_an_in_memory_scan_through_as_a_file_read_would():
    data = synthetic_head_ct(shape=(12, 10, 6))
    data[0, 0, 0], data[1, 0, 0] = np.nan, np.inf
    affine = oblique_affine()
    given = MetaTensor(torch.from_numpy(data.astype(np.float64)), affine=torch.from_numpy(affine))
    out = LoadScand(keys="image")({"image": given})["image"]
    assert out.shape == (1, 12, 10, 6) and out.dtype == torch.float32
    assert out.meta["nonfinite_voxels"] == 2 and torch.isfinite(out).all()
    assert torch.isnan(given[0, 0, 0])  # a copy: the caller's scan is untouched
    assert float(out[0, 0, 0, 0]) == float(np.nanmin(np.where(np.isinf(data), np.nan, data)))
    assert np.allclose(out.affine, affine) and np.allclose(out.meta["original_affine"], affine)
    # channel-first input, and an LPS affine given back in RAS
    lps = MetaTensor(torch.from_numpy(data[None]), meta={"affine": orientation_ras_lps(affine), "space": "LPS"})
    assert np.allclose(LoadScan()(lps).affine, affine)
    for bad in (torch.zeros(2, 12, 10, 6), torch.zeros(12, 10)):
        with pytest.raises(InputError):
            LoadScan()(bad)


class _Decision(Decision):
    """A calibrated decision's behaviour, without a calibration: threshold 0.7, p-value maps, scan fields."""

    def __init__(self):
        super().__init__(0.7)

    def output_map(self, values):
        return 1.0 - values

    def scan_fields(self, slice_scores, scored, scan_score):
        return {"scan_p_value": 0.01, "slice_flags": [bool(s) for s in scored]}


def test_outputs_split_the_map_into_map_and_labelmap_in_the_reference_geometry():
    affine = torch.from_numpy(oblique_affine())
    values = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]).reshape(1, 5, 1, 1).expand(1, 5, 2, 2).contiguous()
    pred = MetaTensor(values, meta={"scan_score": 0.4, "slice_scores": np.zeros(2), "scored_slices": np.ones(2, bool)})
    image = MetaTensor(torch.zeros(1, 5, 2, 2), affine=affine)
    d = AnomalyOutputsd(keys="pred", decision=Decision(0.5))({"pred": pred, "image": image})
    assert d["pred"].dtype == torch.uint8 and d["anomaly_map"].dtype == torch.float32
    assert d["pred"][0, :, 0, 0].tolist() == [0, 0, 1, 1, 1]
    assert torch.equal(d["anomaly_map"].as_tensor(), values)
    assert np.allclose(d["pred"].affine, affine) and np.allclose(d["anomaly_map"].affine, affine)
    assert d["pred"].meta["scan_score"] == 0.4
    # a calibrated decision replaces the threshold and adds its p-values and flags
    seg, amap = AnomalyOutputs(_Decision())(pred)[::-1]
    assert seg[0, :, 0, 0].tolist() == [0, 0, 0, 1, 1] and seg.meta["scan_p_value"] == 0.01
    assert torch.allclose(amap.as_tensor(), 1.0 - values)
    with pytest.raises(ValueError, match="spatial shape"):
        AnomalyOutputsd(keys="pred", decision=Decision(0.5))({"pred": pred, "image": torch.zeros(1, 4, 2, 2)})
