"""
Volume file suffixes and case names: plain functions without torch or MONAI, so that the command line and
:mod:`anomalyclip_med.io.cases` name cases without importing the volume readers of :mod:`anomalyclip_med.io.scans`.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

__all__ = [
    "NIFTI_SUFFIXES", "VOLUME_SUFFIXES", "IMAGE_SUFFIXES", "volume_suffix", "image_suffix", "case_id_of", "safe_case_id"
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
VOLUME_SUFFIXES = (*NIFTI_SUFFIXES, ".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # 2D images (predict)


def volume_suffix(path: str | os.PathLike) -> str | None:
    """The volume file suffix of ``path`` (lower case, e.g. ``".nii.gz"``), or ``None``."""
    name = Path(path).name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), None)


def image_suffix(path: str | os.PathLike) -> str | None:
    """The 2D image suffix of ``path`` (lower case, e.g. ``".png"``), or ``None``."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES else None


def case_id_of(source: str | os.PathLike) -> str:
    """
    The case name used for output files: the file name without its volume suffix (``FLAIR.nii.gz`` -> ``FLAIR``),
    or the folder name of a DICOM series.
    """
    path = Path(source)
    suffix = volume_suffix(path)
    name = path.resolve().name if path.name in ("", ".", "..") else path.name
    return name[: -len(suffix)] if suffix and not path.is_dir() else name


def safe_case_id(name: str) -> str:
    """
    A case ID safe as a folder name, derived from any file name: Unicode letters and digits are kept (composed
    to NFC, as macOS stores them decomposed), every run of other characters (spaces, slashes, quotes, control
    characters) becomes one ``_``, and leading or trailing ``.``, ``_``, ``-`` are dropped so that no ID is hidden,
    empty, ``.`` or ``..`` (``"Müller 1"`` -> ``"Müller_1"``, ``"../x"`` -> ``"x"``). A name with nothing left
    becomes ``"case"``; IDs are cut to 100 characters.
    """
    text = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", name)).strip("._-")[:100].strip("._-")
    return text or "case"
