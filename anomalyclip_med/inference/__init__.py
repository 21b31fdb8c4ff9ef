"""
Running the network over inputs: 2D images, scans, datasets.

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "options": (
            "AGGREGATIONS", "RESUME_MODES", "LoadingOptions", "ScoringOptions", "OutputOptions",
            "BatchOptions", "scan_options_record"
        ),
        "images2d": ("preprocess_images", "image_maps"),
        "inferer": ("VolumeAnomalyInferer",),
        "scan": (
            "OUTPUT_SUFFIXES", "DICOM_SEG_SUFFIX", "PreparedScan", "ScoredScan", "aggregate_scores", "case_id_of",
            "scan_layout", "expected_outputs", "plan_scan", "resume_record", "scan_report", "prepare_scan", "compute_scan",
            "write_scan"
        ),
        "slices": (
            "SlicePlan", "SliceScores", "plan_slices", "score_planned", "score_slices", "smooth_along_axis", "to_device"
        ),
    },
)
