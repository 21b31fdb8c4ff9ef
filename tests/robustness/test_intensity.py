"""
Issue 19 kind 4: intensities that a few voxels cannot derail. One ``score`` run over a clean scan, the same scan with
a few extreme voxels in its air (hot, cold, both), a scan without a finite voxel and a constant one.

The extreme voxels must not move the body/air threshold: the same slices are scored and the body mask is the same
as the clean scan's. A scan with nothing to score is no normal scan: a warning line names it and its scores JSON
says why (``scan_problem``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SHARED
from faults import AFFINE, PROMPTS, SHAPE, TINY, good_volume, run_cli, save_nifti

# air voxels of the synthetic head (slice 0 is air only) set to extreme values
EXTREMES = {"hot": (1e7,), "cold": (-1e7,), "hot_and_cold": (3e4, -3e4, 1e9)}
BRATS_FLAIR = SHARED / "data" / "volumes" / "brats2018" / "case_0" / "FLAIR.nii.gz"


def _with_extremes(values: tuple[float, ...]) -> np.ndarray:
    vol = good_volume(1)
    for i, v in enumerate(values):
        vol[2 + 3 * i, 1, 0] = v
        vol[3, 2 + 3 * i, -1] = v
    return vol


@pytest.fixture(scope="module")
def intensity_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("intensity")
    scans = root / "scans"
    scans.mkdir()
    save_nifti(good_volume(1), AFFINE, scans / "clean.nii.gz")
    for name, values in EXTREMES.items():
        save_nifti(_with_extremes(values), AFFINE, scans / f"{name}.nii.gz")
    save_nifti(np.full(SHAPE, np.nan, np.float32), AFFINE, scans / "all_nan.nii.gz")
    save_nifti(np.zeros(SHAPE, np.float32), AFFINE, scans / "all_zero.nii.gz")
    out = root / "out"
    proc = run_cli("score", scans, "--out", out, *TINY, *PROMPTS, "--no-progress")
    reports = {p.name[: -len("_scores.json")]: json.loads(p.read_text()) for p in out.glob("*_scores.json")}
    return proc, reports


def test_the_run_scores_every_scan(intensity_run):
    proc, reports = intensity_run
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert set(reports) == {"clean", *EXTREMES, "all_nan", "all_zero"}


@pytest.mark.parametrize("name", EXTREMES)
def test_a_few_extreme_voxels_do_not_move_the_body_threshold(intensity_run, name):
    _, reports = intensity_run
    clean, faulty = reports["clean"], reports[name]
    assert clean["scored"] == [False] * 4 + [True] * 4 + [False] * 4  # the head's slices
    assert faulty["scored"] == clean["scored"]
    # the body is the clean scan's, give or take the extreme voxels themselves (a hot one is above the threshold)
    assert abs(faulty["slicing"]["body_voxels"] - clean["slicing"]["body_voxels"]) <= 2 * len(EXTREMES[name])
    assert abs(faulty["slicing"]["foreground_threshold"] - clean["slicing"]["foreground_threshold"]) < 50
    assert faulty["scan_score"] > 0 and faulty["scan_problem"] is None


@pytest.mark.parametrize("name, why", [("all_nan", "no finite voxel"), ("all_zero", "one intensity only")])
def test_a_scan_with_nothing_to_score_is_reported_as_such(intensity_run, name, why):
    proc, reports = intensity_run
    assert why in reports[name]["scan_problem"]
    assert not any(reports[name]["scored"])
    warnings = [line for line in proc.stderr.splitlines() if f"{name}: not a normal scan" in line]
    assert len(warnings) == 1 and why in warnings[0], proc.stderr[-3000:]
    assert reports["clean"]["scan_problem"] is None


@pytest.mark.skipif(not BRATS_FLAIR.exists(), reason=f"real BraTS scan not found ({BRATS_FLAIR}): ../shared absent")
def test_a_real_scan_keeps_its_slices_and_body_with_extreme_voxels():
    from anomalyclip_med.io.scans import load_volume
    from anomalyclip_med.transforms.slicing import BodyMask, SliceForeground

    scan = load_volume(BRATS_FLAIR)
    spoiled = scan.clone()
    air = np.flatnonzero(scan.numpy().reshape(-1) == 0)[:: 100_000]  # a few background voxels, spread out
    spoiled.as_tensor().view(-1)[air] = 1e7
    for transform in (SliceForeground(), BodyMask()):
        clean, faulty = transform(scan), transform(spoiled)
        changed = int((clean != faulty).sum())
        assert changed <= len(air) and clean.sum() > 0, (type(transform).__name__, changed)


def test_the_threshold_reads_past_extremes_in_memory():
    """The same rule on a made-up array: air and tissue split, whatever a handful of voxels holds."""
    import torch

    from anomalyclip_med.transforms.slicing import SliceForeground

    vol = torch.from_numpy(_with_extremes((1e12, -1e12)))
    assert -1000 < SliceForeground().threshold_of(vol) < 40
    assert SliceForeground().threshold_of(torch.zeros(4, 4, 4)) is None

