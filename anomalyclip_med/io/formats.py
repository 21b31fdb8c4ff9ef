"""
What a volume file really holds, checked before any reader allocates memory for it.

Readers trust headers: nibabel and ITK allocate what a header declares (a 352-byte NIfTI header can ask for
34 GB), SimpleITK returns the decoded part of a truncated ``.nii.gz`` without a word, and MONAI's ``LoadImage``
falls back to other readers when the first fails, so a damaged NIfTI is reported as a DICOM error. Here each
volume file is checked against its suffix's format first:

- the file's first bytes must be that format (else the error names the format actually found: empty, gzip of
  something else, NumPy array, PNG, DICOM, text ...);
- NIfTI-1/-2, NRRD and MetaImage headers are parsed and the bytes their voxels need (header offset + voxel count x
  bytes per voxel) are compared with what the file holds;
- a compressed stream (``.nii.gz``, gzip NRRD, zlib MetaImage) is decompressed in 1 MiB chunks to its
  end-of-stream marker (gzip also checks every member's CRC-32 and length) and must hold at least those bytes:
  nothing is kept, so the check takes constant memory whatever the header declares.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from anomalyclip_med.errors import InputError

__all__ = ["describe_content", "check_volume_file", "DeclaredVolume"]

_CHUNK = 1 << 20
_SNIFF = 4096
_NRRD_TYPES = {
    "int8": 1, "signed char": 1, "uint8": 1, "unsigned char": 1, "uchar": 1, "int16": 2, "short": 2, "short int": 2,
    "signed short": 2, "signed short int": 2, "uint16": 2, "ushort": 2, "unsigned short": 2, "unsigned short int": 2,
    "int32": 4, "int": 4, "signed int": 4, "uint32": 4, "uint": 4, "unsigned int": 4, "int64": 8, "longlong": 8,
    "long long": 8, "long long int": 8, "signed long long": 8, "signed long long int": 8, "uint64": 8,
    "ulonglong": 8, "unsigned long long": 8, "unsigned long long int": 8, "float": 4, "double": 8,
}
_MET_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


@dataclass(frozen=True)
class DeclaredVolume:
    """
    What a volume header declares.

    Attributes:
        format: ``"NIfTI-1"``, ``"NIfTI-2"``, ``"NRRD"`` or ``"MetaImage"``.
        shape: the voxel grid (all dimensions, vector components included).
        voxel_bytes: bytes per voxel value.
        data_offset: where the voxels start in the (decompressed) data stream.
        compressed: whether the voxel stream is compressed.
    """

    format: str
    shape: tuple[int, ...]
    voxel_bytes: int
    data_offset: int
    compressed: bool

    @property
    def needed_bytes(self) -> int:
        """Bytes the data stream must hold: offset + voxel count x bytes per voxel (Python ints: no overflow)."""
        return self.data_offset + int(np.prod(self.shape, dtype=object)) * self.voxel_bytes


def _nifti_kind(head: bytes) -> str | None:
    if len(head) >= 348 and head[344:348] in (b"n+1\0", b"ni1\0"):
        return "NIfTI-1" if head[344:348] == b"n+1\0" else "NIfTI-1 header of a .hdr/.img pair"
    if len(head) >= 12 and head[4:12] == b"n+2\0\r\n\x1a\n":
        return "NIfTI-2"
    if len(head) >= 4 and 348 in (struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]):
        return "ANALYZE 7.5 header (no NIfTI magic)"
    return None


def _describe(head: bytes, size: int) -> str:
    """A short phrase naming the format of data starting with ``head`` (``size`` bytes in all)."""
    if size == 0:
        return "an empty file (0 bytes)"
    if head[:2] == b"\x1f\x8b":
        try:  # a raw decompressor returns what the sniffed bytes hold, even when they end mid-stream
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 600)
        except zlib.error:
            inner = b""
        return f"gzip-compressed {_describe(inner, len(inner)) if inner else 'data'}"
    nifti = _nifti_kind(head)
    if nifti:
        return f"a {nifti} file"
    known = [
        (lambda h: h.startswith(b"\x93NUMPY"), "a NumPy .npy array"),
        (lambda h: h.startswith(b"PK\x03\x04"), "a ZIP archive (e.g. NumPy .npz)"),
        (lambda h: h[128:132] == b"DICM", "a DICOM file"),
        (lambda h: h.startswith(b"\x89PNG"), "a PNG image"),
        (lambda h: h.startswith(b"\xff\xd8\xff"), "a JPEG image"),
        (lambda h: h[:4] in (b"II*\0", b"MM\0*"), "a TIFF image"),
        (lambda h: h.startswith(b"BM"), "a BMP image"),
        (lambda h: h.startswith(b"NRRD"), "an NRRD file"),
        (lambda h: h.startswith(b"\x89HDF"), "an HDF5 file"),
        (lambda h: h[:1] == b"\x80" and h[1:2] in (b"\2", b"\3", b"\4", b"\5"), "a Python pickle"),
        (lambda h: b"NDims" in h and b"DimSize" in h, "a MetaImage header"),
    ]
    for test, name in known:
        if test(head):
            return name
    sample = head[:256]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        first = sample.decode("ascii").strip().splitlines()
        return f"text ({first[0][:40]!r}...)" if first else "blank text"
    return f"unrecognised binary data (first bytes {head[:8].hex(' ')})"


def describe_content(path: str | os.PathLike) -> str:
    """A short phrase naming the format ``path`` actually holds, from its first bytes (``"a PNG image"`` ...)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(_SNIFF)
    return _describe(head, path.stat().st_size)


