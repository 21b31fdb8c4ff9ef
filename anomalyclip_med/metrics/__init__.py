"""
Anomaly detection metrics: image-level (AUROC, AP, max-F1), pixel-level (AUROC, AP, AUPRO), overlap at a
threshold (Dice, IoU) and per-scan (voxel AUROC, Dice). Every function is ``f(truth, scores)`` with labels (N,)
or masks (N, H, W) first, on numpy arrays or tensors. :class:`PixelMetricAccumulator` gives the pixel metrics
over any number of maps in constant memory.
"""

from anomalyclip_med.metrics.overlap import dice, iou, volume_dice
from anomalyclip_med.metrics.pro import aupro
from anomalyclip_med.metrics.ranking import image_ap, image_auroc, image_max_f1, pixel_ap, pixel_auroc, volume_auroc
from anomalyclip_med.metrics.streaming import PixelMetricAccumulator

__all__ = [
    "image_auroc",
    "image_ap",
    "image_max_f1",
    "pixel_auroc",
    "pixel_ap",
    "aupro",
    "dice",
    "iou",
    "volume_auroc",
    "volume_dice",
    "PixelMetricAccumulator",
]
