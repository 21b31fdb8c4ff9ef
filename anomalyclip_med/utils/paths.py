"""Checks on output locations, made before any work starts."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from anomalyclip_med.errors import InputError, OutputExistsError

__all__ = ["check_writable_dir", "check_outputs"]


def check_writable_dir(path: str | os.PathLike) -> Path:
    """
    Prove that ``path`` can be created (if needed) and written to, else raise ``InputError`` naming it. Folders
    made for the check are removed again: a run refused later leaves nothing behind.
    """
    path = Path(path)
    made = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        made.append(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise InputError(f"Output folder '{path}' is not writable ({err.strerror or err}); choose another --out.") from None
    finally:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                pass  # not made after all, or not empty
    return path


def check_outputs(
    out_dir: str | os.PathLike,
    outputs: Iterable[str | os.PathLike],
    inputs: Iterable[str | os.PathLike],
    overwrite: bool = False,
) -> Path:
    """
    The one check, before any work, that a run may write ``outputs`` into ``out_dir``: the folder is not an input
    folder (a DICOM series), it is writable (created if needed), no output is an input, and no output exists
    unless ``overwrite``.

    Args:
        out_dir: the output folder.
        outputs: every path the run will write.
        inputs: every input file or folder the run reads.
        overwrite: whether existing outputs may be replaced.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        InputError: the folder is an input folder or not writable, or an output would overwrite an input.
        OutputExistsError: an output exists and ``overwrite`` is false.
    """
    out_dir, outputs = Path(out_dir), [Path(p) for p in outputs]
    resolved_inputs = {Path(p).resolve() for p in inputs}
    if out_dir.resolve() in resolved_inputs:
        raise InputError(f"Output folder '{out_dir}' is the input DICOM folder; writing there would change the "
                         "input series. Choose another --out.")
    check_writable_dir(out_dir)
    clashes = [p for p in outputs if p.resolve() in resolved_inputs]
    if clashes:
        raise InputError(f"Output '{clashes[0]}' would overwrite an input; choose another --out.")
    existing = [p for p in outputs if p.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(f"Output '{existing[0]}' exists{more}; pass --overwrite to replace it.")
    return out_dir
