"""Batch runs as a hospital runs them (``score`` in a subprocess on real files): a case fails alone, outputs are
whole or absent, one run per output folder, cases named and placed by one rule, resume after a kill."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TESTS, TINY_CLIP_JSON
from scan_data import save_nifti, synthetic_head_ct, write_dicom_series

REPO = TESTS.parent
TINY = ["--backbone", str(TINY_CLIP_JSON), "--backbone-weights", "none", "--prompts", "untrained", "--image-size", "56",
        "--no-progress"]
SHAPE = (20, 18, 8)
OUTPUT_SUFFIXES = ("_anomaly_map.nii.gz", "_anomaly_seg.nii.gz", "_overlay.png", "_scores.json")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _command(*args) -> list[str]:
    return [sys.executable, "-m", "anomalyclip_med", "score", *map(str, args), *TINY]


def _score(*args) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), env=_env(), capture_output=True, text=True, timeout=300)


def _scan(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_nifti(synthetic_head_ct(shape=SHAPE, seed=seed), np.eye(4), path)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _case_files(folder: Path, case: str) -> list[str]:
    return sorted(f"{case}{s}" for s in OUTPUT_SUFFIXES)


def test_cases_fail_alone_are_named_by_one_rule_and_resume_on_the_same_settings_only(tmp_path):
    """Issue 10 (a case fails alone on any exception, exit 2), issue 11 (same-named BraTS-style inputs, nested
    folders mirrored, resume keyed on input/model/options, existing outputs refused)."""
    data = tmp_path / "brats"
    for i in range(2):
        _scan(data / f"case_{i}" / "FLAIR.nii.gz", seed=i)
    _scan(data / "solo.nii.gz", seed=5)
    (data / "case_1" / "broken.nii.gz").write_bytes(b"\x1f\x8b not a gzip NIfTI")  # the package's own error
    np.save(data / "case_1" / "array.npy", np.zeros((4, 4, 4)))
    (data / "case_1" / "array.npy").rename(data / "case_1" / "npy.nii.gz")  # a .npy named .nii.gz
    out = tmp_path / "out"

    proc = _score(data, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert sorted(e.split(":")[1].strip() for e in errors) == ["broken", "npy"], proc.stderr
    assert all("nii.gz" in e for e in errors)  # each names its file
    assert "3 scored, 0 reused, 2 failed of 5 case(s)" in proc.stdout
    for case, folder in (("case_0_FLAIR", "case_0"), ("case_1_FLAIR", "case_1"), ("solo", "")):
        assert f"{case}: scan score" in proc.stdout
        written = sorted(p.name for p in (out / folder).iterdir() if p.is_file())
        assert set(_case_files(out, case)) <= set(written), written
    assert sorted(p.name for p in (out / "case_1").iterdir()) == _case_files(out, "case_1_FLAIR")  # no debris
    report = json.loads((out / "case_0" / "case_0_FLAIR_scores.json").read_text())
    assert report["case_id"] == "case_0_FLAIR"
    assert report["input"]["size"] == (data / "case_0" / "FLAIR.nii.gz").stat().st_size
    listed = report["output_files"]
    assert {v["name"] for v in listed.values()} == set(_case_files(out, "case_0_FLAIR")) - {"case_0_FLAIR_scores.json"}
    for item in listed.values():
        blob = (out / "case_0" / item["name"]).read_bytes()
        assert item["size"] == len(blob) and item["sha256"] == hashlib.sha256(blob).hexdigest()
    before = _digests(out)

    # without --continue / --overwrite, existing outputs are refused before any weights load
    refused = _score(data, "--out", out)
    assert refused.returncode == 2 and "--continue" in refused.stderr and "RANDOM" not in refused.stdout
    # the bad files repaired, an option that changes the outputs, a damaged output, a changed input:
    (data / "case_1" / "broken.nii.gz").unlink()
    (data / "case_1" / "npy.nii.gz").unlink()
    damaged = out / "case_1" / "case_1_FLAIR_anomaly_seg.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    _scan(data / "solo.nii.gz", seed=6)
    again = _score(data, "--out", out, "--continue")
    assert again.returncode == 0, again.stderr
    assert "2 scored, 1 reused, 0 failed of 3 case(s)" in again.stdout
    after = _digests(out)
    assert all(after[k] == before[k] for k in before if k.startswith("case_0/"))  # reused byte for byte
    assert after["case_1/case_1_FLAIR_anomaly_seg.nii.gz"] == before["case_1/case_1_FLAIR_anomaly_seg.nii.gz"]
    changed = _score(data, "--out", out, "--continue", "--threshold", "0.3")
    assert changed.returncode == 0 and "3 scored, 0 reused" in changed.stdout, changed.stdout
    assert json.loads((out / "case_0" / "case_0_FLAIR_scores.json").read_text())["threshold"] == 0.3


def _hold_lock(folder: Path) -> subprocess.Popen:
    code = ("import sys, time; from anomalyclip_med.utils.lock import FolderLock; "
            f"FolderLock({str(folder)!r}).acquire(); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], env=_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_one_run_per_output_folder_and_stale_temporaries_removed(tmp_path):
    scan = _scan(tmp_path / "in" / "head.nii.gz")
    out = tmp_path / "out"
    holder = _hold_lock(out)
    try:
        proc = _score(scan, "--out", out)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"in use by another run (pid {holder.pid})" in proc.stderr
        assert not list(out.glob("head*"))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    stale = out / ".head_anomaly_map.abcd1234.partial.nii.gz"  # a killed run's temporary
    stale.write_bytes(b"half a file")
    proc = _score(scan, "--out", out)  # the dead holder's lock is taken over
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == _case_files(out, "head")  # temporaries and lock file gone


def test_sigkilled_continue_batch_resumes_complete_with_finished_cases_reused(tmp_path):
    data = tmp_path / "scans"
    for i in range(6):
        _scan(data / f"scan{i}.nii.gz", seed=i)
    out = tmp_path / "out"
    proc = subprocess.Popen(_command(data, "--out", out, "--continue"), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(list(out.glob("*_scores.json"))) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name[: -len("_scores.json")] for p in out.glob("*_scores.json"))
    assert 2 <= len(finished) < 6, "the kill came too late to interrupt the batch"
    kept = {k: v for k, v in _digests(out).items() if k.startswith(tuple(f"{c}_" for c in finished))}

    again = _score(data, "--out", out, "--continue")
    assert again.returncode == 0, again.stderr
    assert f"{6 - len(finished)} scored, {len(finished)} reused, 0 failed of 6 case(s)" in again.stdout
    after = _digests(out)
    assert sorted(after) == sorted(f"scan{i}{s}" for i in range(6) for s in OUTPUT_SUFFIXES)  # all whole, no debris
    assert {k: after[k] for k in kept} == kept  # the finished ones reused byte for byte


@pytest.mark.parametrize("kind", ["non-DICOM", "no FrameOfReferenceUID"])
def test_dicom_seg_is_refused_before_weights_load(tmp_path, kind):
    if kind == "non-DICOM":
        source = _scan(tmp_path / "head.nii.gz")
    else:
        source = tmp_path / "series"
        for f in write_dicom_series(synthetic_head_ct(shape=(16, 16, 4)), np.eye(4), source):
            import pydicom

            ds = pydicom.dcmread(f)
            del ds.FrameOfReferenceUID
            ds.save_as(f)
    proc = _score(source, "--out", tmp_path / "out", "--dicom-seg")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("error:") == 1 and "DICOM SEG" in proc.stderr
    assert ("FrameOfReferenceUID" in proc.stderr) == (kind != "non-DICOM")
    assert "RANDOM" not in proc.stdout  # no model was built
    assert not (tmp_path / "out").exists()  # and nothing was left behind
