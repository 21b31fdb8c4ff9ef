"""
The cohort job of the run engine (``anomalyclip-med evaluate --dataset manifest`` and the bundle's evaluation of a
manifest): the scan job, plus a metrics stage after each case's outputs are written. Each case writes its scan
outputs and ``metrics.json`` under ``cases/<case_id>/``; a finished case is reused only when its input, model,
options, mask and label are unchanged (its scan outputs may be reused and its metrics computed again: "rescored").
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from anomalyclip_med.evaluation.case_metrics import scan_voxel_metrics
from anomalyclip_med.evaluation.manifest import CohortCase
from anomalyclip_med.evaluation.tables import finite_or_none
from anomalyclip_med.inference.scan import PreparedScan, ScoredScan
from anomalyclip_med.io.cases import ScanCase, input_fingerprint
from anomalyclip_med.io.writers import write_json
from anomalyclip_med.runs.engine import CaseResult, Reused, Status
from anomalyclip_med.runs.scans import ScanJob

__all__ = ["CASES_DIR", "METRICS_FILE", "cohort_cases", "failed_record", "CohortJob"]

CASES_DIR = "cases"
METRICS_FILE = "metrics.json"  # written after the case's scan outputs; reused only if computed from the same things


def cohort_cases(cases: list[CohortCase]) -> list[ScanCase]:
    """The engine's cases of a cohort: each named by its ``case_id`` and written to ``cases/<case_id>/``."""
    return [ScanCase(c.case_id, Path(c.image), f"{CASES_DIR}/{c.case_id}") for c in cases]


def _metrics_source(case: CohortCase, report: dict) -> dict:
    """What a case's metrics were computed from: its scores JSON (which holds the input, model and options), its
    mask file and its manifest label. Finished metrics are reused only when all three are unchanged."""
    return {"scores_sha256": hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest(),
            "mask": None if case.mask is None else input_fingerprint(case.mask), "label": case.label}


def failed_record(case: CohortCase, error: str) -> dict:
    """The record of a case that failed, as the cohort report lists it."""
    return {"case_id": case.case_id, "image": str(case.image), "mask": None if case.mask is None else str(case.mask),
            "label": case.label, "label_source": "manifest" if case.label is not None else None,
            "status": "failed", "error": error}


class CohortJob:
    """
    A cohort's cases: the scan job's stages, then the case's metrics (voxel metrics against its mask, its label)
    written to ``metrics.json`` beside its scan outputs.

    Args:
        scans: the scan job (its output folder is the cohort's).
        cases: the manifest entries, in the order of :func:`cohort_cases`.
    """

    def __init__(self, scans: ScanJob, cases: list[CohortCase]) -> None:
        self.scans = scans
        self.cohort = {c.case_id: c for c in cases}

    def outputs(self, case: ScanCase) -> dict[str, Path]:
        return {**self.scans.outputs(case), "metrics": self.scans.layout.folder(case) / METRICS_FILE}

    def check(self, case: ScanCase) -> str | None:
        return self.scans.check(case)

    def reusable(self, case: ScanCase) -> dict[str, Any] | None:
        return self.scans.reusable(case)

    def prepare(self, case: ScanCase) -> PreparedScan:
        return self.scans.prepare(case)

    def compute(self, case: ScanCase, prepared: PreparedScan) -> ScoredScan:
        return self.scans.compute(case, prepared)

    def write(self, case: ScanCase, prepared: PreparedScan | Reused, scored: ScoredScan | None
              ) -> tuple[Status, dict[str, Any]]:
        status, report = self.scans.write(case, prepared, scored)
        entry = self.cohort[case.name]
        outputs = self.outputs(case)
        done, source = outputs.pop("metrics"), _metrics_source(entry, report)
        if status is Status.REUSED:  # the scan outputs are reused; the metrics may be too
            if done.is_file():
                previous = json.loads(done.read_text(encoding="utf-8"))
                if previous.get("computed_from") == source:
                    return Status.REUSED, previous
            status = Status.RESCORED
        out_dir = self.scans.layout.out_dir
        slice_scores = [float(s) for s in report["slice_scores"]]
        voxel = scan_voxel_metrics(outputs["map"], entry.mask, report["threshold"])
        label, label_source = entry.label, "manifest"
        if label is None and voxel["lesion_voxels"] is not None:
            label, label_source = int(voxel["lesion_voxels"] > 0), "mask"
        record = {
            "case_id": entry.case_id,
            "image": str(entry.image),
            "mask": None if entry.mask is None else str(entry.mask),
            "label": label,
            "label_source": label_source if label is not None else None,
            "status": "ok",
            "error": None,
            "scan_score": float(report["scan_score"]),
            "max_slice_score": max(slice_scores) if slice_scores else None,
            "n_slices": len(slice_scores),
            "scan_p_value": report.get("scan_p_value"),
            "scan_flag": report.get("scan_flag"),
            "flagged_slices": report.get("flagged_slices"),
            "calibration_sha256": report.get("calibration_sha256"),
            **{k: finite_or_none(v) for k, v in voxel.items()},
            **{k: Path(os.path.relpath(p, out_dir)).as_posix() for k, p in outputs.items()},
            "computed_from": source,
        }
        write_json(record, done)
        return status, record

    def line(self, result: CaseResult) -> str:
        r = result.record
        return (f"{result.case.name}: scan score {r['scan_score']:.4f}, {r['n_slices']} slices, {result.status.value} "
                f"-> {result.outputs['metrics'].parent}")
