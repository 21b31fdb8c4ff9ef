"""
Voxel ROC and precision-recall curves sampled at fixed points, small enough to store per case and plot later.

They come from score histograms (one pass, no sort of millions of voxels); they are for figures only: the
reported voxel AUROC is exact (:func:`anomalyclip_med.metrics.volume_auroc`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CURVE_POINTS", "curve_points"]

CURVE_POINTS = 101
_BINS = 4096


def curve_points(
    truth: np.ndarray, scores: np.ndarray, points: int = CURVE_POINTS, bins: int = _BINS
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """
    ROC and PR curves of ``scores`` against boolean ``truth`` (both classes present), thresholds at ``bins``
    equal steps of the score range.

    Returns:
        ``(roc, pr)``: ``roc`` = the highest true-positive rate reached at or below ``points`` equally spaced
        false-positive rates (``{"fpr", "tpr"}``); ``pr`` = the interpolated precision (best precision at recall
        >= r) at ``points`` equally spaced recalls (``{"recall", "precision"}``).
    """
    s = scores.ravel()
    edges = np.linspace(float(s.min()), float(s.max()) + 1e-12, bins + 1)
    pos = np.histogram(s[truth.ravel()], edges)[0][::-1]  # highest scores first
    neg = np.histogram(s[~truth.ravel()], edges)[0][::-1]
    tp = np.concatenate([[0], np.cumsum(pos)]).astype(np.float64)
    fp = np.concatenate([[0], np.cumsum(neg)]).astype(np.float64)
    tpr, fpr = tp / tp[-1], fp / fp[-1]
    grid = np.linspace(0, 1, points)
    roc_tpr = tpr[np.searchsorted(fpr, grid, side="right") - 1]  # tpr grows with fpr: last point at or below
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    best = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or higher
    pr_precision = best[np.clip(np.searchsorted(tpr, grid, side="left"), 0, tp.size - 1)]
    return (
        {"fpr": grid.round(6).tolist(), "tpr": roc_tpr.round(6).tolist()},
        {"recall": grid.round(6).tolist(), "precision": pr_precision.round(6).tolist()},
    )
