"""
Loading scans as MONAI transforms (array and dictionary forms, as MONAI's ``LoadImage``/``LoadImaged``), through
:func:`anomalyclip_med.io.scans.load_volume` and its checks. Outputs are not written by transforms: a case's
outputs are written together, whole or not at all (:mod:`anomalyclip_med.io.case_outputs`), by the batch runner.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from anomalyclip_med.io.scans import load_volume

__all__ = ["LoadScan", "LoadScand"]


class LoadScan(Transform):
    """
    Load one scan as a channel-first float32 ``MetaTensor`` (1, X, Y, Z): the transform face of
    :func:`load_volume` (see it for the checks, the geometry kept and the metadata added).

    Args:
        series_uid: SeriesInstanceUID to load from a folder holding several series.
        volume_index: which volume of a 4D file to load (0-based); required when the file holds more than one.

    Raises:
        InputError: see :func:`load_volume`.
    """

    def __init__(self, series_uid: str | None = None, volume_index: int | None = None) -> None:
        self.series_uid = series_uid
        self.volume_index = volume_index

    def __call__(self, source: str | os.PathLike) -> MetaTensor:
        return load_volume(source, self.series_uid, self.volume_index)


class LoadScand(MapTransform):
    """
    Dictionary-based wrapper of :class:`LoadScan`: replaces each key's path by the loaded scan.

    Args:
        keys: keys holding scan paths.
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
