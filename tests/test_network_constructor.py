"""
One network constructor: the bundle's network and every other face are built by ``create_model``, so the same
prompt file and settings give the same network (recorded settings, precision for its device, the same checks of
the file) and byte-identical maps through ``score`` and through the bundle.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from anomalyclip_med.errors import InputError
from anomalyclip_med.network import AnomalyCLIPNet, ModelOptions, create_model
from conftest import TESTS, TINY_CLIP_JSON, tiny_model

REPO = TESTS.parent
BUNDLE = REPO / "bundles" / "anomalyclip_zeroshot"
INFERENCE = BUNDLE / "configs" / "inference.json"
TINY = {"backbone": str(TINY_CLIP_JSON), "backbone_weights": "none", "image_size": 56}


def _bundle_network(configs=(INFERENCE,), **overrides):
    """``network_def`` of the bundle's config(s) as MONAI tools instantiate it (the tiny random backbone)."""
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    parser.update({"bundle_root": str(BUNDLE), **TINY, **overrides})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parser.get_parsed_content("network_def")


def _model(**options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_model(ModelOptions(**{**TINY, "device": "cpu", **options}))


@pytest.fixture(scope="module")
def layer2_prompts(tmp_path_factory):
    """A package prompt file recorded with feature layer 2 only (the tiny tower has 4), with prompts that differ
    from a fresh initialisation."""
    model = tiny_model(feature_layers=(2,), map_layers=(-1,))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.prompt_learner.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model.save_prompts(tmp_path_factory.mktemp("prompts") / "layer2.pt")


def test_bundle_network_on_the_cpu_of_a_cuda_machine_runs_fp32(monkeypatch):
    """Face disagreement 1: precision auto is resolved for the device the network runs on, not the machine's."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    net = _bundle_network(prompts="untrained", device="cpu", precision="auto")
    assert net.anomalyclip.precision == "fp32" and net.device.type == "cpu"
    assert _model(prompts="untrained", precision="auto").precision == "fp32"


def test_bundle_network_takes_the_prompt_files_recorded_layers(layer2_prompts):
    """Face disagreement 3, in process: the bundle's network and create_model's from one prompt file are the same
    network and give byte-identical maps."""
    net = _bundle_network(prompts=str(layer2_prompts), device="cpu", precision="fp32").eval()
    model = _model(prompts=str(layer2_prompts))
    assert (net.anomalyclip.feature_layers, net.anomalyclip.map_layers) == ((2,), (2,))
    assert net.anomalyclip.config == model.config
    assert net.anomalyclip.identity()["prompts"] == model.identity()["prompts"]
    batch = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        bundle_map = net(batch)[:, 0]
    assert torch.equal(bundle_map, model.predict(batch).anomaly_map)
    # evaluate.json (over train.json) builds its network from its prompts the same way
    evaluated = _bundle_network((BUNDLE / "configs" / "train.json", BUNDLE / "configs" / "evaluate.json"),
                                prompts=str(layer2_prompts), device="cpu")
    assert evaluated.anomalyclip.config == model.config
    assert torch.equal(evaluated.anomalyclip.prompt_learner.ctx_pos, model.prompt_learner.ctx_pos)


def _python(*args, module):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)


def _score(scan, out, prompts):
    return _python("score", scan, "--out", out, "--backbone", TINY_CLIP_JSON, "--backbone-weights", "none",
                   "--prompts", prompts, "--image-size", "56", "--device", "cpu", "--no-progress",
                   module="anomalyclip_med")


def _bundle_run(scans, out, prompts):
    return _python("run", "--config_file", INFERENCE, "--bundle_root", BUNDLE, "--backbone", TINY_CLIP_JSON,
                   "--backbone_weights", "none", "--prompts", prompts, "--image_size", "56", "--device", "cpu",
                   "--dataset_dir", scans, "--output_dir", out, module="monai.bundle")


def _scan(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    volume = np.full((30, 26, 5), -1000.0, np.float32)
    volume[4:26, 4:22, :] = 40 + 5 * rng.standard_normal((22, 18, 5))
    volume[12:18, 8:14, 1:4] = 300.0
    affine = np.diag([0.9, 1.1, 3.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), folder / "case.nii.gz")
    return folder / "case.nii.gz"


def test_score_and_the_bundle_give_byte_identical_maps_from_a_layer2_prompt_file(layer2_prompts, tmp_path):
    """Face disagreement 3, end to end: the same prompt file, settings and scan through both faces."""
    scan = _scan(tmp_path / "scans")
    cli = _score(scan, tmp_path / "cli", layer2_prompts)
    assert cli.returncode == 0, cli.stderr[-3000:]
    bundle = _bundle_run(scan.parent, tmp_path / "bundle", layer2_prompts)
    assert bundle.returncode == 0, bundle.stderr[-3000:]
    maps = [nib.load(tmp_path / face / "case_anomaly_map.nii.gz") for face in ("cli", "bundle")]
    arrays = [np.asarray(m.dataobj) for m in maps]
    assert arrays[0].dtype == arrays[1].dtype and arrays[0].tobytes() == arrays[1].tobytes()
    assert float(arrays[0].max()) > float(arrays[0].min())  # a map, not a constant


def test_a_nan_prompt_file_is_refused_up_front_by_both_faces(tmp_path):
    """Face disagreement 5 (prompt files): the check ``score`` makes is made by the bundle, before any case."""
    state = {k: v.clone() for k, v in tiny_model().prompt_learner.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].view(-1)[0] = float("nan")
    nan_file = tmp_path / "nan_prompts.pth"
    torch.save({"prompt_learner": state}, nan_file)
    scan = _scan(tmp_path / "scans")
    for face, proc in (("cli", _score(scan, tmp_path / "cli", nan_file)),
                       ("bundle", _bundle_run(scan.parent, tmp_path / "bundle", nan_file))):
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (face, proc.stderr[-3000:])
        assert len(errors) == 1 and f"is damaged: tensor '{first}' holds 1 NaN/Inf value(s)" in errors[0], face
    assert not list(tmp_path.rglob("*_anomaly_map.nii.gz")) and not list(tmp_path.rglob("*_scores.json"))


def test_load_state_dict_refuses_a_prompt_file_recorded_with_other_settings(layer2_prompts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = AnomalyCLIPNet(**TINY)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(InputError) as refused:
        net.load_state_dict(torch.load(layer2_prompts, weights_only=True))
    message = str(refused.value)
    assert "feature_layers: the file records [2], the network has [1, 2, 3, 4]" in message
    assert "map_layers: the file records [2], the network has [1, 2, 3, 4]" in message
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # nothing was loaded
    # the same file into a network with its settings loads
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = AnomalyCLIPNet(**TINY, feature_layers=(2,))
    fits.load_state_dict(torch.load(layer2_prompts, weights_only=True))
    assert torch.equal(fits.state_dict()["anomalyclip.prompt_learner.ctx_pos"],
                       _model(prompts=str(layer2_prompts)).prompt_learner.ctx_pos)


def test_create_model_merges_recorded_settings_with_the_callers(layer2_prompts):
    """What the caller sets wins over the file's recorded layers (as the command line's --feature-layers); a prompt
    shape against the file's is refused naming both."""
    chosen = _model(prompts=str(layer2_prompts), feature_layers=(2, 4), map_layers=(4,))
    assert (chosen.feature_layers, chosen.map_layers) == ((2, 4), (4,))
    with pytest.raises(InputError, match="n_ctx: the prompt file records 12, the network is asked for 8"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            create_model(ModelOptions(**TINY, device="cpu", prompts=str(layer2_prompts)), {"n_ctx": 8})
