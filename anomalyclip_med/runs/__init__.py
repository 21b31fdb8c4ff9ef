"""
The one run engine and its jobs: every batch (score, predict, calibrate, cohort evaluate, the bundle's batch run)
is a :class:`~anomalyclip_med.runs.engine.CaseJob` on :class:`~anomalyclip_med.runs.engine.CaseRunner`.

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "engine": (
            "DEFAULT_PREFETCH", "Status", "Reused", "CaseResult", "RunSummary", "CaseJob",
            "CaseOutcome", "StagedPipeline", "WriteBehind", "RunSession", "CaseRunner", "check_outputs",
            "describe_error",
        ),
        "scans": ("ScanJob",),
        "images": ("IMAGE_OUTPUTS", "SCORES_CSV", "CSV_FIELDS", "ImageJob"),
        "cohort": ("CASES_DIR", "METRICS_FILE", "cohort_cases", "failed_record", "CohortJob"),
        "calibrate": ("CalibrationRun", "parts_dir", "scan_levels", "CalibrationJob"),
        "monai": ("CaseDataset", "CaseInferer", "CaseEvaluator"),
    },
)
