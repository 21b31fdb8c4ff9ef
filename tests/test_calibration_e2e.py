"""calibrate -> score -> evaluate on scans as a user runs them (subprocesses), on the command line and through the
MONAI bundle, with a calibration on synthetic normal volumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from anomalyclip_med.calibration import Calibration
from conftest import TESTS, TINY_CLIP_JSON
from scan_data import normal_volume

REPO = TESTS.parent
BUNDLE = REPO / "bundles" / "anomalyclip_zeroshot"
TINY = ["--backbone", str(TINY_CLIP_JSON), "--backbone-weights", "none", "--prompts", "untrained", "--image-size", "56"]
BUNDLE_TINY = ["--backbone", str(TINY_CLIP_JSON), "--backbone_weights", "none", "--image_size", "56", "--prompts",
               "untrained"]
N_NORMALS = 20  # a 0.05 flag needs >= 19 normals per level


def _run(*args, bundle: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    head = [sys.executable, "-m", "monai.bundle", "run"] if bundle else [sys.executable, "-m", "anomalyclip_med"]
    return subprocess.run([*head, *map(str, args)], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    (root / "normals").mkdir()
    for i in range(N_NORMALS):
        normal_volume(root / "normals" / f"n{i:02d}.nii.gz", i)
    (root / "new").mkdir()
    new = [normal_volume(root / "new" / f"normal{i}.nii.gz", 100 + i) for i in range(2)]
    new.append(normal_volume(root / "new" / "lesion.nii.gz", 200, lesion=True))
    lines = ["image,label"] + [f"{p},{int('lesion' in p.name)}" for p in new]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def _check_scores(report: dict, calibration: Calibration, target: float = 0.05) -> None:
    """The p-values and flags in a scores JSON follow from the calibration file and the report's own scores."""
    slices = np.array(report["slice_scores"])
    scored = np.array(report["scored"])
    p = np.array(report["slice_p_values"])
    np.testing.assert_allclose(p[scored], calibration.levels["slice"].p_values(slices[scored]), atol=2e-6)
    assert (p[~scored] == 1).all()
    assert report["slice_flags"] == [bool(s and v <= target) for s, v in zip(scored, p)]
    assert report["scan_p_value"] == pytest.approx(calibration.levels["scan"].p_values([report["scan_score"]])[0])
    assert report["scan_flag"] == (report["scan_p_value"] <= target)
    cal = report["calibration"]
    assert cal["sha256"] == calibration.sha256 and cal["n_normal"]["scan"] == N_NORMALS
    assert report["threshold"] == cal["thresholds"]["voxel"] == calibration.levels["voxel"].threshold(target)


def test_calibrate_score_evaluate_on_the_command_line(cohort, tmp_path):
    cal_path = tmp_path / "calibration.json"
    proc = _run("calibrate", cohort / "normals", "--out", cal_path, "--preset", "brain", "--no-progress", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"calibrated on {N_NORMALS} normal scans ({N_NORMALS} scored" in proc.stdout
    calibration = Calibration.load(cal_path)
    assert calibration.counts["cases"] == N_NORMALS and calibration.counts["slices"] == N_NORMALS * 8
    assert calibration.scoring["preset"] == "brain" and calibration.model["config"]["image_size"] == 56

    # score with the map written as calibrated voxel p-values
    out = tmp_path / "scored"
    proc = _run("score", cohort / "new", "--out", out, "--preset", "brain", "--calibration", cal_path, "--map",
                "calibrated", "--no-progress", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scan p-value" in proc.stdout
    reports = {c: json.loads((out / f"{c}_scores.json").read_text()) for c in ("normal0", "normal1", "lesion")}
    for case, report in reports.items():
        _check_scores(report, calibration)
        p_map = np.asarray(nib.load(out / f"{case}_anomaly_map.nii.gz").dataobj)
        seg = np.asarray(nib.load(out / f"{case}_anomaly_seg.nii.gz").dataobj)
        assert p_map.min() >= 1 / (1 + calibration.levels["voxel"].n) - 1e-9  # never 0
        np.testing.assert_array_equal(seg, (p_map <= 0.05).astype(np.uint8))  # labelmap = voxels with p <= rate

    # evaluate: the operating point at the calibrated thresholds beside AUROC/AP
    ev = tmp_path / "eval"
    proc = _run("evaluate", "--dataset", "manifest", cohort / "manifest.csv", "--out", ev, "--preset", "brain",
                "--calibration", cal_path, *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((ev / "cohort_summary.json").read_text())
    op = summary["operating_point"]
    flags = {c: json.loads(next((ev / "cases" / c).glob("*_scores.json")).read_text())["scan_flag"]
             for c in ("normal0", "normal1", "lesion")}
    assert flags == {c: r["scan_flag"] for c, r in reports.items()}
    assert op["n_anomalous"] == 1 and op["n_normal"] == 2
    assert op["true_positives"] == int(flags["lesion"]) and op["false_positives"] == flags["normal0"] + flags["normal1"]
    assert op["fpr_ci"][0] <= op["fpr"] <= op["fpr_ci"][1] and summary["scan_level"]["auroc"] is not None
    assert "Operating point at the calibrated scan threshold" in (ev / "cohort_report.md").read_text()
    # the p-value map is the calibration's p-values of the probability map (evaluate wrote that one)
    amap = np.asarray(nib.load(next((ev / "cases" / "lesion").glob("*_anomaly_map.nii.gz"))).dataobj)
    p_map = np.asarray(nib.load(out / "lesion_anomaly_map.nii.gz").dataobj)
    np.testing.assert_allclose(p_map, calibration.levels["voxel"].p_values(amap), rtol=1e-6)

    # a calibration made with other scoring options is refused with one line naming the difference
    proc = _run("score", cohort / "new", "--out", tmp_path / "refused", "--preset", "brain", "--z-smooth", "2",
                "--calibration", cal_path, *TINY)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "scoring.z_smooth: calibrated with 0.0, this run has 2.0" in errors[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "refused").exists()


def test_calibrate_and_infer_through_the_bundle(cohort, tmp_path):
    cal_path = tmp_path / "bundle_calibration.json"
    proc = _run("--config_file", BUNDLE / "configs" / "calibrate.json", "--bundle_root", BUNDLE, "--dataset_dir",
                cohort / "normals", "--calibration", cal_path, "--preset", "brain", "--progress", "false",
                "--device", "cpu", *BUNDLE_TINY, bundle=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    calibration = Calibration.load(cal_path)
    assert calibration.counts["cases"] == N_NORMALS and calibration.kind == "scans"
    out = tmp_path / "bundle_out"
    proc = _run("--config_file", BUNDLE / "configs" / "inference.json", "--bundle_root", BUNDLE, "--dataset_dir",
                cohort / "new", "--output_dir", out, "--preset", "brain", "--calibration", cal_path, "--progress",
                "false", "--device", "cpu", *BUNDLE_TINY, bundle=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(next(out.rglob("lesion_scores.json")).read_text())
    _check_scores(report, calibration)
    amap = np.asarray(nib.load(next(out.rglob("lesion_anomaly_map.nii.gz"))).dataobj)
    seg = np.asarray(nib.load(next(out.rglob("lesion_anomaly_seg.nii.gz"))).dataobj)
    np.testing.assert_array_equal(seg, (amap >= np.float32(report["threshold"])).astype(np.uint8))
