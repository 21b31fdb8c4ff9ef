"""
Pixel metrics over any number of maps in constant memory: binned score histograms that merge across processes.

Thousands of 518 x 518 maps do not fit in memory as float64 (the reference concatenates them); the accumulator
keeps only fixed-size histograms, updated batch by batch on the maps' device.
"""

from __future__ import annotations

import numpy as np
import torch

from anomalyclip_med.metrics.arrays import binary_truth
from anomalyclip_med.metrics.pro import pro_curve_area, pro_thresholds, region_areas

__all__ = ["PixelMetricAccumulator"]

# One region's total weight in fixed point: integer sums are exact, so merging shards in any order gives the
# same state as one process (float sums would differ in the last bits). 2**40 leaves room for 2**22 regions.
_REGION_UNIT = 2**40
_MAX_REGIONS = 2**22


class PixelMetricAccumulator:
    """
    Pixel AUROC, pixel AP and AUPRO of anomaly maps against masks, accumulated batch by batch.

    The state is three histograms over ``bins`` equal bins of ``value_range``: normal-pixel counts, anomalous-pixel
    counts, and anomalous pixels weighted by 1 / area of their connected region (the region overlap of AUPRO),
    plus the exact smallest and largest score and the number of regions. Memory is ``3 * bins`` int64 whatever the
    number of maps; states of shards merge with :meth:`merge` to exactly the state of one pass over all maps.

    Exactness (scores within one bin are indistinguishable):
        - AUROC: pairs of a normal and an anomalous pixel in the same bin count as ties (1/2); the error is at most
          :meth:`auroc_error_bound` (half the fraction of such pairs, about 1e-5 for smooth maps at 2**16 bins).
        - AP: each bin acts as one threshold; differs from the exact AP by the precision change inside one bin.
        - AUPRO: the reference's thresholds (from the exact min and max); counts above a threshold are exact for
          whole bins and linearly interpolated inside the bin holding the threshold.
        The tests bound the differences to the exact metrics at 2**16 bins (see docs/evaluation.md).

    Args:
        bins: number of histogram bins.
        value_range: (low, high) of the scores; ``AnomalyCLIP.predict``'s ``anomaly_map`` is in [0, 1].
        max_steps: AUPRO thresholds (200 in the reference).
        fpr_limit: AUPRO integrates FPR below this (0.3 in the reference).
    """

    def __init__(
        self,
        bins: int = 2**16,
        value_range: tuple[float, float] = (0.0, 1.0),
        max_steps: int = 200,
        fpr_limit: float = 0.3,
    ) -> None:
        lo, hi = map(float, value_range)
        if not hi > lo or bins < 1:
            raise ValueError(f"need value_range low < high and bins >= 1, got {value_range}, {bins}.")
        self.bins, self.value_range, self.max_steps, self.fpr_limit = int(bins), (lo, hi), max_steps, fpr_limit
        self.normal = torch.zeros(self.bins, dtype=torch.int64)
        self.anomalous = torch.zeros(self.bins, dtype=torch.int64)
        self.region_weight = torch.zeros(self.bins, dtype=torch.int64)
        self.n_regions = 0
        self.min_score: np.float32 | None = None
        self.max_score: np.float32 | None = None

    def update(self, truth, scores) -> None:
        """
        Add maps and their masks.

        Args:
            truth: (N, H, W) or (H, W) masks (array or tensor), values > 0.5 anomalous.
            scores: maps of the same shape (float tensor on any device, or array), within ``value_range``.

        Raises:
            ValueError: shapes differ, scores are NaN or outside ``value_range``.
        """
        s = (scores if isinstance(scores, torch.Tensor) else torch.from_numpy(np.asarray(scores))).detach().float()
        t = binary_truth(truth)
        if tuple(s.shape) != t.shape or s.ndim not in (2, 3):
            raise ValueError(f"masks {t.shape} and maps {tuple(s.shape)} must be one (N, H, W) or (H, W) shape.")
        t, s = t.reshape(-1, *t.shape[-2:]), s.reshape(-1, *s.shape[-2:])
        lo, hi = self.value_range
        smin, smax = s.min().item(), s.max().item()
        if not (lo <= smin and smax <= hi):  # also catches NaN
            raise ValueError(f"scores span [{smin}, {smax}], outside the accumulator's value_range [{lo}, {hi}].")
        weights, n_regions = [], 0
        for mask in t:
            labels, areas = region_areas(mask)
            unit = (_REGION_UNIT + areas // 2) // np.maximum(areas, 1)  # rounded 2**40 / area, per region
            weights.append(unit[labels[mask]])
            n_regions += areas.size - 1
        if self.n_regions + n_regions > _MAX_REGIONS:
            raise OverflowError(f"more than {_MAX_REGIONS} anomalous regions; split the evaluation.")
        idx = ((s.double() - lo) * (self.bins / (hi - lo))).long().clamp_(0, self.bins - 1)
        pos = torch.from_numpy(t).to(idx.device)
        self.normal += torch.bincount(idx[~pos], minlength=self.bins).cpu()
        self.anomalous += torch.bincount(idx[pos], minlength=self.bins).cpu()
        self.region_weight.index_add_(0, idx[pos].cpu(), torch.from_numpy(np.concatenate(weights)))
        self.n_regions += n_regions
        smin, smax = np.float32(smin), np.float32(smax)
        self.min_score = smin if self.min_score is None else min(self.min_score, smin)
        self.max_score = smax if self.max_score is None else max(self.max_score, smax)

    def merge(self, other: PixelMetricAccumulator) -> PixelMetricAccumulator:
        """Add another accumulator's state (e.g. another process's shard) into this one; returns self."""
        if (other.bins, other.value_range) != (self.bins, self.value_range):
            raise ValueError("cannot merge accumulators with different bins or value_range.")
        self.normal += other.normal
        self.anomalous += other.anomalous
        self.region_weight += other.region_weight
        self.n_regions += other.n_regions
        for name, pick in (("min_score", min), ("max_score", max)):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, theirs if mine is None else mine if theirs is None else pick(mine, theirs))
        return self

    def _counts(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        pos, neg = self.anomalous.double().numpy(), self.normal.double().numpy()
        return pos, neg, pos.sum(), neg.sum()

    def auroc(self) -> float:
        """Pixel AUROC from the histograms; NaN without anomalous or without normal pixels."""
        pos, neg, p, n = self._counts()
        if p == 0 or n == 0:
            return float("nan")
        pos_above = p - np.cumsum(pos)  # anomalous pixels in higher bins
        return float(np.sum(neg * (pos_above + 0.5 * pos)) / (p * n))

    def auroc_error_bound(self) -> float:
        """Largest possible |binned - exact| pixel AUROC: half the fraction of (normal, anomalous) pairs sharing a
        bin, whose true order the histogram cannot see."""
        pos, neg, p, n = self._counts()
        return float(0.5 * np.sum(pos * neg) / (p * n)) if p and n else float("nan")

    def ap(self) -> float:
        """Pixel average precision with each bin as one threshold; NaN without anomalous or normal pixels."""
        pos, neg, p, n = self._counts()
        if p == 0 or n == 0:
            return float("nan")
        tp, fp = np.cumsum(pos[::-1]), np.cumsum(neg[::-1])
        hit = pos[::-1] > 0
        return float(np.sum(pos[::-1][hit] / p * tp[hit] / (tp[hit] + fp[hit])))

    def best_dice(self) -> float:
        """
        The best pooled Dice = 2 TP / (2 TP + FP + FN) over thresholds at the bin edges (MedIAnomaly's "best Dice":
        one threshold for all maps of the set, chosen with the masks - an upper bound, not an operating point);
        NaN without anomalous pixels.
        """
        pos, neg, p, _ = self._counts()
        if p == 0:
            return float("nan")
        tp, fp = np.cumsum(pos[::-1])[::-1], np.cumsum(neg[::-1])[::-1]  # at or above each bin
        return float(np.max(2 * tp / (2 * tp + fp + (p - tp))))

    def _above(self, hist: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        """Histogram mass strictly above each threshold, interpolating inside the bin that holds it; a bin's
        values are taken as uniform over its part inside [min_score, max_score]."""
        lo, hi = self.value_range
        width = (hi - lo) / self.bins
        k = np.clip(np.floor((thresholds - lo) / width).astype(np.int64), 0, self.bins - 1)
        suffix = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])
        low = np.maximum(lo + k * width, float(self.min_score))
        high = np.minimum(lo + (k + 1) * width, float(self.max_score))
        span = high - low
        frac = np.where(span > 0, np.clip((high - thresholds) / np.where(span > 0, span, 1), 0, 1), thresholds < low)
        return suffix[k + 1] + hist[k] * frac

    def aupro(self) -> float:
        """AUPRO with the reference's thresholds and FPR limit; NaN without regions or without normal pixels."""
        neg = self.normal.double().numpy()
        if self.n_regions == 0 or neg.sum() == 0:
            return float("nan")
        thresholds = pro_thresholds(self.min_score, self.max_score, self.max_steps)
        pros = self._above(self.region_weight.double().numpy(), thresholds) / (_REGION_UNIT * self.n_regions)
        fprs = self._above(neg, thresholds) / neg.sum()
        return pro_curve_area(fprs, pros, self.fpr_limit)

    def compute(self) -> dict[str, float]:
        """``{"pixel_auroc", "pixel_ap", "aupro", "best_dice"}``."""
        return {"pixel_auroc": self.auroc(), "pixel_ap": self.ap(), "aupro": self.aupro(),
                "best_dice": self.best_dice()}
