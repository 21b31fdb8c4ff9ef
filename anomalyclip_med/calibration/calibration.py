"""
A calibration: the distributions of a model's scores on known-normal scans or images, with the model identity and
scoring options they were made with; and the decision every job applies to the network's maps and scores
(:class:`Decision`: the labelmap threshold, and with a calibration the p-values and flags at a requested
false-positive rate). This is the one place where a map becomes a labelmap (the anomalib ``PostProcessor`` idea:
one component owns the thresholds and applies them); it sits below inference and imports nothing of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomalyclip_med.calibration.distribution import MAP_BINS, SCORE_BINS, ScoreDistribution
from anomalyclip_med.errors import InputError
from anomalyclip_med.utils.atomic import atomic_path
from anomalyclip_med.utils.hashing import file_digest

__all__ = [
    "CALIBRATION_FORMAT",
    "LEVELS",
    "MAP_OUTPUTS",
    "CalibrationMismatchError",
    "CalibrationOptions",
    "CalibrateOptions",
    "Calibration",
    "Decision",
    "CalibratedDecision",
    "comparable_model",
    "comparable_scoring",
]

CALIBRATION_FORMAT = "anomalyclip_med.calibration/1"
# levels per input kind: the map level first, then the per-slice (per-image) level, then the scan level
LEVELS = {"scans": ("voxel", "slice", "scan"), "images": ("pixel", "image")}
_BINS = {"voxel": MAP_BINS, "pixel": MAP_BINS, "slice": SCORE_BINS, "image": SCORE_BINS, "scan": SCORE_BINS}
MAP_OUTPUTS = ("probability", "calibrated")
# scoring options that change no score: how many slices share a forward pass, and the labelmap threshold (which a
# calibration replaces)
_NOT_SCORING = {"batch_size", "threshold"}


class CalibrationMismatchError(InputError):
    """A calibration made with another model, other scoring options or another kind of input."""


@dataclass
class CalibrationOptions:
    """
    How a calibration turns scores into decisions (defaults in brackets).

    Attributes:
        calibration: the calibration JSON written by ``anomalyclip-med calibrate`` [None: fixed threshold].
        target_fpr: false-positive rate of the slice (image) flags among normal slices and of the scan flag among
            normal scans [0.05].
        map_fpr: false-positive rate of the labelmap among normal voxels (pixels) [None: ``target_fpr``].
        map_output: the anomaly map written as the network's ``probability`` or as ``calibrated`` voxel
            p-values (small = unusual among normals) ["probability"].
    """

    calibration: str | None = None
    target_fpr: float = 0.05
    map_fpr: float | None = None
    map_output: str = "probability"

    def __post_init__(self) -> None:
        for name in ("target_fpr", "map_fpr"):
            value = getattr(self, name)
            if value is not None and not 0.0 < float(value) < 1.0:
                raise InputError(f"Invalid calibration option: {name.replace('_', '-')} must be in (0, 1), got {value}.")
        if self.map_output not in MAP_OUTPUTS:
            raise InputError(f"Invalid calibration option: map must be one of {MAP_OUTPUTS}, got {self.map_output!r}.")
        if self.map_output == "calibrated" and not self.calibration:
            raise InputError("--map calibrated writes calibrated p-values: it needs --calibration FILE.")

    def check(self, kind: str, scoring: Any = None) -> None:
        """Before any model is built: the calibration file is readable and fits ``kind`` and ``scoring`` (a run
        refused for that then writes nothing)."""
        if self.calibration:
            Calibration.load(self.calibration).check(kind, None, scoring)

    def decision(self, kind: str, model_identity: dict, scoring: Any = None) -> Decision:
        """The decision of this run: without a calibration the fixed labelmap threshold of ``scoring`` (a
        ``ScoringOptions``; None for 2D images: no labelmap); with one, the calibration loaded, checked against
        this run's kind, model and scoring options, at the requested false-positive rates."""
        if not self.calibration:
            return Decision(getattr(scoring, "threshold", None))
        calibration = Calibration.load(self.calibration)
        calibration.check(kind, model_identity, scoring)
        return CalibratedDecision(calibration, self.target_fpr, self.map_fpr, self.map_output)


