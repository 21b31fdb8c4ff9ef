"""Where batch outputs go (issue 11: always under the output folder, mirroring the inputs, never into an input
folder) for every input kind in the CLI; cohort resume is keyed on
input, model, options, mask and label; benchmark evaluate refuses to overwrite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import synthetic_trees
from conftest import TESTS, TINY_CLIP_JSON
from evaluate_cli import read_json, run_evaluate
from scan_data import save_nifti, synthetic_head_ct, write_dicom_series

REPO = TESTS.parent
TINY_CLI = ["--backbone", str(TINY_CLIP_JSON), "--backbone-weights", "none", "--prompts", "untrained", "--image-size", "56",
            "--no-progress"]
SHAPE = (20, 18, 8)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], env=_env(), capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def _scan(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_nifti(synthetic_head_ct(shape=SHAPE, seed=seed), np.eye(4), path)


def _series(folder: Path) -> Path:
    write_dicom_series(synthetic_head_ct(shape=(16, 16, 4)), np.eye(4), folder)
    return folder


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _outputs(case: str, folder: str = "") -> list[str]:
    prefix = f"{folder}/" if folder else ""
    return [f"{prefix}{case}{s}" for s in ("_anomaly_map.nii.gz", "_anomaly_seg.nii.gz", "_overlay.png",
                                           "_scores.json")]


def test_cli_places_series_folders_mirrored_and_never_in_an_input_folder(tmp_path):
    root = tmp_path / "export"
    _series(root / "p1" / "ct")
    _series(root / "p2" / "visit" / "ct")
    direct = _series(tmp_path / "single_series")
    inputs_before = _files(tmp_path)
    out = tmp_path / "anomaly"
    proc = _run("-m", "anomalyclip_med", "score", root, direct, "--out", out, *TINY_CLI)
    assert proc.returncode == 0, proc.stderr
    # a folder of series is walked and mirrored; same-named series folders take their parents; a series given
    # directly is placed by its name
    assert _files(out) == sorted(_outputs("p1_ct", "p1") + _outputs("visit_ct", "p2/visit")
                                 + _outputs("single_series"))
    assert sorted(p for p in _files(tmp_path) if not p.startswith("anomaly/")) == inputs_before
    inside = _run("-m", "anomalyclip_med", "score", root, "--out", root / "p1" / "results", *TINY_CLI)
    assert inside.returncode == 2 and "inside the input folder" in inside.stderr and "Traceback" not in inside.stderr
    assert not (root / "p1" / "results").exists()


def test_cohort_resume_follows_mask_label_and_threshold_and_failures_exit_2(tmp_path):
    for i in range(2):
        vol = synthetic_head_ct(shape=SHAPE, seed=i)
        save_nifti(vol, np.eye(4), tmp_path / f"scan{i}.nii.gz")
        save_nifti((vol > 60).astype(np.uint8), np.eye(4), tmp_path / f"mask{i}.nii.gz")
    save_nifti(np.zeros(SHAPE, np.uint8), np.eye(4), tmp_path / "empty_mask.nii.gz")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("image,mask\nscan0.nii.gz,mask0.nii.gz\nscan1.nii.gz,mask1.nii.gz\n")
    out = tmp_path / "eval"
    first = run_evaluate("--dataset", "manifest", manifest, "--out", out, "--no-progress")
    assert first.returncode == 0, first.stderr
    assert read_json(out / "run.json")["cases"] == {"scored": 2, "rescored": 0, "reused": 0, "failed": 0}
    maps = {p: p.read_bytes() for p in (out / "cases").rglob("*_anomaly_map.nii.gz")}

    # another mask for one case: its metrics are recomputed from the same (reused) scan outputs
    manifest.write_text("image,mask\nscan0.nii.gz,mask0.nii.gz\nscan1.nii.gz,empty_mask.nii.gz\n")
    second = run_evaluate("--dataset", "manifest", manifest, "--out", out, "--no-progress")
    assert second.returncode == 0, second.stderr
    assert read_json(out / "run.json")["cases"] == {"scored": 0, "rescored": 1, "reused": 1, "failed": 0}
    assert read_json(out / "cases" / "scan1" / "metrics.json")["mask"].endswith("empty_mask.nii.gz")
    assert {p: p.read_bytes() for p in maps} == maps

    # another threshold changes the scan outputs: every case is scored again
    third = run_evaluate("--dataset", "manifest", manifest, "--out", out, "--no-progress", "--threshold", "0.3")
    assert read_json(out / "run.json")["cases"]["scored"] == 2, third.stderr

    # every case failing is a failure of the run
    (tmp_path / "bad.nii.gz").write_bytes(b"not a scan")
    bad = tmp_path / "bad.csv"
    bad.write_text("image\nbad.nii.gz\n")
    failed = run_evaluate("--dataset", "manifest", bad, "--out", tmp_path / "bad_eval", "--no-progress")
    assert failed.returncode == 2 and "error: bad:" in failed.stderr and "Traceback" not in failed.stderr


def test_benchmark_evaluate_refuses_to_overwrite_its_report(tmp_path):
    root = synthetic_trees.mvtec(tmp_path / "mvtec")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mvtec_metrics.md").write_text("an earlier report\n")
    proc = run_evaluate("--dataset", "mvtec", root, "--out", out)
    assert proc.returncode == 2 and "mvtec_metrics.md' exists" in proc.stderr and "--overwrite" in proc.stderr
    assert "RANDOM" not in proc.stdout  # refused before the model was built
    assert (out / "mvtec_metrics.md").read_text() == "an earlier report\n"
