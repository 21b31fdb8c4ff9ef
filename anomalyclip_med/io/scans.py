"""Loading CT/MRI scans with MONAI readers: NIfTI, NRRD, MetaImage files and DICOM series folders, geometry kept."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ITKReader, MetaTensor, NibabelReader
from monai.data.utils import orientation_ras_lps
from monai.transforms import EnsureChannelFirst, LoadImage, MapTransform, Transform
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, optional_import

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.dicom import DICOM_SUFFIXES, select_dicom_series
from anomalyclip_med.io.formats import check_volume_file
from anomalyclip_med.io.names import IMAGE_SUFFIXES
from anomalyclip_med.io.names import NIFTI_SUFFIXES, VOLUME_SUFFIXES, case_id_of, safe_case_id, volume_suffix

itk, has_itk = optional_import("itk", allow_namespace_pkg=True)

__all__ = ["VOLUME_SUFFIXES", "volume_suffix", "case_id_of", "safe_case_id", "load_volume", "as_scan"]

logger = logging.getLogger(__name__)

_FORMATS = {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage",
            ".mhd": "metaimage"}


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence the DeprecationWarnings ITK's SWIG wrappers raise while its modules load lazily."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="builtin type .* has no __module__", category=DeprecationWarning)
        yield


def _replace_nonfinite(img: MetaTensor) -> int:
    """Replace NaN and -Inf by the lowest finite value and +Inf by the highest (in place); returns the count."""
    finite = torch.isfinite(img)
    n_bad = int(finite.numel() - finite.sum())
    if n_bad:
        values = img[finite]
        lo, hi = (float(values.min()), float(values.max())) if values.numel() else (0.0, 0.0)
        torch.nan_to_num_(img.as_tensor(), nan=lo, posinf=hi, neginf=lo)
    return n_bad


def load_volume(
    source: str | os.PathLike, series_uid: str | None = None, volume_index: int | None = None
) -> MetaTensor:
    """
    Read one scan, lesion mask or anomaly map, whole, as a channel-first float32 ``MetaTensor`` (1, X, Y, Z).

    This is the package's one volume reader: scoring, evaluation (scans, masks, maps) and the bundle all read
    through it, so every read gets the same checks. A volume file is first checked against its suffix's format
    (:func:`anomalyclip_med.io.formats.check_volume_file`: the format actually found, the header's voxel count
    against the file's bytes, compressed data read to its end-of-stream marker) and only then handed to its
    MONAI reader, alone (no fall-back to other readers, which would blame a damaged NIfTI on DICOM). NIfTI goes
    through MONAI's ``NibabelReader``; NRRD, MetaImage (.mha/.mhd) and DICOM series folders through its
    ``ITKReader``; DICOM folders are checked whole first (see :func:`anomalyclip_med.io.dicom.select_dicom_series`).
    ``meta["affine"]``/``meta["original_affine"]`` hold the voxel-to-world (RAS) affine of the volume as stored,
    and the array keeps the file's voxel order, so outputs written with that affine overlay the input exactly.

    Non-finite voxels (NaN, +-Inf) are replaced: NaN and -Inf by the lowest finite value of the volume (treated
    as background), +Inf by the highest; their number is stored in ``meta["nonfinite_voxels"]`` and logged.

    Extra metadata: ``source_format`` (``nifti``, ``nrrd``, ``metaimage``, ``dicom``), ``modality`` and
    ``body_part`` (DICOM only, else ``""``), ``dicom_files`` (sorted along the slice normal) and ``series_uid``
    (DICOM only), ``volume_index`` (4D only), ``nonfinite_voxels``.

    Args:
        source: a volume file or a DICOM series folder.
        series_uid: SeriesInstanceUID to load from a folder holding several series.
        volume_index: which volume of a 4D file to load (0-based); required when the file holds more than one.

    Raises:
        InputError: naming the file: a missing path, an unsupported, damaged, truncated or mislabelled file, a 2D
            image, a 4D file without a valid ``volume_index``, or any DICOM series problem.
    """
    path = Path(source)
    if not path.exists():
        raise InputError(f"Scan '{path}' does not exist.")
    extra: dict = {"modality": "", "body_part": ""}
    img = _load_dicom(path, series_uid, extra) if path.is_dir() else _load_file(path, extra)
    img, index = _select_volume(path, img, volume_index)
    img.meta.update(extra)
    if index is not None:  # absent rather than None: MONAI's collation cannot batch None
        img.meta["volume_index"] = index
    return _finish(img, path)


def _finish(img: MetaTensor, name: str | os.PathLike) -> MetaTensor:
    """The steps every scan takes after it is read, from a file or from memory: non-finite voxels replaced (and
    counted in ``meta["nonfinite_voxels"]``), then a channel dimension added in front."""
    n_bad = _replace_nonfinite(img)
    img.meta["nonfinite_voxels"] = n_bad
    if n_bad:
        logger.warning("%s: %d non-finite voxel(s) (NaN/Inf) replaced by the scan's lowest/highest finite value",
                       name, n_bad)
    return EnsureChannelFirst(channel_dim="no_channel")(img)


def as_scan(image: torch.Tensor | np.ndarray) -> MetaTensor:
    """
    A scan already in memory (e.g. handed over by MONAI Deploy or MONAI Label) as :func:`load_volume` would have
    read it: a new channel-first float32 ``MetaTensor`` (1, X, Y, Z), its non-finite voxels replaced and counted,
    the metadata defaults of a file read added; the caller's tensor is not modified.

    ``image`` is one volume, ``(X, Y, Z)`` or ``(1, X, Y, Z)``; a ``MetaTensor``'s affine gives the geometry (a plain
    tensor or array gets the identity). An affine in LPS space (``meta["space"] == "LPS"``, as MONAI Deploy's DICOM
    loader makes it) is turned into the RAS affine that :func:`load_volume` gives and the slicing rules expect.

    Raises:
        InputError: anything but one 3D volume of one channel.
    """
    img = image if isinstance(image, MetaTensor) else MetaTensor(torch.as_tensor(image))
    name = str(img.meta.get(ImageMetaKey.FILENAME_OR_OBJ) or "in-memory scan")
    shape = tuple(img.shape)
    if img.ndim == 4 and shape[0] == 1:
        img = img[0]
    elif img.ndim != 3:
        raise InputError(f"{name}: an in-memory scan is one 3D volume, (X, Y, Z) or (1, X, Y, Z); got shape {shape}.")
    if min(img.shape) < 2:
        raise InputError(f"{name} is 2D (shape {shape}); `score` takes 3D scans. Use `anomalyclip-med predict` for "
                         "2D images.")
    meta = dict(img.meta)
    affine = torch.as_tensor(img.affine, dtype=torch.float64).detach().cpu().clone()
    original = meta.get(MetaKeys.ORIGINAL_AFFINE)
    original = affine.numpy().copy() if original is None else np.array(original, dtype=np.float64)
    if str(meta.get(MetaKeys.SPACE, SpaceKeys.RAS)) == str(SpaceKeys.LPS):
        affine, original = orientation_ras_lps(affine), orientation_ras_lps(original)
    meta.update({MetaKeys.AFFINE: affine, MetaKeys.ORIGINAL_AFFINE: original, MetaKeys.SPACE: SpaceKeys.RAS,
                 ImageMetaKey.FILENAME_OR_OBJ: meta.get(ImageMetaKey.FILENAME_OR_OBJ) or name})
    for key, default in (("source_format", "memory"), ("modality", ""), ("body_part", "")):
        meta.setdefault(key, default)
    meta.pop(MetaKeys.ORIGINAL_CHANNEL_DIM, None)  # set again by the channel step below
    data = img.as_tensor().detach().to(device="cpu", dtype=torch.float32, copy=True)
    return _finish(MetaTensor(data, meta=meta), name)


def _load_file(path: Path, extra: dict) -> MetaTensor:
    suffix = volume_suffix(path)
    if suffix is None:
        if path.suffix.lower() in IMAGE_SUFFIXES or path.suffix.lower() in DICOM_SUFFIXES:
            raise InputError(f"'{path}' is a 2D image file; `score` takes 3D scans (a volume file or a DICOM "
                             "series folder). Use `anomalyclip-med predict` for 2D images.")
        raise InputError(f"'{path}' is not a supported scan: give a volume file ({', '.join(VOLUME_SUFFIXES)}) "
                         "or a folder holding one DICOM series.")
    check_volume_file(path, suffix)
    extra["source_format"] = _FORMATS[suffix]
    reader = NibabelReader() if suffix in NIFTI_SUFFIXES else _itk_reader(path)
    return _read(reader, path)


def _load_dicom(folder: Path, series_uid: str | None, extra: dict) -> MetaTensor:
    series = select_dicom_series(folder, series_uid)
    reader = _itk_reader(folder, series_name=_gdcm_series_name(folder, series.files))
    img = _read(reader, folder)
    if img.ndim != 3 or img.shape[-1] != len(series.files):
        raise InputError(f"DICOM series {series.uid} in '{folder}' read as shape {tuple(img.shape)}, expected "
                         f"{len(series.files)} slices; convert it with dcm2niix and score the NIfTI.")
    extra.update(source_format="dicom", modality=series.modality, body_part=series.body_part,
                 series_uid=series.uid, dicom_files=[str(f) for f in series.files])
    return img


def _itk_reader(path: Path, **kwargs) -> ITKReader:
    if not has_itk:
        raise InputError(f"Reading '{path}' needs ITK (NRRD, MetaImage and DICOM): pip install itk-io.")
    return ITKReader(**kwargs)


def _gdcm_series_name(folder: Path, files: list[Path]) -> str:
    """The GDCM series identifier (as MONAI's ITKReader groups files) whose files are exactly ``files``."""
    with _quiet_itk():
        names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    names.AddSeriesRestriction("0008|0021")  # as ITKReader does
    names.SetDirectory(str(folder))
    wanted = {os.path.realpath(f) for f in files}
    for ident in names.GetSeriesUIDs():
        if {os.path.realpath(f) for f in names.GetFileNames(ident)} == wanted:
            return ident
    raise InputError(f"ITK/GDCM groups the DICOM files in '{folder}' differently from their SeriesInstanceUID "
                     "(mixed dates or acquisition details within the series); convert it with dcm2niix.")


def _read(reader, path: Path) -> MetaTensor:
    try:
        with _quiet_itk():
            # the reader given at call time is the only one tried: LoadImage would otherwise fall back to others
            return LoadImage(image_only=True, dtype=np.float32)(str(path), reader=reader)
    except Exception as err:  # the readers raise many types; the user needs the file and the cause
        cause = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise InputError(f"Cannot read scan '{path}': {cause}") from None


def _select_volume(path: Path, img: MetaTensor, volume_index: int | None) -> tuple[MetaTensor, int | None]:
    """The one 3D volume to score, and its index when the file is 4D."""
    index = None
    if img.ndim == 4:
        n = img.shape[-1]
        if volume_index is None and n > 1:
            raise InputError(f"'{path}' is a 4D scan holding {n} volumes (shape {tuple(img.shape)}); pick one "
                             f"with --volume-index 0..{n - 1} (LoadingOptions.volume_index).")
        index = volume_index or 0
        if not 0 <= index < n:
            raise InputError(f"--volume-index {index} is out of range for '{path}', which holds {n} volumes "
                             f"(0..{n - 1}).")
        img = img[..., index].clone()
    elif volume_index not in (None, 0):
        raise InputError(f"--volume-index {volume_index} given but '{path}' holds a single volume.")
    if img.ndim != 3 or min(img.shape) < 2:
        raise InputError(f"'{path}' is 2D (shape {tuple(img.shape)}); `score` takes 3D scans. Use "
                         "`anomalyclip-med predict` for 2D images.")
    return img, index