@dataclass
class CalibrateOptions:
    """
    A calibration run (defaults in brackets).

    Attributes:
        dataset: read the normal images of this benchmark dataset layout (e.g. ``bmad-brain``) under the one input
            root [None: the inputs are scans or images].
        split: the dataset split whose normal images are used ["train": BMAD's and MedIAnomaly's normal-only split].
        resume: reuse the parts of an earlier run made from the same files, model and options [False].
        overwrite: replace an existing output [False].
        progress: show a progress bar [True].
    """

    dataset: str | None = None
    split: str = "train"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True


def _plain(value: Any) -> Any:
    """JSON-equal form (tuples become lists), so options compare the same before and after a round trip."""
    return json.loads(json.dumps(value, default=str))


def comparable_model(identity: dict) -> dict:
    """The parts of ``AnomalyCLIP.identity()`` that decide its scores; a file's hash stands for its path (the same
    weights may live elsewhere on the scoring machine)."""
    backbone = dict(identity.get("backbone") or {})
    if any(k.endswith("sha256") for k in backbone):
        backbone.pop("weights", None)
    prompts = dict(identity.get("prompts") or {})
    if "sha256" in prompts:
        prompts = {k: prompts[k] for k in ("sha256", "trained") if k in prompts}
    return _plain({"backbone": backbone, "prompts": prompts, "config": identity.get("config"),
                   "precision": identity.get("precision")})


def comparable_scoring(options: Any) -> dict:
    """The scoring options that change scores (a ``ScoringOptions`` or a dict); empty for ``None`` (2D images)."""
    if options is None:
        return {}
    items = asdict(options) if is_dataclass(options) else dict(options)
    return _plain({k: v for k, v in sorted(items.items()) if k not in _NOT_SCORING})


def _first_difference(mine: Any, theirs: Any, prefix: str) -> str | None:
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(set(mine) | set(theirs)):
            found = _first_difference(mine.get(key), theirs.get(key), f"{prefix}.{key}")
            if found:
                return found
        return None
    return None if mine == theirs else f"{prefix}: calibrated with {mine!r}, this run has {theirs!r}"


