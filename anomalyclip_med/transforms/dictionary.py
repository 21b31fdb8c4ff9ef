"""Dictionary-based wrappers of the scan transforms (for MONAI ``Compose`` pipelines and bundle configs)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from anomalyclip_med.transforms.image2d import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from anomalyclip_med.transforms.intensity import CTWindow, IntensityPreset, PercentileNormalize
from anomalyclip_med.transforms.slicing import SliceForeground, SliceToNetworkInput

__all__ = ["CTWindowd", "PercentileNormalized", "IntensityPresetd", "SliceForegroundd", "SliceToNetworkInputd"]


class _Wrapper(MapTransform):
    """Apply one array transform to every key."""

    transform: Any

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class CTWindowd(_Wrapper):
    """Dictionary-based wrapper of :class:`anomalyclip_med.transforms.intensity.CTWindow`."""

    def __init__(self, keys: KeysCollection, level: float, width: float, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CTWindow(level, width)


class PercentileNormalized(_Wrapper):
    """Dictionary-based wrapper of :class:`anomalyclip_med.transforms.intensity.PercentileNormalize`."""

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 1.0,
        upper: float = 99.0,
        nonzero: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = PercentileNormalize(lower, upper, nonzero)


class IntensityPresetd(_Wrapper):
    """
    Dictionary-based wrapper of :class:`anomalyclip_med.transforms.intensity.IntensityPreset`; the choice is
    stored in each output's ``meta["intensity_preset"]``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        preset: str = "auto",
        level: float | None = None,
        width: float | None = None,
        percentiles: tuple[float, float] = (1.0, 99.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = IntensityPreset(preset, level, width, percentiles)


class SliceForegroundd(MapTransform):
    """
    Dictionary-based wrapper of :class:`anomalyclip_med.transforms.slicing.SliceForeground`: stores each key's
    per-slice foreground flags under ``f"{key}{postfix}"`` and leaves the scan unchanged.
    """

    def __init__(
        self,
        keys: KeysCollection,
        axis: str | int | None = None,
        min_fraction: float = 0.01,
        threshold: float | None = None,
        postfix: str = "_foreground",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SliceForeground(axis, min_fraction, threshold)
        self.postfix = postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}{self.postfix}"] = self.transform(d[key])
        return d


class SliceToNetworkInputd(MapTransform):
    """
    Dictionary-based wrapper of :class:`anomalyclip_med.transforms.slicing.SliceToNetworkInput`: replaces each
    key's scan by the ``(N, 3, S, S)`` inputs of all its slices and stores the slice geometry (to map outputs back
    onto the slice grid) under ``f"{key}{geometry_postfix}"``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_size: int,
        axis: str | int | None = None,
        mean: tuple[float, ...] = OPENAI_DATASET_MEAN,
        std: tuple[float, ...] = OPENAI_DATASET_STD,
        geometry_postfix: str = "_slice_geometry",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SliceToNetworkInput(image_size, axis, mean, std)
        self.geometry_postfix = geometry_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}{self.geometry_postfix}"] = self.transform.geometry(d[key])
            d[key] = self.transform(d[key])
        return d
