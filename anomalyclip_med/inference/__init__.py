"""
Running the network over inputs: 2D images, scans, datasets.

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "options": (
            "AGGREGATIONS", "PREDICT_BATCH_SIZE", "RESUME_MODES", "LoadingOptions", "ScoringOptions", "OutputOptions",
            "BatchOptions", "scan_options_record"
        ),
        "images2d": ("ImageResult", "output_names", "preprocess_images", "image_maps", "predict_images"),
        "inferer": ("VolumeAnomalyInferer", "SliceAnomalyInferer"),
        "scan": (
            "OUTPUT_SUFFIXES", "DICOM_SEG_SUFFIX", "ScanResult", "PreparedScan", "ScoredScan", "aggregate_scores",
            "case_id_of", "expected_outputs", "check_destination", "resume_record", "scan_report", "prepare_scan",
            "compute_scan", "write_scan", "score_scan"
        ),
        "slices": (
            "SlicePlan", "SliceScores", "plan_slices", "score_planned", "score_slices", "smooth_along_axis", "to_device"
        ),
        "pipeline": ("CaseOutcome", "StagedPipeline", "WriteBehind", "ScanPipeline", "DEFAULT_PREFETCH"),
        "evaluator": ("CaseDataset", "ScanBatchEvaluator"),
        "batch": ("CaseReport", "BatchSummary", "ScanBatchRunner", "describe_error"),
    },
)