@dataclass
class Calibration:
    """
    Normal-score distributions of one model with one set of scoring options.

    Attributes:
        kind: ``"scans"`` (levels voxel, slice, scan) or ``"images"`` (levels pixel, image).
        model: ``AnomalyCLIP.identity()`` of the model that scored the normals.
        scoring: the score-changing scoring options (:func:`comparable_scoring`).
        levels: level name -> :class:`ScoreDistribution`.
        counts: ``cases``, ``slices`` (images for 2D), ``voxels`` (pixels for 2D) that went in.
        source: where it was read from (set by :meth:`load`).
        sha256: the file's hash (set by :meth:`load`), quoted in every report that uses it.
    """

    kind: str
    model: dict
    scoring: dict
    levels: dict[str, ScoreDistribution] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    source: str | None = None
    sha256: str | None = None

    @classmethod
    def empty(cls, kind: str, model_identity: dict, scoring: Any = None) -> Calibration:
        """A calibration with no normals yet."""
        if kind not in LEVELS:
            raise ValueError(f"kind must be one of {tuple(LEVELS)}, got {kind!r}.")
        return cls(kind, dict(model_identity), comparable_scoring(scoring),
                   {level: ScoreDistribution(_BINS[level]) for level in LEVELS[kind]},
                   {"cases": 0, "slices": 0, "voxels": 0})

    @property
    def map_level(self) -> str:
        return LEVELS[self.kind][0]

    @property
    def item_level(self) -> str:
        return LEVELS[self.kind][1]

    def add_case(self, map_values: np.ndarray, item_scores: np.ndarray, scan_score: float | None = None) -> None:
        """Add one normal case: its map values (voxels of scored slices, or an image's pixels), its scored slices'
        scores (or the image score) and, for scans, the scan score."""
        self.merge_case(self.case_part(map_values, item_scores, scan_score))

    def case_part(self, map_values: np.ndarray, item_scores: np.ndarray, scan_score: float | None = None
                  ) -> dict[str, ScoreDistribution]:
        """One case's distributions (the resumable unit of ``calibrate``)."""
        part = {level: ScoreDistribution(_BINS[level]) for level in LEVELS[self.kind]}
        part[self.map_level].update(map_values)
        part[self.item_level].update(item_scores)
        if self.kind == "scans":
            part["scan"].update([scan_score])
        return part

    def merge_case(self, part: dict[str, ScoreDistribution]) -> None:
        for level, dist in part.items():
            self.levels[level].merge(dist)
        self.counts["cases"] += 1
        self.counts["slices"] += part[self.item_level].n
        self.counts["voxels"] += part[self.map_level].n

    def to_dict(self) -> dict[str, Any]:
        from anomalyclip_med import __version__

        return {"format": CALIBRATION_FORMAT, "kind": self.kind, "counts": dict(self.counts), "model": self.model,
                "scoring": self.scoring, "package_version": __version__,
                "levels": {name: dist.to_dict() for name, dist in self.levels.items()}}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the calibration JSON atomically: indented, but each level's bin lists on one line (a voxel level
        holds up to 65536 bins)."""
        data = self.to_dict()
        lists = {}
        for name, level in data["levels"].items():
            for key in ("bin_index", "count"):
                lists[f"@{name}.{key}@"] = json.dumps(level[key], separators=(",", ":"))
                level[key] = f"@{name}.{key}@"
        text = json.dumps(data, indent=2, allow_nan=False)
        for placeholder, compact in lists.items():
            text = text.replace(f'"{placeholder}"', compact)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text + "\n", encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        """
        Read a calibration JSON.

        Raises:
            InputError: missing, unreadable or not a calibration (the message names the file).
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"Calibration '{path}' does not exist; make one with 'anomalyclip-med calibrate'.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != CALIBRATION_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {CALIBRATION_FORMAT!r}")
            kind = data["kind"]
            if kind not in LEVELS or set(data["levels"]) != set(LEVELS[kind]):
                raise ValueError(f"kind {kind!r} with levels {sorted(data['levels'])}")
            levels = {name: ScoreDistribution.from_dict(data["levels"][name]) for name in LEVELS[kind]}
            counts = {k: int(v) for k, v in data["counts"].items()}
            model, scoring = dict(data["model"]), dict(data["scoring"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"Calibration '{path}' is not a valid calibration file: {err}.") from None
        return cls(kind, model, scoring, levels, counts, str(path), file_digest(path))

    def check(self, kind: str, model_identity: dict | None, scoring: Any = None) -> None:
        """
        Refuse to apply this calibration to another kind of input, another model or other scoring options
        (``model_identity`` None: not checked yet).

        Raises:
            CalibrationMismatchError: naming the first difference.
        """
        name = f"Calibration '{self.source}'" if self.source else "The calibration"
        if kind != self.kind:
            raise CalibrationMismatchError(f"{name} was made on {self.kind}, but this run scores {kind}; calibrate "
                                           f"on normal {kind}.")
        found = _first_difference(self.scoring, comparable_scoring(scoring), "scoring")
        if model_identity is not None:
            found = _first_difference(comparable_model(self.model), comparable_model(model_identity), "model") or found
        if found:
            raise CalibrationMismatchError(f"{name} does not fit this run: {found}. Calibrate again with this model "
                                           "and these options, or score with the calibration's.")


class Decision:
    """
    What a job makes of the network's map and scores: the labelmap at a fixed threshold (``ScoringOptions.threshold``)
    and nothing more. :class:`CalibratedDecision` adds thresholds, p-values and flags from a calibration.

    Args:
        threshold: the map value from which a voxel (pixel) is in the labelmap (None: no labelmap is made).
    """

    calibration: Calibration | None = None

    def __init__(self, threshold: float | None) -> None:
        self._threshold = threshold

    @property
    def map_threshold(self) -> float | None:
        """The map value from which a voxel (pixel) is in the labelmap."""
        return self._threshold

    @property
    def calibrated(self) -> CalibratedDecision | None:
        """This decision when it comes from a calibration, else None."""
        return None

    def labelmap(self, anomaly_map: np.ndarray) -> np.ndarray:
        """uint8 labelmap of the voxels (pixels) at or above :attr:`map_threshold`."""
        return (anomaly_map >= np.float32(self.map_threshold)).astype(np.uint8)

    def output_map(self, anomaly_map: np.ndarray) -> np.ndarray:
        """The map to write."""
        return anomaly_map

    def scan_fields(self, slice_scores, scored, scan_score: float) -> dict[str, Any]:
        """Fields a calibration adds to a scan's scores JSON (none here)."""
        return {}

    def image_fields(self, image_score: float, anomaly_map: np.ndarray) -> dict[str, Any]:
        """Fields a calibration adds to an image's row (none here)."""
        return {}


class CalibratedDecision(Decision):
    """
    Thresholds, p-values and flags from a calibration at requested false-positive rates.

    Args:
        calibration: the normal distributions.
        target_fpr: false-positive rate of the slice (image) and scan flags.
        map_fpr: false-positive rate of the labelmap among normal voxels (pixels); None = ``target_fpr``.
        map_output: ``probability`` or ``calibrated`` (see :class:`CalibrationOptions`).
    """

    def __init__(self, calibration: Calibration, target_fpr: float = 0.05, map_fpr: float | None = None,
                 map_output: str = "probability") -> None:
        self.calibration = calibration
        self.target_fpr = float(target_fpr)
        self.map_fpr = float(target_fpr if map_fpr is None else map_fpr)
        self.map_output = map_output
        self.fprs = {level: self.map_fpr if level == calibration.map_level else self.target_fpr
                     for level in calibration.levels}
        self.thresholds: dict[str, float] = {}
        for level, fpr in self.fprs.items():
            threshold = calibration.levels[level].threshold(fpr)
            if threshold is None:  # even a score above every normal has p = 1 / (n + 1) > fpr
                n = calibration.levels[level].n
                raise InputError(
                    f"Calibration '{calibration.source}' holds {n} normal {level}s: a {level} flag at false-positive "
                    f"rate {fpr:g} needs at least {int(np.ceil(1 / fpr - 1 - 1e-9))} (p-values are >= 1 / (n + 1)); "
                    "calibrate on more normals or ask for a higher rate.")
            self.thresholds[level] = threshold
        super().__init__(self.thresholds.get(calibration.map_level))

    @property
    def calibrated(self) -> CalibratedDecision:
        return self

    def p_values(self, level: str, values) -> np.ndarray:
        return self.calibration.levels[level].p_values(values)

    def flags(self, level: str, values) -> np.ndarray:
        """``p <= fpr`` at ``level`` (the same as ``value >= threshold``; nothing when the threshold is None)."""
        return self.p_values(level, values) <= self.fprs[level]

    def output_map(self, anomaly_map: np.ndarray) -> np.ndarray:
        """The map to write: the probabilities as they are, or their calibrated voxel p-values (float32)."""
        if self.map_output != "calibrated":
            return anomaly_map
        return self.p_values(self.calibration.map_level, anomaly_map).astype(np.float32)

    def summary(self) -> dict[str, Any]:
        """What a report quotes: the file and its hash, the rates asked for, the thresholds and the normals."""
        cal = self.calibration
        return {
            "file": str(Path(cal.source).resolve()) if cal.source else None,
            "sha256": cal.sha256,
            "kind": cal.kind,
            "target_fpr": self.target_fpr,
            "map_fpr": self.map_fpr,
            "map_output": self.map_output,
            "thresholds": dict(self.thresholds),
            "n_normal": {level: dist.n for level, dist in cal.levels.items()},
            "p_value": "(1 + normals at least as high) / (1 + n), per level",
        }

    def scan_fields(self, slice_scores, scored, scan_score: float) -> dict[str, Any]:
        """Fields added to a scan's scores JSON: per-slice p-values and flags (unscored slices: p 1, no flag), the
        scan's p-value and flag, and the calibration summary."""
        scores = np.asarray(slice_scores, dtype=np.float64)
        scored = np.asarray(scored, dtype=bool)
        p = np.where(scored, self.p_values("slice", scores), 1.0)
        flags = scored & (p <= self.target_fpr)
        scan_p = float(self.p_values("scan", [scan_score])[0])
        return {
            "calibration": self.summary(),
            "slice_p_values": [round(float(v), 6) for v in p],
            "slice_flags": [bool(v) for v in flags],
            "flagged_slices": int(flags.sum()),
            "scan_p_value": scan_p,
            "scan_flag": bool(scan_p <= self.target_fpr),
        }

    def image_fields(self, image_score: float, anomaly_map: np.ndarray) -> dict[str, Any]:
        """An image's p-value and flag, and its pixels in the labelmap (2D images)."""
        p = float(self.p_values("image", [image_score])[0])
        return {"p_value": p, "flag": bool(p <= self.target_fpr), "flagged_pixels": int(self.labelmap(anomaly_map).sum())}
