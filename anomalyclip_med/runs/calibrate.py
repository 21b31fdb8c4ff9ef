"""
The calibration job of the run engine (``anomalyclip-med calibrate`` and the bundle's ``calibrate.json``): each
known-normal scan or 2D image is scored and its score distributions kept as a small per-case part in
``<out>.parts/`` (so an interrupted run resumes where it stopped, and a later run adds normals); at the end the
parts of every case are merged into one calibration JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomalyclip_med.calibration.calibration import Calibration, comparable_model, comparable_scoring
from anomalyclip_med.calibration.distribution import ScoreDistribution
from anomalyclip_med.inference.images2d import image_maps
from anomalyclip_med.inference.options import LoadingOptions, ScoringOptions
from anomalyclip_med.inference.scan import compute_scan, plan_scan
from anomalyclip_med.io.cases import OutputLayout, ScanCase, input_fingerprint
from anomalyclip_med.io.images import read_image
from anomalyclip_med.io.scans import load_volume
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.runs.engine import CaseResult, Reused, RunSummary, Status
from anomalyclip_med.utils.atomic import atomic_path

__all__ = ["CalibrationRun", "parts_dir", "scan_levels", "CalibrationJob"]

Part = dict[str, ScoreDistribution]


def parts_dir(out: str | os.PathLike) -> Path:
    """Where the per-case parts of ``out`` live: ``<out>.parts/`` beside it (kept, so a later run with
    ``--continue`` adds normals without rescoring the ones already in)."""
    out = Path(os.path.abspath(out))
    return out.with_name(out.name + ".parts")


@dataclass
class CalibrationRun:
    """
    What a calibration run did.

    Attributes:
        calibration: the merged calibration (written to the output path unless every case failed).
        summary: every case's outcome (scored, reused from an earlier run's part, failed).
    """

    calibration: Calibration
    summary: RunSummary


def scan_levels(model: AnomalyCLIP, image, scoring: ScoringOptions) -> tuple[np.ndarray, np.ndarray, float]:
    """
    What one normal scan (as read by :func:`anomalyclip_med.io.scans.load_volume`) adds to a calibration: the map
    values of the voxels a labelmap can flag (those of scored slices, inside the body when the map is masked to it:
    outside, the map is 0 and never flagged), the scored slices' scores, and the scan score.
    """
    plan = plan_scan(image, scoring, model.config.image_size, model.mean, model.std)
    scored = compute_scan(model, image, plan, scoring)
    result, scan_score = scored.result, scored.scan_score
    voxels = np.zeros(result.anomaly_map.shape, dtype=bool)
    np.moveaxis(voxels, result.geometry.axis, 0)[result.scored] = True
    if plan.body is not None:
        voxels &= plan.body.cpu().numpy().astype(bool)
    return result.anomaly_map[voxels], result.slice_scores[result.scored], scan_score


class CalibrationJob:
    """
    Score known-normal cases into per-case parts, then merge them (:meth:`merge`).

    Args:
        kind: ``"scans"`` or ``"images"``.
        out: the calibration JSON to write (parts in :func:`parts_dir`).
        scoring: how scans are scored (scoring with the calibration must use the same, ``threshold`` and
            ``batch_size`` aside).
        loading: which volume of each scan is read.
    """

    def __init__(self, kind: str, out: str | os.PathLike, scoring: ScoringOptions | None = None,
                 loading: LoadingOptions | None = None) -> None:
        self.kind, self.out = kind, Path(os.path.abspath(out))
        self.scoring = scoring or ScoringOptions() if kind == "scans" else None
        self.loading = loading or LoadingOptions()
        self.layout = OutputLayout(parts_dir(out), {"part": "{case}.npz"})
        self.model: AnomalyCLIP | None = None
        self.template: Calibration | None = None

    def bind(self, model: AnomalyCLIP) -> None:
        self.model = model
        self.template = Calibration.empty(self.kind, model.identity(), self.scoring)

    def _key(self, case: ScanCase) -> str:
        """What a part was made from: the input as it is on disk, the model, the scoring options."""
        return json.dumps({"input": input_fingerprint(case.source), "model": comparable_model(self.model.identity()),
                           "scoring": comparable_scoring(self.scoring)}, sort_keys=True, default=str)

    # ------------------------------------------------------------------ CaseJob
    def outputs(self, case: ScanCase) -> dict[str, Path]:
        return self.layout.paths(case)

    def check(self, case: ScanCase) -> str | None:
        return None

    def reusable(self, case: ScanCase) -> Part | None:
        """The case's part if it was made from the same input, model and options (a damaged part: None, and
        the case is scored again)."""
        path = self.outputs(case)["part"]
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != self._key(case):
                    return None
                part = {}
                for level, empty in self.template.case_part(np.empty(0), np.empty(0), 0.0).items():
                    lo, hi = (None if np.isnan(v) else float(v) for v in data[f"{level}_range"])
                    part[level] = ScoreDistribution.from_sparse(empty.bins, data[f"{level}_index"],
                                                                data[f"{level}_count"], lo, hi)
                return part
        except (OSError, KeyError, ValueError, IndexError):
            return None

    def prepare(self, case: ScanCase) -> Any:
        if self.kind == "scans":
            return load_volume(case.source, self.loading.series_uid, self.loading.volume_index)
        return read_image(case.source)

    def compute(self, case: ScanCase, prepared: Any) -> Part:
        if self.kind == "scans":
            return self.template.case_part(*scan_levels(self.model, prepared, self.scoring))
        ((score, amap),) = image_maps(self.model, [prepared])
        return self.template.case_part(amap, [score])

    def write(self, case: ScanCase, prepared: Any, part: Part | None) -> tuple[Status, Part]:
        if isinstance(prepared, Reused):
            return Status.REUSED, prepared.record
        arrays = {"key": np.array(self._key(case))}
        for level, dist in part.items():
            arrays[f"{level}_index"], arrays[f"{level}_count"] = dist.index, dist.count
            arrays[f"{level}_range"] = np.array([dist.min if dist.min is not None else np.nan,
                                                 dist.max if dist.max is not None else np.nan])
        with atomic_path(self.outputs(case)["part"]) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return Status.SCORED, part

    def line(self, result: CaseResult) -> str:
        reused = " (reused)" if result.status is Status.REUSED else ""
        return f"{result.case.name}: added to the calibration{reused}"

    def merge(self, summary: RunSummary) -> CalibrationRun:
        """Every case's part merged into the calibration, written to ``out`` unless no case succeeded."""
        calibration = self.template
        for result in summary.results:
            if result.ok:
                calibration.merge_case(result.record)
        if calibration.counts["cases"]:
            calibration.save(self.out)
        return CalibrationRun(calibration, summary)
