"""
Issue 10 items 1-4, 6 and 9 (reading side): one ``score`` run over 34 damaged or mislabelled scans and two good ones.

Every bad scan must get exactly one ``error:`` line naming its file and what is wrong with it (the format actually
found, the bytes its header declares against the bytes it holds, the DICOM file and field at fault); the batch
goes on; the good NIfTI and the good DICOM series are scored with their true geometry; no traceback.
"""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from faults import (AFFINE, PROMPTS, SHAPE, TINY, bad_dicom_series, bad_volume_files, dicom_series, error_lines,
                    good_volume, run_cli, save_nifti, the_error_for)

VOLUME_FAULTS = (
    "gz_half", "gz_header_cut", "gz_no_trailer", "gz_bad_crc", "nii_cut", "nii_empty", "gz_empty", "nii_garbled",
    "gz_garbled", "npy_as_nifti", "png_as_nifti", "dicom_as_nifti", "text_as_nifti", "header_30000", "header_32767",
    "header_bad_dim", "nrrd_cut", "nrrd_gz_cut", "nrrd_bad_sizes", "mha_cut", "mha_zlib_cut", "png_as_mha",
)
DICOM_FAULTS = (
    "dcm_cut300_last", "dcm_cut900_last", "dcm_cut300_middle", "dcm_cut900_middle", "dcm_cut100", "dcm_pixels_cut",
    "dcm_empty_file", "dcm_spacing_text", "dcm_ipp_nan", "dcm_iop_5", "dcm_thickness_text", "dcm_spacing_inf",
)


@pytest.fixture(scope="module")
def score_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reading")
    volumes = bad_volume_files(root / "volumes")
    series = bad_dicom_series(root / "dicom")
    assert set(volumes) == set(VOLUME_FAULTS) and set(series) == set(DICOM_FAULTS)
    good_nifti = save_nifti(good_volume(2), AFFINE, root / "good_nifti.nii.gz")
    dicom_series(root / "good_dicom", seed=3)
    inputs = [good_nifti, *(p for p, _ in volumes.values()), *(root / "dicom" / n for n in DICOM_FAULTS),
              root / "good_dicom"]
    out = root / "out"
    proc = run_cli("score", *inputs, "--out", out, *TINY, *PROMPTS, "--no-progress")
    return proc, {**volumes, **series}, out


def test_the_batch_goes_on_and_exits_2(score_run):
    proc, faults, _ = score_run
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert len(error_lines(proc.stderr)) == len(faults) == 34


@pytest.mark.parametrize("name", VOLUME_FAULTS + DICOM_FAULTS)
def test_each_bad_scan_gets_one_error_line_naming_its_file_and_fault(score_run, name):
    proc, faults, out = score_run
    path, message = faults[name]
    line = the_error_for(proc.stderr, name)
    assert re.search(re.escape(str(path)) + "'? " + message, line), line
    assert not list(out.rglob(f"{name}_*")), "a failed case left outputs"


def test_good_scans_are_scored_with_their_true_geometry(score_run):
    proc, _, out = score_run
    for case in ("good_nifti", "good_dicom"):
        report = json.loads(next(out.rglob(f"{case}_scores.json")).read_text())
        assert report["shape"] == list(SHAPE)
        assert len(report["slice_scores"]) == SHAPE[2]
        spacing = np.linalg.norm(np.asarray(report["affine"])[:3, :3], axis=0)
        np.testing.assert_allclose(spacing, [0.8, 0.8, 2.0], atol=1e-5)  # item 3: not the 1.0 mm fallback
        amap = nib.load(next(out.rglob(f"{case}_anomaly_map.nii.gz")))
        assert amap.shape == SHAPE and np.isfinite(amap.get_fdata()).all()
    assert len(list(out.rglob("*_scores.json"))) == 2
