"""
Hospital cohort evaluation: score every scan of a manifest with the scan scoring, compute its metrics, and gather
the per-case records (sharded over ``torchrun`` processes). A finished case is never recomputed; a failing case is
recorded with its error and the run goes on.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from anomalyclip_med.evaluation.case_metrics import scan_voxel_metrics
from anomalyclip_med.evaluation.manifest import CohortCase
from anomalyclip_med.evaluation.tables import finite_or_none
from anomalyclip_med.io.writers import write_json
from anomalyclip_med.inference.options import OutputOptions, ScoringOptions
from anomalyclip_med.inference.scan import expected_outputs, score_scan
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


def _scores(scores_path: Path) -> tuple[float, list[float]]:
    data = json.loads(scores_path.read_text(encoding="utf-8"))
    return float(data["scan_score"]), [float(s) for s in data["slice_scores"]]


def evaluate_case(
    model: AnomalyCLIP, case: CohortCase, out_dir: str | os.PathLike, scoring: ScoringOptions,
    output: OutputOptions | None = None,
) -> tuple[dict, str]:
    """
    Score one case (or reuse its outputs) and compute its metrics.

    Args:
        model: the detector.
        case: the manifest entry.
        out_dir: the cohort's output folder.
        scoring: how the scan is scored.
        output: what is written; ``output.overwrite`` recomputes a finished case.

    Returns:
        ``(record, how)``: the case record (also written to ``cases/<case_id>/metrics.json``) and how it was
        obtained: ``"reused"`` (finished before), ``"rescored"`` (scan outputs reused, metrics computed) or
        ``"scored"``.

    Raises:
        whatever the scan scoring or the metric computation raises (the caller records it).
    """
    output = output or OutputOptions()
    out_dir = Path(out_dir)
    folder = case_dir(out_dir, case)
    done = folder / _DONE
    outputs = expected_outputs(case.image, folder, output.dicom_seg)
    have_outputs = all(Path(p).is_file() for p in outputs.values())
    if not output.overwrite and have_outputs and done.is_file():
        return json.loads(done.read_text(encoding="utf-8")), "reused"
    if output.overwrite or not have_outputs:
        # a case cut off mid-way may have some of its files: redo it whole
        score_scan(model, case.image, folder, scoring, output=replace(output, overwrite=True, progress=False))
        how = "scored"
    else:
        how = "rescored"
    scan_score, slice_scores = _scores(Path(outputs["scores"]))  # the scores file is the one source of truth
    voxel = scan_voxel_metrics(outputs["map"], case.mask, scoring.threshold)
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
        **{k: finite_or_none(v) for k, v in voxel.items()},
        **{k: _relative(p, out_dir) for k, p in outputs.items()},
    }
    write_json(record, done)
    return record, how


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
) -> tuple[list[dict], dict[str, int]]:
    """
    Evaluate this process's share of ``cases`` and gather every process's records.

    Returns:
        ``(records, counts)``: one record per case in manifest order (failed cases with ``status`` "failed" and
        their ``error``), identical for any number of processes; and how many cases were scored, rescored,
        reused or failed over all processes.
    """
    ctx = ctx or DistributedContext()
    mine, counts = [], {"scored": 0, "rescored": 0, "reused": 0, "failed": 0}
    for index, case in tqdm(ctx.shard(cases), desc=f"cases (rank {ctx.rank})", disable=not progress):
        try:
            record, how = evaluate_case(model, case, out_dir, scoring, output)
        except Exception as err:  # noqa: BLE001 - one bad scan must not stop a cohort; its error is reported
            logger.warning("case %s failed: %s: %s", case.case_id, type(err).__name__, err)
            record, how = _failed(case, err), "failed"
        counts[how] += 1
        mine.append((index, record))
    gathered = ctx.gather((mine, counts))
    records = [r for _, r in sorted((item for part, _ in gathered for item in part), key=lambda x: x[0])]
    total = {k: sum(c[k] for _, c in gathered) for k in counts}
    return records, total
