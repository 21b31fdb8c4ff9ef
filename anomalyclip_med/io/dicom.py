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
from pydicom.multival import MultiValue

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.formats import describe_content

__all__ = ["DICOM_SUFFIXES", "DicomSeries", "find_dicom_series", "select_dicom_series", "has_dicom_files"]

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# relative and absolute tolerance on the gap between neighbouring slices; real scanners round positions to ~1e-3 mm
_GAP_RTOL, _GAP_ATOL = 0.01, 1e-3
# what every image file of a series must hold (a cut file loses its last elements first)
_IMAGE_KEYS = ("SeriesInstanceUID", "Rows", "Columns")
# geometry elements and their value counts; each must parse as that many finite numbers where present
_GEOMETRY = {"PixelSpacing": 2, "ImagePositionPatient": 3, "ImageOrientationPatient": 6, "SliceThickness": 1}


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
        positions: (N, 3) ImagePositionPatient of the sorted files (LPS, mm).
        orientation: the series' ImageOrientationPatient (row then column direction cosines, LPS).
        pixel_spacing: the series' PixelSpacing (between rows, between columns), in mm.
    """

    uid: str
    files: list[Path]
    modality: str
    body_part: str
    description: str
    slice_spacing: float
    positions: np.ndarray | None = None
    orientation: np.ndarray | None = None
    pixel_spacing: np.ndarray | None = None

    @property
    def stack_step(self) -> np.ndarray:
        """The step from one slice's ImagePositionPatient to the next (LPS, mm), over the whole stack."""
        return (self.positions[-1] - self.positions[0]) / (len(self.positions) - 1)

    @property
    def tilt_degrees(self) -> float:
        """The angle between the slice normal and the direction the slices step in (a CT gantry tilt); 0 for a
        regular stack."""
        return tilt_degrees(self.orientation, self.positions)


def tilt_degrees(orientation: np.ndarray, positions: np.ndarray) -> float:
    """The angle between the slice normal of ``orientation`` (ImageOrientationPatient) and the line through the
    first and last of ``positions`` (ImagePositionPatient, sorted along the normal): a CT gantry tilt."""
    step = positions[-1] - positions[0]
    normal = np.cross(orientation[:3], orientation[3:])
    return float(np.degrees(np.arccos(np.clip(abs(step @ normal) / np.linalg.norm(step), 0.0, 1.0))))


# a stack whose step leaves the slice normal by less than this (radians, ~0.006 degrees) is regular: real
# scanners round positions to ~1e-3 mm
TILT_TOLERANCE = 1e-4


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _damaged(path: Path, why: str) -> InputError:
    return InputError(f"DICOM file '{path}' is truncated or damaged: {why}. Replace or remove the file.")


def _read_header(path: Path) -> pydicom.Dataset | None:
    """
    The header of a DICOM image file; ``None`` for a DICOMDIR or a complete DICOM object of a non-image class
    (structured report, presentation state ...).

    pydicom reads a cut file without complaint up to the cut, so a damaged image file is recognised by what its
    file meta information (at the start, kept by most cuts) promises: an image storage class whose dataset lacks
    the series, size or position of an image.

    Raises:
        InputError: naming the file, for a damaged or truncated DICOM file (one with a DICOM suffix, or the
            'DICM' preamble).
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        ds = _read_bare_header(path)
        if ds is None and path.suffix.lower() in DICOM_SUFFIXES:
            raise _damaged(path, f"it holds {describe_content(path)}, not a DICOM header") from None
        if ds is None:  # no DICOM suffix, preamble or dataset: a companion file (README, checksums), named, not read
            logger.warning("%s is not a DICOM file (it holds %s); it is not part of the series", path,
                           describe_content(path))
            return None
    except Exception as err:  # pydicom raises many types on truncated or garbled headers
        raise _damaged(path, f"{type(err).__name__}: {err}") from None
    bare = "TransferSyntaxUID" not in ds.file_meta and "MediaStorageSOPClassUID" not in ds.file_meta
    sop_class = ds.get("SOPClassUID") if bare else getattr(ds.file_meta, "MediaStorageSOPClassUID", None)
    if sop_class == _DICOMDIR_SOP_CLASS:
        return None
    if sop_class is None or not (bare or "TransferSyntaxUID" in ds.file_meta):
        raise _damaged(path, "its file meta information (SOP class, transfer syntax) is incomplete")
    if "Image Storage" not in pydicom.uid.UID(sop_class).name:
        logger.info("skipping non-image DICOM object %s (%s)", path, pydicom.uid.UID(sop_class).name)
        return None
    missing = [k for k in _IMAGE_KEYS if k not in ds]
    if missing:
        raise _damaged(path, f"it is a {pydicom.uid.UID(sop_class).name} file without {', '.join(missing)}")
    return ds


def _read_bare_header(path: Path) -> pydicom.Dataset | None:
    """The header of a DICOM file written without the 128-byte preamble and file meta information (a bare
    dataset in implicit VR little endian, as older PACS and converters write it, which ITK reads), or ``None`` when
    the file does not parse as a dataset holding a SOP class and instance."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        return ds if "SOPClassUID" in ds and "SOPInstanceUID" in ds else None
    except Exception:  # noqa: BLE001 - anything unparseable is not a bare DICOM dataset
        return None


