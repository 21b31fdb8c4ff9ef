"""``anomalyclip-med predict`` run as a user would: a subprocess on real image files."""

from __future__ import annotations

import csv
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import TESTS, TINY_CLIP_JSON

REPO = TESTS.parent
TINY = ["--backbone", str(TINY_CLIP_JSON), "--backbone-weights", "none", "--prompts", "untrained", "--image-size", "56"]


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "anomalyclip_med", "predict", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(root / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(root / "sub" / "gray.jpg")
    Image.fromarray(rng.integers(0, 4000, (20, 24), dtype=np.uint16)).save(root / "sub" / "deep.tif")
    return root


def test_predict_writes_maps_overlays_and_csv(images, tmp_path):
    out = tmp_path / "out"
    proc = _run(images, "--out", out, *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM" in proc.stdout  # loud on the console
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [r["image"].split(os.sep)[-1] for r in rows] == ["rgb.png", "deep.tif", "gray.jpg"]
    sizes = {"rgb.png": (30, 50), "gray.jpg": (64, 64), "deep.tif": (20, 24)}
    for r in rows:
        amap = np.load(out / r["map_file"])
        assert amap.dtype == np.float32 and amap.shape == sizes[r["image"].split(os.sep)[-1]]
        assert 0 <= amap.min() and amap.max() <= 1
        assert float(r["max_pixel_score"]) == pytest.approx(float(amap.max()), abs=1e-5)
        assert 0 <= float(r["image_score"]) <= 1
        assert "RANDOM" in r["warning"]  # and in every file written
        png = Image.open(out / r["overlay_file"])
        assert png.size == amap.shape[::-1] and "RANDOM" in png.text["Warning"]


def test_existing_outputs_are_not_overwritten(images, tmp_path):
    out = tmp_path / "out"
    assert _run(images / "rgb.png", "--out", out, *TINY).returncode == 0
    stamp = (out / "rgb_anomaly_map.npy").stat().st_mtime_ns
    again = _run(images / "rgb.png", "--out", out, *TINY)
    assert again.returncode == 1 or again.returncode == 2
    assert "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert (out / "rgb_anomaly_map.npy").stat().st_mtime_ns == stamp
    assert _run(images / "rgb.png", "--out", out, *TINY, "--overwrite").returncode == 0


@pytest.mark.parametrize("case", ["missing_input", "unreadable", "out_not_writable", "bad_size"])
def test_bad_inputs_fail_cleanly(case, images, tmp_path):
    out = tmp_path / "out"
    args = [images, "--out", out, *TINY]
    if case == "missing_input":
        args[0] = tmp_path / "nope"
    elif case == "unreadable":
        (images / "broken.png").write_bytes(b"garbage")
    elif case == "out_not_writable":
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "out"
        args[2] = out
    elif case == "bad_size":
        args[-1] = "50"
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") or "\nerror:" in proc.stderr
    assert "Traceback" not in proc.stderr
    expected = {"missing_input": "nope", "unreadable": "broken.png", "out_not_writable": "not writable",
                "bad_size": "multiple of the backbone's patch size"}[case]
    assert expected in proc.stderr
    if case == "unreadable":  # the bad image fails alone: the others are written and listed
        rows = list(csv.DictReader((out / "scores.csv").open()))
        assert [Path(r["image"]).name for r in rows] == ["rgb.png", "deep.tif", "gray.jpg"]
        assert not list(out.glob("broken_*"))
    else:
        assert not (out / "scores.csv").exists()


def test_predict_resumes_finished_images_and_holds_the_folder(images, tmp_path):
    """predict on the run engine: --continue reuses whole finished images (byte-identical, untouched) and computes
    the missing one; a damaged map is computed again; a locked output folder is refused naming the holder."""
    from anomalyclip_med.utils.lock import FolderLock

    out = tmp_path / "out"
    assert _run(images, "--out", out, *TINY).returncode == 0
    maps = {p.name: p.stat().st_mtime_ns for p in out.rglob("*_anomaly_map.npy")}
    assert set(maps) == {"rgb_anomaly_map.npy", "deep_anomaly_map.npy", "gray_anomaly_map.npy"}
    (out / "sub" / "gray_anomaly_map.npy").write_bytes(b"damaged")
    for p in (out / "sub").glob("deep_*"):
        p.unlink()
    again = _run(images, "--out", out, *TINY, "--continue")
    assert again.returncode == 0, again.stderr
    assert (out / "rgb_anomaly_map.npy").stat().st_mtime_ns == maps["rgb_anomaly_map.npy"]
    assert "rgb: image score" in again.stdout and "(reused)" in again.stdout.split("rgb:")[1].splitlines()[0]
    assert np.load(out / "sub" / "gray_anomaly_map.npy").dtype == np.float32  # computed again, whole
    assert (out / "sub" / "deep_anomaly_map.npy").is_file()
    assert len(list(csv.DictReader((out / "scores.csv").open()))) == 3
    with FolderLock(out):
        locked = _run(images, "--out", out, *TINY, "--overwrite")
    assert locked.returncode == 2 and "in use by another run" in locked.stderr
