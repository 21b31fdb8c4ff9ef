"""Running ``anomalyclip-med evaluate`` as a user would (a subprocess, optionally under torchrun), for the tests."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import TESTS, TINY_CLIP_JSON

REPO = TESTS.parent
TINY = ["--backbone", str(TINY_CLIP_JSON), "--backbone-weights", "none", "--prompts", "untrained", "--image-size", "56"]


def evaluate_command(*args, nproc: int = 1) -> list[str]:
    """The command line of ``evaluate`` with the tiny backbone, under ``torchrun`` when ``nproc`` > 1."""
    launcher = [sys.executable, "-m", "anomalyclip_med"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                    "-m", "anomalyclip_med"]
    return [*launcher, "evaluate", *map(str, args), *TINY]


def child_env() -> dict[str, str]:
    """The repository first on the path; one thread per process so that runs are comparable and the 2 cores shared."""
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def run_evaluate(*args, nproc: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(evaluate_command(*args, nproc=nproc), env=child_env(), capture_output=True, text=True,
                          timeout=timeout)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def assert_dataset_report_consistent(out: Path, dataset: str) -> dict:
    """Every benchmark report file exists; per-class image metrics and the means follow from the per-image CSV."""
    import numpy as np
    import pytest
    from sklearn.metrics import average_precision_score, roc_auc_score

    for suffix in ("_metrics.md", "_metrics.csv", "_metrics.json", "_images.csv"):
        assert (out / f"{dataset}{suffix}").is_file(), suffix
    assert (out / "run.json").is_file()
    table = read_json(out / f"{dataset}_metrics.json")
    rows = read_csv(out / f"{dataset}_images.csv")
    csv_rows = {r["name"]: r for r in read_csv(out / f"{dataset}_metrics.csv")}
    for cls, m in table["classes"].items():
        labels = [int(r["label"]) for r in rows if r["cls_name"] == cls]
        scores = [float(r["image_score"]) for r in rows if r["cls_name"] == cls]
        assert m["n_images"] == len(labels) and m["n_anomalous"] == sum(labels)
        if 0 < sum(labels) < len(labels):
            assert m["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
            assert m["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
            assert float(csv_rows[cls]["image_auroc"]) == pytest.approx(m["image_auroc"])
    for key, value in table["mean"].items():
        if key.startswith(("image_", "pixel_", "aupro")) and value is not None:
            assert value == pytest.approx(np.mean([m[key] for m in table["classes"].values() if m.get(key) is not None]))
    return table


def assert_cohort_report_consistent(out: Path) -> tuple[dict, list[dict]]:
    """Every cohort report file and figure exists; rows match the case files; the summary follows from the rows."""
    import numpy as np
    import pytest
    from sklearn.metrics import average_precision_score, roc_auc_score

    from anomalyclip_med.evaluation.cohort_report import REPORT_FILES

    for name in REPORT_FILES.values():
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = read_json(out / "cohort_summary.json")
    rows = read_csv(out / "cohort_cases.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    assert summary["n_cases"] == len(rows) and summary["n_ok"] == len(ok)
    assert [f["case_id"] for f in summary["failed"]] == [r["case_id"] for r in rows if r["status"] != "ok"]
    for r in ok:  # each row matches the case's own files
        scores = read_json(out / r["scores"])
        metrics = read_json(out / "cases" / r["case_id"] / "metrics.json")
        assert float(r["scan_score"]) == pytest.approx(scores["scan_score"]) == metrics["scan_score"]
        assert int(r["predicted_voxels"]) == scores["anomalous_voxels"]
        assert (out / r["map"]).is_file() and (out / r["seg"]).is_file()
    labelled = [r for r in ok if r["label"] != ""]
    labels = np.array([int(r["label"]) for r in labelled])
    scan_scores = np.array([float(r["scan_score"]) for r in labelled])
    if 0 < labels.sum() < labels.size:
        assert summary["scan_level"]["auroc"] == pytest.approx(roc_auc_score(labels, scan_scores))
        assert summary["scan_level"]["ap"] == pytest.approx(average_precision_score(labels, scan_scores))
    lesion = [r for r in ok if r["lesion_voxels"] not in ("", "0")]
    assert summary["voxel_level"]["n_with_lesion"] == len(lesion)
    if lesion:
        assert summary["voxel_level"]["dice_mean"] == pytest.approx(np.mean([float(r["dice"]) for r in lesion]))
        assert summary["voxel_level"]["voxel_auroc_median"] == pytest.approx(
            np.median([float(r["voxel_auroc"]) for r in lesion]))
    # worst misses = anomalous scans with the lowest scan scores
    lowest = sorted((float(r["scan_score"]), r["case_id"]) for r in ok if r["label"] == "1")
    assert summary["worst_misses"] == [c for _, c in lowest][: len(summary["worst_misses"])]
    assert len(summary["worst_misses"]) == min(6, len(lowest))
    report = (out / "cohort_report.md").read_text()
    assert f"{len(rows)} cases: {len(ok)} evaluated, {len(rows) - len(ok)} failed" in report
    return summary, rows