def _stream_length(path: Path, start: int, gzip_format: bool) -> int:
    """
    Decompress ``path`` from byte ``start`` to its end-of-stream marker, keeping nothing; returns the length.

    Raises:
        EOFError: the stream ends before its end-of-stream marker.
        OSError, zlib.error: garbled data, or (gzip) a member whose CRC-32 or length does not match.
    """
    total = 0
    with open(path, "rb") as raw:
        raw.seek(start)
        if gzip_format:  # GzipFile checks each member's CRC-32 and length, and reads every member
            with gzip.GzipFile(fileobj=raw) as stream:
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
            return total
        z = zlib.decompressobj()
        while not z.eof:
            data = raw.read(_CHUNK)
            if not data:
                raise EOFError("Compressed data ended before the end-of-stream marker was reached")
            total += len(z.decompress(data))
    return total


def _nifti_header(path: Path, head: bytes, kind: str) -> DeclaredVolume:
    # dim[0] is read here first: nibabel takes a dim[0] outside 1..7 as a sign of swapped bytes and fails obscurely
    size = 540 if kind == "NIfTI-2" else 348
    order = "<" if struct.unpack("<i", head[:4])[0] == size else ">"
    n_dims = struct.unpack(order + ("q" if kind == "NIfTI-2" else "h"), head[16:24] if kind == "NIfTI-2" else head[40:42])[0]
    if not 1 <= n_dims <= 7:
        raise InputError(f"NIfTI file '{path}' has a garbled header: dim[0] = {n_dims} dimensions (1..7 expected).")
    try:
        klass = nib.Nifti2Header if kind == "NIfTI-2" else nib.Nifti1Header
        hdr = klass.from_fileobj(io.BytesIO(head[: klass.template_dtype.itemsize]), check=False)
        dim = [int(d) for d in hdr["dim"]]
        dtype = hdr.get_data_dtype()
        offset = max(int(hdr["vox_offset"]), size + 4)  # single-file NIfTI: voxels follow header + extension flag
    except Exception as err:  # nibabel raises several types on garbled header fields
        raise InputError(f"NIfTI file '{path}' has a garbled header ({type(err).__name__}: {err}).") from None
    if any(d < 1 for d in dim[1 : dim[0] + 1]):
        raise InputError(f"NIfTI file '{path}' has a garbled header: dim = {dim} (need 1..7 dimensions, each >= 1).")
    return DeclaredVolume(kind, tuple(dim[1 : dim[0] + 1]), dtype.itemsize, offset, path.name.lower().endswith(".gz"))


def _text_header(path: Path, head: bytes, fmt: str) -> tuple[dict[str, str], int]:
    """``key: value`` (NRRD) or ``Key = Value`` (MetaImage) fields, and where the data starts in the file."""
    fields, pos, sep = {}, 0, ":" if fmt == "NRRD" else "="
    with open(path, "rb") as f:
        for line in f:
            pos += len(line)
            text = line.decode("latin-1").strip()
            if fmt == "NRRD" and not text:
                break  # a blank line ends an NRRD header
            if text.startswith("#") or sep not in text:
                continue
            key, value = text.split(sep, 1)
            fields[key.strip().lower().rstrip("=")] = value.strip()
            if fmt == "MetaImage" and key.strip() == "ElementDataFile":
                break  # the last MetaImage field; the data follows
            if pos > (1 << 20):
                raise InputError(f"{fmt} file '{path}' has no end to its header in its first MiB.")
    return fields, pos


def _ints(path: Path, fmt: str, name: str, text: str | None) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in (text or "").split())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise InputError(f"{fmt} file '{path}' has a garbled header: {name} = {text!r} (positive integers needed).")
    return values


def _nrrd_header(path: Path, head: bytes) -> DeclaredVolume | None:
    fields, pos = _text_header(path, head, "NRRD")
    if "data file" in fields or "datafile" in fields:
        return None  # detached data (.nhdr): ITK reads the named file
    shape = _ints(path, "NRRD", "sizes", fields.get("sizes"))
    kind = fields.get("type", "").lower()
    encoding = fields.get("encoding", "").lower()
    if kind not in _NRRD_TYPES or encoding not in ("raw", "gzip", "gz"):
        return None  # text/bzip2 encodings and rare types: left to ITK, which reads them whole
    return DeclaredVolume("NRRD", shape, _NRRD_TYPES[kind], pos, encoding != "raw")


