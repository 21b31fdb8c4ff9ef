"""
Bad inputs for the robustness suite, each made from a real good file the way damage happens (a copy cut short,
a header that lies, a field overwritten in place), and the commands that run the package on them as a user would.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk

from conftest import TESTS, TINY_CLIP_JSON
from scan_data import save_nifti, synthetic_head_ct, write_dicom_series

REPO = TESTS.parent
# the tiny random backbone: every run builds it in a few seconds
TINY = ["--backbone", str(TINY_CLIP_JSON), "--backbone-weights", "none", "--image-size", "56"]
# prompts for the tiny backbone: untrained (the default, mvtec-trained, fits only the real CLIP backbone)
PROMPTS = ["--prompts", "untrained"]
SHAPE = (20, 20, 12)  # slices 4..7 hold the head (synthetic_head_ct leaves 4 slices of air at each end)
AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])


def run_cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m anomalyclip_med ARGS`` with this repository first on the path, one thread."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "anomalyclip_med", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def kill_when(args: list, ready, must_run: bool = True) -> None:
    """
    Start ``python -m anomalyclip_med ARGS`` and SIGKILL it as soon as ``ready()`` holds (polled every 10 ms).

    Args:
        must_run: the run must still be running when ``ready()`` holds (else the kill proved nothing).
    """
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "anomalyclip_med", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not ready() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None or not must_run, "the run finished before it could be killed"
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def the_error_for(stderr: str, name: str) -> str:
    """The one ``error:`` line naming ``name``."""
    lines = [line for line in error_lines(stderr) if name in line]
    assert len(lines) == 1, (name, error_lines(stderr))
    return lines[0]


def good_volume(seed: int = 0) -> np.ndarray:
    return synthetic_head_ct(shape=SHAPE, seed=seed)


# ---- NIfTI / NRRD / MetaImage files -------------------------------------------------------------------------------

def _cut(src: Path, dst: Path, keep: int) -> Path:
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


def nifti_header_declaring(path: Path, shape: tuple[int, ...], dtype, gz: bool) -> Path:
    """A 352-byte single-file NIfTI (header + extension flag) whose header declares ``shape`` voxels of ``dtype``."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    block = header.binaryblock + b"\0" * 4
    path.write_bytes(gzip.compress(block) if gz else block)
    return path


