"""AUPRO: area under the per-region-overlap curve up to a false-positive-rate limit, as the reference defines it."""

from __future__ import annotations

import numpy as np
from skimage.measure import label
from sklearn.metrics import auc

from anomalyclip_med.metrics.arrays import check_pair

__all__ = ["region_areas", "pro_thresholds", "pro_curve_area", "aupro"]


def region_areas(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Connected anomalous regions of one binary mask (8-connected in 2D, full connectivity in nD, as skimage).

    Returns:
        ``(labels, areas)``: the label image (0 = background, 1..R regions) and ``areas[r]`` = pixels of region r
        (``areas[0]`` is the background).
    """
    labels = label(mask)
    return labels, np.bincount(labels.ravel())


def pro_thresholds(lo, hi, steps: int) -> np.ndarray:
    """The reference's thresholds: ``steps`` equal steps from the smallest score up to (excluding) the largest."""
    return np.arange(lo, hi, (hi - lo) / steps) if hi > lo else np.asarray([lo])


def pro_curve_area(fprs: np.ndarray, pros: np.ndarray, fpr_limit: float) -> float:
    """
    Area under the PRO-vs-FPR curve over the points with FPR < ``fpr_limit``, the FPRs rescaled to [0, 1]
    (by their own min and max, as the reference does), trapezoidal rule. NaN with fewer than two distinct FPRs.
    """
    keep = fprs < fpr_limit
    f, p = fprs[keep], pros[keep]
    if f.size < 2 or f.max() == f.min():
        return float("nan")
    return float(auc((f - f.min()) / (f.max() - f.min()), p))


def aupro(truth, scores, max_steps: int = 200, fpr_limit: float = 0.3) -> float:
    """
    AUPRO of (N, H, W) anomaly maps against their masks, exactly the reference's value.

    At each threshold t (``max_steps`` equal steps between the smallest and largest score) a pixel is anomalous
    where its score > t; the per-region overlap (PRO) is the fraction of each connected ground-truth region
    detected, averaged over all regions of all masks; the FPR is the fraction of all normal pixels above t. The
    result is :func:`pro_curve_area` of these points. Computed from sorted scores, not by looping over regions.

    Args:
        truth: (N, H, W) masks, values > 0.5 anomalous (one (H, W) mask is also accepted).
        scores: maps of the same shape.
        max_steps: number of thresholds (200 in the reference).
        fpr_limit: integrate over FPR < this (0.3 in the reference).

    Returns:
        AUPRO in [0, 1]; NaN without any anomalous region or without normal pixels.
    """
    t, s = check_pair(truth, scores, ndim=(2, 3))
    t, s = t.reshape(-1, *t.shape[-2:]), s.reshape(-1, *s.shape[-2:])
    pos_scores, pos_weights, n_regions = [], [], 0
    for mask, amap in zip(t, s):
        labels, areas = region_areas(mask)
        n_regions += areas.size - 1
        # each anomalous pixel weighs 1 / area of its region, so summing weights above t sums region overlaps
        pos_scores.append(amap[mask])
        pos_weights.append(1.0 / areas[labels[mask]])
    negatives = np.sort(s[~t])
    if n_regions == 0 or negatives.size == 0:
        return float("nan")
    positives = np.concatenate(pos_scores)
    order = np.argsort(positives, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(np.concatenate(pos_weights)[order])])
    thresholds = pro_thresholds(s.min(), s.max(), max_steps)
    pros = (cum[-1] - cum[np.searchsorted(positives[order], thresholds, side="right")]) / n_regions
    fprs = (negatives.size - np.searchsorted(negatives, thresholds, side="right")) / negatives.size
    return pro_curve_area(fprs, pros, fpr_limit)
