"""
Calibration on known-normal cases: normal-score distributions per level (voxel/pixel, slice/image, scan), the
conformal p-values and false-positive-rate thresholds they give, and the exact binomial statistics of operating
points. See docs/calibration.md.
"""

from anomalyclip_med.calibration.calibration import (
    CALIBRATION_FORMAT,
    LEVELS,
    MAP_OUTPUTS,
    CalibratedDecision,
    Calibration,
    CalibrationMismatchError,
    CalibrationOptions,
    comparable_model,
    comparable_scoring,
)
from anomalyclip_med.calibration.collect import CalibrationRun, calibrate_images, calibrate_scans, parts_dir, scan_levels
from anomalyclip_med.calibration.distribution import MAP_BINS, SCORE_BINS, ScoreDistribution
from anomalyclip_med.calibration.run import CalibrateOptions, calibrate, calibration_inputs
from anomalyclip_med.calibration.stats import binomial_range, clopper_pearson, operating_point

__all__ = [
    "CALIBRATION_FORMAT",
    "LEVELS",
    "MAP_OUTPUTS",
    "MAP_BINS",
    "SCORE_BINS",
    "CalibrateOptions",
    "CalibratedDecision",
    "Calibration",
    "CalibrationMismatchError",
    "CalibrationOptions",
    "CalibrationRun",
    "ScoreDistribution",
    "binomial_range",
    "calibrate",
    "calibrate_images",
    "calibrate_scans",
    "calibration_inputs",
    "clopper_pearson",
    "comparable_model",
    "comparable_scoring",
    "operating_point",
    "parts_dir",
    "scan_levels",
]
