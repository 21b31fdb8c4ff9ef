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
TINY = ["--backbone", str(TINY_CLIP_JSON), "--backbone-weights", "none", "--image-size", "56"]


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
