"""
Issue 19 kind 5: masks and everything else that is skipped. One ``score`` run over an export folder holding what
a hospital's folders hold besides scans (notes, a FIFO, an earlier run's outputs, a second series in a sub-folder of
a DICOM series, DICOM files without a preamble, a JPEG Lossless series) plus a FIFO given by name; one cohort
``evaluate`` over masks whose background is NaN or a small positive value, a probability map and a label map.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1

from faults import AFFINE, PROMPTS, TINY, dicom_series, error_lines, good_volume, run_cli, save_nifti


def _jpeg_lossless(frame: np.ndarray) -> bytes:
    """A 16-bit greyscale frame as a JPEG Lossless (process 14, first-order prediction) stream: pydicom and
    pylibjpeg have no encoder for it, and the reader's ITK/GDCM decodes it. One Huffman table gives each of the 17
    difference categories a 5-bit code."""
    rows, cols = frame.shape
    samples = frame.astype(np.int64) & 0xFFFF
    pred = np.empty_like(samples)
    pred[0, 0] = 1 << 15
    pred[0, 1:] = samples[0, :-1]
    pred[1:, 0] = samples[:-1, 0]
    pred[1:, 1:] = samples[1:, :-1]
    bits = []
    for d in (((samples - pred) + (1 << 15)) % (1 << 16) - (1 << 15)).ravel():
        size = int(abs(int(d))).bit_length()
        bits.append(format(size, "05b"))
        if 0 < size < 16:
            bits.append(format(int(d) if d > 0 else int(d) + (1 << size) - 1, f"0{size}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytes(int(stream[i : i + 8], 2) for i in range(0, len(stream), 8)).replace(b"\xff", b"\xff\x00")
    sof = b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([16]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big")
    sof += bytes([1, 1, 0x11, 0])
    counts = bytes(4) + bytes([17]) + bytes(11)
    dht = b"\xff\xc4" + (36).to_bytes(2, "big") + b"\x00" + counts + bytes(range(17))
    sos = b"\xff\xda" + (8).to_bytes(2, "big") + bytes([1, 1, 0x00, 1, 0, 0])
    return b"\xff\xd8" + sof + dht + sos + data + b"\xff\xd9"


def _jpeg_lossless_series(folder: Path) -> np.ndarray:
    files = dicom_series(folder, seed=6)
    stored = []
    for f in files:
        ds = pydicom.dcmread(f)
        stored.append(ds.pixel_array)
        ds.PixelData = encapsulate([_jpeg_lossless(ds.pixel_array)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.save_as(f)
    return np.stack(stored)


def _bare_series(folder: Path) -> None:
    """A series written without the 128-byte preamble and file meta information (implicit VR little endian)."""
    for f in dicom_series(folder, seed=7):
        ds = pydicom.dcmread(f)
        ds.preamble = None
        del ds.file_meta
        ds.save_as(f, implicit_vr=True, little_endian=True, enforce_file_format=False)


@pytest.fixture(scope="module")
def export_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("skipped")
    export = root / "export"
    export.mkdir()
    save_nifti(good_volume(1), AFFINE, export / "scan.nii.gz")
    (export / "notes.txt").write_text("scanned on the new machine\n")
    os.mkfifo(export / "pipe.nii.gz")
    earlier = export / "earlier_run"
    earlier.mkdir()
    for name in ("scan_anomaly_map.nii.gz", "scan_anomaly_seg.nii.gz"):
        save_nifti(good_volume(2), AFFINE, earlier / name)
    (earlier / "scan_scores.json").write_text("{}")
    Image.new("RGB", (8, 8)).save(earlier / "scan_overlay.png")
    dicom_series(export / "series", seed=3)
    dicom_series(export / "series" / "extra", seed=4)
    _bare_series(export / "bare")
    jpeg_pixels = _jpeg_lossless_series(export / "jpeg_lossless")
    direct = root / "direct_pipe.nii.gz"
    os.mkfifo(direct)
    out = root / "out"
    proc = run_cli("score", export, direct, "--out", out, *TINY, *PROMPTS, "--no-progress", timeout=240)
    reports = {p.name[: -len("_scores.json")]: json.loads(p.read_text()) for p in out.rglob("*_scores.json")}
    return proc, reports, export, direct, out, jpeg_pixels


def test_only_the_scans_are_scored_and_the_fifo_given_fails_alone(export_run):
    proc, reports, _, direct, _, _ = export_run
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert set(reports) == {"scan", "series", "bare", "jpeg_lossless"}, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == [
        f"error: direct_pipe: '{direct}' is not a regular file (a FIFO, socket or device), not a .nii.gz scan."]


def test_what_the_walk_skips_is_named_on_one_line(export_run):
    proc, _, export, _, _, _ = export_run
    lines = [line for line in proc.stderr.splitlines() if "skipped " in line and " file(s): " in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    line = lines[0]
    assert "skipped 7 file(s): " in line and line.endswith("(not scans)")
    for name, why in [("notes.txt", ""), ("pipe.nii.gz", " (not a regular file)"),
                      ("earlier_run/scan_anomaly_map.nii.gz", " (an output of anomalyclip-med)"),
                      ("earlier_run/scan_anomaly_seg.nii.gz", " (an output of anomalyclip-med)"),
                      ("earlier_run/scan_overlay.png", ""), ("earlier_run/scan_scores.json", ""),
                      ("series/extra", " (a folder inside DICOM series folder 'series')")]:
        assert f"{export / name}{why}" in line, (name, line)


def test_dicom_without_preamble_and_jpeg_lossless_are_read_whole(export_run):
    _, reports, _, _, out, jpeg_pixels = export_run
    assert reports["bare"]["source_format"] == reports["jpeg_lossless"]["source_format"] == "dicom"
    assert reports["bare"]["shape"] == reports["jpeg_lossless"]["shape"] == reports["series"]["shape"]
    from anomalyclip_med.io.scans import load_volume

    volume = load_volume(reports["jpeg_lossless"]["source"]).numpy()[0]
    # ITK's voxels (x = columns, y = rows, z = slices) are the pixels before compression: lossless
    np.testing.assert_array_equal(volume.transpose(2, 1, 0), jpeg_pixels.astype(np.float32))


def test_the_image_walk_skips_extra_tiff_pages_and_overlays(tmp_path):
    from anomalyclip_med.io.cases import find_cases

    frames = [Image.new("L", (16, 16), v) for v in (10, 120, 250)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (16, 16)).save(tmp_path / "photo.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "photo_overlay.png")
    np.save(tmp_path / "photo_anomaly_map.npy", np.zeros((16, 16), np.float32))
    cases = find_cases([tmp_path], kind="images")
    assert [c.name for c in cases] == ["photo", "stack"]
    assert cases.skipped == [(tmp_path / "photo_anomaly_map.npy", ""),
                             (tmp_path / "photo_overlay.png", "an output of anomalyclip-med"),
                             (tmp_path / "stack.tif", "its 2 page(s) after the first")]


# ---- masks --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mask_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    vol = good_volume(4)
    lesion = vol > 60
    save_nifti(vol, AFFINE, root / "scan.nii.gz")
    masks = {
        "nan_background": np.where(lesion, 1.0, np.nan).astype(np.float32),
        "small_background": np.where(lesion, 1.0, 1e-3).astype(np.float32),
        "probabilities": np.where(lesion, 0.9, 0.3).astype(np.float32),
        "labels": np.where(lesion, 4, 0).astype(np.uint8),
    }
    for name, mask in masks.items():
        shutil.copy(root / "scan.nii.gz", root / f"{name}.nii.gz")
        save_nifti(mask, AFFINE, root / f"{name}_mask.nii.gz")
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(
        [("image", "mask"), *((f"{n}.nii.gz", f"{n}_mask.nii.gz") for n in masks)])
    (root / "manifest.csv").write_text(text.getvalue())
    out = root / "out"
    proc = run_cli("evaluate", "--dataset", "manifest", root / "manifest.csv", "--out", out, *TINY, *PROMPTS)
    with open(out / "cohort_cases.csv", newline="", encoding="utf-8") as f:
        table = {r["case_id"]: r for r in csv.DictReader(f)}
    return proc, table, int(lesion.sum()), root


@pytest.mark.parametrize("case", ["small_background", "probabilities", "labels"])
def test_a_mask_is_binary_by_its_rule(mask_run, case):
    _, table, lesion, _ = mask_run
    assert table[case]["status"] == "ok", table[case]["error"]
    assert int(table[case]["lesion_voxels"]) == lesion


def test_a_mask_with_nan_fails_its_case_naming_the_file(mask_run):
    proc, table, _, root = mask_run
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    row = table["nan_background"]
    assert row["status"] == "failed" and row["lesion_voxels"] == ""
    assert row["error"].startswith(f"Mask '{root / 'nan_background_mask.nii.gz'}' holds ")
    assert "NaN/Inf voxel(s)" in row["error"]


def test_the_walk_knows_every_output_name_the_package_writes():
    from anomalyclip_med.inference.scan import DICOM_SEG_SUFFIX, OUTPUT_SUFFIXES
    from anomalyclip_med.io.names import TOOL_OUTPUT_ENDINGS
    from anomalyclip_med.runs.images import IMAGE_OUTPUTS

    written = {*OUTPUT_SUFFIXES.values(), DICOM_SEG_SUFFIX, *(n.replace("{case}", "") for n in IMAGE_OUTPUTS.values())}
    assert written == set(TOOL_OUTPUT_ENDINGS)
