"""Evaluation: benchmark datasets (per-class tables) and hospital cohorts (per-case metrics, reports, figures)."""

from anomalyclip_med.evaluation.benchmark import (
    calibrated_operating_points,
    dataset_metrics,
    evaluate_samples,
    subsample,
    write_dataset_report,
)
from anomalyclip_med.evaluation.cohort import evaluate_case, evaluate_cohort
from anomalyclip_med.evaluation.cohort_report import write_cohort_report
from anomalyclip_med.evaluation.manifest import CohortCase, read_manifest
from anomalyclip_med.evaluation.protocols import METRIC_SETS, dataset_note, default_metric_set
from anomalyclip_med.evaluation.run import (
    MANIFEST,
    BenchmarkOptions,
    CohortOptions,
    evaluate,
    run_benchmark,
    run_cohort,
)

__all__ = [
    "MANIFEST",
    "METRIC_SETS",
    "BenchmarkOptions",
    "CohortCase",
    "CohortOptions",
    "calibrated_operating_points",
    "dataset_metrics",
    "dataset_note",
    "default_metric_set",
    "evaluate",
    "evaluate_case",
    "evaluate_cohort",
    "evaluate_samples",
    "read_manifest",
    "run_benchmark",
    "run_cohort",
    "subsample",
    "write_cohort_report",
    "write_dataset_report",
]
