"""DICOM series discovery and checks with pydicom: which series a folder holds, and whether one is a clean volume."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from anomalyclip_med.errors import InputError

__all__ = ["DICOM_SUFFIXES", "DicomSeries", "find_dicom_series", "select_dicom_series", "has_dicom_files"]

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# relative and absolute tolerance on the gap between neighbouring slices; real scanners round positions to ~1e-3 mm
_GAP_RTOL, _GAP_ATOL = 0.01, 1e-3


@dataclass
class DicomSeries:
    """
    One DICOM image series, its files sorted along the slice normal (ascending position).

    Attributes:
        uid: SeriesInstanceUID.
        files: the series' files, sorted along the slice normal.
        modality: DICOM Modality (``"CT"``, ``"MR"``...), ``""`` when absent.
        body_part: DICOM BodyPartExamined, ``""`` when absent.
        description: SeriesDescription, ``""`` when absent.
        slice_spacing: distance between neighbouring slices along the normal, in mm.
    """

    uid: str
    files: list[Path]
    modality: str
    body_part: str
    description: str
    slice_spacing: float


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _read_header(path: Path) -> pydicom.Dataset | None:
    """The header of a DICOM image file; ``None`` for a file that is not DICOM or holds no image."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        if path.suffix.lower() in DICOM_SUFFIXES:
            raise InputError(f"DICOM file '{path}' is corrupt (no valid DICOM header). Remove or replace it.") from None
        logger.debug("skipping non-DICOM file %s", path)
        return None
    except Exception as err:  # pydicom raises many types on truncated or garbled headers
        raise InputError(f"DICOM file '{path}' is corrupt ({type(err).__name__}: {err}). Remove or replace it.") from None
    if getattr(ds.file_meta, "MediaStorageSOPClassUID", None) == _DICOMDIR_SOP_CLASS:
        return None
    if "SeriesInstanceUID" not in ds or "Rows" not in ds:
        logger.debug("skipping DICOM object without image %s", path)
        return None
    return ds


