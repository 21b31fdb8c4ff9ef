"""
Loading scans as MONAI transforms (array and dictionary forms, as MONAI's ``LoadImage``/``LoadImaged``), through
:func:`anomalyclip_med.io.scans.load_volume` and its checks. A scan already in memory (a ``MetaTensor``, as MONAI
Deploy and MONAI Label hand one over) passes through :func:`anomalyclip_med.io.scans.as_scan` instead, so both
reach the network the same. Outputs are not written by transforms: a case's outputs are written together, whole or
not at all (:mod:`anomalyclip_med.io.case_outputs`), by the batch runner.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from anomalyclip_med.io.scans import as_scan, load_volume

__all__ = ["LoadScan", "LoadScand"]


class LoadScan(Transform):
    """
    Load one scan as a channel-first float32 ``MetaTensor`` (1, X, Y, Z): the transform face of
    :func:`load_volume` (see it for the checks, the geometry kept and the metadata added).

    A scan already loaded (a tensor or array, best a ``MetaTensor`` carrying its affine; ``(X, Y, Z)`` or
    ``(1, X, Y, Z)``) is not read again: it is checked and brought to the same form by
    :func:`anomalyclip_med.io.scans.as_scan` (float32, channel first, non-finite voxels replaced, an LPS affine
    turned to RAS), as a copy.

    Args:
        series_uid: SeriesInstanceUID to load from a folder holding several series.
        volume_index: which volume of a 4D file to load (0-based); required when the file holds more than one.

    Raises:
        InputError: see :func:`load_volume` and :func:`as_scan`.
    """

    def __init__(self, series_uid: str | None = None, volume_index: int | None = None) -> None:
        self.series_uid = series_uid
        self.volume_index = volume_index

    def __call__(self, source: str | os.PathLike | torch.Tensor | np.ndarray) -> MetaTensor:
        if isinstance(source, (torch.Tensor, np.ndarray)):
            return as_scan(source)
        return load_volume(source, self.series_uid, self.volume_index)


class LoadScand(MapTransform):
    """
    Dictionary-based wrapper of :class:`LoadScan`: replaces each key's path (or in-memory scan) by the loaded scan.

    Args:
        keys: keys holding scan paths or scans in memory.
        series_uid: see :class:`LoadScan`.
        volume_index: see :class:`LoadScan`.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        series_uid: str | None = None,
        volume_index: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadScan(series_uid, volume_index)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
