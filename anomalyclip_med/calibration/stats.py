"""Exact binomial statistics for operating points: Clopper-Pearson intervals and the rate a target implies."""

from __future__ import annotations

import numpy as np

__all__ = ["clopper_pearson", "binomial_range", "operating_point"]


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Exact (Clopper-Pearson) two-sided interval of a proportion from ``k`` successes in ``n`` trials; (None,
    None) when ``n`` is 0."""
    from scipy.stats import binomtest  # scipy.stats loads in ~0.5 s: only when an interval is asked for

    if n == 0:
        return None, None
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def binomial_range(n: int, p: float, confidence: float = 0.95) -> tuple[int, int]:
    """The central ``confidence`` range ``[lo, hi]`` of counts of a Binomial(n, p): each tail outside holds at most
    ``(1 - confidence) / 2`` of the mass (the exact interval a count must fall in when the true rate is ``p``)."""
    from scipy.stats import binom

    tail = (1.0 - confidence) / 2
    lo = int(binom.ppf(tail, n, p))
    if binom.cdf(lo, n, p) <= tail:  # ppf returns the smallest k with cdf >= tail; exclude it if it is a tail
        lo += 1
    hi = int(binom.isf(tail, n, p))
    if binom.sf(hi - 1, n, p) <= tail:
        hi -= 1
    return max(lo, 0), min(hi, n)


def operating_point(labels, flags, target_fpr: float, confidence: float = 0.95) -> dict:
    """
    Sensitivity and false-positive rate of binary ``flags`` against ``labels`` (1 anomalous, 0 normal), each with
    its exact Clopper-Pearson interval.

    Returns:
        ``target_fpr``, ``n_anomalous``, ``n_normal``, ``true_positives``, ``false_positives``, ``sensitivity``,
        ``sensitivity_ci``, ``fpr``, ``fpr_ci``, ``confidence``; rates are None without cases of that kind.
    """
    y = np.asarray(labels, dtype=int)
    f = np.asarray(flags, dtype=bool)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    tp, fp = int((f & (y == 1)).sum()), int((f & (y == 0)).sum())
    return {
        "target_fpr": target_fpr,
        "n_anomalous": pos,
        "n_normal": neg,
        "true_positives": tp,
        "false_positives": fp,
        "sensitivity": tp / pos if pos else None,
        "sensitivity_ci": list(clopper_pearson(tp, pos, confidence)),
        "fpr": fp / neg if neg else None,
        "fpr_ci": list(clopper_pearson(fp, neg, confidence)),
        "confidence": confidence,
    }
