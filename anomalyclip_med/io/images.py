"""Reading 2D images (PNG/JPEG/TIFF/BMP) into 8-bit RGB, whatever their mode."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.names import IMAGE_SUFFIXES

__all__ = ["OPEN_ERRORS", "open_image", "to_rgb", "read_image"]


def to_rgb(image: Image.Image) -> Image.Image:
    """
    Convert any PIL image to 8-bit RGB.

    Grayscale and palette images are replicated to three channels; alpha is dropped (the colour values are
    kept as stored); 16-bit, 32-bit integer and float images are scaled from their own min..max to 0..255,
    since dividing a 12-bit scan by 65535 would leave it black.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        scaled = np.zeros_like(a) if hi <= lo else (np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo) - lo) / (hi - lo)
        image = Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


# PIL's errors for unreadable files: unknown format, truncated or garbled data, decompression bombs
OPEN_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError)


def _open_error(path: Path, err: Exception) -> InputError:
    return InputError(
        f"Cannot read image '{path}': {err}. Supported: {', '.join(IMAGE_SUFFIXES)} files that PIL can open."
    )


@contextlib.contextmanager
def open_image(path: str | os.PathLike, what: str = "image") -> Iterator[Image.Image]:
    """
    Open an image file for reading (header only) and check its declared size before any pixel is decoded.

    A header may declare any size; decoding a PNG of 100000 x 100000 pixels would need 30 GB. Images larger than
    PIL's ``Image.MAX_IMAGE_PIXELS`` (about 89 megapixels, a 9459 x 9459 square), or with a zero side, are refused
    here, and every PIL error (decompression bomb included) while opening or decoding becomes an ``InputError``.

    Raises:
        InputError: naming the file (``what`` says which kind), for a missing, unreadable or absurdly large image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what.capitalize()} '{path}' does not exist.")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width < 1 or height < 1 or width * height > (Image.MAX_IMAGE_PIXELS or width * height):
                raise InputError(f"{what.capitalize()} '{path}' declares {width} x {height} pixels, outside 1 .. "
                                 f"{Image.MAX_IMAGE_PIXELS:,} pixels: a damaged file or a decompression bomb.")
            yield im
    except OPEN_ERRORS as err:
        if isinstance(err, InputError):
            raise
        raise _open_error(path, err) if what == "image" else InputError(
            f"Cannot read {what} '{path}': {err}.") from None


def read_image(path: str | os.PathLike) -> Image.Image:
    """Read ``path`` as an 8-bit RGB PIL image; an unreadable file raises ``InputError`` naming it."""
    with open_image(path) as im:
        im.load()
        return to_rgb(im)
