"""Scoring whole scans with a tiny random backbone: outputs, geometry, empty slices, options and bad inputs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from anomalyclip_med.errors import InputError, OutputExistsError
from anomalyclip_med.inference.options import LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.api import score_scan
from anomalyclip_med.inference.scan import expected_outputs
from conftest import SHARED_DATA, needs_shared_data, tiny_model
from scan_data import assert_same_geometry, oblique_affine, save_nifti, synthetic_head_ct, write_dicom_series

QUIET = OutputOptions(progress=False)


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is fastest on one thread, and the machine is shared
    yield tiny_model()
    torch.set_num_threads(threads)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_oblique_ct_end_to_end(model, tmp_path):
    vol, affine = synthetic_head_ct(), oblique_affine()
    src = save_nifti(vol, affine, tmp_path / "head.nii.gz")
    before = _digest(src)
    result = score_scan(model, src, tmp_path / "out", ScoringOptions(threshold=0.45), output=QUIET)

    outputs = expected_outputs(src, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in outputs.values())
    assert (result.outputs["map"], result.outputs["seg"], result.outputs["scores"]) == (outputs["map"], outputs["seg"],
                                                                     outputs["scores"])
    assert _digest(src) == before  # the input is untouched
    for out in (result.outputs["map"], result.outputs["seg"]):
        assert_same_geometry(out, src)

    amap = nib.load(result.outputs["map"])
    seg = nib.load(result.outputs["seg"])
    assert amap.get_data_dtype() == np.float32 and seg.get_data_dtype() == np.uint8
    m, s = np.asarray(amap.dataobj), np.asarray(seg.dataobj)
    assert m.min() >= 0 and m.max() <= 1 and m.max() > 0
    assert set(np.unique(s)) <= {0, 1}
    np.testing.assert_array_equal(s, (m >= 0.45).astype(np.uint8))
    # axial slices holding air only (below -500 HU everywhere) are skipped: score 0, map 0
    air = vol.reshape(-1, vol.shape[2]).max(axis=0) < -500
    assert air[:4].all() and not air.all()
    assert result.record["slicing"]["scored_slices"] == (~air).sum()
    assert np.all(m[:, :, air] == 0) and np.all(m[:, :, ~air].reshape(-1, (~air).sum()).max(axis=0) > 0)
    assert all((v == 0) == a for v, a in zip(result.record["slice_scores"], air))

    report = json.loads(result.outputs["scores"].read_text())
    top5 = sorted(report["slice_scores"], reverse=True)[:5]
    assert report["scan_score"] == pytest.approx(np.mean(top5), abs=1e-5) == result.record["scan_score"]
    assert report["preset"]["name"] == result.record["preset"]["name"] == "abdomen"  # HU range, no DICOM modality
    assert report["slicing"] == {**report["slicing"], "axis": 2, "plane": "axial", "n_slices": vol.shape[2],
                                 "scored_slices": int((~air).sum())}
    assert report["threshold"] == 0.45 and report["aggregation"]["method"] == "topk_mean"
    assert report["model"]["backbone"] == model.identity()["backbone"]
    assert report["package_version"] and "RANDOM" in report["warning"]
    montage = Image.open(result.outputs["montage"])
    assert montage.size == (3 * 256 + 72, 2 * 256) and "RANDOM" in montage.text["Warning"]  # tiles + colour bar


def test_all_zero_volume_runs_and_scores_zero(model, tmp_path):
    src = save_nifti(np.zeros((32, 32, 10), dtype=np.float32), np.eye(4), tmp_path / "blank.nii.gz")
    result = score_scan(model, src, tmp_path / "out", ScoringOptions(), output=QUIET)
    assert result.record["scan_score"] == 0.0 and result.record["slice_scores"] == [0.0] * 10 and result.record["slicing"]["scored_slices"] == 0
    assert not np.asarray(nib.load(result.outputs["map"]).dataobj).any()
    assert not np.asarray(nib.load(result.outputs["seg"]).dataobj).any()


def test_options_axis_smoothing_and_aggregation(model, tmp_path):
    src = save_nifti(synthetic_head_ct(), np.eye(4), tmp_path / "head.nii.gz")
    # the raw map (no body mask), whose slice-to-slice changes are the network's, not the body outline's
    plain = score_scan(model, src, tmp_path / "plain", ScoringOptions(body_mask=False), output=QUIET)
    smooth = score_scan(model, src, tmp_path / "smooth", ScoringOptions(z_smooth=3.0, aggregation="max",
                                                                        body_mask=False), output=QUIET)
    m0, m1 = (np.asarray(nib.load(r.outputs["map"]).dataobj) for r in (plain, smooth))
    inner = slice(5, -5)
    assert np.abs(np.diff(m1[:, :, inner], axis=2)).mean() < 0.5 * np.abs(np.diff(m0[:, :, inner], axis=2)).mean()
    assert np.all(m1[:, :, :4] == 0) and np.all(m1[:, :, 5:-5] > 0)  # skipped slices stay 0 after smoothing
    assert smooth.record["slice_scores"] == plain.record["slice_scores"]  # smoothing touches the map only
    assert smooth.record["scan_score"] == pytest.approx(max(plain.record["slice_scores"]), abs=1e-6)  # JSON: 6 places
    sagittal = score_scan(model, src, tmp_path / "sag", ScoringOptions(axis="sagittal"), output=QUIET)
    assert len(sagittal.record["slice_scores"]) == 48
    assert json.loads(sagittal.outputs["scores"].read_text())["slicing"]["plane"] == "sagittal"
    everything = score_scan(model, src, tmp_path / "all", ScoringOptions(skip_empty=False), output=QUIET)
    assert everything.record["slicing"]["scored_slices"] == 24 and all(v > 0 for v in everything.record["slice_scores"])


def test_existing_outputs_are_refused_unless_overwrite(model, tmp_path):
    src = save_nifti(synthetic_head_ct(), np.eye(4), tmp_path / "head.nii.gz")
    out = tmp_path / "out"
    first = score_scan(model, src, out, ScoringOptions(), output=QUIET)
    digests = {p: _digest(p) for p in out.iterdir()}
    with pytest.raises(OutputExistsError, match="--overwrite"):
        score_scan(model, src, out, ScoringOptions(threshold=0.1), output=QUIET)
    assert {p: _digest(p) for p in out.iterdir()} == digests
    again = score_scan(model, src, out, ScoringOptions(threshold=0.1),
                       output=OutputOptions(overwrite=True, progress=False))
    assert json.loads(again.outputs["scores"].read_text())["threshold"] == 0.1
    assert sorted(out.iterdir()) == sorted(digests)  # replaced, no temporary files left
    assert first.outputs["map"] == again.outputs["map"]


def _unwritable(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return locked / "out"
    return Path("/sys/anomalyclip_med_out")  # root ignores mode bits; sysfs refuses new entries even to root


def _two_series(tmp_path: Path) -> Path:
    folder = tmp_path / "two_series"
    write_dicom_series(synthetic_head_ct(shape=(16, 16, 6)), np.eye(4), folder / "a")
    write_dicom_series(synthetic_head_ct(shape=(16, 16, 6)), np.eye(4), folder / "b")
    for sub in ("a", "b"):
        for f in (folder / sub).iterdir():
            f.rename(folder / f"{sub}_{f.name}")
        (folder / sub).rmdir()
    return folder


def _series(tmp_path: Path) -> tuple[Path, list[Path]]:
    folder = tmp_path / "series"
    return folder, write_dicom_series(synthetic_head_ct(shape=(16, 16, 8)), np.eye(4), folder)


def _truncated_slice(tmp_path):
    folder, files = _series(tmp_path)
    files[3].write_bytes(files[3].read_bytes()[:-200])
    return folder


def _garbage_slice(tmp_path):
    folder, _ = _series(tmp_path)
    (folder / "slice_0100.dcm").write_bytes(b"not a dicom file" * 40)
    return folder


def _missing_slice(tmp_path):
    folder, files = _series(tmp_path)
    files[4].unlink()
    return folder


def _four_d(tmp_path):
    return save_nifti(np.zeros((8, 8, 4, 2), np.float32), np.eye(4), tmp_path / "dyn.nii.gz")


def _two_d(tmp_path):
    return save_nifti(np.zeros((16, 16), np.float32), np.eye(4), tmp_path / "flat.nii.gz")


def _png(tmp_path):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "slice.png")
    return tmp_path / "slice.png"


def _corrupt_nifti(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    return tmp_path / "broken.nii.gz"


def _single_dicom(tmp_path):
    folder, files = _series(tmp_path)
    for f in files[1:]:
        f.unlink()
    return folder


BAD_INPUTS = {
    "two series": (_two_series, r"2 DICOM series(.|\n)*--series-uid"),
    "truncated DICOM": (_truncated_slice, r"slice_0003\.dcm' is truncated or damaged: its pixel data"),
    "garbage DICOM": (_garbage_slice, r"slice_0100\.dcm' is truncated or damaged: it holds text"),
    "missing slice": (_missing_slice, r"uneven slice spacing(.|\n)*slice_0003\.dcm' and '.*slice_0005\.dcm"),
    "4D volume": (_four_d, r"4D scan holding 2 volumes(.|\n)*--volume-index"),
    "2D NIfTI": (_two_d, r"is 2D(.|\n)*predict"),
    "2D PNG": (_png, r"2D image file(.|\n)*predict"),
    "single DICOM slice": (_single_dicom, r"single 2D slice"),
    "corrupt NIfTI": (_corrupt_nifti, r"broken\.nii\.gz' is truncated or damaged: its gzip stream decompresses to 0 bytes"),
    "missing path": (lambda tmp: tmp / "nothing_here.nii.gz", r"does not exist"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_get_a_clear_error_and_leave_nothing(model, tmp_path, name):
    make, message = BAD_INPUTS[name]
    src = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=message):
        score_scan(model, src, out, ScoringOptions(), output=QUIET)
    assert not out.exists() or not any(out.iterdir())


def test_unwritable_output_folder_is_refused_before_any_work(model, tmp_path):
    src = save_nifti(synthetic_head_ct(shape=(16, 16, 6)), np.eye(4), tmp_path / "head.nii.gz")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out in (a_file / "out", _unwritable(tmp_path)):
        with pytest.raises(InputError, match="not writable"):
            score_scan(model, src, out, ScoringOptions(), output=QUIET)
    dicom, _ = _series(tmp_path)
    with pytest.raises(InputError, match="is an input"):
        score_scan(model, dicom, dicom, ScoringOptions(), output=QUIET)


def test_bad_options_are_refused_naming_the_option(model, tmp_path):
    """Each options class checks its values when made: one InputError naming the option, before any work."""
    bad_scoring = {"threshold": 1.5, "batch_size": 0, "preset": "spleen", "axis": "oblique", "aggregation": "median",
                   "window_width": -10.0, "z_smooth": -1.0, "topk": 0, "min_foreground": 2.0,
                   "percentiles": (99.0, 1.0)}
    for name, value in bad_scoring.items():
        with pytest.raises(InputError, match=rf"Invalid scoring option {name}="):
            ScoringOptions(**{name: value})
    with pytest.raises(InputError, match="Invalid scoring option preset='mri'"):
        ScoringOptions(preset="mri", window_level=40.0)
    with pytest.raises(InputError, match="Invalid loading option volume_index=-1"):
        LoadingOptions(volume_index=-1)
    with pytest.raises(InputError, match="Invalid output option montage_slices=0"):
        OutputOptions(montage_slices=0)
    assert not (tmp_path / "out").exists()


@needs_shared_data
def test_real_brats_flair(model, tmp_path):
    src = SHARED_DATA / "volumes" / "brats2018" / "case_0" / "FLAIR.nii.gz"
    result = score_scan(model, src, tmp_path, ScoringOptions(batch_size=16), output=QUIET)
    for out in (result.outputs["map"], result.outputs["seg"]):
        assert_same_geometry(out, src)
    flair = np.asarray(nib.load(src).dataobj)
    m = np.asarray(nib.load(result.outputs["map"]).dataobj)
    empty = np.flatnonzero(flair.reshape(-1, flair.shape[2]).max(axis=0) == 0)  # slices with no brain at all
    assert empty.size > 10
    assert np.all(m[:, :, empty] == 0) and all(result.record["slice_scores"][k] == 0 for k in empty)
    assert result.record["preset"]["name"] == "mri" and 0 < result.record["scan_score"] < 1
    assert result.record["slicing"]["scored_slices"] <= flair.shape[2] - empty.size


@needs_shared_data
def test_real_anisotropic_nrrd(model, tmp_path):
    src = SHARED_DATA / "volumes" / "pyradiomics" / "brain1_image.nrrd"
    result = score_scan(model, src, tmp_path, ScoringOptions(), output=QUIET)
    for out in (result.outputs["map"], result.outputs["seg"]):
        assert_same_geometry(out, src)
    assert nib.load(result.outputs["map"]).header.get_zooms() == pytest.approx((0.78125, 0.78125, 6.5))
    assert len(result.record["slice_scores"]) == 25


def test_outputs_are_readable_by_others(model, tmp_path):
    src = save_nifti(synthetic_head_ct(shape=(16, 16, 10)), np.eye(4), tmp_path / "head.nii.gz")
    mask = os.umask(0o022)
    try:
        result = score_scan(model, src, tmp_path / "out", ScoringOptions(), output=QUIET)
    finally:
        os.umask(mask)
    assert all((p.stat().st_mode & 0o777) == 0o644 for p in (result.outputs["map"], result.outputs["seg"], result.outputs["scores"]))


def test_a_copy_of_a_series_folder_scores_like_the_original(model, tmp_path):
    folder, _ = _series(tmp_path)
    copy = shutil.copytree(folder, tmp_path / "copy")
    a = score_scan(model, folder, tmp_path / "a", ScoringOptions(), output=QUIET)
    b = score_scan(model, copy, tmp_path / "b", ScoringOptions(), output=QUIET)
    assert a.record["slice_scores"] == b.record["slice_scores"] and a.record["preset"]["name"] == b.record["preset"]["name"] == "brain"  # CT, BodyPartExamined HEAD
