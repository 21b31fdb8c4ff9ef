"""What a user sees of the command line and the bundle: the map only in the body, devices, quiet runs, fast start."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from anomalyclip_med.transforms.slicing import BodyMask
from conftest import SHARED_DATA, TESTS, TINY_CLIP_JSON
from scan_data import oblique_affine, save_nifti, synthetic_head_ct, write_dicom_series

REPO = TESTS.parent
TINY_MODEL = ["--backbone", str(TINY_CLIP_JSON), "--backbone-weights", "none", "--prompts", "untrained",
              "--image-size", "56"]
TINY = [*TINY_MODEL, "--no-progress"]
BRATS_FLAIR = SHARED_DATA / "volumes" / "brats2018" / "case_0" / "FLAIR.nii.gz"


def _cli(*args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "anomalyclip_med", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def _volume(path):
    return np.asarray(nib.load(path).dataobj)


def test_body_mask_fills_dark_tissue_inside_the_body_and_leaves_air_out():
    # a CT-like slab: air around a soft-tissue disc holding a lung-dark hole, and a second disc reaching the edge
    x, y = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    disc = (x - 20) ** 2 + (y - 20) ** 2 <= 14**2
    hole = (x - 20) ** 2 + (y - 20) ** 2 <= 5**2
    plane = np.where(disc, 40.0, -1000.0)
    plane[hole] = -850.0  # darker than the body/air threshold, yet inside the body
    volume = np.repeat(plane[:, :, None], 6, axis=2).astype(np.float32)
    volume[:, :, 0] = -1000.0  # an air-only slice
    body = BodyMask()(torch.from_numpy(volume)[None]).numpy()
    assert body.shape == volume.shape and body.dtype == bool
    assert body[:, :, 1:][np.repeat(disc[:, :, None], 5, axis=2)].all()  # disc and its dark hole
    assert not body[:, :, 1:][~np.repeat(disc[:, :, None], 5, axis=2)].any()  # the air around it
    assert not body[:, :, 0].any()
    assert not BodyMask()(torch.zeros(1, 8, 8, 4)).any()  # a constant scan has no body


def test_score_maps_are_zero_outside_the_body_unless_asked(tmp_path):
    """A synthetic head in air and (where ../shared is) a real BraTS FLAIR slab (air = 0 around the skull-stripped
    brain), with a DICOM series: by default no voxel outside the body is labelled and the console shows no
    third-party noise; ``--no-body-mask`` keeps the raw map, which lights up the air; ``--verbose`` shows all."""
    scans = tmp_path / "scans"
    scans.mkdir()
    head = synthetic_head_ct()
    save_nifti(head, oblique_affine(), scans / "head.nii.gz")
    air = {"head": head < -500}
    if SHARED_DATA.is_dir():
        flair = nib.load(BRATS_FLAIR)
        nib.save(flair.slicer[:, :, 70:82], scans / "flair.nii.gz")  # 12 slices through the tumour
        air["flair"] = np.asarray(flair.slicer[:, :, 70:82].dataobj) == 0
    series = tmp_path / "series"
    write_dicom_series(synthetic_head_ct(shape=(24, 20, 12)), np.eye(4), series)  # MONAI's DICOM reader's notices
    runs = {}
    for name, extra in (("masked", []), ("raw", ["--no-body-mask", "--verbose"])):
        proc = _cli("score", scans, series, "--out", tmp_path / name, *TINY, "--threshold", "0.3", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = {case: (_volume(tmp_path / name / f"{case}_anomaly_map.nii.gz"),
                             _volume(tmp_path / name / f"{case}_anomaly_seg.nii.gz").astype(bool),
                             json.loads((tmp_path / name / f"{case}_scores.json").read_text()))
                      for case in air}
        noise = [line for line in proc.stderr.splitlines() if "nvImageCodec" in line]
        assert bool(noise) == ("--verbose" in extra), proc.stderr
        if not extra:  # the console says only what concerns the data: our RANDOM/UNTRAINED notes and per-scan lines
            assert all(any(word in line for word in ("RANDOM", "UNTRAINED", "INFO ")) for line in
                       proc.stderr.splitlines()), proc.stderr
    for case, outside in air.items():
        masked_map, masked_seg, report = runs["masked"][case]
        raw_map, raw_seg, raw_report = runs["raw"][case]
        assert report["slicing"]["body_mask"] is True and raw_report["slicing"]["body_mask"] is False
        assert report["model"]["precision"] == "fp32"  # --precision auto on the CPU (docs/network.md)
        assert 0 < report["slicing"]["body_voxels"] < outside.size
        assert masked_seg.sum() > 0 and raw_seg[outside].mean() > 0.2  # the raw map does label the air
        # almost all of the air is outside the body: only dark voxels enclosed by the body (filled holes) remain
        assert masked_seg[outside].sum() / masked_seg.sum() < 1e-3
        assert (masked_map[outside] == 0).mean() > 0.99
        inside = masked_map > 0
        np.testing.assert_array_equal(masked_map[inside], raw_map[inside])  # the body's map is untouched
        assert report["slice_scores"] == raw_report["slice_scores"]
        _assert_montage_shows_the_body(tmp_path / "masked" / f"{case}_overlay.png", threshold=0.3)


def _assert_montage_shows_the_body(png, threshold):
    """The overlay: 6 tiles of 256 px with the air untinted (grey), the body tinted, and a colour bar at the right
    running from red (1) at the top to blue at the bottom, the threshold marked by a white line."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert rgb.shape[0] == 512 and rgb.shape[1] > 3 * 256
    tiles, bar = rgb[16:, : 3 * 256], rgb[:, 3 * 256 :]
    grey = (tiles[..., 0] == tiles[..., 1]) & (tiles[..., 1] == tiles[..., 2])
    assert grey.mean() > 0.4  # the air and padding show the scan itself (black), not the colour map's blue
    assert (~grey).mean() > 0.05  # the body carries the map
    strip = bar[:, 6:18]  # the colour strip of the bar
    red_rows = np.flatnonzero((strip[..., 0] > 120).all(1) & (strip[..., 2] < 60).all(1))
    blue_rows = np.flatnonzero((strip[..., 2] > 120).all(1) & (strip[..., 0] < 60).all(1))
    assert red_rows.size and blue_rows.size and red_rows.max() < blue_rows.min()
    white_rows = np.flatnonzero((strip == 255).all(axis=(1, 2)))
    assert white_rows.size and abs(white_rows.mean() - (20 + (1 - threshold) * (512 - 32))) <= 2


