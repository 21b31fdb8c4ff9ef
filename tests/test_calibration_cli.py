"""``calibrate`` then ``predict`` / ``evaluate`` with ``--calibration`` on 2D images, run through the command line's
``main`` in this process (real files, real model: no start-up cost per command)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import synthetic_trees as trees
from anomalyclip_med.calibration import Calibration
from anomalyclip_med.runs.calibrate import parts_dir
from anomalyclip_med.cli.main import main
from conftest import TINY_CLIP_JSON

TINY = ["--backbone", str(TINY_CLIP_JSON), "--backbone-weights", "none", "--prompts", "untrained", "--image-size", "56"]


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _calibrate_then_predict(normals, held_out, tmp_path, capsys):
    cal = tmp_path / "calibration.json"
    assert main(["calibrate", *map(str, normals), "--out", str(cal), "--no-progress", *TINY]) == 0
    calibration = Calibration.load(cal)
    assert calibration.kind == "images" and calibration.counts["cases"] == len(normals)
    assert calibration.levels["image"].n == len(normals) and len(list(parts_dir(cal).iterdir())) == len(normals)
    out = tmp_path / "pred"
    assert main(["predict", *map(str, held_out), "--out", str(out), "--calibration", str(cal), *TINY]) == 0
    rows = _csv(out / "scores.csv")
    assert len(rows) == len(held_out)
    for row in rows:
        p = float(row["p_value"])
        count = round(p * (len(normals) + 1)) - 1  # p = (1 + normals at least as high) / (1 + n)
        assert 0 <= count <= len(normals) and p == pytest.approx((1 + count) / (1 + len(normals)))
        assert (row["flag"] == "True") == (p <= 0.05)
    return calibration, rows


def test_calibrate_predict_on_synthetic_images(tmp_path, capsys):
    images = [trees.image(tmp_path / "in" / f"{i:02d}.png", size=(48, 40), seed=i) for i in range(45)]
    calibration, rows = _calibrate_then_predict(images[:39], images[39:], tmp_path, capsys)
    decision_threshold = calibration.levels["image"].threshold(0.05)
    assert all((row["flag"] == "True") == (float(row["image_score"]) >= decision_threshold - 1e-6) for row in rows
               if abs(float(row["image_score"]) - decision_threshold) > 1e-5)
    # resume: nothing is scored again; the result is the same file content
    before = (tmp_path / "calibration.json").read_text()
    capsys.readouterr()
    assert main(["calibrate", *map(str, images[:39]), "--out", str(tmp_path / "calibration.json"), "--continue",
                 "--no-progress", *TINY]) == 0
    assert "(0 scored, 39 reused, 0 failed)" in capsys.readouterr().out
    assert (tmp_path / "calibration.json").read_text() == before
    # the same calibration with another model or other options is refused with one line naming the difference
    assert main(["predict", str(images[40]), "--out", str(tmp_path / "p2"), "--calibration",
                 str(tmp_path / "calibration.json"), *TINY[:-1], "112"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error:")]) == 1
    assert "model.config.image_size: calibrated with 56, this run has 112" in err[-1]
    # an existing output is not replaced without --overwrite
    assert main(["calibrate", *map(str, images[:2]), "--out", str(tmp_path / "calibration.json"), *TINY]) == 2
    assert "exists (and 2 more); pass --continue" in capsys.readouterr().err


def test_evaluate_reports_the_operating_point_on_a_bmad_tree(tmp_path, capsys):
    """BMAD's normal-only train split calibrates; evaluate on its test split reports the operating point."""
    root = trees.bmad(tmp_path / "liver", pixel=True)
    for i in range(20):  # enough normals for a 0.05 threshold
        trees.image(root / "train" / "good" / "img" / f"{100 + i:05d}_1.png", seed=100 + i)
    cal = tmp_path / "cal.json"
    assert main(["calibrate", str(root), "--dataset", "bmad-liver", "--out", str(cal), "--no-progress", *TINY]) == 0
    assert Calibration.load(cal).counts["cases"] == 23
    out = tmp_path / "eval"
    assert main(["evaluate", "--dataset", "bmad-liver", str(root), "--out", str(out), "--calibration", str(cal),
                 *TINY]) == 0
    report = json.loads((out / "bmad-liver_metrics.json").read_text())
    assert report["metric_set"] == "bmad" and report["calibration"]["n_normal"]["image"] == 23
    op = report["operating_point"]["all"]
    images = _csv(out / "bmad-liver_images.csv")
    flags = np.array([r["flag"] == "True" for r in images])
    labels = np.array([int(r["label"]) for r in images])
    assert op["true_positives"] == int((flags & (labels == 1)).sum())
    assert op["false_positives"] == int((flags & (labels == 0)).sum())
    assert op["sensitivity_ci"][0] <= op["sensitivity"] <= op["sensitivity_ci"][1]
    md = (out / "bmad-liver_metrics.md").read_text()
    assert "| class | image AUROC | pixel AUROC | pixel AUPRO |" in md and "Operating point" in md
