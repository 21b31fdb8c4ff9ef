"""
Issue 19, kind 1 (geometry): the anomaly map and labelmap lie voxel for voxel on the scan in every reader.

One ``score`` run over one scan per header form: a sheared sform, an sform whose voxel sizes disagree with pixdim,
a qform different from the sform, a negative pixdim with qfac -1 (each placed exactly: the outputs carry the
input's own header geometry, and nibabel and SimpleITK each place every output where they place its input), a
gantry-tilted DICOM series (resampled onto a regular grid, said in the scores JSON), and three that cannot be
placed: an sform holding a NaN, a DICOM series mixing PixelSpacing, a NRRD with non-orthogonal space directions
(each one ``error:`` line naming the field; exit 2).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import SHARED_DATA, needs_shared_data
from faults import AFFINE, PROMPTS, SHAPE, TINY, error_lines, good_volume, run_cli, save_nifti, the_error_for
from scan_data import write_dicom_series

from anomalyclip_med.io.scans import load_volume
from anomalyclip_med.io.writers import write_volume

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
TILT = np.radians(15.0)
# rows tilted about x by 15 degrees, slices stepping straight along z: a CT gantry tilt as scanners write it
TILTED = np.array([[0.8, 0, 0, -5.0], [0, 0.8 * np.cos(TILT), 0, 12.0], [0, 0.8 * np.sin(TILT), 2.0, -30.0],
                   [0, 0, 0, 1]])
# the regular grid it is resampled onto: the slices' rows and columns, the slice normal, the same origin
NORMAL = np.array([0.0, -np.sin(TILT), np.cos(TILT)])
REGULAR = TILTED.copy()
REGULAR[:3, 2] = NORMAL * (TILTED[:3, 2] @ NORMAL)
ROTATED = np.array([[0, -0.8, 0, 10.0], [0.8, 0, 0, 20.0], [0, 0, 2.0, 30.0], [0, 0, 0, 1]])
PLACED = ("sheared", "sform_sizes", "qform_sform", "negative_pixdim")
REFUSED = {"nan_sform": "srow_y", "mixed_spacing": "PixelSpacing", "sheared_directions": "space directions"}
FIELDS = ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z",
          "srow_x", "srow_y", "srow_z")


def _nifti(path, volume, qform=None, qcode=0, sform=None, scode=0, **raw):
    """A NIfTI file whose header holds exactly the given forms and codes, then ``raw`` fields set as they are."""
    image = nib.Nifti1Image(volume.astype(np.float32), None)
    header = image.header
    if qform is not None:
        header.set_qform(qform, code=qcode)
    if sform is not None:
        header.set_sform(sform, code=scode)
    header["qform_code"], header["sform_code"] = qcode, scode
    for key, value in raw.items():
        header[key] = value
    nib.save(image, path)
    return path


def raw_geometry(path) -> dict[str, np.ndarray]:
    """The header's geometry fields as the file holds them (no nibabel "fixes")."""
    with nib.openers.ImageOpener(str(path)) as f:
        header = nib.Nifti1Header.from_fileobj(f, check=False)
    return {**{k: np.array(header[k], dtype=float) for k in FIELDS}, "pixdim": np.array(header["pixdim"][:4])}


