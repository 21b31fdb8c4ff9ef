"""
Options of scan scoring, in three parts used by different steps: :class:`LoadingOptions` (which volume of an
input), :class:`ScoringOptions` (how a loaded scan becomes maps and scores) and :class:`OutputOptions` (what is
written and how). Each checks its values when made, so a bad option fails before any weights or scans load.

Each default is written once, here; the command line (``argparse`` defaults) and the bundle configs read it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.cases import CASE_NAMING
from anomalyclip_med.transforms.windows import PRESETS

if TYPE_CHECKING:
    from anomalyclip_med.transforms.intensity import IntensityPreset

__all__ = [
    "AGGREGATIONS", "RESUME_MODES", "LoadingOptions", "ScoringOptions", "OutputOptions",
    "BatchOptions", "scan_options_record"
]

AGGREGATIONS = ("topk_mean", "max", "mean")
# what a batch does with existing outputs: "refuse" them before it starts; "continue": reuse finished cases made
# from the same input, model and options and compute the others; "overwrite": compute every case again
RESUME_MODES = ("refuse", "continue", "overwrite")


def _invalid(kind: str, name: str, value: Any, rule: str) -> InputError:
    return InputError(f"Invalid {kind} option {name}={value!r}: {rule}.")


@dataclass
class LoadingOptions:
    """
    Which volume of an input is scored (defaults in brackets).

    Attributes:
        series_uid: SeriesInstanceUID to score in a DICOM folder holding several series [None].
        volume_index: volume of a 4D file to score, 0-based [None; required for 4D files with several volumes].
    """

    series_uid: str | None = None
    volume_index: int | None = None

    def __post_init__(self) -> None:
        if self.series_uid is not None and not str(self.series_uid).strip():
            raise _invalid("loading", "series_uid", self.series_uid, "a DICOM SeriesInstanceUID, or leave it unset")
        if self.volume_index is not None:
            if isinstance(self.volume_index, bool) or int(self.volume_index) != self.volume_index \
                    or self.volume_index < 0:
                raise _invalid("loading", "volume_index", self.volume_index, "an integer >= 0")
            self.volume_index = int(self.volume_index)


@dataclass
class ScoringOptions:
    """
    How a loaded scan is scored (defaults in brackets).

    Attributes:
        preset: intensity preset ["auto"]: ``auto``, a CT window (``brain``, ``subdural``, ``stroke``,
            ``abdomen``, ``liver``, ``lung``, ``bone``) or ``mri``; see
            :class:`anomalyclip_med.transforms.intensity.IntensityPreset`.
        window_level: CT window level in HU replacing the preset's [None].
        window_width: CT window width in HU replacing the preset's [None].
        percentiles: percentiles of the ``mri`` normalisation [(1, 99)].
        axis: slicing axis [None = axial, whatever the scan's orientation]: ``axial``, ``coronal``, ``sagittal``
            or an array axis 0..2.
        threshold: the labelmap is ``anomaly_map >= threshold`` [0.5].
        batch_size: slices per forward pass [8].
        skip_empty: send only slices holding a body through the network; others score 0 [True].
        body_mask: set the map to 0 outside the body (air, padding, background; see
            :class:`anomalyclip_med.transforms.slicing.BodyMask`) [True]; ``False`` keeps the raw map.
        min_foreground: fraction of a slice that must be body for it to be scored [0.01].
        z_smooth: Gaussian sigma in mm smoothing the map across neighbouring slices [0 = off].
        aggregation: scan score from the scored slices' scores: ``topk_mean`` (mean of the ``topk`` highest),
            ``max`` or ``mean`` ["topk_mean"]; 0 when no slice was scored.
        topk: slices averaged by ``topk_mean`` [5].

    Raises:
        InputError: an invalid value, naming the option.
    """

    preset: str = "auto"
    window_level: float | None = None
    window_width: float | None = None
    percentiles: tuple[float, float] = (1.0, 99.0)
    axis: str | int | None = None
    threshold: float = 0.5
    batch_size: int = 8
    skip_empty: bool = True
    body_mask: bool = True
    min_foreground: float = 0.01
    z_smooth: float = 0.0
    aggregation: str = "topk_mean"
    topk: int = 5

    def __post_init__(self) -> None:
        self.percentiles = tuple(float(p) for p in self.percentiles)
        checks = [
            ("preset", self.preset in PRESETS, f"one of {', '.join(PRESETS)}"),
            ("window_level", self.window_level is None or math.isfinite(self.window_level), "a finite number in HU"),
            ("window_width", self.window_width is None or (math.isfinite(self.window_width) and self.window_width > 0),
             "a positive number in HU"),
            ("threshold", 0.0 <= self.threshold <= 1.0, "in [0, 1]"),
            ("batch_size", _positive_int(self.batch_size), "an integer >= 1"),
            ("min_foreground", 0.0 <= self.min_foreground <= 1.0, "in [0, 1]"),
            ("z_smooth", math.isfinite(self.z_smooth) and self.z_smooth >= 0, "a sigma in mm >= 0 (0: off)"),
            ("aggregation", self.aggregation in AGGREGATIONS, f"one of {', '.join(AGGREGATIONS)}"),
            ("topk", _positive_int(self.topk), "an integer >= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise _invalid("scoring", name, getattr(self, name), rule)
        if self.preset == "mri" and (self.window_level is not None or self.window_width is not None):
            raise _invalid("scoring", "preset", self.preset, "a window level/width applies to CT presets, not to "
                           "'mri'; leave window_level/window_width unset")
        from anomalyclip_med.transforms.slicing import resolve_axis  # imports MONAI: not at import (fast --help)

        try:
            resolve_axis(np.eye(4), self.axis)
        except (TypeError, ValueError) as err:
            raise _invalid("scoring", "axis", self.axis, str(err).rstrip(".")) from None
        try:
            self.intensity_preset()
        except ValueError as err:
            raise _invalid("scoring", "percentiles", self.percentiles, str(err).rstrip(".")) from None

    def intensity_preset(self) -> IntensityPreset:
        """The intensity transform these options describe."""
        from anomalyclip_med.transforms.intensity import IntensityPreset

        return IntensityPreset(self.preset, self.window_level, self.window_width, self.percentiles)


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and int(value) == value and value >= 1


@dataclass
class OutputOptions:
    """
    What is written for a scored scan, and how (defaults in brackets).

    Attributes:
        overwrite: replace existing outputs [False].
        dicom_seg: also write a DICOM SEG referencing the source series; ignored for file inputs [False].
        montage_slices: most anomalous slices shown in the overlay PNG [6].
        progress: show a progress bar [True].
    """

    overwrite: bool = False
    dicom_seg: bool = False
    montage_slices: int = 6
    progress: bool = True

    def __post_init__(self) -> None:
        if not _positive_int(self.montage_slices):
            raise _invalid("output", "montage_slices", self.montage_slices, "an integer >= 1")


def scan_options_record(
    scoring: ScoringOptions, loading: LoadingOptions | None = None, output: OutputOptions | None = None
) -> dict[str, Any]:
    """The options as recorded in a scan's scores report and compared on resume: every field that changes what
    is written."""
    record = {**asdict(loading or LoadingOptions()), **asdict(scoring), **asdict(output or OutputOptions())}
    # a bar, a permission and a speed setting: none changes an output (a resumed run may use other values)
    for key in ("progress", "overwrite", "batch_size"):
        record.pop(key)
    return record


@dataclass
class BatchOptions:
    """
    How a batch of scans is run (defaults in brackets).

    Attributes:
        case_name: how cases are named, one of :data:`CASE_NAMING` ["stem": the file stem or DICOM series folder,
            parent folders added where names collide].
        resume: what to do with existing outputs, one of :data:`RESUME_MODES` ["refuse"].
    """

    case_name: str = "stem"
    resume: str = "refuse"

    def __post_init__(self) -> None:
        if self.case_name not in CASE_NAMING:
            raise _invalid("batch", "case_name", self.case_name, f"one of {', '.join(CASE_NAMING)}")
        if self.resume not in RESUME_MODES:
            raise _invalid("batch", "resume", self.resume, f"one of {', '.join(RESUME_MODES)}")
