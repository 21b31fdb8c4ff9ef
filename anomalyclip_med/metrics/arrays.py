"""Turning metric inputs (numpy arrays, tensors, lists) into numpy arrays of known shape."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["to_numpy", "binary_truth", "check_pair"]


def to_numpy(x, dtype=None) -> np.ndarray:
    """A numpy view or copy of ``x`` (tensor on any device, array or sequence), optionally cast to ``dtype``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def binary_truth(truth) -> np.ndarray:
    """Boolean labels or masks: values above 0.5 are anomalous, so 0/1, boolean and 0/255 masks all work."""
    return to_numpy(truth) > 0.5


def check_pair(truth, scores, ndim: int | tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """
    Binary truth and float scores of one shape.

    Args:
        truth: labels (N,) or masks (N, H, W) / a volume (D, H, W).
        scores: scores or maps of the same shape.
        ndim: required number of dimensions (or allowed numbers), if any.

    Raises:
        ValueError: the shapes differ, or do not have ``ndim`` dimensions.
    """
    t, s = binary_truth(truth), to_numpy(scores)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if t.shape != s.shape:
        raise ValueError(f"truth shape {t.shape} and scores shape {s.shape} differ; pass one score per label/pixel.")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and t.ndim not in allowed:
        raise ValueError(f"expected {' or '.join(map(str, allowed))}-dimensional inputs, got shape {t.shape}.")
    return t, s
