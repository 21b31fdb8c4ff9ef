"""Atomic file writing: a reader never sees a half-written output, and a failed write leaves nothing."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from anomalyclip_med.errors import OutputExistsError

__all__ = ["atomic_path"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[str]:
    """
    Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on error removed.

    The temporary name keeps ``path``'s suffixes so writers that infer the format from the name work.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"Output '{path}' exists; pass --overwrite to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[: -len(suffix) or None]}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the output the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