def test_one_class_cohort_reports_no_scan_level_metrics(tmp_path):
    """Every labelled scan anomalous: AUROC, AP and max F1 are all undefined (null), not max F1 = 1.0."""
    sample = REPO / "bundles" / "anomalyclip_zeroshot" / "sample_data"
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("case_id,image,mask,label\n"
                        + "".join(f"{c},{sample}/images/phantom_{c}.nii.gz,{sample}/masks/phantom_{c}.nii.gz,1\n"
                                  for c in ("lesion", "normal")))
    proc = _cli("evaluate", manifest, "--dataset", "manifest", "--out", tmp_path / "out", *TINY_MODEL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scan_level = json.loads((tmp_path / "out" / "cohort_summary.json").read_text())["scan_level"]
    assert scan_level == {**scan_level, "n_labelled": 2, "n_anomalous": 2, "n_normal": 0}
    assert scan_level["auroc"] is None and scan_level["ap"] is None and scan_level["max_f1"] is None


def _bundle_run(config, *overrides):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    bundle = REPO / "bundles" / "anomalyclip_zeroshot"
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", bundle / "configs" / config,
                           "--bundle_root", bundle, *map(str, overrides)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def test_bundle_masks_the_body_quietly_and_obeys_its_overrides(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    head = synthetic_head_ct(shape=(32, 28, 12))
    save_nifti(head, np.eye(4), scans / "head.nii.gz")
    tiny = ["--backbone", TINY_CLIP_JSON, "--backbone_weights", "none", "--prompts", "untrained", "--image_size", "56",
            "--device", "cpu"]
    maps = {}
    for name, extra in (("masked", []), ("raw", ["--body_mask", "False", "--verbose", "true"])):
        proc = _bundle_run("inference.json", "--dataset_dir", scans, "--output_dir", tmp_path / name, *tiny, *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("nvImageCodec" in proc.stderr) == bool(extra), proc.stderr[-3000:]
        maps[name] = _volume(tmp_path / name / "head_anomaly_map.nii.gz")
    air = head < -500
    assert (maps["masked"][air] == 0).all() and (maps["masked"][~air] > 0).mean() > 0.5
    scored_air = air[:, :, 4:-4]  # the first and last 4 slices hold air only: skipped, 0 either way
    assert (maps["raw"][:, :, 4:-4][scored_air] > 0).mean() > 0.5


def test_a_device_this_machine_lacks_is_one_error_line_before_anything_is_written(tmp_path):
    scan = save_nifti(synthetic_head_ct(shape=(16, 16, 6)), np.eye(4), tmp_path / "head.nii.gz")
    missing = "cuda:99" if torch.cuda.is_available() else "cuda"  # the case on a machine without CUDA
    cases = [(["score", scan, "--out", tmp_path / "out", *TINY, "--device", missing], "--device cpu"),
             (["predict", REPO / "examples" / "images", "--out", tmp_path / "out", *TINY_MODEL, "--device", "tpu"],
              "--device auto, cpu, cuda, cuda:N or mps")]
    for argv, advice in cases:
        proc = _cli(*argv)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and advice in proc.stderr
        assert "device='cpu'" not in proc.stderr  # the advice is the flag, not Python
        assert not (tmp_path / "out").exists()
    bundle = _bundle_run("inference.json", "--dataset_dir", scan, "--output_dir", tmp_path / "bundle_out",
                         "--backbone", TINY_CLIP_JSON, "--backbone_weights", "none", "--prompts", "untrained",
                         "--device", missing)
    assert bundle.returncode == 2 and "Traceback" not in bundle.stderr, bundle.stderr[-3000:]
    errors = [line for line in bundle.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--device cpu" in errors[0], bundle.stderr[-3000:]
    assert not (tmp_path / "bundle_out").exists()


HEAVY = ("torch", "monai", "open_clip")


def _imported(proc):
    """Top-level packages that ``python -X importtime`` reports importing."""
    return {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("argv", [["--help"], ["score", "--help"], ["score", "scan.nii.gz"],
                                  ["evaluate", "--dataset", "nope", "root", "--out", "o"], ["train", "--help"],
                                  ["predict", "x.png", "--out", "o", "--precision", "fp64"], ["export-bundle", "-h"],
                                  ["calibrate", "--help"]])
def test_help_and_argument_errors_import_no_torch_monai_or_open_clip(argv):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "anomalyclip_med", *argv], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "anomalyclip_med" in _imported(proc) and not set(HEAVY) & _imported(proc)


@pytest.mark.parametrize("command", [["score", "--out", "o"], ["predict", "--out", "o"], ["calibrate", "--out", "c.json"],
                                     ["evaluate", "--dataset", "manifest", "--out", "o"]])
def test_a_wrong_input_path_is_one_error_line_before_torch_imports(command, tmp_path):
    """A mistyped input path is reported at once (one error line naming it, exit 2), before the run's heavy modules
    import, not after the tens of seconds torch, MONAI and open_clip take to load."""
    missing = tmp_path / "no_such_scan.nii.gz"
    argv = [*command[:1], str(missing), *command[1:]]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "anomalyclip_med", *argv], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and errors == [f"error: Input '{missing}' does not exist."], proc.stderr[-2000:]
    assert not set(HEAVY) & _imported(proc)


def test_the_package_imports_its_network_on_first_use():
    code = ("import sys, anomalyclip_med; heavy = [m for m in {heavy} if m in sys.modules]; "
            "from anomalyclip_med import AnomalyCLIP, AnomalyCLIPConfig; import torch; "
            "print(heavy, issubclass(AnomalyCLIP, torch.nn.Module), AnomalyCLIPConfig().image_size)").format(heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["[]", "True", "518"], proc.stderr[-2000:]
