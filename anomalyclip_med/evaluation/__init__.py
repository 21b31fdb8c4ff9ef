"""
Evaluation: benchmark datasets (per-class tables) and hospital cohorts (per-case metrics, reports, figures).

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "benchmark": ("subsample", "evaluate_samples", "dataset_metrics", "calibrated_operating_points",
                      "write_dataset_report"),
        "case_metrics": ("scan_voxel_metrics",),
        "cohort_report": ("CASE_COLUMNS", "REPORT_FILES", "cohort_summary", "worst_misses", "write_cohort_report"),
        "curves": ("CURVE_POINTS", "curve_points"),
        "manifest": ("CohortCase", "read_manifest"),
        "plots": ("plot_roc", "plot_pr", "plot_score_histogram", "plot_montage"),
        "options": ("MANIFEST", "COHORT_RESUME", "BenchmarkOptions", "CohortOptions"),
        "protocols": ("METRIC_SETS", "default_metric_set", "dataset_note"),
        "tables": ("METRIC_COLUMNS", "finite_or_none", "table_rows", "write_metric_tables"),
        "volumes": ("read_volume", "on_grid", "volume_array"),
    },
)
