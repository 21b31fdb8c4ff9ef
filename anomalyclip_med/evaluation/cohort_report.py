"""The cohort report: summary (JSON, CSV), per-case table (CSV), Markdown report, and the figures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from anomalyclip_med.calibration import CalibratedDecision, operating_point
from anomalyclip_med.evaluation.plots import plot_montage, plot_pr, plot_roc, plot_score_histogram
from anomalyclip_med.evaluation.tables import finite_or_none
from anomalyclip_med.io.writers import write_csv, write_json
from anomalyclip_med.metrics import image_ap, image_auroc, image_max_f1
from anomalyclip_med.utils.atomic import atomic_path

__all__ = ["CASE_COLUMNS", "REPORT_FILES", "cohort_summary", "worst_misses", "write_cohort_report"]

CASE_COLUMNS = (
    "case_id", "status", "label", "label_source", "scan_score", "max_slice_score", "n_slices", "lesion_voxels",
    "predicted_voxels", "voxel_auroc", "dice", "iou", "key_slice", "scan_p_value", "scan_flag", "flagged_slices",
    "image", "mask", "map", "seg", "scores", "montage", "error",
)
REPORT_FILES = {
    "summary_json": "cohort_summary.json",
    "summary_csv": "cohort_summary.csv",
    "cases_csv": "cohort_cases.csv",
    "report_md": "cohort_report.md",
    "roc_png": "roc.png",
    "pr_png": "pr.png",
    "histogram_png": "score_histogram.png",
    "montage_png": "worst_misses.png",
}


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    return (float(np.mean(values)), float(np.median(values))) if values else (None, None)


def worst_misses(records: list[dict], count: int) -> list[dict]:
    """The ``count`` anomalous scans the detector came closest to missing: lowest scan score first (then lowest
    Dice, then case id, so the choice is reproducible)."""
    hits = [r for r in records if r["status"] == "ok" and r["label"] == 1]
    return sorted(hits, key=lambda r: (r["scan_score"], r["dice"] if r["dice"] is not None else 2, r["case_id"]))[
        :count
    ]


def cohort_summary(records: list[dict], threshold: float, montage: int,
                   decision: CalibratedDecision | None = None) -> dict:
    """
    Cohort-level numbers from the per-case records.

    Returns:
        ``n_cases``, ``n_ok``, ``n_failed``, ``failed`` (case, image, error); ``scan_level``: AUROC, AP and max-F1 of
        scan scores against scan labels (cases with a label); ``voxel_level``: mean and median voxel AUROC, Dice and
        IoU at ``threshold`` over the scans with lesion voxels; ``worst_misses``: the montage's case ids. With a
        calibration ``decision``, also ``calibration`` (its summary) and ``operating_point``: the scan flags'
        sensitivity and false-positive rate with exact (Clopper-Pearson) 95% intervals.
    """
    ok = [r for r in records if r["status"] == "ok"]
    labelled = [r for r in ok if r["label"] is not None]
    labels = np.array([r["label"] for r in labelled], dtype=int)
    scores = np.array([r["scan_score"] for r in labelled], dtype=float)
    lesion = [r for r in ok if r["lesion_voxels"]]
    auroc_mean, auroc_median = _stats([r["voxel_auroc"] for r in lesion if r["voxel_auroc"] is not None])
    dice_mean, dice_median = _stats([r["dice"] for r in lesion])
    iou_mean, _ = _stats([r["iou"] for r in lesion])
    return {
        "n_cases": len(records),
        "n_ok": len(ok),
        "n_failed": len(records) - len(ok),
        "failed": [{"case_id": r["case_id"], "image": r["image"], "error": r["error"]}
                   for r in records if r["status"] != "ok"],
        "scan_level": {
            "n_labelled": len(labelled),
            "n_anomalous": int(labels.sum()),
            "n_normal": int(len(labels) - labels.sum()),
            "auroc": finite_or_none(image_auroc(labels, scores)) if labelled else None,
            "ap": finite_or_none(image_ap(labels, scores)) if labelled else None,
            "max_f1": finite_or_none(image_max_f1(labels, scores)) if labelled else None,
        },
        "voxel_level": {
            "n_with_mask": sum(r["lesion_voxels"] is not None for r in ok),
            "n_with_lesion": len(lesion),
            "dice_threshold": threshold,
            "voxel_auroc_mean": auroc_mean,
            "voxel_auroc_median": auroc_median,
            "dice_mean": dice_mean,
            "dice_median": dice_median,
            "iou_mean": iou_mean,
        },
        "worst_misses": [r["case_id"] for r in worst_misses(records, montage)],
        **({} if decision is None else {
            "calibration": decision.summary(),
            "operating_point": operating_point(labels, [bool(r["scan_flag"]) for r in labelled], decision.target_fpr),
        }),
    }


def _flat(d: dict, prefix: str = "") -> list[dict]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _flat(v, f"{prefix}{k}.")
        elif not isinstance(v, list):
            rows.append({"metric": f"{prefix}{k}", "value": v})
    return rows


def _fmt(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _operating_point_lines(summary: dict) -> list[str]:
    if "operating_point" not in summary:
        return []
    op, cal = summary["operating_point"], summary["calibration"]
    (slo, shi), (flo, fhi) = op["sensitivity_ci"], op["fpr_ci"]
    return [
        f"## Operating point at the calibrated scan threshold (target false-positive rate {op['target_fpr']:g})", "",
        f"Calibration `{cal['file']}` ({cal['n_normal']['scan']} normal scans; scan threshold "
        f"{cal['thresholds']['scan']:.6f}, voxel threshold {cal['thresholds']['voxel']:.6f} at voxel rate "
        f"{cal['map_fpr']:g}).", "",
        "| anomalous | flagged | sensitivity | 95% CI | normal | flagged | observed FPR | 95% CI |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {op['n_anomalous']} | {op['true_positives']} | {_fmt(op['sensitivity'])} | {_fmt(slo)}-{_fmt(shi)} | "
        f"{op['n_normal']} | {op['false_positives']} | {_fmt(op['fpr'])} | {_fmt(flo)}-{_fmt(fhi)} |", "",
        "Intervals are exact (Clopper-Pearson). The target holds for normals from the population the calibration "
        "came from (docs/calibration.md).", "",
    ]


def _markdown(records: list[dict], summary: dict) -> str:
    s, v = summary["scan_level"], summary["voxel_level"]
    lines = [
        "# Cohort evaluation", "",
        f"{summary['n_cases']} cases: {summary['n_ok']} evaluated, {summary['n_failed']} failed.", "",
        "## Scan level (scan score against scan label)", "",
        "| labelled | anomalous | normal | AUROC | AP | max-F1 |", "|---:|---:|---:|---:|---:|---:|",
        f"| {s['n_labelled']} | {s['n_anomalous']} | {s['n_normal']} | {_fmt(s['auroc'])} | {_fmt(s['ap'])} | "
        f"{_fmt(s['max_f1'])} |", "",
        *_operating_point_lines(summary),
        f"## Voxel level (scans with lesion voxels; Dice/IoU at map >= {v['dice_threshold']})", "",
        "| scans with lesion | voxel AUROC mean | median | Dice mean | median | IoU mean |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {v['n_with_lesion']} | {_fmt(v['voxel_auroc_mean'])} | {_fmt(v['voxel_auroc_median'])} | "
        f"{_fmt(v['dice_mean'])} | {_fmt(v['dice_median'])} | {_fmt(v['iou_mean'])} |", "",
        "![ROC curves](roc.png)", "", "![Precision-recall curves](pr.png)", "",
        "![Scan score histogram](score_histogram.png)", "",
        f"## Worst misses (anomalous scans with the lowest scan scores): {', '.join(summary['worst_misses']) or '-'}",
        "", "![Worst misses](worst_misses.png)", "",
        "## Cases", "",
        "| case | status | label | scan score | voxel AUROC | Dice | lesion voxels |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(f"| {r['case_id']} | {r['status']} | {_fmt(r['label'])} | {_fmt(r.get('scan_score'))} | "
                     f"{_fmt(r.get('voxel_auroc'))} | {_fmt(r.get('dice'))} | {_fmt(r.get('lesion_voxels'))} |")
    if summary["failed"]:
        lines += ["", "## Failed cases", ""] + [f"- `{f['case_id']}` ({f['image']}): {f['error']}"
                                                for f in summary["failed"]]
    return "\n".join(lines) + "\n"


def write_cohort_report(
    records: list[dict], out_dir: str | os.PathLike, threshold: float, montage: int = 6,
    decision: CalibratedDecision | None = None,
) -> dict[str, Path]:
    """
    Write every report file of :data:`REPORT_FILES` into ``out_dir``.

    Args:
        records: the per-case records in manifest order (from :func:`~anomalyclip_med.evaluation.cohort
            .evaluate_cohort`).
        out_dir: the cohort's output folder (record paths are relative to it).
        threshold: the map threshold of Dice and IoU (shown in the report).
        montage: how many worst misses to show.
        decision: the calibration the cases were scored with: the report adds its operating point.

    Returns:
        the written paths by the keys of :data:`REPORT_FILES`.
    """
    out_dir = Path(out_dir)
    paths = {k: out_dir / name for k, name in REPORT_FILES.items()}
    summary = cohort_summary(records, threshold, montage, decision)
    write_json(summary, paths["summary_json"])
    write_csv(_flat(summary), paths["summary_csv"])
    write_csv([{k: r.get(k) for k in CASE_COLUMNS} for r in records], paths["cases_csv"])
    plot_roc(records, summary["scan_level"], paths["roc_png"])
    plot_pr(records, summary["scan_level"], paths["pr_png"])
    plot_score_histogram(records, paths["histogram_png"])
    plot_montage(worst_misses(records, montage), out_dir, paths["montage_png"])
    with atomic_path(paths["report_md"]) as tmp:
        Path(tmp).write_text(_markdown(records, summary), encoding="utf-8")
    return paths
