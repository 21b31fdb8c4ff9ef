"""One run at a time per output folder: an advisory ``flock`` on a pid file inside it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from anomalyclip_med.errors import OutputLockedError

__all__ = ["LOCK_NAME", "FolderLock"]

LOCK_NAME = ".anomalyclip_med.lock"


class FolderLock:
    """
    Hold ``<folder>/.anomalyclip_med.lock`` while a run writes into ``folder`` (a context manager).

    The kernel drops a ``flock`` when its process dies, however it dies, so a dead holder's lock is simply taken
    over; the pid written into the file only names the live holder in the refusal. The file is removed on release.

    Raises:
        OutputLockedError: another live process holds the folder.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise OutputLockedError(f"Output folder '{self.folder}' is in use by another run (pid {holder}); "
                                        "wait for it to finish or choose another output folder.") from None
            # the holder we waited on may have removed the file just before we locked it: lock the file on disk
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # still locked: a waiter that opened the old file sees it gone and retries
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
