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
import SimpleITK as sitk
import torch

from anomalyclip_med import AnomalyCLIP
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
    assert "verify_metadata" in commands
    for name in ("dataset_dir", "output_dir", "backbone", "backbone_weights", "prompts", "image_size", "preset",
                 "threshold", "batch_size", "device", "precision"):
        assert f"--{name}" in commands


def test_verify_metadata():
    proc = _bundle("verify_metadata", "--meta_file", CONFIGS / "metadata.json",
                   "--filepath", REPO / "bundles" / "metadata_schema.json")
    assert proc.returncode == 0, proc.stderr
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


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
    proc = _run("inference.json", "--dataset_dir", data, "--output_dir", out, *TINY, "--threshold", "0.3",
                "--batch_size", "3", "--preset", "mri", "--device", "cpu", "--precision", "fp32")
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
    # the bundle runs the same code as the score command: identical maps and scores
    cli_out = tmp_path / "cli"
    cli = _bundle("score", data / "oblique.nii.gz", "--out", cli_out, "--backbone", TINY_CLIP_JSON,
                  "--backbone-weights", "none", "--prompts", "untrained", "--image-size", "56", "--threshold", "0.3",
                  "--batch-size", "3", "--preset", "mri", "--device", "cpu", cmd=("-m", "anomalyclip_med"))
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert np.allclose(np.asarray(nib.load(cli_out / "oblique_anomaly_map.nii.gz").dataobj), m, atol=1e-6)
    assert json.loads((cli_out / "oblique_scores.json").read_text())["slice_scores"] == report["slice_scores"]


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
    assert proc.returncode != 0
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    for needed in ("ViT-L-14-336px.pt", "anomalyclip_mvtec-trained.pth", "http://127.0.0.1:", "--backbone_weights",
                   "--prompts", "--weights_dir", "fetch-weights --dest"):
        assert needed in line
    assert proc.stderr.rstrip().endswith(line) and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    missing = _run("inference.json", "--output_dir", tmp_path / "out", "--backbone_weights", tmp_path / "nowhere.pt")
    assert missing.returncode != 0 and "nowhere.pt" in missing.stderr and "Traceback" not in missing.stderr


def test_evaluate_two_case_manifest(tmp_path):
    out = tmp_path / "eval"
    proc = _run("evaluate.json", "--output_dir", out, *TINY, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "cohort_summary.json").read_text())
    rows = list(csv.DictReader((out / "cohort_cases.csv").open()))
    assert sorted(r["case_id"] for r in rows) == ["phantom_lesion", "phantom_normal"]
    assert summary["n_cases"] == 2 and summary["n_ok"] == 2 and summary["scan_level"]["n_anomalous"] == 1
    for name in ("cohort_report.md", "roc.png", "pr.png", "score_histogram.png"):
        assert (out / name).is_file()
    for case in ("phantom_lesion", "phantom_normal"):
        _assert_same_geometry(BUNDLE / "sample_data" / "images" / f"{case}.nii.gz",
                              out / "cases" / case / f"{case}_anomaly_map.nii.gz")


def test_train_one_short_epoch_gives_loadable_prompts(tmp_path):
    root = tmp_path / "headct"
    (root / "head_ct").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["id,hemorrhage"]
    from PIL import Image

    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / "head_ct" / f"{i:03d}.png")
        rows.append(f"{i},{i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "train"
    proc = _run("train.json", "--dataset", "headct", "--dataset_dir", root, "--output_dir", out, *TINY,
                "--epochs", "1", "--batch_size", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoint = out / "epoch_1.pth"
    assert checkpoint.is_file() and (out / "train_log.csv").is_file()
    model = AnomalyCLIP.from_pretrained(backbone=str(TINY_CLIP_JSON), backbone_weights=None, image_size=56,
                                        prompts=checkpoint)
    fresh = AnomalyCLIP.from_pretrained(backbone=str(TINY_CLIP_JSON), backbone_weights=None, image_size=56,
                                        prompts="untrained")
    assert not torch.equal(model.prompt_learner.ctx_neg, fresh.prompt_learner.ctx_neg)  # it trained


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


def test_multi_process_training_with_torchrun(tmp_path):
    """multi_gpu_train.json under torchrun (gloo on CPU here, NCCL on GPUs): ranks share the data, rank 0 writes."""
    root = tmp_path / "brainmri"
    rng = np.random.default_rng(1)
    from PIL import Image

    for folder, n in (("yes", 3), ("no", 3)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / folder / f"{i}.png")
    out = tmp_path / "train"
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    proc = _bundle("--nproc_per_node", "2", "-m", "monai.bundle", "run", "--config_file", configs,
                   "--bundle_root", BUNDLE, "--dataset", "brainmri", "--dataset_dir", root, "--output_dir", out,
                   *TINY, "--epochs", "2", "--batch_size", "1", "--device", "cpu",
                   cmd=("-m", "torch.distributed.run", "--standalone"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "in 2 process(es)" in proc.stdout
    assert sorted(p.name for p in out.glob("epoch_*.pth")) == ["epoch_1.pth", "epoch_2.pth"]
    log = list(csv.DictReader((out / "train_log.csv").open()))
    assert [int(r["epoch"]) for r in log] == [1, 2] and all(np.isfinite(float(r["total"])) for r in log)
    AnomalyCLIP.from_pretrained(backbone=str(TINY_CLIP_JSON), backbone_weights=None, image_size=56,
                                prompts=out / "epoch_2.pth")


def test_override_booleans_and_option_names_are_parsed_one_way():
    from anomalyclip_med.bundle import as_bool, build_model
    from anomalyclip_med.errors import InputError

    assert as_bool("true") is True and as_bool("False") is False and as_bool(True) is True
    try:
        as_bool("yes")
    except InputError as err:
        assert "'yes'" in str(err)
    else:
        raise AssertionError("'yes' was taken as a boolean")
    try:  # an unknown option ends the run with one error line naming it
        build_model(backbone=str(TINY_CLIP_JSON), backbone_weights="none", image_sise=56)
    except SystemExit as err:
        assert str(err).startswith("error:") and "image_sise" in str(err)
    else:
        raise AssertionError("an unknown model option was accepted")
