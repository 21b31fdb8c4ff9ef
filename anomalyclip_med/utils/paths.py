"""Checks on output locations, made before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from anomalyclip_med.errors import InputError

__all__ = ["check_writable_dir"]


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
