"""
Writing scan results: NIfTI volumes in the input scan's geometry, the scores JSON, an overlay PNG montage and a
DICOM Segmentation (highdicom) referencing the source series. Each writer writes exactly the path it is given;
the caller makes the write atomic (:func:`anomalyclip_med.utils.atomic.atomic_path`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import torch
from PIL import Image, ImageDraw
from monai.utils import optional_import

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.overlay import colour_bar, heatmap_overlay, save_png
from anomalyclip_med.utils.atomic import atomic_path

hd, has_highdicom = optional_import("highdicom")

__all__ = ["write_volume", "write_json", "write_csv", "write_montage", "write_dicom_seg", "dicom_seg_problem"]

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS


def _header_code(meta: Mapping[str, Any], key: str) -> int:
    """The input NIfTI's qform/sform code (so readers pick the same affine as for the input); 1 (scanner) else."""
    return int(np.asarray(meta[key]).reshape(-1)[0]) if key in meta else 1


def _input_nifti_geometry(meta: Mapping[str, Any], affine: np.ndarray) -> dict[str, np.ndarray] | None:
    """
    The input NIfTI header's geometry fields (:data:`anomalyclip_med.io.scans.NIFTI_GEOMETRY_FIELDS`, as the file
    holds them) when ``meta`` carries them and they still describe ``affine`` (the scan was not moved in memory
    since it was read); ``None`` otherwise.
    """
    from anomalyclip_med.io.scans import NIFTI_GEOMETRY_FIELDS

    if not all(key in meta for key in NIFTI_GEOMETRY_FIELDS):
        return None
    fields = {key: np.asarray(meta[key], dtype=np.float64).reshape(-1) for key in NIFTI_GEOMETRY_FIELDS}
    check = nib.Nifti1Header()
    for key, value in fields.items():
        check[key] = value[:8] if key == "pixdim" else value[: check[key].size] if check[key].ndim else value[0]
    check["pixdim"][1:4] = np.abs(check["pixdim"][1:4])  # as nibabel reads it
    with np.errstate(all="ignore"):
        best = check.get_best_affine()
    return fields if np.allclose(best, affine, rtol=1e-5, atol=1e-4) else None


def write_volume(array: np.ndarray, meta: Mapping[str, Any], path: str | os.PathLike, label: bool = False) -> None:
    """
    Write ``array`` as NIfTI with the geometry of the scan it was computed from.

    A NIfTI input's header geometry is copied field for field, as the input holds it: qform and sform with their
    codes, the quaternion and offsets, srow_x/y/z and pixdim (voxel sizes and qfac, negative values included), so
    every reader (nibabel, ITK/3D Slicer, ITK-SNAP), whatever its rule for choosing between qform and sform, places
    the output where it places the input. Any other input (NRRD, MetaImage, DICOM, a scan in memory) gets its
    voxel-to-RAS affine as both qform and sform (orthogonal axes: the loader refuses others), code 1 (scanner).

    Args:
        array: voxel values in the scan's voxel order (its spatial shape as loaded).
        meta: the loaded scan's metadata (``original_affine`` voxel-to-RAS; for a NIfTI input also its header's
            geometry fields and ``xyzt_units``, which are kept).
        path: output path (``.nii`` or ``.nii.gz``).
        label: write a uint8 labelmap (NIfTI intent "label") rather than a float32 map in [0, 1].
    """
    affine = np.asarray(meta["original_affine"], dtype=np.float64)
    data = np.asarray(array, dtype=np.uint8 if label else np.float32)
    fields = _input_nifti_geometry(meta, affine)
    if fields is None:
        image = nib.Nifti1Image(data, affine)
        header = image.header
        header.set_qform(affine, code=_header_code(meta, "qform_code"))
        header.set_sform(affine, code=_header_code(meta, "sform_code"))
    else:
        image = nib.Nifti1Image(data, None)  # no affine: nibabel then writes the header fields as set here
        header = image.header
        for key, value in fields.items():
            if key == "pixdim":
                header["pixdim"][:4] = value[:4]
            elif header[key].ndim:
                header[key] = value[: header[key].size]
            else:
                header[key] = value[0]
    header["xyzt_units"] = int(np.asarray(meta["xyzt_units"]).reshape(-1)[0]) if "xyzt_units" in meta else 2  # mm
    if label:
        header.set_intent("label")
        header["descrip"] = b"AnomalyCLIP anomaly labelmap (1 = anomalous)"
    else:
        header["cal_min"], header["cal_max"] = 0.0, 1.0
        header["descrip"] = b"AnomalyCLIP anomaly map (0..1)"
    nib.save(image, os.fspath(path))


