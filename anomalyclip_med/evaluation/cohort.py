"""
Hospital cohort evaluation: score every scan of a manifest with the scan scoring, compute its metrics, and gather
the per-case records (sharded over ``torchrun`` processes), on the stages of the batch runner of ``score``
(:class:`anomalyclip_med.inference.batch.ScanBatchRunner`). A finished case is reused only when its input, model,
options, mask and label are unchanged; a failing case is recorded with its error and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from anomalyclip_med.calibration.calibration import CalibratedDecision
from anomalyclip_med.evaluation.case_metrics import scan_voxel_metrics
from anomalyclip_med.evaluation.manifest import CohortCase
from anomalyclip_med.evaluation.tables import finite_or_none
from anomalyclip_med.inference.batch import ScanBatchRunner, describe_error
from anomalyclip_med.inference.options import OutputOptions, ScoringOptions
from anomalyclip_med.inference.pipeline import DEFAULT_PREFETCH, StagedPipeline
from anomalyclip_med.inference.scan import ScoredScan
from anomalyclip_med.io.cases import ScanCase, input_fingerprint
from anomalyclip_med.io.writers import write_json
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.utils.distributed import DistributedContext

__all__ = ["CASES_DIR", "scan_case", "cohort_runner", "evaluate_case", "evaluate_cohort"]

logger = logging.getLogger(__name__)

CASES_DIR = "cases"
_DONE = "metrics.json"  # written after the case's scan outputs; reused only if computed from the same things


def _relative(path, out_dir: Path) -> str:
    return Path(os.path.relpath(path, out_dir)).as_posix()


def scan_case(case: CohortCase) -> ScanCase:
    """The batch runner's case for a cohort case: named by its ``case_id``, written to ``cases/<case_id>/``."""
    return ScanCase(case.case_id, Path(case.image), f"{CASES_DIR}/{case.case_id}")


def cohort_runner(
    cases: list[CohortCase], out_dir: str | os.PathLike, scoring: ScoringOptions, output: OutputOptions | None = None
) -> ScanBatchRunner:
    """The batch runner of a cohort: every case under ``cases/<case_id>/``; finished cases with the same input,
    model and options are reused (a cohort resumes by default) unless ``output.overwrite``."""
    output = output or OutputOptions()
    return ScanBatchRunner([scan_case(c) for c in cases], out_dir, scoring, output=replace(output, progress=False),
                           resume="overwrite" if output.overwrite else "continue", progress=False)


def _metrics_source(case: CohortCase, report: dict) -> dict:
    """What a case's metrics were computed from: its scores JSON (which holds the input, model and options), its
    mask file and its manifest label. Finished metrics are reused only when all three are unchanged."""
    return {"scores_sha256": hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest(),
            "mask": None if case.mask is None else input_fingerprint(case.mask), "label": case.label}


class _CaseStages:
    """
    A case in the three stages of :class:`StagedPipeline`, on the batch runner's stages: verify finished outputs
    or read (host, ahead of the network), score (device), write the scan outputs and then the metrics computed
    from them (host, behind the network).
    """

    def __init__(self, model: AnomalyCLIP, runner: ScanBatchRunner) -> None:
        self.model, self.runner = model, runner

    def prepare(self, case: CohortCase):
        return self.runner.prepare(self.model, scan_case(case))

    def compute(self, case: CohortCase, prepared) -> ScoredScan | None:
        return self.runner.compute(self.model, prepared)

    def write(self, case: CohortCase, prepared, scored: ScoredScan | None) -> tuple[dict, str]:
        out_dir = self.runner.out_dir
        scan = scan_case(case)
        how, report = self.runner.write(self.model, prepared, scored)
        how = "rescored" if how == "reused" else how  # scan outputs reused; the metrics may still be reusable
        done = scan.output_dir(out_dir) / _DONE
        source = _metrics_source(case, report)
        if how == "rescored" and done.is_file():
            previous = json.loads(done.read_text(encoding="utf-8"))
            if previous.get("computed_from") == source:
                return previous, "reused"
        outputs = self.runner.outputs(scan)
        slice_scores = [float(s) for s in report["slice_scores"]]
        voxel = scan_voxel_metrics(outputs["map"], case.mask, self.runner.scoring.threshold)
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
            "scan_score": float(report["scan_score"]),
            "max_slice_score": max(slice_scores) if slice_scores else None,
            "n_slices": len(slice_scores),
            "scan_p_value": report.get("scan_p_value"),
            "scan_flag": report.get("scan_flag"),
            "flagged_slices": report.get("flagged_slices"),
            "calibration_sha256": report.get("calibration_sha256"),
            **{k: finite_or_none(v) for k, v in voxel.items()},
            **{k: _relative(p, out_dir) for k, p in outputs.items()},
            "computed_from": source,
        }
        write_json(record, done)
        return record, how

    def pipeline(self, overlapped: bool) -> StagedPipeline:
        return StagedPipeline(self.prepare, self.compute, self.write, prefetch=DEFAULT_PREFETCH if overlapped else 0,
                              background_write=overlapped)


