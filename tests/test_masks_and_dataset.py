"""Mask reading (every published encoding, and the refusals) and the torch dataset built on the readers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import synthetic_trees as trees
from anomalyclip_med.data import Sample, load_samples
from anomalyclip_med.data.dataset import AnomalyDataset, verify_samples
from anomalyclip_med.errors import InputError
from anomalyclip_med.inference.images2d import preprocess_images
from anomalyclip_med.io.masks import read_mask
from conftest import SHARED_DATA, needs_shared_data

BOX = np.zeros((32, 40), bool)
BOX[5:12, 5:15] = True


def _save(path, array, **kw):
    Image.fromarray(array).save(path, **kw)
    return path


@pytest.mark.parametrize("value", [255, 1, True])
def test_two_valued_masks(tmp_path, value):
    a = BOX.astype(np.uint8) * np.uint8(value)
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "m.png", a)), BOX)


def test_label_map_mask_as_visa(tmp_path):
    a = np.zeros((32, 40), np.uint8)
    a[5:12, 5:10] = 3
    a[5:12, 10:15] = 7
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "m.png", a)), BOX)


def test_jpeg_mask_with_noisy_edges(tmp_path):
    big = np.kron(BOX, np.ones((9, 9), bool)).astype(np.uint8) * 255  # edges off the 8x8 JPEG block grid
    path = _save(tmp_path / "m.jpg", np.stack([big] * 3, axis=-1), quality=75)
    assert len(np.unique(np.asarray(Image.open(path)))) > 2  # JPEG made it non-binary
    got = read_mask(path)
    assert (got == big.astype(bool)).mean() > 0.995


def test_rgb_and_palette_masks(tmp_path):
    rgb = np.zeros((32, 40, 3), np.uint8)
    rgb[BOX] = (255, 0, 0)
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "rgb.png", rgb)), BOX)
    pal = Image.fromarray(BOX.astype(np.uint8), mode="L").convert("P")
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), BOX)


def test_grey_level_image_is_not_a_mask(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (32, 1))
    with pytest.raises(InputError, match=r"Mask '.*ramp.png' is not binary: it holds \d+ distinct values"):
        read_mask(_save(tmp_path / "ramp.png", ramp))


def test_mask_of_wrong_size(tmp_path):
    path = _save(tmp_path / "m.png", BOX.astype(np.uint8) * 255)
    with pytest.raises(InputError, match="is 40x32 pixels but its image is 64x64"):
        read_mask(path, expected_size=(64, 64))


def test_unreadable_mask(tmp_path):
    (tmp_path / "m.png").write_text("not an image")
    with pytest.raises(InputError, match="Cannot read mask"):
        read_mask(tmp_path / "m.png")


@needs_shared_data
def test_real_kvasir_jpeg_masks_read_as_the_documented_threshold():
    for s in load_samples("kvasir", SHARED_DATA / "Kvasir-SEG-sample" / "Kvasir-SEG"):
        got = read_mask(s.mask, expected_size=Image.open(s.image).size)
        expected = np.asarray(Image.open(s.mask).convert("L")) > 127  # SOURCES.md: threshold > 127
        assert (got == expected).mean() > 0.999 and 0.01 < got.mean() < 0.9


# ---------------------------------------------------------------------------------------------- dataset
def test_dataset_items(tmp_path):
    root = trees.mvtec(tmp_path / "m")
    ds = AnomalyDataset(load_samples("mvtec", root), image_size=56)
    assert ds.has_masks and len(ds) == 10
    items = {(ds.samples[i].specie, ds.samples[i].image.name, ds.samples[i].cls_name): ds[i] for i in range(len(ds))}
    defect = items[("crack", "000.png", "a")]
    assert defect["image"].shape == (3, 56, 56) and defect["image"].dtype == torch.float32
    assert defect["label"] == 1 and defect["cls_name"] == "a"
    mask = defect["mask"]
    assert mask.shape == (1, 56, 56) and set(mask.unique().tolist()) == {0.0, 1.0}
    # box x 5..15 of 40, y 5..12 of 32 -> x 7..21, y 8.75..21 of 56
    assert mask[0, 10:20, 8:20].all() and not mask[0, 23:].any() and not mask[0, :, 23:].any()
    normal = items[("good", "000.png", "a")]
    assert normal["label"] == 0 and not normal["mask"].any()


def test_dataset_normalises_like_the_model(tmp_path, tiny):
    root = trees.paired(tmp_path / "k", "images", "masks")
    ds = AnomalyDataset(load_samples("kvasir", root), tiny.config.image_size, tiny.mean, tiny.std)
    torch.testing.assert_close(ds[0]["image"], preprocess_images(tiny, ds.samples[0].image)[0])


def test_image_level_dataset_has_no_masks(tmp_path):
    ds = AnomalyDataset(load_samples("headct", trees.headct(tmp_path / "h")), image_size=28)
    assert not ds.has_masks and not ds[0]["mask"].any() and ds[0]["label"] == 1


def test_verify_lists_every_bad_file(tmp_path):
    good = trees.image(tmp_path / "good.png")
    bad_image = tmp_path / "bad.png"
    bad_image.write_text("not an image")
    wrong_size = trees.mask(tmp_path / "small_mask.png", size=(20, 16))
    grey = _save(tmp_path / "grey_mask.png", np.tile(np.arange(40, dtype=np.uint8) * 6, (32, 1)))
    samples = [
        Sample(good, None, 0, "x", "folder"),
        Sample(bad_image, None, 1, "x", "folder"),
        Sample(good, wrong_size, 1, "x", "folder"),
        Sample(good, grey, 1, "x", "folder"),
    ]
    with pytest.raises(InputError) as err:
        AnomalyDataset(samples, image_size=28)
    msg = str(err.value)
    assert msg.startswith("3 of 4 dataset files cannot be used")
    assert "Cannot read image" in msg and "bad.png" in msg
    assert "small_mask.png' is 20x16 pixels but its image is 40x32" in msg
    assert "grey_mask.png' is not binary" in msg
    verify_samples(samples[:1])  # the good one passes


def test_truncated_image_fails_clearly_when_loaded(tmp_path):
    path = trees.image(tmp_path / "t.png", size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact: only decoding fails
    ds = AnomalyDataset([Sample(path, None, 0, "x", "folder")], image_size=28, verify=True)
    with pytest.raises(InputError, match=r"Cannot read image '.*t.png'"):
        ds[0]  # MONAI's wrapping RuntimeError is undone: the package's error surfaces


def test_empty_dataset():
    with pytest.raises(InputError, match="no samples"):
        AnomalyDataset([], image_size=28)