def png_bytes(width: int, height: int, mode: int = 0) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (colour type ``mode``) with one tiny IDAT chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def bad_volume_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """
    Damaged or mislabelled volume files, each with the regular expression its one ``error:`` line must match
    (after the file's name). Made from a good NIfTI, NRRD and MetaImage of the same scan.
    """
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "_src"
    src.mkdir()
    vol = good_volume(1)
    gz = save_nifti(vol, AFFINE, src / "g.nii.gz")
    raw = save_nifti(vol, AFFINE, src / "g.nii")
    image = sitk.GetImageFromArray(vol.transpose(2, 1, 0).copy())
    image.SetSpacing((0.8, 0.8, 2.0))
    for name, compress in (("g.nrrd", False), ("gz.nrrd", True), ("g.mha", False), ("z.mha", True)):
        sitk.WriteImage(image, str(src / name), useCompression=compress)
    gz_bytes = gz.read_bytes()
    crc_flipped = bytearray(gz_bytes)
    crc_flipped[-6] ^= 0xFF  # the stored CRC-32: the data decompress fully but do not match it
    ok = "is truncated or damaged"
    cases: dict[str, tuple[Path, str]] = {
        "gz_half": (_cut(gz, folder / "gz_half.nii.gz", len(gz_bytes) // 2), f"{ok}: its compressed data is incomplete"),
        "gz_header_cut": (_cut(gz, folder / "gz_header_cut.nii.gz", 60),
                          f"{ok}: its gzip stream decompresses to \\d+ bytes, fewer than a NIfTI header's 348"),
        "gz_no_trailer": (_cut(gz, folder / "gz_no_trailer.nii.gz", len(gz_bytes) - 8),
                          f"{ok}: its compressed data is incomplete"),
        "gz_bad_crc": (folder / "gz_bad_crc.nii.gz", f"{ok}: its compressed data is incomplete \\(CRC check failed"),
        "nii_cut": (_cut(raw, folder / "nii_cut.nii", raw.stat().st_size - 100), f"{ok}: its header declares 20x20x12"),
        "nii_empty": (folder / "nii_empty.nii", "is named .nii but holds an empty file \\(0 bytes\\)"),
        "gz_empty": (folder / "gz_empty.nii.gz", "is named .nii.gz but holds an empty file \\(0 bytes\\)"),
        "nii_garbled": (folder / "nii_garbled.nii", "is named .nii but holds unrecognised binary data"),
        "gz_garbled": (folder / "gz_garbled.nii.gz", "is named .nii.gz but holds gzip-compressed unrecognised binary"),
        "npy_as_nifti": (folder / "npy_as_nifti.nii.gz", "is named .nii.gz but holds a NumPy .npy array"),
        "png_as_nifti": (folder / "png_as_nifti.nii.gz", "is named .nii.gz but holds a PNG image"),
        "dicom_as_nifti": (folder / "dicom_as_nifti.nii", "is named .nii but holds a DICOM file"),
        "text_as_nifti": (folder / "text_as_nifti.nii", "is named .nii but holds text"),
        "header_30000": (nifti_header_declaring(folder / "header_30000.nii", (30000, 30000, 1), np.float32, False),
                         f"{ok}: its header declares 30000x30000x1 voxels of 4 byte\\(s\\), 3,600,000,352 bytes"),
        "header_32767": (nifti_header_declaring(folder / "header_32767.nii.gz", (32767, 32767, 8), np.int16, True),
                         f"{ok}: its header declares 32767x32767x8 voxels of 2 byte\\(s\\).*compressed stream holds 352"),
        "header_bad_dim": (folder / "header_bad_dim.nii", "has a garbled header: dim\\[0\\] = 9 dimensions"),
        "nrrd_cut": (_cut(src / "g.nrrd", folder / "nrrd_cut.nrrd", (src / "g.nrrd").stat().st_size - 300),
                     f"{ok}: its header declares 20x20x12"),
        "nrrd_gz_cut": (_cut(src / "gz.nrrd", folder / "nrrd_gz_cut.nrrd", (src / "gz.nrrd").stat().st_size - 40),
                        f"{ok}: its compressed data is incomplete"),
        "nrrd_bad_sizes": (folder / "nrrd_bad_sizes.nrrd", "has a garbled header: sizes = '16 x 8'"),
        "mha_cut": (_cut(src / "g.mha", folder / "mha_cut.mha", (src / "g.mha").stat().st_size - 300),
                    f"{ok}: its header declares 20x20x12"),
        "mha_zlib_cut": (_cut(src / "z.mha", folder / "mha_zlib_cut.mha", (src / "z.mha").stat().st_size - 40),
                         f"{ok}: its compressed data is incomplete"),
        "png_as_mha": (folder / "png_as_mha.mha", "is named .mha but holds a PNG image"),
    }
    (folder / "gz_bad_crc.nii.gz").write_bytes(bytes(crc_flipped))
    (folder / "nii_empty.nii").write_bytes(b"")
    (folder / "gz_empty.nii.gz").write_bytes(b"")
    rng = np.random.default_rng(7)
    (folder / "nii_garbled.nii").write_bytes(b"\x07" + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    (folder / "gz_garbled.nii.gz").write_bytes(gzip.compress(b"\x07" + rng.integers(0, 256, 2000, np.uint8).tobytes()))
    with open(folder / "npy_as_nifti.nii.gz", "wb") as f:
        np.save(f, vol)
    (folder / "png_as_nifti.nii.gz").write_bytes(png_bytes(16, 16, mode=2))
    (folder / "png_as_mha.mha").write_bytes(png_bytes(16, 16, mode=2))
    dicom = write_dicom_series(vol[:, :, :2], AFFINE, src / "dcm")[0]
    (folder / "dicom_as_nifti.nii").write_bytes(dicom.read_bytes())
    (folder / "text_as_nifti.nii").write_text("patient,scan\n1,FLAIR\n" * 30)
    bad_dim = bytearray(raw.read_bytes())
    bad_dim[40:42] = struct.pack("<h", 9)  # dim[0] = 9 dimensions
    (folder / "header_bad_dim.nii").write_bytes(bytes(bad_dim))
    nrrd = (src / "g.nrrd").read_bytes()
    header_end = nrrd.index(b"\n\n")
    lines = [b"sizes: 16 x 8" if ln.startswith(b"sizes:") else ln for ln in nrrd[:header_end].split(b"\n")]
    (folder / "nrrd_bad_sizes.nrrd").write_bytes(b"\n".join(lines) + nrrd[header_end:])
    return cases


# ---- DICOM series -------------------------------------------------------------------------------------------------

def dicom_series(folder: Path, seed: int = 0) -> list[Path]:
    """A clean 8-slice CT series with 0.8 mm pixels and 2.0 mm slices."""
    return write_dicom_series(good_volume(seed), AFFINE, folder)


def set_raw_value(path: Path, keyword: str, text: str) -> None:
    """Store ``text`` as ``keyword``'s value bytes, unchecked (as a faulty exporter would), keeping the rest."""
    raw = text.encode("ascii")
    raw += b" " * (len(raw) % 2)
    placeholder = b"1" * len(raw)  # a valid DS of the same length, then its bytes are replaced in the file
    ds = pydicom.dcmread(path)
    setattr(ds, keyword, placeholder.decode())
    ds.save_as(path)
    data = path.read_bytes()
    assert data.count(placeholder) == 1, (path, keyword)
    path.write_bytes(data.replace(placeholder, raw))


def bad_dicom_series(root: Path) -> dict[str, tuple[Path, str]]:
    """DICOM series folders each with one fault, and the expected error (after the folder or file name)."""
    cases: dict[str, tuple[Path, str]] = {}
    ok = "is truncated or damaged"

    def series(name: str) -> list[Path]:
        return dicom_series(root / name)

    for where, index in (("last", -1), ("middle", 3)):
        for keep in (300, 900):
            files = series(f"dcm_cut{keep}_{where}")
            _cut(files[index], files[index], keep)
            cases[f"dcm_cut{keep}_{where}"] = (files[index], f"{ok}: it is a CT Image Storage file without")
    files = series("dcm_cut100")
    _cut(files[2], files[2], 100)
    cases["dcm_cut100"] = (files[2], f"{ok}: it holds unrecognised binary data .*, not a DICOM header")
    files = series("dcm_pixels_cut")
    _cut(files[5], files[5], files[5].stat().st_size - 200)
    cases["dcm_pixels_cut"] = (files[5], f"{ok}: its pixel data cannot be decoded")
    files = series("dcm_empty_file")
    files[4].write_bytes(b"")
    cases["dcm_empty_file"] = (files[4], f"{ok}: it holds an empty file")
    garbled = {  # element, value as stored in every slice
        "dcm_spacing_text": ("PixelSpacing", "abxxxxx"),
        "dcm_ipp_nan": ("ImagePositionPatient", "0\\0\\nan"),
        "dcm_iop_5": ("ImageOrientationPatient", "1\\0\\0\\0\\1"),
        "dcm_thickness_text": ("SliceThickness", "thick"),
        "dcm_spacing_inf": ("PixelSpacing", "0.8\\inf"),
    }
    counts = {"PixelSpacing": 2, "ImagePositionPatient": 3, "ImageOrientationPatient": 6, "SliceThickness": 1}
    for name, (keyword, value) in garbled.items():
        files = series(name)
        for f in files:
            set_raw_value(f, keyword, value)
        cases[name] = (files[0], re.escape(f'has {keyword}="{value}": {counts[keyword]} finite number(s) expected'))
    return cases
