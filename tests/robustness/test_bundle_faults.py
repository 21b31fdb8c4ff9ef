"""
Issue 10 for the bundle's ``inference.json`` (``python -m monai.bundle run``), as for ``score``: every bad scan of
the reading suite fails alone with one ``error:`` line naming it and the batch goes on (exit 2); a run SIGKILLed
between the renames that publish a case leaves cases whole or unfinished, and ``--continue true`` completes them,
reusing the finished ones byte for byte; existing outputs and a locked output folder are refused before anything
is written.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from faults import (AFFINE, REPO, bad_dicom_series, bad_volume_files, dicom_series, error_lines, good_volume,
                    save_nifti, the_error_for)

from anomalyclip_med.io.case_outputs import read_finished_case
from anomalyclip_med.utils.atomic import is_temporary
from anomalyclip_med.utils.lock import FolderLock

CONFIG = REPO / "bundles" / "anomalyclip_zeroshot" / "configs" / "inference.json"
KILLER = Path(__file__).with_name("killer.py")
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
TINY = ["--backbone", str(REPO / "tests" / "data" / "tiny_clip.json"), "--backbone_weights", "none", "--image_size",
        "56", "--prompts", "untrained", "--progress", "false"]


def _args(dataset_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--config_file", str(CONFIG), "--bundle_root", str(CONFIG.parent.parent), "--dataset_dir",
            str(dataset_dir), "--output_dir", str(out), *TINY, *extra]


def _bundle(dataset_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", *_args(dataset_dir, out, *extra)], env=ENV,
                          capture_output=True, text=True, timeout=600)


def _outputs(out: Path, case: str) -> dict[str, Path]:
    return {k: out / f"{case}{s}" for k, s in (("map", "_anomaly_map.nii.gz"), ("seg", "_anomaly_seg.nii.gz"),
                                               ("scores", "_scores.json"), ("montage", "_overlay.png"))}


def _files(out: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    """Every bad scan of the reading suite and two good ones, listed by absolute path in a datalist."""
    root = tmp_path_factory.mktemp("bundle_faults")
    volumes = bad_volume_files(root / "volumes")
    series = bad_dicom_series(root / "dicom")
    good = [save_nifti(good_volume(2), AFFINE, root / "good_nifti.nii.gz"), root / "good_dicom"]
    dicom_series(good[1], seed=3)
    images = [good[0], *(p for p, _ in volumes.values()), *(root / "dicom" / n for n in series), good[1]]
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps({"testing": [{"image": str(p)} for p in images]}))
    out = root / "out"
    return _bundle(datalist, out), {**volumes, **series}, out


def test_the_bundle_goes_on_past_every_bad_scan_and_exits_2(bad_run):
    proc, faults, out = bad_run
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(error_lines(proc.stderr)) == len(faults) == 34
    for name, (path, message) in faults.items():
        line = the_error_for(proc.stderr, name)
        assert re.search(re.escape(str(path)) + "'? " + message, line), line
        assert not list(out.rglob(f"{name}_*")), f"{name}: a failed case left outputs"
    for case in ("good_nifti", "good_dicom"):
        assert read_finished_case(_outputs(out, case)) is not None, case
    assert f"2 scored, 0 reused, 34 failed of 36 case(s) in {out}" in proc.stdout


@pytest.fixture(scope="module")
def two_scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle_kill")
    data = root / "data"
    data.mkdir()
    for k in range(2):
        save_nifti(good_volume(10 + k), AFFINE, data / f"scan_{k}.nii.gz")
    return data


def test_a_bundle_run_killed_between_renames_is_completed_by_continue(two_scans, tmp_path):
    out = tmp_path / "out"
    # 4 outputs per case, renamed into place one by one: the 6th rename is in the middle of publishing scan_1
    killed = subprocess.run([sys.executable, str(KILLER), "replace", "6", str(out), "monai.bundle",
                             *_args(two_scans, out)], env=ENV, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert read_finished_case(_outputs(out, "scan_0")) is not None
    assert read_finished_case(_outputs(out, "scan_1")) is None  # some outputs published, not its scores JSON
    assert any(is_temporary(p.name) for p in out.iterdir())
    finished = {k: v for k, v in _files(out).items() if k.startswith("scan_0")}

    refused = _bundle(two_scans, out)  # without continue/overwrite, outputs that exist are never replaced
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert len(error_lines(refused.stderr)) == 1 and "continue" in refused.stderr
    assert "WARNING: the backbone has RANDOM" not in refused.stdout  # refused before the network was built

    resumed = _bundle(two_scans, out, "--continue", "true")
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert f"1 scored, 1 reused, 0 failed of 2 case(s) in {out}" in resumed.stdout
    assert "scan_0: scan score" in resumed.stdout and "(reused)" in resumed.stdout
    assert {k: v for k, v in _files(out).items() if k.startswith("scan_0")} == finished  # not rewritten
    assert read_finished_case(_outputs(out, "scan_1")) is not None
    assert not [p for p in out.iterdir() if is_temporary(p.name)], "a killed run's temporaries were left"


def test_a_locked_output_folder_is_refused_naming_the_holder(two_scans, tmp_path):
    out = tmp_path / "out"
    lock = FolderLock(out).acquire()  # another run holding the folder (this process)
    try:
        proc = _bundle(two_scans, out)
    finally:
        lock.release()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(error_lines(proc.stderr)) == 1 and str(os.getpid()) in proc.stderr, proc.stderr
    assert not [p for p in out.rglob("*") if not p.name.startswith(".")]
