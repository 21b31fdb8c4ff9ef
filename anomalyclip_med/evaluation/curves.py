"""ROC and precision-recall curves sampled at fixed points, small enough to store per case and plot later."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

__all__ = ["CURVE_POINTS", "roc_points", "pr_points"]

CURVE_POINTS = 101


def roc_points(truth: np.ndarray, scores: np.ndarray, points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """The ROC curve's best true-positive rate at ``points`` equally spaced false-positive rates in [0, 1]."""
    fpr, tpr, _ = roc_curve(truth.ravel(), scores.ravel())
    grid = np.linspace(0, 1, points)
    # the curve is a staircase: at each grid FPR take the highest TPR reached at or below it
    idx = np.searchsorted(fpr, grid, side="right") - 1
    return {"fpr": grid.round(6).tolist(), "tpr": np.maximum.accumulate(tpr)[idx].round(6).tolist()}


def pr_points(truth: np.ndarray, scores: np.ndarray, points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """The interpolated precision (best precision at recall >= r) at ``points`` equally spaced recalls."""
    precision, recall, _ = precision_recall_curve(truth.ravel(), scores.ravel())
    best = np.maximum.accumulate(precision)  # recall is decreasing along the arrays
    grid = np.linspace(0, 1, points)
    idx = np.searchsorted(-recall, -grid, side="right") - 1
    return {"recall": grid.round(6).tolist(), "precision": best[np.clip(idx, 0, None)].round(6).tolist()}
