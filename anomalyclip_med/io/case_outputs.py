"""
A case's outputs are whole or absent: every file is written to a temporary, fsynced, and renamed into place with
the others; the scores JSON comes last and records the size and SHA-256 of every other output, so a case counts
as finished only when its scores JSON exists and every file it lists matches (:func:`read_finished_case`).

A run killed at any moment leaves either the old finished case, or a case without scores JSON (not finished:
the old scores JSON is removed before the first rename), plus temporaries that the next run removes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from anomalyclip_med.utils.atomic import fsync_dir, fsync_file, new_temporary
from anomalyclip_med.utils.hashing import file_digest

__all__ = ["OUTPUT_FILES_KEY", "file_record", "write_case_outputs", "read_finished_case"]

# key of the scores JSON listing the case's other outputs: {key: {"name", "size", "sha256"}}
OUTPUT_FILES_KEY = "output_files"


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"name", "size", "sha256"}`` of a file."""
    return {"name": Path(path).name, "size": os.path.getsize(path), "sha256": file_digest(path)}


def write_case_outputs(
    paths: Mapping[str, Path],
    writers: Mapping[str, Callable[[str], None]],
    report: dict[str, Any],
    scores_key: str = "scores",
) -> dict[str, Any]:
    """
    Write one case's outputs so that they are whole or absent.

    Args:
        paths: final path of each output, all in one folder; ``paths[scores_key]`` is the scores JSON.
        writers: for each other key, a function writing that output to the path it is given.
        report: the scores JSON content; :data:`OUTPUT_FILES_KEY` is added.
        scores_key: the key of the scores JSON.

    Returns:
        the report as written.
    """
    folders = {Path(p).parent for p in paths.values()}
    if len(folders) != 1:
        raise ValueError(f"A case's outputs must share one folder, got {sorted(map(str, folders))}.")
    folder = folders.pop()
    tmp: dict[str, Path] = {}
    try:
        for key, write in writers.items():
            tmp[key] = new_temporary(paths[key])
            write(str(tmp[key]))
            fsync_file(tmp[key])
        files = {key: {**file_record(t), "name": Path(paths[key]).name} for key, t in tmp.items()}
        report = {**report, OUTPUT_FILES_KEY: files}
        tmp[scores_key] = new_temporary(paths[scores_key])
        with open(tmp[scores_key], "w", encoding="utf-8") as f:
            f.write(json.dumps(report, indent=2, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        # from here on the old finished case is gone; the new one is finished when its scores JSON lands
        with contextlib.suppress(FileNotFoundError):
            os.remove(paths[scores_key])
            fsync_dir(folder)
        for key in writers:
            os.replace(tmp.pop(key), paths[key])
        os.replace(tmp.pop(scores_key), paths[scores_key])
        fsync_dir(folder)
    finally:
        for t in tmp.values():
            with contextlib.suppress(OSError):
                os.remove(t)
    return report


def read_finished_case(paths: Mapping[str, Path], scores_key: str = "scores") -> dict[str, Any] | None:
    """
    The scores JSON of a finished case, or None: it must parse, list exactly the other keys of ``paths``, and
    every listed file must exist with the recorded size and SHA-256.
    """
    try:
        report = json.loads(Path(paths[scores_key]).read_text(encoding="utf-8"))
        files = report[OUTPUT_FILES_KEY]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, dict) or set(files) != set(paths) - {scores_key}:
        return None
    for key, recorded in files.items():
        path = Path(paths[key])
        try:
            if path.stat().st_size != recorded.get("size") or file_record(path)["sha256"] != recorded.get("sha256"):
                return None
        except OSError:
            return None
    return report
