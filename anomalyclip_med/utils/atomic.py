"""
Atomic file writing: a reader never sees a half-written output, a failed write leaves nothing, and a written
file survives a power cut (fsynced before it is renamed into place, and the folder after).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from anomalyclip_med.errors import OutputExistsError

__all__ = ["TEMP_TAG", "atomic_path", "fsync_file", "fsync_dir", "is_temporary", "new_temporary",
           "remove_stale_temporaries"]

# temporaries are ".<name>.<8 random chars>.partial<suffixes>": hidden, and recognisable as this package's after a
# crash, so the next run into the folder can remove them (see remove_stale_temporaries)
TEMP_TAG = ".partial"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(TEMP_TAG) + r"(\..*)?$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_file(path: str | os.PathLike) -> None:
    """Flush ``path``'s data to the disk (writers such as nibabel or PIL close their files without fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (the renames into it) to the disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_temporary(name: str) -> bool:
    """Whether a file name is one of this package's temporaries (see :func:`new_temporary`)."""
    return bool(_TEMP_NAME.match(name))


def new_temporary(path: str | os.PathLike) -> Path:
    """
    Create an empty temporary file next to ``path`` (its folder made if needed) and return its path.

    The name keeps ``path``'s suffixes so writers that infer the format from the name work; it has the usual
    permissions of a new file (``mkstemp`` makes 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[: -len(suffix) or None]}.", suffix=f"{TEMP_TAG}{suffix}",
                               dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """
    Remove this package's temporaries anywhere under ``folder`` (left by runs that were killed) and return them.
    Call it only while holding the folder's lock (:class:`anomalyclip_med.utils.lock.FolderLock`): a live run's
    temporaries are then not there.
    """
    removed = []
    for root, _, files in os.walk(folder):
        for name in files:
            if is_temporary(name):
                path = Path(root) / name
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[str]:
    """
    Yield a temporary path next to ``path``; on success it is fsynced and renamed onto ``path`` (and the folder
    fsynced), on error removed.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"Output '{path}' exists; pass --overwrite to replace it.")
    tmp = new_temporary(path)
    try:
        yield str(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
