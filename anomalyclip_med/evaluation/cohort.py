"""
Hospital cohort evaluation: score every scan of a manifest with the scan scoring, compute its metrics, and gather
the per-case records (sharded over ``torchrun`` processes). A finished case is never recomputed; a failing case is
recorded with its error and the run goes on.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from anomalyclip_med.calibration.calibration import CalibratedDecision
from anomalyclip_med.evaluation.case_metrics import scan_voxel_metrics
from anomalyclip_med.evaluation.manifest import CohortCase
from anomalyclip_med.evaluation.tables import finite_or_none
from anomalyclip_med.io.writers import write_json
from anomalyclip_med.inference.options import LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.inference.pipeline import DEFAULT_PREFETCH, StagedPipeline
from anomalyclip_med.inference.scan import (
    PreparedScan,
    ScoredScan,
    compute_scan,
    expected_outputs,
    prepare_scan,
    write_scan,
)
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.utils.distributed import DistributedContext

__all__ = ["CASES_DIR", "case_dir", "evaluate_case", "evaluate_cohort"]

logger = logging.getLogger(__name__)

CASES_DIR = "cases"
_DONE = "metrics.json"  # written last: its presence marks a finished case


def case_dir(out_dir: str | os.PathLike, case: CohortCase) -> Path:
    """Where a case's outputs go: ``<out_dir>/cases/<case_id>/``."""
    return Path(out_dir) / CASES_DIR / case.case_id


def _relative(path, out_dir: Path) -> str:
    return Path(os.path.relpath(path, out_dir)).as_posix()


def _scores(scores_path: Path) -> dict:
    return json.loads(scores_path.read_text(encoding="utf-8"))


def _calibration_of(scores_path: Path) -> str | None:
    """The sha256 of the calibration a finished case was scored with (None: none)."""
    return (_scores(scores_path).get("calibration") or {}).get("sha256")


@dataclass
class _CaseWork:
    """What the read stage decided for a case: ``how`` it is obtained, and the prepared scan when it is scored."""

    how: str
    prepared: PreparedScan | None = None


class _CaseStages:
    """
    A case in the three stages of :class:`StagedPipeline`: decide and read (host, ahead of the network), score
    (device), write the scan outputs and then the metrics computed from them (host, behind the network).
    """

    def __init__(self, model: AnomalyCLIP, out_dir: str | os.PathLike, scoring: ScoringOptions,
                 output: OutputOptions | None, decision: CalibratedDecision | None = None) -> None:
        self.model, self.out_dir, self.decision = model, Path(out_dir), decision
        self.scoring = scoring if decision is None else decision.scoring_options(scoring)
        self.calibration = decision.calibration.sha256 if decision is not None else None
        self.output = output or OutputOptions()
        # a case cut off mid-way may have some of its files: redo it whole
        self.scan_output = replace(self.output, overwrite=True, progress=False)
        self.loading = LoadingOptions()

    def prepare(self, case: CohortCase) -> _CaseWork:
        folder = case_dir(self.out_dir, case)
        outputs = expected_outputs(case.image, folder, self.output.dicom_seg)
        have_outputs = all(Path(p).is_file() for p in outputs.values())
        # a case scored with another calibration (or none) holds other p-values and labelmap: score it again
        have_outputs = have_outputs and _calibration_of(outputs["scores"]) == self.calibration
        if not self.output.overwrite and have_outputs and (folder / _DONE).is_file():
            return _CaseWork("reused")
        if not self.output.overwrite and have_outputs:
            return _CaseWork("rescored")
        m = self.model
        return _CaseWork("scored", prepare_scan(case.image, folder, self.scoring, self.loading, self.scan_output,
                                                m.config.image_size, m.mean, m.std,
                                                pin_memory=m.device.type == "cuda"))

    def compute(self, case: CohortCase, work: _CaseWork) -> ScoredScan | None:
        return compute_scan(self.model, work.prepared, self.scoring) if work.prepared is not None else None

    def write(self, case: CohortCase, work: _CaseWork, scored: ScoredScan | None) -> tuple[dict, str]:
        folder = case_dir(self.out_dir, case)
        done = folder / _DONE
        if work.how == "reused":
            return json.loads(done.read_text(encoding="utf-8")), "reused"
        if scored is not None:
            write_scan(self.model, work.prepared, scored, self.scoring, self.loading, self.scan_output, self.decision)
        outputs = expected_outputs(case.image, folder, self.output.dicom_seg)
        scores = _scores(Path(outputs["scores"]))  # the scores file is the one source of truth
        scan_score, slice_scores = float(scores["scan_score"]), [float(s) for s in scores["slice_scores"]]
        voxel = scan_voxel_metrics(outputs["map"], case.mask, self.scoring.threshold)
        label, label_source = case.label, "manifest"
        if label is None and voxel["lesion_voxels"] is not None:
            label, label_source = int(voxel["lesion_voxels"] > 0), "mask"
        record = {
            "case_id": case.case_id,
            "image": str(case.image),
            "mask": None if case.mask is None else str(case.mask),
            "label": label,
            "label_source": label_source if label is not None else None,
            "status": "ok",
            "error": None,
            "scan_score": scan_score,
            "max_slice_score": max(slice_scores) if slice_scores else None,
            "n_slices": len(slice_scores),
            "scan_p_value": scores.get("scan_p_value"),
            "scan_flag": scores.get("scan_flag"),
            "flagged_slices": scores.get("flagged_slices"),
            "calibration_sha256": self.calibration,
            **{k: finite_or_none(v) for k, v in voxel.items()},
            **{k: _relative(p, self.out_dir) for k, p in outputs.items()},
        }
        write_json(record, done)
        return record, work.how

    def pipeline(self, overlapped: bool) -> StagedPipeline:
        return StagedPipeline(self.prepare, self.compute, self.write, prefetch=DEFAULT_PREFETCH if overlapped else 0,
                              background_write=overlapped)


