"""2D image reading: every PIL mode becomes 8-bit RGB; unreadable files are named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.cases import find_cases
from anomalyclip_med.io.images import read_image


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


def test_image_cases_follow_the_one_naming_and_placement_rule(tmp_path):
    """2D images are cases like scans: folders walked (only image files), outputs mirroring the folders, names
    growing parent folders where stems collide, the same file twice refused."""
    for p in ("a/1.png", "a/b/2.jpg", "a/notes.txt", "a/b/1.tif", "a/.hidden.png"):
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    cases = find_cases([tmp_path / "a"], kind="images")
    assert [(c.name, c.subdir, c.source.name) for c in cases] == [("a_1", "", "1.png"), ("b_1", "b", "1.tif"),
                                                                  ("2", "b", "2.jpg")]
    with pytest.raises(InputError, match="same input"):
        find_cases([tmp_path / "a" / "1.png", tmp_path / "a" / "1.png"], kind="images")
    with pytest.raises(InputError, match="does not exist"):
        find_cases([tmp_path / "missing"], kind="images")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        find_cases([tmp_path / "empty"], kind="images")
