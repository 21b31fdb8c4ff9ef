"""
Intensity presets for scans: CT windows in Hounsfield units and robust (percentile) MRI normalisation to [0, 1],
plus an ``auto`` preset that picks one from the DICOM Modality / BodyPartExamined or from the intensity range.

Array transforms here; their dictionary variants are in :mod:`anomalyclip_med.transforms.dictionary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import ScaleIntensityRange, Transform

__all__ = [
    "CT_WINDOWS",
    "PRESETS",
    "PRESET_META_KEY",
    "CTWindow",
    "PercentileNormalize",
    "PresetChoice",
    "IntensityPreset",
]

# (level, width) in HU; the usual radiology windows (e.g. Radiopaedia, "Windowing (CT)")
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}
PRESETS = ("auto", *CT_WINDOWS, "mri")
PRESET_META_KEY = "intensity_preset"

# auto preset on CT: DICOM BodyPartExamined (upper case) -> window; anything else gets the soft-tissue window
_CT_BODY_PARTS = {
    "HEAD": "brain", "BRAIN": "brain", "SKULL": "brain",
    "CHEST": "lung", "LUNG": "lung", "THORAX": "lung",
    "ABDOMEN": "abdomen", "PELVIS": "abdomen", "ABDOMENPELVIS": "abdomen", "LIVER": "liver",
}
_CT_DEFAULT = "abdomen"
# a scan with at least this fraction of voxels at or below -500 holds air in HU, so it is CT
_AIR_HU, _AIR_FRACTION = -500.0, 1e-3
_SAMPLE_VOXELS = 2_000_000  # enough voxels for stable percentiles; strided sampling keeps big CTs fast


def _sample(img: NdarrayOrTensor) -> np.ndarray:
    """A strided sample (at most ~2M voxels) of the finite voxels, as float32 numpy."""
    a = img.detach().cpu().numpy() if torch.is_tensor(img) else np.asarray(img)
    a = a.reshape(-1)
    a = a[:: max(1, a.size // _SAMPLE_VOXELS)].astype(np.float32, copy=False)
    return a[np.isfinite(a)]


class CTWindow(ScaleIntensityRange):
    """
    A CT window: Hounsfield units in ``[level - width/2, level + width/2]`` mapped linearly to [0, 1], clipped.

    Args:
        level: window centre in HU.
        width: window width in HU (> 0).
    """

    def __init__(self, level: float, width: float) -> None:
        if not width > 0:
            raise ValueError(f"CT window width must be positive, got {width}.")
        self.level, self.width = float(level), float(width)
        super().__init__(a_min=level - width / 2, a_max=level + width / 2, b_min=0.0, b_max=1.0, clip=True)


class PercentileNormalize(Transform):
    """
    Robust per-volume normalisation: the ``lower``..``upper`` percentiles of the scan's intensities map to 0..1,
    clipped. With ``nonzero`` the percentiles are taken over non-zero voxels only, so a large zero background
    (skull-stripped or masked MRI) does not pull the lower percentile to 0.

    Args:
        lower: lower percentile (0-100).
        upper: upper percentile (0-100), greater than ``lower``.
        nonzero: compute the percentiles over non-zero voxels (all voxels if none is non-zero).
    """

    def __init__(self, lower: float = 1.0, upper: float = 99.0, nonzero: bool = True) -> None:
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"Percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}.")
        self.lower, self.upper, self.nonzero = float(lower), float(upper), nonzero

    def intensity_range(self, img: NdarrayOrTensor) -> tuple[float, float]:
        """The intensities at the two percentiles (``(0, 0)`` for an image without finite voxels)."""
        values = _sample(img)
        if self.nonzero and np.any(values != 0):
            values = values[values != 0]
        if values.size == 0:
            return 0.0, 0.0
        lo, hi = np.percentile(values, [self.lower, self.upper])
        return float(lo), float(hi)

    def scaler(self, img: NdarrayOrTensor) -> ScaleIntensityRange:
        """The pointwise transform this normalisation applies to ``img`` (reusable on its slices)."""
        lo, hi = self.intensity_range(img)
        if hi <= lo:  # constant scan: everything maps to 0
            hi = lo + 1.0
        return ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return self.scaler(img)(img)


@dataclass
class PresetChoice:
    """
    What an :class:`IntensityPreset` decided for one scan.

    Attributes:
        name: the concrete preset (a CT window name or ``"mri"``).
        reason: why it was picked (for ``auto``) or ``"requested"``.
        transform: the pointwise transform to [0, 1]; apply it to the scan or to any of its slices.
        details: level/width in HU for CT windows, percentiles and intensity range for ``mri``.
    """

    name: str
    reason: str
    transform: ScaleIntensityRange
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason, **self.details}


class IntensityPreset(Transform):
    """
    Map a scan's intensities to [0, 1] with a named preset.

    Presets: the CT windows of :data:`CT_WINDOWS` (``brain`` W80/L40, ``subdural`` W215/L75, ``stroke`` W40/L40,
    ``abdomen`` W400/L50, ``liver`` W150/L30, ``lung`` W1500/L-600, ``bone`` W1800/L400, in HU), ``mri``
    (:class:`PercentileNormalize` over non-zero voxels), and ``auto``:

    - DICOM Modality ``CT``: the window for BodyPartExamined (head/brain/skull -> brain, chest/lung/thorax -> lung,
      abdomen/pelvis -> abdomen, liver -> liver; otherwise abdomen, the soft-tissue window);
    - any other DICOM Modality: ``mri``;
    - no Modality (NIfTI, NRRD...): CT (abdomen window) when at least 0.1% of the voxels are <= -500, which only
      air in Hounsfield units gives; otherwise ``mri``.

    The modality and body part are read from ``img.meta["modality"]``/``["body_part"]`` (set by
    :class:`anomalyclip_med.transforms.io.LoadScan`) or passed to :meth:`choose`. The choice is stored as a dict in
    the output's ``meta["intensity_preset"]`` when the input is a ``MetaTensor``.

    Args:
        preset: one of :data:`PRESETS`.
        level: CT window level in HU replacing the preset's (CT presets, or ``auto`` when it picks CT).
        width: CT window width in HU replacing the preset's.
        percentiles: (lower, upper) percentiles of the ``mri`` preset.
    """

    def __init__(
        self,
        preset: str = "auto",
        level: float | None = None,
        width: float | None = None,
        percentiles: tuple[float, float] = (1.0, 99.0),
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"Unknown intensity preset {preset!r}; choose one of {', '.join(PRESETS)}.")
        if preset == "mri" and (level is not None or width is not None):
            raise ValueError("A window level/width applies to CT presets, not to 'mri'.")
        if width is not None and not width > 0:
            raise ValueError(f"CT window width must be positive, got {width}.")
        self.preset, self.level, self.width = preset, level, width
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        PercentileNormalize(*self.percentiles)  # validates the percentiles now rather than on the first scan

    def _auto(self, img: NdarrayOrTensor, modality: str, body_part: str) -> tuple[str, str]:
        if modality.upper() == "CT":
            part = body_part.upper().replace(" ", "")
            name = _CT_BODY_PARTS.get(part, _CT_DEFAULT)
            return name, f"DICOM Modality CT, BodyPartExamined '{body_part}'"
        if modality:
            return "mri", f"DICOM Modality {modality} (not CT)"
        values = _sample(img)
        air = float(np.mean(values <= _AIR_HU)) if values.size else 0.0
        if air >= _AIR_FRACTION:
            return _CT_DEFAULT, (f"no DICOM Modality; {air:.1%} of voxels <= {_AIR_HU:g} (air in HU): CT, "
                                 "soft-tissue window")
        return "mri", f"no DICOM Modality; no voxel values of air in HU ({air:.2%} <= {_AIR_HU:g}): not CT"

    def choose(self, img: NdarrayOrTensor, modality: str | None = None, body_part: str | None = None) -> PresetChoice:
        """
        Decide the preset for ``img`` without transforming it.

        Args:
            img: the whole scan (the ``mri`` percentiles and the ``auto`` range test look at all of it).
            modality: DICOM Modality; default ``img.meta["modality"]`` when available.
            body_part: DICOM BodyPartExamined; default ``img.meta["body_part"]`` when available.
        """
        meta = img.meta if isinstance(img, MetaTensor) else {}
        modality = modality if modality is not None else str(meta.get("modality", "") or "")
        body_part = body_part if body_part is not None else str(meta.get("body_part", "") or "")
        name, reason = (self.preset, "requested") if self.preset != "auto" else self._auto(img, modality, body_part)
        if name == "mri":
            normalize = PercentileNormalize(*self.percentiles)
            lo, hi = normalize.intensity_range(img)
            if self.level is not None or self.width is not None:
                reason += "; the CT window level/width given were not used"
            details = {"percentiles": list(self.percentiles), "intensity_range": [lo, hi]}
            return PresetChoice(name, reason, normalize.scaler(img), details)
        level, width = CT_WINDOWS[name]
        level = level if self.level is None else float(self.level)
        width = width if self.width is None else float(self.width)
        if (level, width) != CT_WINDOWS[name]:
            reason += f"; window set to level {level:g} / width {width:g} HU"
        return PresetChoice(name, reason, CTWindow(level, width), {"level": level, "width": width})

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        choice = self.choose(img)
        out = choice.transform(img)
        if isinstance(out, MetaTensor):
            out.meta[PRESET_META_KEY] = choice.to_dict()
        return out
