"""Evaluation: benchmark datasets (per-class tables) and hospital cohorts (per-case metrics, reports, figures)."""

from anomalyclip_med.evaluation.benchmark import dataset_metrics, evaluate_samples, subsample, write_dataset_report
from anomalyclip_med.evaluation.cohort import evaluate_case, evaluate_cohort
from anomalyclip_med.evaluation.cohort_report import write_cohort_report
from anomalyclip_med.evaluation.manifest import CohortCase, read_manifest
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
    "BenchmarkOptions",
    "CohortCase",
    "CohortOptions",
    "dataset_metrics",
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