def evaluate_case(
    model: AnomalyCLIP, case: CohortCase, out_dir: str | os.PathLike, scoring: ScoringOptions,
    output: OutputOptions | None = None, decision: CalibratedDecision | None = None,
) -> tuple[dict, str]:
    """
    Score one case (or reuse its outputs) and compute its metrics, in the calling thread.

    Args:
        model: the detector.
        case: the manifest entry.
        out_dir: the cohort's output folder.
        scoring: how the scan is scored.
        output: what is written; ``output.overwrite`` recomputes a finished case.
        decision: thresholds from a calibration on normals: its labelmap threshold replaces ``scoring.threshold``
            (also for Dice and IoU), and the record holds the scan's p-value and flag. A case finished with another
            calibration (or none) is scored again.

    Returns:
        ``(record, how)``: the case record (also written to ``cases/<case_id>/metrics.json``) and how it was
        obtained: ``"reused"`` (finished before), ``"rescored"`` (scan outputs reused, metrics computed) or
        ``"scored"``.

    Raises:
        whatever the scan scoring or the metric computation raises (the caller records it).
    """
    (outcome,) = _CaseStages(model, out_dir, scoring, output, decision).pipeline(overlapped=False).run([case])
    if outcome.error is not None:
        raise outcome.error
    return outcome.result


def _failed(case: CohortCase, err: Exception) -> dict:
    return {"case_id": case.case_id, "image": str(case.image), "mask": None if case.mask is None else str(case.mask),
            "label": case.label, "label_source": "manifest" if case.label is not None else None,
            "status": "failed", "error": f"{type(err).__name__}: {err}"}


def evaluate_cohort(
    model: AnomalyCLIP,
    cases: list[CohortCase],
    out_dir: str | os.PathLike,
    scoring: ScoringOptions,
    output: OutputOptions | None = None,
    ctx: DistributedContext | None = None,
    progress: bool = False,
    decision: CalibratedDecision | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """
    Evaluate this process's share of ``cases`` and gather every process's records.

    ``decision``: a calibration's thresholds (see :func:`evaluate_case`).

    Returns:
        ``(records, counts)``: one record per case in manifest order (failed cases with ``status`` "failed" and
        their ``error``), identical for any number of processes; and how many cases were scored, rescored,
        reused or failed over all processes.
    """
    ctx = ctx or DistributedContext()
    mine, counts = [], {"scored": 0, "rescored": 0, "reused": 0, "failed": 0}
    shard = ctx.shard(cases)
    # the next cases are read while the network scores one, and the previous one's outputs and metrics written
    stages = _CaseStages(model, out_dir, scoring, output, decision).pipeline(overlapped=True)
    outcomes = stages.run(case for _, case in shard)
    for outcome in tqdm(outcomes, total=len(shard), desc=f"cases (rank {ctx.rank})", disable=not progress):
        case = outcome.item
        if outcome.ok:
            record, how = outcome.result
        else:  # one bad scan must not stop a cohort; its error is reported
            err = outcome.error
            logger.warning("case %s failed: %s: %s", case.case_id, type(err).__name__, err)
            record, how = _failed(case, err), "failed"
        counts[how] += 1
        mine.append((shard[outcome.index][0], record))
    gathered = ctx.gather((mine, counts))
    records = [r for _, r in sorted((item for part, _ in gathered for item in part), key=lambda x: x[0])]
    total = {k: sum(c[k] for _, c in gathered) for k in counts}
    return records, total
