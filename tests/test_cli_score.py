"""``anomalyclip-med score`` run as a user would: a subprocess on scan files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np

from conftest import TESTS, TINY_CLIP_JSON
from scan_data import oblique_affine, save_nifti, synthetic_head_ct

REPO = TESTS.parent
TINY = ["--backbone", str(TINY_CLIP_JSON), "--backbone-weights", "none", "--prompts", "untrained", "--image-size", "56",
        "--no-progress"]


def _score(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "anomalyclip_med", "score", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_score_cli_scores_good_scans_and_reports_bad_ones(tmp_path):
    good = save_nifti(synthetic_head_ct(), oblique_affine(), tmp_path / "good.nii.gz")
    dynamic = save_nifti(np.zeros((8, 8, 4, 2), np.float32), np.eye(4), tmp_path / "dynamic.nii.gz")
    out = tmp_path / "out"
    proc = _score(good, dynamic, "--out", out, *TINY, "--preset", "brain", "--window-width", "100",
                  "--axis", "0", "--threshold", "0.4", "--batch-size", "3")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: " in proc.stderr and "--volume-index" in proc.stderr and "dynamic.nii.gz" in proc.stderr
    assert "good: scan score" in proc.stdout and "1 scored, 0 reused, 1 failed of 2 case(s)" in proc.stdout
    assert "RANDOM" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["good_anomaly_map.nii.gz", "good_anomaly_seg.nii.gz",
                                                     "good_overlay.png", "good_scores.json"]
    report = json.loads((out / "good_scores.json").read_text())
    assert report["preset"] == {**report["preset"], "name": "brain", "level": 40.0, "width": 100.0}
    assert report["slicing"]["axis"] == 0 and report["threshold"] == 0.4
    assert len(report["slice_scores"]) == 48
    np.testing.assert_allclose(nib.load(out / "good_anomaly_map.nii.gz").affine, oblique_affine(), atol=1e-5)

    again = _score(good, "--out", out, *TINY)
    assert again.returncode == 2 and "exists" in again.stderr and "--overwrite" in again.stderr
    assert json.loads((out / "good_scores.json").read_text()) == report


def test_score_cli_refuses_a_missing_path_before_loading_weights(tmp_path):
    proc = _score(tmp_path / "nope.nii.gz", "--out", tmp_path / "out", *TINY)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert "RANDOM" not in proc.stdout + proc.stderr  # no model was built
    assert not (tmp_path / "out").exists()
