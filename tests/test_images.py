"""2D image reading: every PIL mode becomes 8-bit RGB; unreadable files are named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.images import list_images, read_image


def test_grayscale_rgba_palette_become_rgb(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    Image.fromarray(gray, mode="L").convert("P").save(tmp_path / "p.png")
    for name in ("g.png", "a.png", "p.png"):
        im = read_image(tmp_path / name)
        assert im.mode == "RGB" and im.size == (8, 8)
    assert np.array_equal(np.asarray(read_image(tmp_path / "g.png"))[..., 1], gray)
    assert np.asarray(read_image(tmp_path / "a.png"))[0, 0].tolist() == [200, 0, 0]


def test_16bit_scaled_from_its_own_range(tmp_path):
    a = np.array([[1000, 2000], [3000, 4000]], dtype=np.uint16)  # 12-bit-like data in a 16-bit file
    Image.fromarray(a).save(tmp_path / "x16.png")
    assert Image.open(tmp_path / "x16.png").mode.startswith("I")
    rgb = np.asarray(read_image(tmp_path / "x16.png"))
    assert rgb[..., 0].tolist() == [[0, 85], [170, 255]]


def test_tiff_float_and_constant(tmp_path):
    Image.fromarray(np.full((4, 4), 7.5, np.float32), mode="F").save(tmp_path / "c.tif")
    assert np.asarray(read_image(tmp_path / "c.tif")).max() == 0


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match="scan.png"):
        read_image(bad)


def test_list_images_recurses_dedups_and_rejects(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ("a/1.png", "a/b/2.jpg", "a/notes.txt"):
        (tmp_path / p).write_bytes(b"x")
    found = list_images([tmp_path / "a", tmp_path / "a" / "1.png"])
    assert [p.name for p in found] == ["1.png", "2.jpg"]
    with pytest.raises(InputError, match="does not exist"):
        list_images([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No images"):
        list_images([tmp_path / "empty"])
