"""Checks on output locations, made before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from anomalyclip_med.errors import InputError

__all__ = ["check_writable_dir"]


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove it is writable; otherwise raise ``InputError`` naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise InputError(f"Output folder '{path}' is not writable ({err.strerror or err}); choose another --out.") from None
    return path
