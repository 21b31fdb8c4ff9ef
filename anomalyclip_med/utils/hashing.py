"""The one file-hash helper: weights are verified, prompt files and calibrations identified, and finished outputs
checked with it."""

from __future__ import annotations

import hashlib
import os

__all__ = ["HASH_TYPES", "file_digest"]

HASH_TYPES = ("sha256", "git-blob-sha1")
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike, hash_type: str = "sha256") -> str:
    """
    The hex digest of the file at ``path``, streamed in 1 MiB chunks: ``sha256``, or ``git-blob-sha1`` (the hash git
    gives the file as a blob, as a repository's file listing states it).

    Raises:
        ValueError: an unknown ``hash_type``.
        OSError: the file cannot be read.
    """
    if hash_type == "sha256":
        digest = hashlib.sha256()
    elif hash_type == "git-blob-sha1":
        # git hashes a blob as its header "blob <size>\0" followed by the content
        digest = hashlib.sha1()
        digest.update(b"blob %d\0" % os.path.getsize(path))
    else:
        raise ValueError(f"Unknown hash type {hash_type!r}; one of {', '.join(HASH_TYPES)}.")
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
