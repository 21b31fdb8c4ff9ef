"""Loading 2D images and their anomaly masks as PIL images, ready for the reference preprocessing."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from PIL import Image

from anomalyclip_med.io.images import read_image
from anomalyclip_med.io.masks import read_mask

__all__ = ["LoadImage2D", "LoadMask2D", "LoadImage2Dd", "LoadMask2Dd"]


class LoadImage2D(Transform):
    """Image file -> 8-bit RGB PIL image (any mode converted; an unreadable file raises ``InputError``)."""

    def __call__(self, path: str | os.PathLike) -> Image.Image:
        return read_image(path)


class LoadMask2D(Transform):
    """
    Mask file -> PIL ``"L"`` image of 0 (normal) and 255 (anomalous), the form the reference's mask
    preprocessing receives; no mask (``None``) -> an all-normal mask.

    Raises:
        InputError: unreadable or non-binary mask, or a mask whose size is not its image's.
    """

    def __call__(self, path: str | os.PathLike | None, size: tuple[int, int]) -> Image.Image:
        """
        Args:
            path: mask file, or ``None`` when the image has no pixel annotation.
            size: (width, height) of the image the mask belongs to.
        """
        if path is None:
            return Image.new("L", tuple(size), 0)
        return Image.fromarray(read_mask(path, expected_size=size).astype(np.uint8) * 255, mode="L")


class LoadImage2Dd(MapTransform):
    """Dictionary wrapper of :class:`LoadImage2D`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImage2D()

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class LoadMask2Dd(MapTransform):
    """
    Dictionary wrapper of :class:`LoadMask2D`; the image under ``image_key`` (already loaded) gives the size.
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.loader = LoadMask2D()

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        size = d[self.image_key].size
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key], size)
        return d