def _metaimage_header(path: Path, head: bytes) -> DeclaredVolume | None:
    fields, pos = _text_header(path, head, "MetaImage")
    if fields.get("elementdatafile", "").upper() != "LOCAL":
        return None  # detached data (.mhd + .raw): ITK reads the named file
    shape = _ints(path, "MetaImage", "DimSize", fields.get("dimsize"))
    channels = _ints(path, "MetaImage", "ElementNumberOfChannels", fields.get("elementnumberofchannels", "1"))
    kind = fields.get("elementtype", "").upper()
    if kind not in _MET_TYPES:
        raise InputError(f"MetaImage file '{path}' has a garbled header: ElementType = {kind!r}.")
    compressed = fields.get("compresseddata", "false").lower() == "true"
    return DeclaredVolume("MetaImage", (*shape, *channels), _MET_TYPES[kind], pos, compressed)


def _check_size(path: Path, declared: DeclaredVolume, file_size: int) -> None:
    needed = declared.needed_bytes
    what = (f"its header declares {'x'.join(map(str, declared.shape))} voxels of {declared.voxel_bytes} byte(s), "
            f"{needed:,} bytes with the header")
    if not declared.compressed:
        if file_size < needed:
            raise InputError(f"{declared.format} file '{path}' is truncated or damaged: {what}, but the file holds "
                             f"{file_size:,} bytes.")
        return
    # a .nii.gz compresses the whole file, header included; NRRD and MetaImage compress only the voxels
    start = 0 if declared.format.startswith("NIfTI") else declared.data_offset
    needed -= start
    try:
        length = _stream_length(path, start, gzip_format=declared.format != "MetaImage")
    except (EOFError, OSError, zlib.error) as err:
        raise InputError(f"{declared.format} file '{path}' is truncated or damaged: its compressed data is "
                         f"incomplete ({err}).") from None
    if length < needed:
        raise InputError(f"{declared.format} file '{path}' is truncated or damaged: {what}, but its compressed "
                         f"stream holds {length:,} bytes.")


def check_volume_file(path: str | os.PathLike, suffix: str) -> DeclaredVolume | None:
    """
    Check that the volume file ``path`` (of volume suffix ``suffix``) holds that format, whole, before reading it.

    Returns:
        what the header declares, or ``None`` for data the reader finds elsewhere (detached NRRD/MetaImage data)
        or encodings checked only by the reader (NRRD text/bzip2).

    Raises:
        InputError: naming the file and the format found, for a non-regular file (a FIFO), an empty file,
            another format under a volume suffix, a garbled header, or fewer bytes (decompressed, for compressed
            data) than the header declares.
    """
    path = Path(path)
    if not path.is_file():  # a FIFO or device named like a scan: opening it would block the run
        raise InputError(f"'{path}' is not a regular file (a FIFO, socket or device), not a {suffix} scan.")
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_SNIFF)
    expected = {".nii.gz": "gzip-compressed NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD",
                ".mha": "MetaImage", ".mhd": "MetaImage"}[suffix]

    def wrong() -> InputError:
        return InputError(f"'{path}' is named {suffix} but holds {_describe(head, file_size)}, not {expected} data.")

    if suffix in (".nii", ".nii.gz"):
        if suffix == ".nii.gz":
            if head[:2] != b"\x1f\x8b":
                raise wrong()
            with open(path, "rb") as f:
                compressed = f.read(_CHUNK)
            try:  # a raw decompressor returns what the first bytes hold, even of a stream cut short
                head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(compressed, _SNIFF)
            except zlib.error:
                head = b""
        kind = _nifti_kind(head)
        if kind not in ("NIfTI-1", "NIfTI-2"):
            if suffix == ".nii.gz" and len(head) < 348:
                raise InputError(f"NIfTI file '{path}' is truncated or damaged: its gzip stream decompresses to "
                                 f"{len(head)} bytes, fewer than a NIfTI header's 348.")
            raise wrong() if suffix == ".nii" else InputError(
                f"'{path}' is named .nii.gz but holds gzip-compressed {_describe(head, len(head))}, not NIfTI data.")
        declared = _nifti_header(path, head, kind)
    elif suffix in (".nrrd", ".nhdr"):
        if not head.startswith(b"NRRD"):
            raise wrong()
        declared = _nrrd_header(path, head)
    else:
        if b"NDims" not in head or b"DimSize" not in head:
            raise wrong()
        declared = _metaimage_header(path, head)
    if declared is not None:
        _check_size(path, declared, file_size)
    return declared