def has_dicom_files(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` directly holds files that look like DICOM (by suffix or the 'DICM' preamble)."""
    return any(
        p.suffix.lower() in DICOM_SUFFIXES or pydicom.misc.is_dicom(p) for p in _candidate_files(Path(folder))
    )


def find_dicom_series(folder: str | os.PathLike) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """
    Group the DICOM image files directly inside ``folder`` by SeriesInstanceUID (headers only).

    Every file (hidden ones aside) either joins a series or is named: files without a DICOM suffix or preamble
    are logged as not part of the series, DICOMDIRs and complete non-image objects are logged and skipped, and a
    DICOM image file must hold a complete image header.

    Raises:
        InputError: naming the file, for a truncated or damaged DICOM file.
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


def _numbers(path: Path, ds: pydicom.Dataset, keyword: str, count: int) -> np.ndarray | None:
    """
    ``keyword``'s value as ``count`` finite floats; ``None`` when the element is absent or empty.

    Raises:
        InputError: naming the file and the value as stored, for a value that is not ``count`` finite numbers.
    """
    if keyword not in ds:
        return None
    raw = ds.get_item(keyword).value  # the bytes as stored (unless parsed before): shown as the file holds them
    if isinstance(raw, bytes):
        texts = raw.decode("latin-1").strip(" \0").split("\\")
    else:
        texts = [str(v) for v in (raw if isinstance(raw, (list, tuple, MultiValue)) else [raw])]
    shown = "\\".join(texts)
    if shown.strip() == "":
        return None
    try:
        values = np.asarray([float(v) for v in texts], dtype=float)
    except ValueError:
        values = np.asarray([np.nan])
    if values.size != count or not np.all(np.isfinite(values)):
        shown = shown if shown.isprintable() else repr(shown)
        raise InputError(f"DICOM file '{path}' has {keyword}=\"{shown}\": {count} finite number(s) expected. The "
                         "volume geometry cannot be known; fix or remove the file.")
    return values


def _geometry(folder: Path, members: list[tuple[Path, pydicom.Dataset]]
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each file's ImageOrientationPatient, ImagePositionPatient and PixelSpacing, after checking every geometry
    element."""
    out = []
    for path, ds in members:
        values = {key: _numbers(path, ds, key, n) for key, n in _GEOMETRY.items()}
        missing = [key for key in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
                   if values[key] is None]
        if missing:
            raise InputError(f"DICOM series in '{folder}': '{path.name}' lacks {', '.join(missing)}; the volume "
                             "geometry cannot be known. Convert the series with dcm2niix first.")
        iop = values["ImageOrientationPatient"]
        row, col = iop[:3], iop[3:]
        if not (np.allclose([np.linalg.norm(row), np.linalg.norm(col)], 1, atol=1e-3) and abs(row @ col) < 1e-3):
            raise InputError(f"DICOM file '{path}' has ImageOrientationPatient={iop.tolist()}: not two orthogonal "
                             "unit vectors. The volume geometry cannot be known; fix or remove the file.")
        if np.any(values["PixelSpacing"] <= 0):
            raise InputError(f"DICOM file '{path}' has PixelSpacing={values['PixelSpacing'].tolist()}: spacings "
                             "must be positive.")
        out.append((iop, values["ImagePositionPatient"], values["PixelSpacing"]))
    return out


def _positions(folder: Path, members: list[tuple[Path, pydicom.Dataset]]
               ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Positions along the slice normal and their order, and each file's geometry, after checking that all
    slices share orientation, pixel spacing and size."""
    first = members[0][1]
    geometry = _geometry(folder, members)
    iop, spacing = geometry[0][0], geometry[0][2]
    for (path, ds), (orientation, _, pixel_spacing) in zip(members, geometry):
        if not np.allclose(orientation, iop, atol=1e-4):
            raise InputError(f"DICOM series in '{folder}' mixes slice orientations ('{path.name}' differs from "
                             f"'{members[0][0].name}'); score one orientation at a time.")
        if not np.allclose(pixel_spacing, spacing, rtol=1e-4, atol=1e-5):
            raise InputError(f"DICOM series in '{folder}' mixes pixel spacings: '{path.name}' has PixelSpacing="
                             f"{pixel_spacing.tolist()}, '{members[0][0].name}' has PixelSpacing={spacing.tolist()}; "
                             "one volume has one PixelSpacing. Score one spacing at a time.")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise InputError(f"DICOM series in '{folder}' mixes image sizes ('{path.name}' is {ds.Rows}x{ds.Columns},"
                             f" '{members[0][0].name}' is {first.Rows}x{first.Columns}).")
    normal = np.cross(iop[:3], iop[3:])
    positions = np.array([np.dot(normal, position) for _, position, _ in geometry])
    return positions, np.argsort(positions, kind="stable"), geometry


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


def _check_line(folder: Path, files: list[Path], points: np.ndarray) -> None:
    """The slices' ImagePositionPatient must step along one straight line, evenly (the step may leave the slice
    normal: a gantry tilt); positions that wander sideways cannot be one affine volume."""
    step = (points[-1] - points[0]) / (len(points) - 1)
    expected = points[0] + np.arange(len(points))[:, None] * step
    off = np.linalg.norm(points - expected, axis=1)
    i = int(np.argmax(off))
    if off[i] > _GAP_RTOL * np.linalg.norm(step) + _GAP_ATOL:
        raise InputError(f"DICOM series in '{folder}': the slices' ImagePositionPatient do not step along one line "
                         f"('{files[i].name}' lies {off[i]:.3f} mm off it); the series is not one regular volume. "
                         "Convert it with dcm2niix first.")


def _check_encapsulated(ds: pydicom.Dataset) -> None:
    """Check compressed pixel data pydicom has no decoder for (JPEG Lossless without pylibjpeg or GDCM; ITK reads
    it) without decoding it: every frame is present and, for the JPEG family, a whole JPEG stream from its SOI to
    its EOI marker (a cut file loses its end)."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=n_frames))
    if len(frames) != n_frames:
        raise ValueError(f"{len(frames)} of {n_frames} compressed frame(s) present")
    jpeg = ds.file_meta.TransferSyntaxUID.startswith("1.2.840.10008.1.2.4.")
    for frame in frames:
        if jpeg and not (frame[:2] == b"\xff\xd8" and frame.rstrip(b"\0")[-2:] == b"\xff\xd9"):
            raise ValueError("a compressed frame is not a whole JPEG stream (its start or end marker is missing)")


def _check_pixels(files: list[Path]) -> None:
    for path in files:
        try:
            ds = pydicom.dcmread(path, force=True)  # force: files without the preamble passed _read_header
            if "TransferSyntaxUID" not in ds.file_meta:  # a bare dataset: the encoding pydicom found it in
                implicit, little = ds.original_encoding
                ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                                                  pydicom.uid.ExplicitVRLittleEndian if little else
                                                  pydicom.uid.ExplicitVRBigEndian)
            syntax = ds.file_meta.TransferSyntaxUID
            if syntax.is_compressed and not pydicom.pixels.get_decoder(syntax).is_available:
                _check_encapsulated(ds)
            else:
                ds.pixel_array  # noqa: B018 - decoding is the check: truncated or garbled pixel data raises here
        except Exception as err:
            raise _damaged(path, f"its pixel data cannot be decoded ({type(err).__name__}: {err})") from None


def select_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> DicomSeries:
    """
    Find the one image series to score in ``folder`` and check that it forms a clean volume.

    Args:
        folder: a folder holding the series' files directly.
        series_uid: SeriesInstanceUID to pick when the folder holds several series.

    Raises:
        InputError: no DICOM images; a file in the folder that is not DICOM, or truncated or damaged (header or
            pixels); several series and no (or an unknown) ``series_uid``; a single slice; a PixelSpacing,
            ImagePositionPatient, ImageOrientationPatient or SliceThickness that is not 2, 3, 6 or 1 finite
            numbers; mixed orientations, pixel spacings or sizes; positions off one line; uneven slice spacing
            (missing slices); several volumes in one series.
    """
    folder = Path(folder)
    series = find_dicom_series(folder)
    if not series:
        raise InputError(f"Folder '{folder}' holds no DICOM image files. Give a DICOM series folder or a volume "
                         "file (.nii, .nii.gz, .nrrd, .mha, .mhd).")
    listing = "\n".join(_describe(uid, members) for uid, members in sorted(series.items()))
    if series_uid is None and len(series) > 1:
        raise InputError(f"Folder '{folder}' holds {len(series)} DICOM series:\n{listing}\n"
                         "Pick one with --series-uid UID (LoadingOptions.series_uid).")
    uid = series_uid if series_uid is not None else next(iter(series))
    if uid not in series:
        raise InputError(f"Folder '{folder}' has no DICOM series with SeriesInstanceUID {uid}; it holds:\n{listing}")
    members = series[uid]
    if len(members) == 1:
        n_frames = int(getattr(members[0][1], "NumberOfFrames", 1) or 1)
        hint = ("a multi-frame (enhanced) DICOM file, which is not supported: convert it with dcm2niix"
                if n_frames > 1 else "a single 2D slice: use `anomalyclip-med predict` for 2D images")
        raise InputError(f"DICOM series {uid} in '{folder}' is {hint}.")
    positions, order, geometry = _positions(folder, members)
    files = [members[i][0] for i in order]
    _check_pixels(files)  # first: a damaged file is named, not blamed as a gap between its neighbours
    spacing = _check_spacing(folder, files, positions[order])
    points = np.array([geometry[i][1] for i in order])
    _check_line(folder, files, points)
    first = members[0][1]
    return DicomSeries(
        uid=uid,
        files=files,
        modality=str(getattr(first, "Modality", "") or ""),
        body_part=str(getattr(first, "BodyPartExamined", "") or ""),
        description=str(getattr(first, "SeriesDescription", "") or ""),
        slice_spacing=spacing,
        positions=points,
        orientation=geometry[0][0],
        pixel_spacing=geometry[0][2],
    )
