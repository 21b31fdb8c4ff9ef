"""
The distribution of normal scores at one level (voxels, slices, scans), accumulated in constant memory, and the
conformal p-values and false-positive-rate thresholds read from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ScoreDistribution", "MAP_BINS", "SCORE_BINS"]

# Bins are powers of two, so every bin edge k / bins is exact in float32: a threshold at an edge flags exactly the
# values whose bin is at or above it, in the float32 maps as in the float64 arithmetic of the p-values.
MAP_BINS = 2**16  # voxel/pixel values: a voxel threshold needs no finer grid, and a partial stays small
SCORE_BINS = 2**20  # slice/scan scores: untrained and random backbones give scores within ~0.01 of each other


class ScoreDistribution:
    """
    A histogram of scores in [0, 1] with ``bins`` equal bins, plus the count and exact min/max.

    Two values in one bin are treated as equal ("at least as high" is read at bin resolution), which only ever
    makes a p-value larger (conservative), by at most the share of normals inside the value's own bin. The
    histogram is held sparse (the occupied bins, sorted, and their counts), so its size grows with the number of
    distinct bins seen, never with the number of values; states merge exactly (integer counts), so per-case parts
    give the same distribution as one pass.

    Args:
        bins: number of bins over [0, 1] (a power of two).
    """

    def __init__(self, bins: int = SCORE_BINS) -> None:
        if bins < 1 or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two, got {bins}.")
        self.bins = int(bins)
        self.index = np.zeros(0, dtype=np.int64)  # occupied bins, ascending
        self.count = np.zeros(0, dtype=np.int64)  # values in each
        self.min: float | None = None
        self.max: float | None = None
        self._suffix: np.ndarray | None = None

    @property
    def n(self) -> int:
        """How many values were added."""
        return int(self.count.sum())

    def bin_of(self, values) -> np.ndarray:
        """The bin index of each value (values outside [0, 1] are clipped into the end bins)."""
        v = np.asarray(values, dtype=np.float64)
        return np.clip(np.floor(v * self.bins), 0, self.bins - 1).astype(np.int64)

    def _add(self, index: np.ndarray, count: np.ndarray) -> None:
        merged = np.concatenate([self.index, index])
        self.index, inverse = np.unique(merged, return_inverse=True)
        self.count = np.bincount(inverse, weights=np.concatenate([self.count, count]).astype(np.float64)
                                 ).round().astype(np.int64)  # float64 sums of integers are exact below 2**53
        self._suffix = None

    def update(self, values) -> ScoreDistribution:
        """Add values (any shape, in [0, 1]); returns self.

        Raises:
            ValueError: a value is NaN or outside [0, 1].
        """
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return self
        lo, hi = float(v.min()), float(v.max())
        if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
            raise ValueError(f"scores span [{lo}, {hi}], outside [0, 1].")
        bins = self.bin_of(v)
        if bins.size > self.bins // 8:  # many values (a scan's voxels): counting is O(n), sorting O(n log n)
            dense = np.bincount(bins, minlength=self.bins)
            occupied = np.flatnonzero(dense)
            self._add(occupied, dense[occupied])
        else:
            self._add(*np.unique(bins, return_counts=True))
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        return self

    def merge(self, other: ScoreDistribution) -> ScoreDistribution:
        """Add another distribution's counts (same bins); returns self."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge distributions with {other.bins} and {self.bins} bins.")
        self._add(other.index, other.count)
        for name, pick in (("min", min), ("max", max)):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, theirs if mine is None else mine if theirs is None else pick(mine, theirs))
        return self

    def _at_or_above(self) -> np.ndarray:
        """``suffix[j]``: how many values fall in occupied bin ``j`` (in ``index`` order) or higher; ``suffix[-1]``
        is 0 (above every occupied bin)."""
        if self._suffix is None:
            self._suffix = np.concatenate([np.cumsum(self.count[::-1])[::-1], [0]])
        return self._suffix

    def p_values(self, values) -> np.ndarray:
        """
        Conformal p-values ``(1 + #normals scoring at least as high) / (1 + n)`` of ``values`` (any shape).

        The ``1 +`` counts the new value itself among the normals: if it is exchangeable with them (drawn from the
        same population), its rank among the ``n + 1`` is uniform, so ``P(p <= a) <= a`` for every ``a`` and
        every ``n`` (and ``>= a - 1/(n+1)`` without ties). The plain share ``count / n`` would give p = 0 above
        every normal and flag more than ``a`` of normals when ``n`` is small.
        """
        position = np.searchsorted(self.index, self.bin_of(values), side="left")
        return (1.0 + self._at_or_above()[position]) / (1.0 + self.n)

    def threshold(self, fpr: float) -> float | None:
        """
        The lowest score flagged at false-positive rate ``fpr``: ``score >= threshold`` exactly when its p-value is
        ``<= fpr``. ``None`` when no score can reach that p-value (fewer than ``1/fpr - 1`` normals): nothing is
        flagged then.
        """
        ok = np.flatnonzero(1.0 + self._at_or_above() <= fpr * (1.0 + self.n))
        if ok.size == 0:
            return None
        j = int(ok[0])  # values in bins above occupied bin j-1 have p <= fpr; those in it or below do not
        return 0.0 if j == 0 else float(self.index[j - 1] + 1) / self.bins

    def quantiles(self, qs=(0.5, 0.9, 0.95, 0.99, 0.999)) -> dict[str, float | None]:
        """Lower bin edges of the given quantiles (for reports)."""
        if self.n == 0:
            return {str(q): None for q in qs}
        cum = np.cumsum(self.count)
        return {str(q): float(self.index[np.searchsorted(cum, q * self.n, side="left")]) / self.bins for q in qs}

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the occupied bins and their counts."""
        return {"bins": self.bins, "n": self.n, "min": self.min, "max": self.max, "quantiles": self.quantiles(),
                "bin_index": self.index.tolist(), "count": self.count.tolist()}

    @classmethod
    def from_sparse(cls, bins: int, index, count, lo: float | None = None, hi: float | None = None
                    ) -> ScoreDistribution:
        """A distribution from occupied bins and counts.

        Raises:
            ValueError: lists of different lengths, bins out of range or repeated, negative counts.
        """
        dist = cls(bins)
        index, count = np.asarray(index, dtype=np.int64), np.asarray(count, dtype=np.int64)
        if index.shape != count.shape or index.ndim != 1:
            raise ValueError("bin_index and count must be two lists of one length.")
        if index.size and (index.min() < 0 or index.max() >= dist.bins or (np.diff(index) <= 0).any()
                           or (count < 0).any()):
            raise ValueError("bin_index must be ascending bins within range, with counts >= 0.")
        dist.index, dist.count, dist.min, dist.max = index, count, lo, hi
        return dist

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreDistribution:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: inconsistent content.
        """
        dist = cls.from_sparse(int(data["bins"]), data["bin_index"], data["count"], data.get("min"), data.get("max"))
        if dist.n != int(data["n"]):
            raise ValueError(f"the counts sum to {dist.n}, but n is {data['n']}.")
        return dist