def sitk_placement(path):
    """Origin, spacing and direction as SimpleITK (the reader of 3D Slicer) places the file; its error if it
    cannot."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        return str(err).strip().splitlines()[-1]
    return np.concatenate([reader.GetOrigin(), reader.GetSpacing(), reader.GetDirection()])


def _same_placement(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return bool(np.allclose(a, b, atol=1e-5))


@pytest.fixture(scope="module")
def geometry_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("geometry")
    scans = root / "scans"
    scans.mkdir()
    volume = good_volume(4)
    diag = np.diag([0.8, 0.8, 2.0, 1.0])
    diag[:3, 3] = [3.0, -4.0, 5.0]
    sheared = diag.copy()
    sheared[0, 1] = 0.3  # x leans with y
    _nifti(scans / "sheared.nii.gz", volume, diag, 1, sheared, 2)
    _nifti(scans / "sform_sizes.nii.gz", volume, None, 0, diag, 1, pixdim=[1, 1, 1, 1, 1, 1, 1, 1])
    _nifti(scans / "qform_sform.nii.gz", volume, ROTATED, 1, diag, 2)
    flipped = diag @ np.diag([1, 1, -1, 1])
    _nifti(scans / "negative_pixdim.nii.gz", volume, flipped, 1, None, 0, pixdim=[-1, -0.8, 0.8, 2.0, 1, 1, 1, 1])
    nan = diag.copy()
    nan[1, 1] = np.nan
    _nifti(scans / "nan_sform.nii.gz", volume, diag, 1, nan, 1)
    write_dicom_series(volume, TILTED, scans / "tilted")
    files = write_dicom_series(volume, AFFINE, scans / "mixed_spacing")
    ds = pydicom.dcmread(files[5])
    ds.PixelSpacing = [0.9, 0.9]
    ds.save_as(files[5])
    image = sitk.GetImageFromArray(volume.transpose(2, 1, 0).astype(np.float32))
    image.SetSpacing((0.8, 0.8, 2.0))
    image.SetDirection((1, 0, 0, 0, 1, 0.2, 0, 0, 1))  # the slice axis leans 11 degrees towards y
    sitk.WriteImage(image, str(scans / "sheared_directions.nrrd"))
    out = root / "out"
    proc = run_cli("score", scans, "--out", out, *TINY, *PROMPTS, "--no-progress")
    return proc, scans, out


def test_the_run_refuses_only_what_cannot_be_placed(geometry_run):
    proc, _, out = geometry_run
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert len(error_lines(proc.stderr)) == len(REFUSED), error_lines(proc.stderr)
    assert len(list(out.rglob("*_scores.json"))) == len(PLACED) + 1  # + the tilted series


@pytest.mark.parametrize("name", REFUSED)
def test_what_cannot_be_placed_is_refused_naming_the_field(geometry_run, name):
    proc, _, out = geometry_run
    line = the_error_for(proc.stderr, name)
    assert REFUSED[name] in line, line
    assert not list(out.rglob(f"{name}_*")), "a refused case left outputs"


@pytest.mark.parametrize("output", ["_anomaly_map.nii.gz", "_anomaly_seg.nii.gz"])
@pytest.mark.parametrize("name", PLACED)
def test_outputs_carry_the_input_header_geometry(geometry_run, name, output):
    _, scans, out = geometry_run
    source, result = scans / f"{name}.nii.gz", next(out.rglob(name + output))
    raw_in, raw_out = raw_geometry(source), raw_geometry(result)
    for key in raw_in:  # qform and sform with their codes, pixdim with qfac, as the input holds them
        np.testing.assert_array_equal(raw_out[key], raw_in[key], err_msg=key)
    image, written = nib.load(source), nib.load(result)
    assert written.shape == image.shape == SHAPE
    np.testing.assert_allclose(written.affine, image.affine, atol=1e-6)  # nibabel places both alike
    np.testing.assert_allclose(written.header.get_qform(), image.header.get_qform(), atol=1e-6)
    np.testing.assert_allclose(written.header.get_sform(), image.header.get_sform(), atol=1e-6)
    placed_in, placed_out = sitk_placement(source), sitk_placement(result)  # SimpleITK (3D Slicer) likewise
    assert _same_placement(placed_in, placed_out), (placed_in, placed_out)
    report = json.loads(next(out.rglob(f"{name}_scores.json")).read_text())
    np.testing.assert_allclose(report["affine"], image.affine, atol=1e-5)  # scored on nibabel's geometry
    assert report["resampled"] is None


def test_a_sheared_sform_keeps_its_shear_and_sizes_are_not_1mm(geometry_run):
    _, _, out = geometry_run
    sheared = json.loads(next(out.rglob("sheared_scores.json")).read_text())
    assert sheared["affine"][0][1] == pytest.approx(0.3)
    sizes = json.loads(next(out.rglob("sform_sizes_scores.json")).read_text())
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sizes["affine"])[:3, :3], axis=0), [0.8, 0.8, 2.0])


@pytest.mark.parametrize("output", ["_anomaly_map.nii.gz", "_anomaly_seg.nii.gz"])
def test_a_gantry_tilted_series_is_resampled_onto_a_regular_grid_and_says_so(geometry_run, output):
    _, _, out = geometry_run
    report = json.loads(next(out.rglob("tilted_scores.json")).read_text())
    assert "gantry tilt of 15.00 degrees" in (report["resampled"] or ""), report["resampled"]
    np.testing.assert_allclose(report["affine"], REGULAR, atol=1e-4)
    result = next(out.rglob("tilted" + output))
    np.testing.assert_allclose(nib.load(result).affine, REGULAR, atol=1e-4)
    lps = LPS @ REGULAR
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    expected = np.concatenate([lps[:3, 3], spacing, (lps[:3, :3] / spacing).ravel()])
    np.testing.assert_allclose(sitk_placement(result), expected, atol=1e-4)


def test_each_tilted_slice_lands_where_the_scanner_put_it(tmp_path):
    """A bright block in slice 9 of a tilted series is found, after loading, at its true position in the world
    (stacking the slices along their normal puts it 4.7 mm off)."""
    volume = np.zeros(SHAPE, dtype=np.float32)
    volume[9:12, 6:9, 9] = 1000.0
    write_dicom_series(volume, TILTED, tmp_path / "tilted")
    truth = TILTED @ np.array([10.0, 7.0, 9.0, 1.0])
    image = load_volume(tmp_path / "tilted")
    data = image[0].numpy()
    weights = np.clip(data - data.min(), 0, None)
    centre = np.array([(weights * g).sum() / weights.sum() for g in np.indices(data.shape)])
    found = np.asarray(image.meta["original_affine"]) @ np.append(centre, 1.0)
    np.testing.assert_allclose(found[:3], truth[:3], atol=0.2)


def test_a_regular_series_is_not_resampled(tmp_path):
    volume = good_volume(5)
    write_dicom_series(volume, AFFINE, tmp_path / "regular")
    image = load_volume(tmp_path / "regular")
    assert "resampled" not in image.meta
    np.testing.assert_array_equal(image[0].numpy(), volume.round())


@needs_shared_data
def test_a_real_nrrd_map_is_placed_where_its_scan_is(tmp_path):
    source = SHARED_DATA / "volumes" / "pyradiomics" / "brain1_image.nrrd"
    if not source.exists():
        pytest.skip(f"{source} is absent")
    image = load_volume(source)
    write_volume(np.zeros(image.shape[1:], np.float32), image.meta, tmp_path / "map.nii.gz")
    assert _same_placement(sitk_placement(source), sitk_placement(tmp_path / "map.nii.gz"))


@needs_shared_data
def test_a_real_nifti_map_keeps_its_header_geometry(tmp_path):
    source = SHARED_DATA / "volumes" / "brats2018" / "case_0" / "FLAIR.nii.gz"
    if not source.exists():
        pytest.skip(f"{source} is absent")
    image = load_volume(source)
    write_volume(np.zeros(image.shape[1:], np.float32), image.meta, tmp_path / "map.nii.gz")
    raw_in, raw_out = raw_geometry(source), raw_geometry(tmp_path / "map.nii.gz")
    for key in raw_in:
        np.testing.assert_array_equal(raw_out[key], raw_in[key], err_msg=key)
    assert _same_placement(sitk_placement(source), sitk_placement(tmp_path / "map.nii.gz"))


def test_a_tilted_series_cannot_carry_a_dicom_seg(tmp_path):
    """Its outputs lie on the resampled grid, not on the series' slices: ``--dicom-seg`` is refused up front."""
    from anomalyclip_med.io.writers import dicom_seg_problem, has_highdicom

    if not has_highdicom:
        pytest.skip("highdicom is not installed")
    write_dicom_series(good_volume(6), TILTED, tmp_path / "tilted")
    assert "gantry tilt of 15.00 degrees" in (dicom_seg_problem(tmp_path / "tilted") or "")
    write_dicom_series(good_volume(6), AFFINE, tmp_path / "regular")
    assert dicom_seg_problem(tmp_path / "regular") is None
