"""Scan transforms: CT windows, MRI normalisation, the auto preset, slicing geometry, foreground, dict variants."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

from anomalyclip_med.transforms import LoadScan, LoadScand
from anomalyclip_med.transforms.dictionary import IntensityPresetd, SliceForegroundd, SliceToNetworkInputd
from anomalyclip_med.transforms.intensity import CTWindow, IntensityPreset, PercentileNormalize
from anomalyclip_med.transforms.slicing import SliceForeground, SliceToNetworkInput, resolve_axis, slice_geometry
from scan_data import oblique_affine, save_nifti, synthetic_head_ct

LPS_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def _meta(array, affine=None, **meta) -> MetaTensor:
    return MetaTensor(torch.as_tensor(np.asarray(array, dtype=np.float32)), affine=affine, meta=meta)


def test_ct_window_maps_hounsfield_units_linearly_and_clips():
    hu = torch.tensor([-1000.0, 0.0, 20.0, 40.0, 60.0, 80.0, 3000.0])
    assert torch.allclose(CTWindow(level=40, width=80)(hu), torch.tensor([0, 0, 0.25, 0.5, 0.75, 1, 1.0]))
    lung = IntensityPreset("lung")(torch.tensor([-1350.0, -600.0, 150.0]))
    assert torch.allclose(lung, torch.tensor([0.0, 0.5, 1.0]))
    bone = IntensityPreset("bone")(torch.tensor([-500.0, 400.0, 1300.0]))
    assert torch.allclose(bone, torch.tensor([0.0, 0.5, 1.0]))
    # level and width are settable on top of a preset
    custom = IntensityPreset("brain", level=50, width=100)
    assert torch.allclose(custom(torch.tensor([0.0, 50.0, 100.0])), torch.tensor([0.0, 0.5, 1.0]))
    assert "level 50 / width 100" in custom.choose(torch.zeros(3)).reason
    with pytest.raises(ValueError, match="width"):
        CTWindow(40, 0)
    with pytest.raises(ValueError, match="Unknown intensity preset"):
        IntensityPreset("spleen")
    with pytest.raises(ValueError, match="CT presets"):
        IntensityPreset("mri", level=40)


def test_percentile_normalisation_is_robust_and_ignores_zero_background():
    rng = np.random.default_rng(0)
    vol = np.zeros((40, 40, 40), dtype=np.float32)
    vol[10:30, 10:30, 10:30] = rng.uniform(100, 200, (20, 20, 20))
    vol[20, 20, 20] = 1e6  # one hot voxel must not squash the rest
    out = PercentileNormalize(lower=1, upper=99)(torch.from_numpy(vol)).numpy()
    tissue = out[10:30, 10:30, 10:30]
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.45 < np.median(tissue) < 0.55  # uniform 100..200 -> about 0.5 in the middle
    assert np.mean(tissue == 1.0) < 0.02 and np.mean(tissue == 0.0) < 0.02
    lo, hi = PercentileNormalize(1, 99).intensity_range(vol)
    assert 100 <= lo < 102 and 198 < hi <= 200  # the 85% zero background is not in the percentiles
    lo_all, _ = PercentileNormalize(1, 99, nonzero=False).intensity_range(vol)
    assert lo_all == 0.0
    assert torch.all(PercentileNormalize()(torch.full((4, 4, 4), 7.0)) == 0)  # constant scan
    with pytest.raises(ValueError):
        PercentileNormalize(50, 10)


@pytest.mark.parametrize(
    "modality, body_part, expected",
    [("CT", "HEAD", "brain"), ("CT", "Chest", "lung"), ("CT", "ABDOMEN", "abdomen"), ("CT", "LIVER", "liver"),
     ("CT", "", "abdomen"), ("MR", "BRAIN", "mri"), ("PT", "", "mri")],
)
def test_auto_preset_follows_dicom_modality(modality, body_part, expected):
    img = _meta(np.zeros((4, 4, 4)), modality=modality, body_part=body_part)
    choice = IntensityPreset("auto").choose(img)
    assert choice.name == expected
    assert modality in choice.reason


def test_auto_preset_from_intensity_range_and_reported_in_meta():
    ct = _meta(synthetic_head_ct())
    out = IntensityPreset("auto")(ct)
    assert out.meta["intensity_preset"]["name"] == "abdomen"
    assert "HU" in out.meta["intensity_preset"]["reason"]
    assert out.meta["intensity_preset"]["level"] == 50.0 and out.meta["intensity_preset"]["width"] == 400.0
    assert float(out.min()) == 0.0 and float(out.max()) <= 1.0
    mr = np.zeros((30, 30, 30), dtype=np.float32)
    mr[5:25, 5:25, 5:25] = np.random.default_rng(1).uniform(0, 900, (20, 20, 20))
    out = IntensityPreset("auto")(_meta(mr))
    assert out.meta["intensity_preset"]["name"] == "mri"
    assert "not CT" in out.meta["intensity_preset"]["reason"]


def test_axial_axis_found_whatever_the_orientation():
    assert resolve_axis(np.eye(4)) == (2, "axial")
    assert resolve_axis(LPS_AFFINE, "coronal") == (1, "coronal")
    assert resolve_axis(oblique_affine()) == (2, "axial")  # 20/15/10 degree rotations stay closest to z
    # a sagittally stored scan: array axis 0 runs superior, axis 1 anterior, axis 2 right
    sagittal_stack = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    assert resolve_axis(sagittal_stack) == (0, "axial")
    assert resolve_axis(sagittal_stack, 2) == (2, "sagittal")
    assert resolve_axis(sagittal_stack, -1) == (2, "sagittal")
    with pytest.raises(ValueError):
        resolve_axis(np.eye(4), "oblique")
    with pytest.raises(ValueError):
        resolve_axis(np.eye(4), 3)


def _anatomy() -> np.ndarray:
    """A 20x24x6 RAS-ordered volume (x: left->right, y: posterior->anterior) with a marker at anterior-right."""
    vol = np.zeros((20, 24, 6), dtype=np.float32)
    vol[14:19, 17:23, :] = 1.0  # right (high x) and anterior (high y)
    return vol


def test_slices_are_shown_in_radiological_view_whatever_the_voxel_order():
    ras = _anatomy()
    views = [(ras, np.eye(4))]
    # the same anatomy stored LPS (x and y reversed) and with the in-plane axes swapped
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.array([[1, 0, 0, 19], [0, 1, 0, 23], [0, 0, 1, 0], [0, 0, 0, 1]])
    views.append((ras[::-1, ::-1].copy(), lps_affine))
    swap = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    views.append((ras.transpose(1, 0, 2).copy(), swap))
    to_input = SliceToNetworkInput(image_size=48, mean=(0, 0, 0), std=(1, 1, 1))
    shown = [to_input(_meta(v[None], a), indices=[3])[0, 0] for v, a in views]
    for other in shown[1:]:
        assert torch.allclose(shown[0], other, atol=1e-6)
    # anterior is up and the patient's right is on the image's left: the marker sits in the top-left quadrant
    rows, cols = torch.nonzero(shown[0] > 0.5, as_tuple=True)
    assert rows.float().mean() < 24 and cols.float().mean() < 24
    assert torch.all(shown[0][30:, :] < 0.5) and torch.all(shown[0][:, 30:] < 0.5)


def test_slices_are_padded_not_stretched():
    # 20 rows x 40 columns of 1 mm: half as tall as wide -> 28 x 56 of the 56 x 56 square, centred
    g = slice_geometry(np.eye(4), (40, 20, 3))  # axial: rows from y (20), columns from x (40)
    assert g.display_shape == (20, 40)
    square = g.to_square(torch.ones(1, 40, 20), 56)[0]
    rows = torch.nonzero(square.amax(dim=1) > 0).flatten()
    assert (rows.min().item(), rows.max().item()) == (14, 41)
    assert torch.all(square[14:42] > 0.99)
    # the same grid with 2 mm rows is physically square: no padding at all
    g2 = slice_geometry(np.diag([1.0, 2.0, 1.0, 1.0]), (40, 20, 3))
    assert g2.square_layout(56) == (56, 56, 0, 0)
    assert torch.all(g2.to_square(torch.ones(1, 40, 20), 56) > 0.99)


@pytest.mark.parametrize("affine", [np.eye(4), LPS_AFFINE, oblique_affine(), np.diag([0.7, 3.0, 5.0, 1.0])])
def test_maps_return_onto_the_slice_grid(affine):
    g = slice_geometry(affine, (48, 40, 6))
    x, y = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 40), indexing="ij")
    smooth = (0.3 * x + 0.6 * y)[None]  # a smooth ramp survives down- and up-sampling
    back = g.from_square(g.to_square(smooth, 96))
    assert back.shape == (1, 48, 40)
    assert torch.allclose(back[:, 2:-2, 2:-2], smooth[:, 2:-2, 2:-2], atol=0.02)


def test_foreground_skips_air_only_slices():
    ct = synthetic_head_ct()
    flags = SliceForeground()(_meta(ct[None])).numpy()
    assert not flags[:4].any() and not flags[-4:].any()
    assert flags[6:-6].all()
    assert not SliceForeground()(_meta(np.zeros((1, 8, 8, 8)))).any()
    # air and tissue fully separated, air noise uniform in +-10 HU: the threshold must sit between them, not at
    # the edge of the air peak (where Otsu's lands and a tenth of the air would count as body)
    rng = np.random.default_rng(0)
    slab = -1000.0 + rng.integers(-10, 11, (1, 64, 64, 10))
    slab[:, 10:50, 10:40, 3:7] = 40.0
    assert SliceForeground()(_meta(slab)).tolist() == [False] * 3 + [True] * 4 + [False] * 3
    # sliced sagittally (axis 0 of an identity affine), the air margins of the head are skipped too
    sagittal = SliceForeground(axis="sagittal")(_meta(ct[None])).numpy()
    assert sagittal.shape == (ct.shape[0],) and not sagittal[0] and sagittal[ct.shape[0] // 2]


def test_dictionary_variants_compose_and_build_from_a_bundle_config(tmp_path):
    path = save_nifti(synthetic_head_ct(), oblique_affine(), tmp_path / "ct.nii.gz")
    pipeline = Compose([
        LoadScand("image"),
        SliceForegroundd("image"),
        IntensityPresetd("image", preset="brain"),
        SliceToNetworkInputd("image", image_size=56),
    ])
    d = pipeline({"image": str(path)})
    assert d["image"].shape == (24, 3, 56, 56)
    assert d["image_foreground"].dtype == torch.bool and d["image_foreground"].shape == (24,)
    assert d["image_slice_geometry"].axis == 2
    raw = LoadScan()(path)
    expected = SliceToNetworkInput(56)(IntensityPreset("brain")(raw))
    assert torch.allclose(d["image"], expected)
    assert torch.equal(d["image_foreground"], SliceForeground()(raw))

    config = {"preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "anomalyclip_med.transforms.LoadScand", "keys": "image"},
        {"_target_": "anomalyclip_med.transforms.dictionary.IntensityPresetd", "keys": "image", "preset": "auto"},
        {"_target_": "anomalyclip_med.transforms.dictionary.SliceToNetworkInputd", "keys": "image",
         "image_size": 56, "axis": "coronal"},
    ]}}
    built = ConfigParser(config).get_parsed_content("preprocessing")
    out = built({"image": str(path)})
    assert out["image"].shape == (nib.load(path).shape[1], 3, 56, 56)
    assert out["image_slice_geometry"].plane == "coronal"
