"""
DICOM series in, outputs checked as a hospital's tools see them: the NIfTI geometry against dcm2niix's conversion of
the same series, the DICOM SEG against dciodvfy (dicom3tools) and against the NIfTI labelmap, slice by slice.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from anomalyclip_med.inference.options import OutputOptions, ScoringOptions
from anomalyclip_med.api import score_scan
from conftest import SHARED_DATA, tiny_model
from scan_data import LPS, assert_same_geometry, oblique_affine, synthetic_head_ct, write_dicom_series

hd = pytest.importorskip("highdicom", reason="highdicom not installed (pip install 'anomalyclip_med[dicom-seg]')")

QUIET = OutputOptions(progress=False)


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_model()
    torch.set_num_threads(threads)


def _synthetic():
    return synthetic_head_ct(), oblique_affine(), "CT"


def _real_mr():
    path = SHARED_DATA / "volumes" / "pyradiomics" / "brain1_image.nrrd"
    if not path.is_file():
        pytest.skip("../shared/data is absent (a plain clone); real data unavailable")
    image = sitk.ReadImage(str(path))
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32), LPS @ affine, "MR"


@pytest.fixture(scope="module", params=["synthetic oblique CT", "real anisotropic MR"])
def scored_series(request, model, tmp_path_factory):
    """A multi-file DICOM series scored twice: once to pick a threshold that splits the map, then with a SEG."""
    volume, affine, modality = _synthetic() if request.param.startswith("synthetic") else _real_mr()
    tmp = tmp_path_factory.mktemp("dicom")
    folder = tmp / "series"
    write_dicom_series(volume, affine, folder, modality=modality)
    first = score_scan(model, folder, tmp / "out", ScoringOptions(), output=QUIET)
    amap = np.asarray(nib.load(first.outputs["map"]).dataobj)
    threshold = float(np.median(amap[amap > 0]))
    result = score_scan(model, folder, tmp / "out", ScoringOptions(threshold=threshold),
                        output=OutputOptions(dicom_seg=True, overwrite=True, progress=False))
    return volume, affine, folder, result, tmp


def test_nifti_outputs_have_the_series_geometry(scored_series):
    _, _, folder, result, _ = scored_series
    for out in (result.outputs["map"], result.outputs["seg"]):
        assert_same_geometry(out, folder)
    seg = np.asarray(nib.load(result.outputs["seg"]).dataobj)
    assert seg.dtype == np.uint8 and 0 < seg.mean() < 1  # the threshold splits the map


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed (apt-get install dcm2niix)")
def test_geometry_agrees_with_dcm2niix(scored_series):
    volume, affine, folder, result, tmp = scored_series
    conv = tmp / "dcm2niix"
    conv.mkdir(exist_ok=True)
    subprocess.run(["dcm2niix", "-z", "y", "-f", "converted", "-o", str(conv), str(folder)], check=True,
                   capture_output=True)
    reference = nib.as_closest_canonical(nib.load(conv / "converted.nii.gz"))
    ours = nib.as_closest_canonical(nib.load(result.outputs["map"]))
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-3)
    # voxel for voxel: dcm2niix's intensities are those of the volume the series was written from
    written = nib.as_closest_canonical(nib.Nifti1Image(np.round(volume).astype(np.int16), affine))
    np.testing.assert_array_equal(np.asarray(reference.dataobj), np.asarray(written.dataobj))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed (apt-get install dicom3tools)")
def test_dicom_seg_passes_dciodvfy(scored_series):
    *_, result, _ = scored_series
    proc = subprocess.run(["dciodvfy", str(result.outputs.get("dicom_seg"))], capture_output=True, text=True)
    report = proc.stdout + proc.stderr
    assert "Segmentation" in report
    errors = [line for line in report.splitlines() if re.match(r"\s*Error", line)]
    assert not errors, "\n".join(errors)


def test_dicom_seg_matches_the_labelmap_slice_by_slice(scored_series):
    _, _, folder, result, _ = scored_series
    seg = hd.seg.segread(result.outputs.get("dicom_seg"))
    labelmap = nib.load(result.outputs["seg"])
    to_voxel = np.linalg.inv(LPS @ labelmap.affine)
    data = np.asarray(labelmap.dataobj)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir())]
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {str(ds.SOPInstanceUID) for ds in sources}
    for ds in sources:
        frame = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], segment_numbers=[1])[0, ..., 0]
        k = int(round((to_voxel @ [*map(float, ds.ImagePositionPatient), 1.0])[2]))
        np.testing.assert_array_equal(frame, data[:, :, k].T)
