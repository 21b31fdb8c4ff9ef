"""The MONAI bundle run as a user runs it: ``python -m monai.bundle ...`` in a subprocess, as in its README."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from anomalyclip_med import AnomalyCLIP
from anomalyclip_med.inference import ScoringOptions
from conftest import SHARED_DATA, TESTS, TINY_CLIP_JSON, needs_shared_data, offline_env

REPO = TESTS.parent
BUNDLE = REPO / "bundles" / "anomalyclip_zeroshot"
CONFIGS = BUNDLE / "configs"
TINY_NET = ["--backbone", str(TINY_CLIP_JSON), "--backbone_weights", "none", "--image_size", "56"]
TINY = [*TINY_NET, "--prompts", "untrained"]


def _bundle(*args, env_extra=None, cmd=("-m", "monai.bundle")):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, *cmd, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)


def _run(config, *overrides):
    return _bundle("run", "--config_file", CONFIGS / config, "--bundle_root", BUNDLE, *overrides)


def _assert_same_geometry(source, written):
    a, b = sitk.ReadImage(str(source)), sitk.ReadImage(str(written))
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def _readme_commands():
    text = (BUNDLE / "docs" / "README.md").read_text()
    return [line.strip() for line in text.splitlines() if line.strip().startswith(("python -m monai.bundle", "torchrun"))]


def test_readme_shows_the_commands_the_tests_run():
    commands = " ".join(_readme_commands())
    for config in ("inference.json", "evaluate.json", "train.json", "multi_gpu_evaluate.json", "multi_gpu_train.json"):
        assert f"configs/{config}" in commands
    for check in ("verify_metadata", "verify_net_in_out", "ckpt_export"):
        assert check in commands
    for name in ("dataset_dir", "output_dir", "backbone", "backbone_weights", "prompts", "image_size", "preset",
                 "threshold", "batch_size", "skip_empty", "device", "precision", "dataset", "ckpt_dir", "val_dataset"):
        assert f"--{name}" in commands


def _oblique_scan(path):
    rng = np.random.default_rng(0)
    data = np.zeros((40, 36, 10), np.float32)
    data[6:34, 6:30, 2:8] = 200 + 10 * rng.standard_normal((28, 24, 6))
    data[20:26, 12:18, 4:6] = 900
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    nib.save(nib.Nifti1Image(data, affine), path)
    return affine


def test_inference_on_synthetic_oblique_scan_matches_score_command(tmp_path):
    data, out = tmp_path / "scans", tmp_path / "out"
    data.mkdir()
    affine = _oblique_scan(data / "oblique.nii.gz")
    # lower-case false, as the README's table writes booleans, is false
    proc = _run("inference.json", "--dataset_dir", data, "--output_dir", out, *TINY, "--threshold", "0.3",
                "--batch_size", "3", "--preset", "mri", "--device", "cpu", "--precision", "fp32",
                "--skip_empty", "false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    amap, seg = nib.load(out / "oblique_anomaly_map.nii.gz"), nib.load(out / "oblique_anomaly_seg.nii.gz")
    for img in (amap, seg):
        assert img.shape == (40, 36, 10)
        assert np.allclose(img.affine, affine, atol=1e-5)
    m, s = np.asarray(amap.dataobj), np.asarray(seg.dataobj)
    assert m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
    assert s.dtype == np.uint8 and set(np.unique(s)) <= {0, 1}
    assert np.array_equal(s, (m >= 0.3).astype(np.uint8))
    report = json.loads((out / "oblique_scores.json").read_text())
    assert len(report["slice_scores"]) == 10 and report["threshold"] == 0.3 and report["preset"]["name"] == "mri"
    assert "RANDOM" in report["warning"]
    assert report["slicing"]["skip_empty"] is False and all(report["scored"])  # slices 0, 1, 8, 9 hold no body
    # the bundle runs the same code as the score command: identical maps and scores
    cli_out = tmp_path / "cli"
    cli = _bundle("score", data / "oblique.nii.gz", "--out", cli_out, "--backbone", TINY_CLIP_JSON,
                  "--backbone-weights", "none", "--prompts", "untrained", "--image-size", "56", "--threshold", "0.3",
                  "--batch-size", "3", "--preset", "mri", "--device", "cpu", "--keep-empty", cmd=("-m", "anomalyclip_med"))
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert np.allclose(np.asarray(nib.load(cli_out / "oblique_anomaly_map.nii.gz").dataobj), m, atol=1e-6)
    assert json.loads((cli_out / "oblique_scores.json").read_text())["slice_scores"] == report["slice_scores"]
    # the same NIfTI headers: labelmap intent, qform/sform codes, units, data type, scaling
    for name in ("oblique_anomaly_map.nii.gz", "oblique_anomaly_seg.nii.gz"):
        assert nib.load(out / name).header.binaryblock == nib.load(cli_out / name).header.binaryblock, name
    assert seg.header.get_intent()[0] == "label" and amap.header.get_intent()[0] == "none"
    assert int(seg.header["qform_code"]) == int(nib.load(data / "oblique.nii.gz").header["qform_code"])


@needs_shared_data
def test_inference_on_real_anisotropic_volume(tmp_path):
    data, out = tmp_path / "scans", tmp_path / "out"
    data.mkdir()
    source = SHARED_DATA / "volumes" / "pyradiomics" / "brain1_image.nrrd"
    shutil.copy(source, data / source.name)
    proc = _run("inference.json", "--dataset_dir", data, "--output_dir", out, *TINY, "--batch_size", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("brain1_image_anomaly_map.nii.gz", "brain1_image_anomaly_seg.nii.gz"):
        _assert_same_geometry(source, out / name)
    assert json.loads((out / "brain1_image_scores.json").read_text())["slicing"]["n_slices"] == 25


def test_main_job_offline_stops_at_start_with_the_fix(tmp_path):
    """The README's main job on a fresh offline machine: one error line naming each missing file, its URL and the
    overrides or folder that provide it."""
    proc = _bundle("run", "--config_file", CONFIGS / "inference.json", "--bundle_root", BUNDLE,
                   "--output_dir", tmp_path / "out", env_extra=offline_env(tmp_path))
    assert proc.returncode == 2
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    for needed in ("ViT-L-14-336px.pt", "anomalyclip_mvtec-trained.pth", "http://127.0.0.1:", "--backbone_weights",
                   "--prompts", "--weights_dir", "fetch-weights --dest"):
        assert needed in line
    assert proc.stderr.rstrip().endswith(line) and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    missing = _run("inference.json", "--output_dir", tmp_path / "out", "--backbone_weights", tmp_path / "nowhere.pt")
    assert missing.returncode != 0 and "nowhere.pt" in missing.stderr and "Traceback" not in missing.stderr


def test_export_packages_bundle_with_prompts(tmp_path):
    prompts = AnomalyCLIP.from_pretrained(backbone=str(TINY_CLIP_JSON), backbone_weights=None, image_size=56,
                                          prompts="untrained").save_prompts(tmp_path / "prompts.pt")
    archive = tmp_path / "anomalyclip_zeroshot.zip"
    proc = _bundle("export-bundle", "--bundle", BUNDLE, "--prompts", prompts, "--out", archive,
                   cmd=("-m", "anomalyclip_med"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        assert {"anomalyclip_zeroshot/configs/metadata.json", "anomalyclip_zeroshot/configs/inference.json",
                "anomalyclip_zeroshot/models/model.pt", "anomalyclip_zeroshot/docs/README.md",
                "anomalyclip_zeroshot/LICENSE", "anomalyclip_zeroshot/THIRD_PARTY_NOTICES",
                "anomalyclip_zeroshot/large_files.yml"} <= names
        z.extractall(tmp_path / "unpacked")
    unpacked = tmp_path / "unpacked" / "anomalyclip_zeroshot"
    assert not any(re.search(r"(^|/)(output|eval)/", n) for n in names)
    # the packaged bundle runs with its own prompts by default
    proc = _bundle("run", "--config_file", unpacked / "configs" / "inference.json", "--bundle_root", unpacked,
                   "--output_dir", tmp_path / "o", *TINY_NET)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "o" / "phantom_lesion_scores.json").read_text())
    assert report["model"]["prompts"]["trained"] is True


def test_override_booleans_and_option_names_are_parsed_one_way():
    from anomalyclip_med.bundle import as_bool, scoring_options
    from anomalyclip_med.errors import InputError

    assert as_bool("true") is True and as_bool("False") is False and as_bool(True) is True
    with pytest.raises(InputError, match="'yes'"):  # an exception in a library call, not the end of the process
        as_bool("yes")
    # the scoring component takes the ScoringOptions fields, each checked as its override, and refuses others
    assert scoring_options(threshold=0.3, topk=3, skip_empty="false") == ScoringOptions(threshold=0.3, topk=3,
                                                                                       skip_empty=False)
    with pytest.raises(InputError, match="did you mean --scoring#threshold"):
        scoring_options(treshold=0.3)
