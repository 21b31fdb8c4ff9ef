"""Running the network over inputs: 2D images, scans, datasets."""

from anomalyclip_med.inference.images2d import ImageResult, predict_images
from anomalyclip_med.inference.inferer import SliceAnomalyInferer
from anomalyclip_med.inference.options import AGGREGATIONS, LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.inference.scan import ScanResult, expected_outputs, scan_report, score_loaded_scan, score_scan
from anomalyclip_med.inference.slices import SliceScores, score_slices

__all__ = [
    "AGGREGATIONS",
    "ImageResult",
    "LoadingOptions",
    "OutputOptions",
    "ScanResult",
    "ScoringOptions",
    "SliceAnomalyInferer",
    "SliceScores",
    "expected_outputs",
    "predict_images",
    "scan_report",
    "score_loaded_scan",
    "score_scan",
    "score_slices",
]
