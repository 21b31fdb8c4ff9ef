"""
Shared plumbing of the benchmark scripts: every configuration runs in a fresh child process (the same script
with ``--child JSON``) so that its peak memory is its own, and the rows are written as JSON on request.

A configuration can run against another checkout of the package (``tree``): the child then imports
``anomalyclip_med`` from there, so a baseline commit is measured in the same run as the working tree
(see :func:`baseline_tree`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "d987c48"  # the package before the performance work of issue 12


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options every baseline-comparing benchmark takes: the baseline checkout, the JSON rows, the child."""
    parser.add_argument("--baseline", default=None, help=f"checkout of the baseline (default: a git worktree of "
                        f"{BASELINE_COMMIT} next to this one)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)


def child_main(child: Callable[[dict], dict], cfg_json: str) -> None:
    """In the child: run one configuration and print its result as the last line of stdout."""
    print(json.dumps(child(json.loads(cfg_json))))


def child_env(tree: str | os.PathLike | None = None, threads: int | None = None) -> dict[str, str]:
    """The environment of a child importing ``anomalyclip_med`` from ``tree`` (default: this checkout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree or REPO), *filter(None, [env.get("PYTHONPATH")])])
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_child(script: str, cfg: dict, tree: str | os.PathLike | None = None) -> dict:
    """Run ``script --child cfg`` in a fresh process importing the package from ``tree`` (default: this
    checkout); returns ``cfg`` merged with the child's result. ``cfg["threads"]`` sets OMP_NUM_THREADS."""
    out = subprocess.run([sys.executable, script, "--child", json.dumps(cfg)], capture_output=True, text=True,
                         env=child_env(tree, cfg.get("threads")))
    if out.returncode:
        raise SystemExit(out.stderr)
    return {**cfg, **json.loads(out.stdout.strip().splitlines()[-1])}


def baseline_tree(path: str | os.PathLike | None = None, commit: str = BASELINE_COMMIT) -> Path:
    """A git worktree of ``commit`` (created next to this checkout when absent), to measure it in the same run."""
    tree = Path(path) if path else REPO.parent / f"baseline-{commit}"
    if not (tree / "anomalyclip_med").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit], check=True,
                       capture_output=True)
    return tree


def save_rows(rows: list[dict], path: str | None) -> None:
    """Write the result rows to ``path`` as JSON (nothing when ``path`` is empty)."""
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
