"""Exact ranking metrics (scikit-learn) on image scores and pixel/voxel maps held in memory."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from anomalyclip_med.metrics.arrays import check_pair

__all__ = ["image_auroc", "image_ap", "image_max_f1", "pixel_auroc", "pixel_ap", "volume_auroc"]


def _both_classes(t: np.ndarray) -> bool:
    # AUROC/AP are undefined with one class; reports show NaN instead of failing the whole run
    return bool(t.any()) and not bool(t.all())


def _auroc(t: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(t.ravel(), s.ravel())) if _both_classes(t) else float("nan")


def _ap(t: np.ndarray, s: np.ndarray) -> float:
    return float(average_precision_score(t.ravel(), s.ravel())) if _both_classes(t) else float("nan")


def image_auroc(truth, scores) -> float:
    """
    Area under the ROC curve of image scores against image labels.

    Args:
        truth: (N,) labels, values > 0.5 anomalous.
        scores: (N,) anomaly scores, higher = more anomalous.

    Returns:
        AUROC in [0, 1]; NaN when only one class is present.
    """
    return _auroc(*check_pair(truth, scores, ndim=1))


def image_ap(truth, scores) -> float:
    """Average precision (scikit-learn's step-wise definition) of (N,) scores against (N,) labels; NaN without
    anomalous or without normal images."""
    return _ap(*check_pair(truth, scores, ndim=1))


def image_max_f1(truth, scores) -> float:
    """
    Best F1 = 2PR / (P + R) over all thresholds of (N,) scores against (N,) labels; NaN without anomalous or
    without normal images, as AUROC and AP: with anomalies only, calling everything anomalous scores 1.0 whatever
    the scores are, which says nothing about the detector.
    """
    t, s = check_pair(truth, scores, ndim=1)
    if not _both_classes(t):
        return float("nan")
    precision, recall, _ = precision_recall_curve(t, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def pixel_auroc(truth, scores) -> float:
    """
    AUROC over all pixels of all maps pooled (the reference's pixel AUROC), exact.

    Args:
        truth: (N, H, W) masks (or any shape), values > 0.5 anomalous.
        scores: anomaly maps of the same shape.

    Returns:
        AUROC in [0, 1]; NaN when the masks are all empty or all full. For more maps than memory holds use
        :class:`~anomalyclip_med.metrics.PixelMetricAccumulator`.
    """
    return _auroc(*check_pair(truth, scores))


def pixel_ap(truth, scores) -> float:
    """Average precision over all pixels of (N, H, W) maps against masks, exact; NaN with one class."""
    return _ap(*check_pair(truth, scores))


def volume_auroc(truth, scores) -> float:
    """
    Voxel AUROC of one scan: a (D, H, W) anomaly map against its (D, H, W) lesion mask.

    Returns:
        AUROC in [0, 1]; NaN for a scan without lesion voxels (or all lesion).

    Raises:
        ValueError: inputs are not one 3D volume each, or their shapes differ.
    """
    return _auroc(*check_pair(truth, scores, ndim=3))