def evaluate_case(model: AnomalyCLIP, case: CohortCase, runner: ScanBatchRunner) -> tuple[dict, str]:
    """
    Score one case (or reuse its outputs) and compute its metrics, in the calling thread.

    Args:
        model: the detector.
        case: the manifest entry.
        runner: the cohort's batch runner (:func:`cohort_runner`; its resume mode decides what may be reused).

    Returns:
        ``(record, how)``: the case record (also written to ``cases/<case_id>/metrics.json``) and how it was
        obtained: ``"reused"`` (scan outputs and metrics of an earlier run with the same input, model, options,
        mask and label), ``"rescored"`` (scan outputs reused, metrics computed) or ``"scored"``.

    Raises:
        whatever the scan scoring or the metric computation raises (the caller records it).
    """
    (outcome,) = _CaseStages(model, runner).pipeline(overlapped=False).run([case])
    if outcome.error is not None:
        raise outcome.error
    return outcome.result


def _failed(case: CohortCase, error: str) -> dict:
    return {"case_id": case.case_id, "image": str(case.image), "mask": None if case.mask is None else str(case.mask),
            "label": case.label, "label_source": "manifest" if case.label is not None else None,
            "status": "failed", "error": error}


def evaluate_cohort(
    model: AnomalyCLIP,
    cases: list[CohortCase],
    runner: ScanBatchRunner,
    ctx: DistributedContext | None = None,
    progress: bool = False,
    decision: CalibratedDecision | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """
    Evaluate this process's share of ``cases`` (scored by ``runner``: :func:`cohort_runner`) and gather every
    process's records. Prints a line per case (case, scan score, slices, where written; a failed case as one
    ``error:`` line on stderr).

    ``decision``: thresholds from a calibration on normals: its labelmap threshold replaces the scoring threshold
    (also for Dice and IoU), and each record holds the scan's p-value and flag; a case finished with another
    calibration (or none) is scored again.

    Returns:
        ``(records, counts)``: one record per case in manifest order (failed cases with ``status`` "failed" and
        their ``error``), identical for any number of processes; and how many cases were scored, rescored,
        reused or failed over all processes.
    """
    ctx = ctx or DistributedContext()
    runner.use_decision(decision)
    mine, counts = [], {"scored": 0, "rescored": 0, "reused": 0, "failed": 0}
    shard = ctx.shard(cases)
    # the next cases are read while the network scores one, and the previous one's outputs and metrics written
    stages = _CaseStages(model, runner).pipeline(overlapped=True)
    outcomes = stages.run(case for _, case in shard)
    for outcome in tqdm(outcomes, total=len(shard), desc="cases", unit="case", disable=not progress):
        case = outcome.item
        if outcome.ok:
            record, how = outcome.result
            tqdm.write(f"{case.case_id}: scan score {record['scan_score']:.4f}, {record['n_slices']} slices, {how} "
                       f"-> {scan_case(case).output_dir(runner.out_dir)}")
        else:  # one bad scan must not stop a cohort; its error is reported on one line
            logger.debug("case %s failed", case.case_id, exc_info=outcome.error)
            record, how = _failed(case, describe_error(outcome.error)), "failed"
            tqdm.write(f"error: {case.case_id}: {record['error']}", file=sys.stderr)
        counts[how] += 1
        mine.append((shard[outcome.index][0], record))
    gathered = ctx.gather((mine, counts))
    records = [r for _, r in sorted((item for part, _ in gathered for item in part), key=lambda x: x[0])]
    total = {k: sum(c[k] for _, c in gathered) for k in counts}
    return records, total
