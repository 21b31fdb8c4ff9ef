"""
The scan job of the run engine: ``anomalyclip-med score``, the bundle's ``inference.json`` and the scan part of a
cohort evaluation. Each case is a volume file or a DICOM series folder; it is read and planned ahead of the network
(:func:`anomalyclip_med.inference.scan.prepare_scan`), scored on the device
(:func:`~anomalyclip_med.inference.scan.compute_scan`) and written behind it, whole or not at all
(:func:`~anomalyclip_med.inference.scan.write_scan`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anomalyclip_med.calibration.calibration import Decision
from anomalyclip_med.inference.options import LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.inference.scan import (
    PreparedScan,
    ScoredScan,
    compute_scan,
    prepare_scan,
    resume_record,
    scan_layout,
    write_scan,
)
from anomalyclip_med.io.case_outputs import read_finished_case
from anomalyclip_med.io.cases import ScanCase
from anomalyclip_med.io.writers import dicom_seg_problem
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.runs.engine import CaseResult, Reused, Status

__all__ = ["ScanJob"]


class ScanJob:
    """
    Score scans into their outputs (map, labelmap, scores JSON, montage, optionally a DICOM SEG).

    The network and the decision are bound when the run holds its output folder (:meth:`bind`), so a refused run
    builds nothing.

    Args:
        out_dir: the output folder.
        scoring: how each scan is scored [defaults].
        loading: which volume of each input [defaults].
        output: what is written [defaults].
        loader: MONAI transform loading ``{"image": path}`` into ``{"image": MetaTensor}`` [``LoadScan`` with
            ``loading``'s series/volume choice] (the bundle passes its ``preprocessing``).
        progress: a progress bar over each case's slices.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        scoring: ScoringOptions | None = None,
        loading: LoadingOptions | None = None,
        output: OutputOptions | None = None,
        loader: Callable[[dict], dict] | None = None,
        progress: bool = False,
    ) -> None:
        self.scoring, self.loading = scoring or ScoringOptions(), loading or LoadingOptions()
        self.output = output or OutputOptions()
        self.layout = scan_layout(out_dir, self.output.dicom_seg)
        self.loader, self.progress = loader, progress
        self.model: AnomalyCLIP | None = None
        self.decision: Decision = Decision(self.scoring.threshold)

    def bind(self, model: AnomalyCLIP, decision: Decision | None = None) -> None:
        """Score with ``model``; ``decision`` makes the labelmap (and with a calibration the p-values and flags)
        [the fixed ``scoring.threshold``]. Finished cases made with another model or calibration are not reused."""
        self.model = model
        self.decision = decision or Decision(self.scoring.threshold)

    # ------------------------------------------------------------------ CaseJob
    def outputs(self, case: ScanCase) -> dict[str, Path]:
        keys = [k for k in self.layout.names if k != "dicom_seg" or case.source.is_dir()]
        return self.layout.paths(case, keys)

    def check(self, case: ScanCase) -> str | None:
        if self.output.dicom_seg:
            problem = dicom_seg_problem(case.source, self.loading.series_uid)
            if problem:
                return f"--dicom-seg: {problem}"
        return None

    def reusable(self, case: ScanCase) -> dict[str, Any] | None:
        report = read_finished_case(self.outputs(case))
        if report is None:
            return None
        expected = resume_record(self.model, case.source, self.scoring, self.loading, self.output, self.decision)
        return report if all(report.get(k) == v for k, v in expected.items()) else None

    def prepare(self, case: ScanCase) -> PreparedScan:
        m = self.model
        loader = (lambda source: self.loader({"image": str(source)})["image"]) if self.loader is not None else None
        return prepare_scan(case.source, self.outputs(case), self.scoring, self.loading, m.config.image_size, m.mean,
                            m.std, pin_memory=m.device.type == "cuda", case_id=case.name, loader=loader)

    def compute(self, case: ScanCase, prepared: PreparedScan) -> ScoredScan:
        return compute_scan(self.model, prepared.image, prepared.plan, self.scoring, self.decision.map_threshold,
                            self.progress, case.name)

    def write(self, case: ScanCase, prepared: PreparedScan | Reused, scored: ScoredScan | None
              ) -> tuple[Status, dict[str, Any]]:
        if isinstance(prepared, Reused):
            return Status.REUSED, prepared.record
        return Status.SCORED, write_scan(self.model, prepared, scored, self.scoring, self.loading, self.output,
                                         self.decision)

    def line(self, result: CaseResult) -> str:
        """Case, scan score (with a calibration its p-value and flag), slices scored, where written."""
        r = result.record or {}
        slicing = r.get("slicing", {})
        reused = " (reused)" if result.status is Status.REUSED else ""
        calibrated = "" if r.get("scan_p_value") is None else (
            f", scan p-value {r['scan_p_value']:.4f}" + (" FLAGGED" if r.get("scan_flag") else ""))
        return (f"{result.case.name}: scan score {r.get('scan_score', float('nan')):.4f}{calibrated}, "
                f"{slicing.get('scored_slices', '?')}/{slicing.get('n_slices', '?')} slices scored{reused} -> "
                f"{result.outputs['scores'].parent}")