def has_dicom_files(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` directly holds files that look like DICOM (by suffix or the 'DICM' preamble)."""
    return any(
        p.suffix.lower() in DICOM_SUFFIXES or pydicom.misc.is_dicom(p) for p in _candidate_files(Path(folder))
    )


def find_dicom_series(folder: str | os.PathLike) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """
    Group the DICOM image files directly inside ``folder`` by SeriesInstanceUID (headers only).

    Files that are not DICOM (no preamble, no DICOM suffix), DICOMDIRs and objects without an image are skipped.

    Raises:
        InputError: a file with a DICOM suffix or preamble whose header cannot be read.
    """
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for path in _candidate_files(Path(folder)):
        ds = _read_header(path)
        if ds is not None:
            series[str(ds.SeriesInstanceUID)].append((path, ds))
    return dict(series)


def _describe(uid: str, members: list[tuple[Path, pydicom.Dataset]]) -> str:
    ds = members[0][1]
    return (f"  {uid}  ({getattr(ds, 'Modality', '?')}, '{getattr(ds, 'SeriesDescription', '')}', "
            f"{len(members)} files)")


def _positions(folder: Path, members: list[tuple[Path, pydicom.Dataset]]) -> tuple[np.ndarray, np.ndarray]:
    """Positions along the slice normal, after checking that all slices share orientation and size."""
    first = members[0][1]
    for key in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        missing = [p.name for p, ds in members if key not in ds]
        if missing:
            raise InputError(f"DICOM series in '{folder}': {len(missing)} file(s) lack {key} (e.g. '{missing[0]}'); "
                             "the volume geometry cannot be known. Convert the series with dcm2niix first.")
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    for path, ds in members:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), iop, atol=1e-4):
            raise InputError(f"DICOM series in '{folder}' mixes slice orientations ('{path.name}' differs from "
                             f"'{members[0][0].name}'); score one orientation at a time.")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise InputError(f"DICOM series in '{folder}' mixes image sizes ('{path.name}' is {ds.Rows}x{ds.Columns},"
                             f" '{members[0][0].name}' is {first.Rows}x{first.Columns}).")
    normal = np.cross(iop[:3], iop[3:])
    positions = np.array([np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)) for _, ds in members])
    return positions, np.argsort(positions, kind="stable")


def _check_spacing(folder: Path, files: list[Path], positions: np.ndarray) -> float:
    gaps = np.diff(positions)
    typical = float(np.median(gaps))
    if np.any(gaps < _GAP_ATOL):
        i = int(np.argmin(gaps))
        raise InputError(
            f"DICOM series in '{folder}' has several slices at the same position ('{files[i].name}' and "
            f"'{files[i + 1].name}'): it holds more than one volume (time points, echoes...). Split it into one "
            "folder per volume, or convert it with dcm2niix and score the 4D NIfTI with --volume-index."
        )
    bad = np.flatnonzero(np.abs(gaps - typical) > _GAP_RTOL * typical + _GAP_ATOL)
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"DICOM series in '{folder}' has uneven slice spacing: {gaps[i]:.3f} mm between '{files[i].name}' and "
            f"'{files[i + 1].name}' where the typical spacing is {typical:.3f} mm ({bad.size} such gap(s)). "
            "Slices are missing, or the series mixes stacks; complete the series or remove the extra files."
        )
    return typical


def _check_pixels(files: list[Path]) -> None:
    for path in files:
        try:
            ds = pydicom.dcmread(path)
            ds.pixel_array  # noqa: B018 - decoding is the check: truncated or garbled pixel data raises here
        except Exception as err:
            raise InputError(f"DICOM file '{path}' is corrupt: its pixel data cannot be decoded "
                             f"({type(err).__name__}: {err}). Replace or remove the file.") from None


def select_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> DicomSeries:
    """
    Find the one image series to score in ``folder`` and check that it forms a clean volume.

    Args:
        folder: a folder holding the series' files directly.
        series_uid: SeriesInstanceUID to pick when the folder holds several series.

    Raises:
        InputError: no DICOM images; several series and no (or an unknown) ``series_uid``; a corrupt file;
            a single slice; mixed orientations or sizes; uneven slice spacing (missing slices); several
            volumes in one series.
    """
    folder = Path(folder)
    series = find_dicom_series(folder)
    if not series:
        raise InputError(f"Folder '{folder}' holds no DICOM image files. Give a DICOM series folder or a volume "
                         "file (.nii, .nii.gz, .nrrd, .mha, .mhd).")
    listing = "\n".join(_describe(uid, members) for uid, members in sorted(series.items()))
    if series_uid is None and len(series) > 1:
        raise InputError(f"Folder '{folder}' holds {len(series)} DICOM series:\n{listing}\n"
                         "Pick one with --series-uid UID (ScanScoringOptions.series_uid).")
    uid = series_uid if series_uid is not None else next(iter(series))
    if uid not in series:
        raise InputError(f"Folder '{folder}' has no DICOM series with SeriesInstanceUID {uid}; it holds:\n{listing}")
    members = series[uid]
    if len(members) == 1:
        n_frames = int(getattr(members[0][1], "NumberOfFrames", 1) or 1)
        hint = ("a multi-frame (enhanced) DICOM file, which is not supported: convert it with dcm2niix"
                if n_frames > 1 else "a single 2D slice: use `anomalyclip-med predict` for 2D images")
        raise InputError(f"DICOM series {uid} in '{folder}' is {hint}.")
    positions, order = _positions(folder, members)
    files = [members[i][0] for i in order]
    spacing = _check_spacing(folder, files, positions[order])
    _check_pixels(files)
    first = members[0][1]
    return DicomSeries(
        uid=uid,
        files=files,
        modality=str(getattr(first, "Modality", "") or ""),
        body_part=str(getattr(first, "BodyPartExamined", "") or ""),
        description=str(getattr(first, "SeriesDescription", "") or ""),
        slice_spacing=spacing,
    )
