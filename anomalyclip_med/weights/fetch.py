"""
Getting named weights onto this machine: weights folders, the cache, and verified downloads.

A file is looked up in the weights folders (``--weights-dir``, then ``$ANOMALYCLIP_MED_WEIGHTS_DIR``: folders
carried in by hand, read only) and then in the cache (``$ANOMALYCLIP_MED_CACHE``, else
``$XDG_CACHE_HOME/anomalyclip_med`` or ``~/.cache/anomalyclip_med``). Only what none of them holds is downloaded,
into the cache: streamed into a temporary file with a progress bar, verified against the registry's digest, and
only then renamed into place, so the cache never holds a partial or unverified file and a later run finds it
without touching the network.
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from anomalyclip_med.errors import AnomalyCLIPMedError, MissingWeightsError
from anomalyclip_med.utils.atomic import atomic_path
from anomalyclip_med.utils.hashing import file_digest
from anomalyclip_med.weights.registry import NamedWeights

__all__ = [
    "CACHE_ENV",
    "WEIGHTS_DIR_ENV",
    "WeightsVerificationError",
    "WeightsUnavailableError",
    "DownloadError",
    "cache_dir",
    "weights_dirs",
    "locate",
    "verify",
    "download",
    "ensure_weights",
]

CACHE_ENV = "ANOMALYCLIP_MED_CACHE"
WEIGHTS_DIR_ENV = "ANOMALYCLIP_MED_WEIGHTS_DIR"
# seconds without a byte before a download is given up: an offline machine fails at once (refused, no DNS),
# a firewall that drops packets must not hang a hospital's batch run for minutes
_TIMEOUT = 30
_CHUNK = 1 << 20


class WeightsVerificationError(AnomalyCLIPMedError, ValueError):
    """A downloaded or supplied file is not the one the registry names (nothing was kept)."""


class WeightsUnavailableError(MissingWeightsError):
    """Named weights are neither in a weights folder nor in the cache and cannot be downloaded now."""

    def __init__(self, missing: Sequence[NamedWeights], reason: str, flags: dict[str, str] | None = None) -> None:
        self.missing, self.reason = list(missing), reason
        super().__init__(self.describe(flags))

    def describe(self, flags: dict[str, str] | None = None) -> str:
        """One line naming each missing file, its URL and what provides it (``flags``: the caller's option
        names for ``backbone``, ``prompts`` and ``weights_dir``)."""
        flags = {"backbone": "--backbone-weights", "prompts": "--prompts", "weights_dir": "--weights-dir",
                 **(flags or {})}
        files = "; ".join(
            f"{w.filename} ({w.name}) from {w.download_url} - or pass the file with {flags[w.kind]} PATH"
            for w in self.missing
        )
        return (
            f"weights missing and not downloadable ({self.reason}): {files}. Offline: on a machine with internet "
            f"run 'anomalyclip-med fetch-weights --dest DIR', carry DIR here and pass {flags['weights_dir']} DIR "
            f"(or set {WEIGHTS_DIR_ENV}=DIR); or put the files into the cache {cache_dir()} (${CACHE_ENV})."
        )


def cache_dir() -> Path:
    """The download cache (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root).expanduser() / "anomalyclip_med"


def weights_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched before the cache, in order: ``weights_dir``, then ``$ANOMALYCLIP_MED_WEIGHTS_DIR``."""
    dirs = [Path(d).expanduser() for d in (weights_dir, os.environ.get(WEIGHTS_DIR_ENV)) if d]
    for d in dirs:
        if not d.is_dir():
            raise MissingWeightsError(
                f"Weights folder '{d}' does not exist (from --weights-dir or ${WEIGHTS_DIR_ENV}); make it with "
                "'anomalyclip-med fetch-weights --dest DIR' on a machine with internet access."
            )
    return dirs


def locate(entry: NamedWeights, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """Where ``entry``'s file already lies (weights folders first, then the cache), else ``None``."""
    for folder in (*weights_dirs(weights_dir), cache_dir()):
        path = folder / entry.filename
        if path.is_file():
            return path
    return None


def verify(entry: NamedWeights, path: str | os.PathLike) -> None:
    """Raise unless ``path`` holds exactly ``entry``'s file."""
    got = file_digest(path, entry.hash_type)
    if got != entry.hash_val:
        raise WeightsVerificationError(
            f"'{path}' is not {entry.name}: expected {entry.hash_type} {entry.hash_val}, the file has {got} "
            f"({os.path.getsize(path)} bytes). Delete it and fetch {entry.download_url} again."
        )


class DownloadError(AnomalyCLIPMedError, OSError):
    """The server could not be reached or the transfer broke off (the message says which; nothing was kept)."""


def download(entry: NamedWeights, folder: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """
    Download ``entry`` into ``folder`` (default: the cache): temporary file, progress bar, verification, rename.

    Raises:
        WeightsVerificationError: what arrived is not the registry's file (nothing is kept).
        DownloadError: no connection, an HTTP error, or a transfer cut short (nothing is kept).
    """
    folder = Path(folder) if folder is not None else cache_dir()
    target = folder / entry.filename
    url = entry.download_url
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MissingWeightsError(f"Cannot create the weights folder '{folder}' ({err.strerror}); set "
                                  f"${CACHE_ENV} to a writable folder.") from None
    print(f"downloading {entry.name} ({entry.filename}) from {url}", file=sys.stderr)
    with atomic_path(target) as tmp:
        size = _stream(url, tmp, entry, progress)
        got = file_digest(tmp, entry.hash_type)
        if got != entry.hash_val:
            raise WeightsVerificationError(
                f"download of {entry.name} from {url} refused: expected {entry.hash_type} {entry.hash_val}, what "
                f"arrived ({size} bytes) has {got}; nothing was kept in '{folder}'."
            )
    return target


def _stream(url: str, tmp: str, entry: NamedWeights, progress: bool) -> int:
    """Copy ``url`` into ``tmp``; return the byte count. Every failure becomes a ``DownloadError``."""
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=entry.filename,
                      disable=not progress, file=sys.stderr) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise DownloadError(f"the transfer of {url} broke off after {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
            return received
    except urllib.error.HTTPError as err:
        raise DownloadError(f"{url} answered HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DownloadError(f"cannot reach {url}: {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:  # reset, timeout, IncompleteRead mid-file
        raise DownloadError(f"the transfer of {url} failed: {type(err).__name__}: {err}") from None


def ensure_weights(
    entries: Sequence[NamedWeights], weights_dir: str | os.PathLike | None = None, progress: bool = True,
    flags: dict[str, str] | None = None,
) -> dict[str, Path]:
    """
    The local path of every entry: found in a weights folder or the cache, else downloaded into the cache.

    Raises:
        WeightsUnavailableError: a download failed for a network reason; names every file still missing.
        WeightsVerificationError: a download arrived with another digest.
    """
    paths = {e.name: locate(e, weights_dir) for e in entries}
    missing = [e for e in entries if paths[e.name] is None]
    for i, entry in enumerate(missing):
        try:
            paths[entry.name] = download(entry, progress=progress)
        except DownloadError as err:
            raise WeightsUnavailableError(missing[i:], str(err), flags) from None
    return paths
