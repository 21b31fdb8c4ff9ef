"""Scans made by the tests: synthetic CT/MR volumes, oblique affines and real multi-file DICOM series (pydicom)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS


def oblique_affine(spacing=(0.9, 1.1, 2.5), origin=(-60.0, 35.0, 12.5), degrees=(20.0, -15.0, 10.0)) -> np.ndarray:
    """A voxel-to-RAS affine rotated about all three axes (a non-identity, oblique acquisition)."""
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def synthetic_head_ct(shape=(48, 40, 24), seed=0) -> np.ndarray:
    """A CT-like volume in HU: air (-1000) around an ellipsoidal 'head' (~40 HU) with a bright lesion; the first
    and last 4 slices along axis 2 hold air only."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = (x / 0.8) ** 2 + (y / 0.85) ** 2 + (z / 0.6) ** 2 <= 1.0
    vol = np.full(shape, -1000.0, dtype=np.float32)
    vol[head] = 40.0
    lesion = (x - 0.3) ** 2 + (y + 0.2) ** 2 + z**2 <= 0.15**2
    vol[lesion] = 75.0
    vol += rng.normal(0, 5, shape).astype(np.float32)
    vol[:, :, :4] = -1000.0
    vol[:, :, -4:] = -1000.0
    return vol


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def write_dicom_series(
    volume: np.ndarray,
    affine_ras: np.ndarray,
    folder: Path,
    modality: str = "CT",
    series_uid: str | None = None,
    body_part: str = "HEAD",
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    frame_uid: str = "1.2.826.0.1.3680043.8.498.2",
) -> list[Path]:
    """
    Write ``volume`` (x = columns, y = rows, z = slices, as NIfTI/ITK order) as a multi-file DICOM series with
    pydicom, one CT/MR Image Storage file per slice, with the geometry of ``affine_ras``. CT values are stored
    as int16 with RescaleIntercept 0.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    lps = LPS @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    paths = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice_{k:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Scan", "TEST01", "", "O"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, "20240101", "120000", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, series_uid, 1
        ds.SeriesDate, ds.SeriesTime, ds.SeriesDescription = "20240101", "120000", f"test {modality}"
        ds.BodyPartExamined = body_part
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.Manufacturer = "test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in (lps @ np.array([0, 0, k, 1.0]))[:3]]
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([direction[:, 0], direction[:, 1]])]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing (between rows = y), column spacing
        ds.SliceThickness = float(spacing[2])
        frame = np.ascontiguousarray(np.round(volume[:, :, k].T)).astype(np.int16)
        ds.Rows, ds.Columns = frame.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if modality == "CT":
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
            ds.KVP = 120
        ds.PixelData = frame.tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def assert_same_geometry(output: Path, source: Path) -> None:
    """The output overlays the source exactly, as nibabel and as SimpleITK see them."""
    out_sitk = sitk.ReadImage(str(output))
    src_sitk = sitk.ReadImage(str(source)) if source.is_file() else _read_dicom_sitk(source)
    assert out_sitk.GetSize() == src_sitk.GetSize()
    np.testing.assert_allclose(out_sitk.GetOrigin(), src_sitk.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(out_sitk.GetSpacing(), src_sitk.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(out_sitk.GetDirection(), src_sitk.GetDirection(), atol=1e-5)
    if source.name.endswith((".nii", ".nii.gz")):
        out_nib, src_nib = nib.load(output), nib.load(source)
        assert out_nib.shape == src_nib.shape
        np.testing.assert_array_equal(out_nib.affine, src_nib.affine)
        assert int(out_nib.header["sform_code"]) == int(src_nib.header["sform_code"])
        assert int(out_nib.header["qform_code"]) == int(src_nib.header["qform_code"])


def _read_dicom_sitk(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def normal_volume(path: Path, seed: int, shape=(40, 40, 8), lesion: bool = False) -> Path:
    """A CT-like normal 'body' saved as NIfTI: an elliptic cylinder of soft tissue (~40 HU) with a random texture in
    air, every slice holding body; ``lesion`` adds a bright (90 HU) ball in its middle."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 <= 1
    vol = np.full(shape, -1000.0, np.float32)
    texture = rng.normal(40, 15, shape) + 30 * np.sin(rng.uniform(2, 6) * x + rng.uniform(0, 6))[..., None]
    vol[body] = texture[body]
    if lesion:
        z = np.linspace(-1, 1, shape[2])
        ball = (x[..., None] ** 2 + y[..., None] ** 2 + z[None, None] ** 2) <= 0.35**2
        vol[ball] = 90.0
    nib.save(nib.Nifti1Image(vol, np.diag([0.9, 0.9, 3.0, 1.0])), path)
    return path
