"""
Shared plumbing of the benchmark scripts: every configuration runs in a fresh child process (the same script
with ``--child JSON``) so that its peak memory is its own, and the rows are written as JSON on request.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable


def child_main(child: Callable[[dict], dict], cfg_json: str) -> None:
    """In the child: run one configuration and print its result as the last line of stdout."""
    print(json.dumps(child(json.loads(cfg_json))))


def run_child(script: str, cfg: dict) -> dict:
    """Run ``script --child cfg`` in a fresh process; returns ``cfg`` merged with the child's result."""
    out = subprocess.run([sys.executable, script, "--child", json.dumps(cfg)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return {**cfg, **json.loads(out.stdout.strip().splitlines()[-1])}


def save_rows(rows: list[dict], path: str | None) -> None:
    """Write the result rows to ``path`` as JSON (nothing when ``path`` is empty)."""
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
