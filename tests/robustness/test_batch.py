"""
Issue 10 items 6-9 (batch side): a case fails alone on any exception (a full disk), outputs are whole or absent
when a run is killed with SIGKILL between the renames that publish them, one run at a time per output folder,
temporaries of killed runs are removed, and ``evaluate`` exits 2 when every case failed.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from faults import (AFFINE, PROMPTS, REPO, TINY, error_lines, good_volume, png_bytes, run_cli, save_nifti,
                    the_error_for)
from scan_data import synthetic_head_ct

from anomalyclip_med.inference.scan import expected_outputs
from anomalyclip_med.io.case_outputs import read_finished_case
from anomalyclip_med.utils.atomic import is_temporary

KILLER = Path(__file__).with_name("killer.py")
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
SCORE = [*TINY, *PROMPTS, "--no-progress"]


def _outputs(out: Path, case: str) -> dict[str, Path]:
    """The case's output paths, wherever the runner placed its folder under ``out``."""
    written = next((p for p in out.rglob(f"{case}_*") if not is_temporary(p.name)), out / case)
    return expected_outputs(Path(f"{case}.nii.gz"), written.parent, False, case)


def _temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if is_temporary(p.name)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two scans scored into a folder: the state a killed --overwrite run starts from."""
    root = tmp_path_factory.mktemp("batch")
    scans = [save_nifti(good_volume(seed), AFFINE, root / f"scan_{k}.nii.gz") for k, seed in enumerate((5, 6))]
    out = root / "out"
    proc = run_cli("score", *scans, "--out", out, *SCORE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return scans, out


@pytest.mark.parametrize("op, n", [("remove", 1), ("replace", 2)])
def test_a_run_killed_between_renames_leaves_cases_whole_or_unfinished(finished, tmp_path, op, n):
    scans, reference = finished
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = {case: read_finished_case(_outputs(out, case)) for case in ("scan_0", "scan_1")}
    assert all(before.values())
    killed = subprocess.run([sys.executable, str(KILLER), op, str(n), str(out), "anomalyclip_med", "score", *map(
        str, scans), "--out", str(out), "--overwrite", *SCORE], env=ENV, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # the first case was being published: its old scores JSON is gone, so it is not taken as finished with a mix
    # of old and new files; the second was not touched
    assert not _outputs(out, "scan_0")["scores"].exists()
    assert read_finished_case(_outputs(out, "scan_1")) == before["scan_1"]
    proc = run_cli("score", *scans, "--out", out, "--continue", *SCORE)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not _temporaries(out), "a killed run's temporaries were left"
    for case in ("scan_0", "scan_1"):
        report = read_finished_case(_outputs(out, case))
        assert report is not None and report["slice_scores"] == before[case]["slice_scores"]
        new, old = (nib.load(_outputs(d, case)["map"]).get_fdata() for d in (out, reference))
        np.testing.assert_array_equal(new, old)


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(finished, tmp_path):
    scans, _ = finished
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "anomalyclip_med", "score", *map(str, scans), "--out", str(out),
                              *SCORE], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not any(out.glob(".*lock*")) and first.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGSTOP)  # the holder stays alive (and holds the lock) while the second starts
        second = run_cli("score", *scans, "--out", out, "--overwrite", *SCORE)
    finally:
        os.kill(first.pid, signal.SIGCONT)
        _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert len(error_lines(second.stderr)) == 1 and str(first.pid) in second.stderr, second.stderr
    assert all(read_finished_case(_outputs(out, case)) for case in ("scan_0", "scan_1"))


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG (a full disk)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_fails_only_the_case_that_hits_it(tmp_path):
    small = save_nifti(good_volume(7), AFFINE, tmp_path / "small.nii.gz")
    big = save_nifti(synthetic_head_ct(shape=(256, 256, 48), seed=8), AFFINE, tmp_path / "big.nii.gz")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "anomalyclip_med", "score", str(big), str(small), "--out", str(out),
                           *SCORE], env=ENV, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size(1_000_000))  # big: 2.3 MB map, small: 0.12 MB at most
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = the_error_for(proc.stderr, "big")
    assert "File too large" in line, line
    assert read_finished_case(_outputs(out, "small")) is not None
    assert not list(out.rglob("big_*")) and not _temporaries(out)


def test_evaluate_exits_2_when_every_case_failed(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(png_bytes(20, 20))
    (tmp_path / "b.nii").write_bytes(b"")
    (tmp_path / "m.csv").write_text("image\na.nii.gz\nb.nii\n")
    proc = run_cli("evaluate", "--dataset", "manifest", tmp_path / "m.csv", "--out", tmp_path / "out", *TINY,
                   *PROMPTS)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "holds a PNG image" in the_error_for(proc.stderr, "a.nii.gz")
    assert "holds an empty file" in the_error_for(proc.stderr, "b.nii")

