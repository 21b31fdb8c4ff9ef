"""Loading scans with MONAI readers: formats, geometry, DICOM series discovery, 4D, non-finite voxels."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.cases import find_cases
from anomalyclip_med.io.scans import case_id_of
from anomalyclip_med.transforms import LoadScan
from conftest import SHARED_DATA, needs_shared_data
from scan_data import LPS, oblique_affine, save_nifti, synthetic_head_ct, write_dicom_series


def _sitk_image(array: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    """``array`` in (x, y, z) order with the geometry of ``affine_ras``, as a SimpleITK image."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    lps = LPS @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_every_format_loads_with_its_oblique_geometry(tmp_path, suffix):
    vol, affine = synthetic_head_ct(), oblique_affine()
    path = tmp_path / f"scan{suffix}"
    if suffix.startswith(".nii"):
        save_nifti(vol, affine, path)
    else:
        sitk.WriteImage(_sitk_image(vol, affine), str(path))
    img = LoadScan()(path)
    assert img.shape == (1, *vol.shape)
    np.testing.assert_allclose(img[0].numpy(), vol, atol=1e-3)
    np.testing.assert_allclose(np.asarray(img.meta["original_affine"]), affine, atol=1e-5)
    assert img.meta["nonfinite_voxels"] == 0 and img.meta["modality"] == ""


def test_dicom_series_folder_loads_sorted_by_position(tmp_path):
    vol, affine = synthetic_head_ct(), oblique_affine()
    folder = tmp_path / "series"
    files = write_dicom_series(vol, affine, folder, modality="CT", body_part="HEAD")
    # file names that sort opposite to the slice order, and a stray non-DICOM file
    for i, f in enumerate(files):
        f.rename(folder / f"img_{len(files) - i:03d}.dcm")
    (folder / "README.txt").write_text("exported series")
    img = LoadScan()(folder)
    np.testing.assert_allclose(img[0].numpy(), np.round(vol), atol=1e-3)
    np.testing.assert_allclose(np.asarray(img.meta["original_affine"]), affine, atol=1e-4)
    assert (img.meta["source_format"], img.meta["modality"], img.meta["body_part"]) == ("dicom", "CT", "HEAD")
    assert [p.rsplit("/", 1)[-1] for p in img.meta["dicom_files"][:2]] == [f"img_{len(files):03d}.dcm",
                                                                          f"img_{len(files) - 1:03d}.dcm"]


def test_series_uid_picks_one_series_of_several(tmp_path):
    folder = tmp_path / "two"
    write_dicom_series(synthetic_head_ct(), np.eye(4), folder / "a", series_uid="1.2.3.4.1")
    write_dicom_series(synthetic_head_ct(shape=(32, 30, 12)), np.eye(4), folder / "b", series_uid="1.2.3.4.2")
    for sub in ("a", "b"):
        for f in (folder / sub).iterdir():
            f.rename(folder / f"{sub}_{f.name}")
    with pytest.raises(InputError, match=r"2 DICOM series(.|\n)*1\.2\.3\.4\.1(.|\n)*1\.2\.3\.4\.2(.|\n)*--series-uid"):
        LoadScan()(folder)
    assert LoadScan(series_uid="1.2.3.4.2")(folder).shape == (1, 32, 30, 12)
    with pytest.raises(InputError, match="no DICOM series with SeriesInstanceUID 9.9"):
        LoadScan(series_uid="9.9")(folder)


def test_4d_volume_needs_a_volume_index(tmp_path):
    vol4 = np.stack([synthetic_head_ct(seed=s) for s in range(3)], axis=-1)
    path = save_nifti(vol4, oblique_affine(), tmp_path / "dynamic.nii.gz")
    with pytest.raises(InputError, match=r"4D scan holding 3 volumes(.|\n)*--volume-index 0\.\.2"):
        LoadScan()(path)
    img = LoadScan(volume_index=1)(path)
    np.testing.assert_allclose(img[0].numpy(), vol4[..., 1])
    np.testing.assert_allclose(np.asarray(img.meta["original_affine"]), oblique_affine(), atol=1e-5)
    assert img.meta["volume_index"] == 1
    with pytest.raises(InputError, match="out of range"):
        LoadScan(volume_index=3)(path)


def test_non_finite_voxels_are_replaced_and_counted(tmp_path):
    vol = synthetic_head_ct()
    vol[10, 10, 10], vol[11, 10, 10], vol[12, 10, 10] = np.nan, np.inf, -np.inf
    img = LoadScan()(save_nifti(vol, np.eye(4), tmp_path / "nan.nii.gz"))
    data = img[0].numpy()
    finite = vol[np.isfinite(vol)]
    assert img.meta["nonfinite_voxels"] == 3
    assert np.isfinite(data).all()
    assert data[10, 10, 10] == finite.min() and data[12, 10, 10] == finite.min()  # NaN, -Inf -> background
    assert data[11, 10, 10] == finite.max()


def test_case_names_and_source_expansion(tmp_path):
    assert case_id_of("data/case_0/FLAIR.nii.gz") == "FLAIR"
    assert case_id_of("brain1_image.nrrd") == "brain1_image"
    folder = tmp_path / "CT_SERIES_7"
    write_dicom_series(synthetic_head_ct(shape=(8, 8, 3)), np.eye(4), folder)
    assert case_id_of(folder) == "CT_SERIES_7"
    vols = tmp_path / "vols"
    vols.mkdir()
    for name in ("b.nii.gz", "a.nrrd", "notes.txt"):
        (vols / name).write_bytes(b"")
    assert [c.source.name for c in find_cases([vols, folder])] == ["a.nrrd", "b.nii.gz", "CT_SERIES_7"]
    with pytest.raises(InputError, match="does not exist"):
        find_cases([tmp_path / "missing.nii.gz"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither DICOM series nor volume files"):
        find_cases([tmp_path / "empty"])


@needs_shared_data
def test_real_volumes_keep_the_geometry_their_files_declare():
    import nibabel as nib

    flair = SHARED_DATA / "volumes" / "brats2018" / "case_0" / "FLAIR.nii.gz"
    img = LoadScan()(flair)
    assert img.shape == (1, 240, 240, 155)
    np.testing.assert_array_equal(np.asarray(img.meta["original_affine"]), nib.load(flair).affine)
    nrrd = SHARED_DATA / "volumes" / "pyradiomics" / "brain1_image.nrrd"
    img = LoadScan()(nrrd)
    ref = sitk.ReadImage(str(nrrd))
    lps = LPS @ np.asarray(img.meta["original_affine"])
    np.testing.assert_allclose(np.linalg.norm(lps[:3, :3], axis=0), ref.GetSpacing())  # 0.78 x 0.78 x 6.5 mm
    np.testing.assert_allclose(lps[:3, 3], ref.GetOrigin())
    np.testing.assert_array_equal(img[0].numpy(), sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
