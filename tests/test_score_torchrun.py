"""``score`` under ``torchrun``: the scans are shared out by case and the outputs are those of one process, byte for byte."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from evaluate_cli import TINY, child_env
from scan_data import oblique_affine, save_nifti, synthetic_head_ct


def _score(inputs, out, nproc: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "anomalyclip_med"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                    "-m", "anomalyclip_med"]
    cmd = [*launcher, "score", str(inputs), "--out", str(out), "--z-smooth", "2", "--batch-size", "4",
           "--no-progress", *TINY]
    return subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=600)


def test_two_torchrun_processes_write_the_single_process_outputs(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(3):
        save_nifti(synthetic_head_ct(seed=i), oblique_affine() if i % 2 else np.eye(4), scans / f"case{i}.nii.gz")
    (scans / "case3.nii.gz").write_bytes(b"\x1f\x8b broken")  # fails alone, on rank 1

    single = _score(scans, tmp_path / "one", nproc=1)
    double = _score(scans, tmp_path / "two", nproc=2)
    # the broken scan makes the run fail, not stop (torchrun turns rank 0's status 2 into its own failure)
    assert single.returncode == 2 and double.returncode != 0, double.stderr
    for proc in (single, double):
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "case3" in errors[0], proc.stderr
        assert "3 scored, 0 reused, 1 failed of 4 case(s)" in proc.stdout
    assert "by 2 processes" in double.stdout
    one = {p.name: p.read_bytes() for p in (tmp_path / "one").iterdir()}
    two = {p.name: p.read_bytes() for p in (tmp_path / "two").iterdir()}
    assert sorted(one) == sorted(two) and len(one) == 3 * 4  # map, labelmap, scores, overlay per good case
    for name in one:
        assert one[name] == two[name], name
