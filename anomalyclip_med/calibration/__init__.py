"""
Calibration on known-normal cases: normal-score distributions per level (voxel/pixel, slice/image, scan), the
conformal p-values and false-positive-rate thresholds they give, and the exact binomial statistics of operating
points. See docs/calibration.md.

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "distribution": ("MAP_BINS", "SCORE_BINS", "ScoreDistribution"),
        "calibration": (
            "CALIBRATION_FORMAT", "LEVELS", "MAP_OUTPUTS", "Decision", "CalibratedDecision", "Calibration",
            "CalibrationMismatchError", "CalibrationOptions", "CalibrateOptions", "comparable_model", "comparable_scoring",
        ),
        "stats": ("clopper_pearson", "binomial_range", "operating_point"),
    },
)