def write_json(data: Any, path: str | os.PathLike, overwrite: bool = True) -> None:
    """``data`` as indented JSON, written atomically; NaN is refused (JSON has none: make it None first)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Rows of dicts (same keys) as CSV with a header, written atomically; None becomes an empty cell."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)


def write_montage(
    path: str | os.PathLike,
    slices: torch.Tensor,
    maps: torch.Tensor,
    captions: Sequence[str],
    warning: str | None = None,
    columns: int = 3,
    low: float = 0.05,
    threshold: float | None = None,
) -> None:
    """
    A PNG grid of slices with their anomaly maps blended over them (:func:`anomalyclip_med.io.overlay.overlay`)
    and a colour bar on the right. Map values below ``low`` are not drawn: maps are 0 outside the body, and the
    body's anatomy must stay readable where the map is near 0, rather than everything sitting under a blue tint.

    Args:
        path: output ``.png``.
        slices: (N, S, S) display-oriented slices in [0, 1].
        maps: (N, S, S) anomaly maps on the same grid, in [0, 1].
        captions: one line per tile, drawn in its bottom-left corner.
        warning: the model's untrained/random warning: drawn as a banner and stored in the PNG (see
            :func:`anomalyclip_med.io.overlay.save_png`).
        columns: tiles per row.
        low: map values below it are left untinted.
        threshold: the labelmap threshold, marked on the colour bar.
    """
    n, size = slices.shape[0], slices.shape[-1]
    height = math.ceil(n / columns) * size
    tiles_width = min(n, columns) * size
    bar = colour_bar(height, low, threshold)
    montage = Image.new("RGB", (tiles_width + bar.width, height))
    draw = ImageDraw.Draw(montage)
    for i in range(n):
        grey = Image.fromarray(np.round(slices[i].numpy() * 255).astype(np.uint8), mode="L")
        r, c = divmod(i, columns)
        montage.paste(heatmap_overlay(grey, maps[i].numpy(), low=low), (c * size, r * size))
        draw.text((c * size + 4, (r + 1) * size - 14), captions[i], fill=(255, 255, 255))
    montage.paste(bar, (tiles_width, 0))
    save_png(montage, path, warning=warning)


# what highdicom needs of the source series to build a SEG that references it
_SEG_SOURCE_ATTRIBUTES = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                          "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


def dicom_seg_problem(source: str | os.PathLike, series_uid: str | None = None) -> str | None:
    """
    Why a DICOM SEG cannot be written for ``source`` (None when it can), checked before any scoring: the input
    must be a DICOM series folder whose files carry what a SEG references (:data:`_SEG_SOURCE_ATTRIBUTES`),
    and highdicom must be installed. Only headers are read.
    """
    from anomalyclip_med.io.dicom import TILT_TOLERANCE, find_dicom_series, tilt_degrees

    path = Path(source)
    if not path.is_dir():
        return (f"'{path}' is not a DICOM series; a DICOM SEG can only reference a DICOM series (score it without "
                "--dicom-seg, or give the series folder).")
    if not has_highdicom:
        return "writing a DICOM SEG needs highdicom: pip install 'anomalyclip_med[dicom-seg]'."
    series = find_dicom_series(path)
    members = series.get(series_uid) if series_uid else next(iter(series.values()), None) if len(series) == 1 else None
    if not members:
        return None  # no, several or an unknown series: the loader names the problem for this case
    for file, ds in members:
        missing = [a for a in _SEG_SOURCE_ATTRIBUTES if not str(getattr(ds, a, "") or "").strip()]
        if missing:
            return (f"DICOM file '{file}' has no {', '.join(missing)}, which a DICOM SEG must reference; score it "
                    "without --dicom-seg.")
    try:
        orientation = np.asarray([float(v) for v in members[0][1].ImageOrientationPatient])
        points = np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, ds in members])
        points = points[np.argsort(points @ np.cross(orientation[:3], orientation[3:]))]
        tilt = tilt_degrees(orientation, points)
    except (ValueError, TypeError, IndexError):
        return None  # the loader names the bad value for this case
    if np.sin(np.radians(tilt)) > TILT_TOLERANCE:
        return (f"DICOM series in '{path}' has a gantry tilt of {tilt:.2f} degrees: it is scored on a resampled "
                "regular grid, and a DICOM SEG must lie on the series' own slices; score it without --dicom-seg.")
    return None


def write_dicom_seg(
    seg: np.ndarray,
    affine: np.ndarray,
    dicom_files: Sequence[str | os.PathLike],
    path: str | os.PathLike,
    software_version: str,
    description: str,
) -> None:
    """
    A binary DICOM Segmentation (highdicom) of the source series, one frame per source slice.

    Args:
        seg: uint8 labelmap in the series' voxel order as loaded by ITK (columns, rows, slices).
        affine: voxel-to-RAS affine of the loaded series.
        dicom_files: the source series' files.
        path: output ``.dcm``.
        software_version: written as the SEG's SoftwareVersions.
        description: SeriesDescription of the SEG.

    Raises:
        InputError: highdicom is not installed, or a source slice does not lie on the volume's slice grid.
    """
    if not has_highdicom:
        raise InputError("Writing a DICOM SEG needs highdicom: pip install 'anomalyclip_med[dicom-seg]'.")
    from pydicom.sr.codedict import codes

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every module it copies at INFO
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_files]
    to_voxel = np.linalg.inv(_LPS @ np.asarray(affine, dtype=float))
    frames = []
    for f, ds in zip(dicom_files, sources):
        ijk = to_voxel @ np.array([*map(float, ds.ImagePositionPatient), 1.0])
        k = int(round(ijk[2]))
        if not (0 <= k < seg.shape[2] and np.allclose(ijk[:3], [0, 0, k], atol=1e-2)):
            raise InputError(f"DICOM slice '{f}' does not lie on the loaded volume's slice grid; cannot map the "
                             "segmentation back to the series.")
        frames.append(seg[:, :, k].T)
    description_item = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="AnomalyCLIP anomaly",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="AnomalyCLIP", version=software_version, family=codes.cid7162.ArtificialIntelligence
        ),
    )
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.stack(frames).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description_item],
        series_instance_uid=hd.UID(),
        series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="anomalyclip_med",
        manufacturer_model_name="AnomalyCLIP",
        software_versions=software_version,
        device_serial_number="none",
        series_description=description,
        omit_empty_frames=False,
    )
    segmentation.save_as(os.fspath(path))
