"""From features to scores: prompt similarities, per-layer anomaly maps and their smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.convutils import gaussian_1d

__all__ = ["similarity_probs", "similarity_maps", "layer_anomaly_maps", "gaussian_smooth"]


def similarity_probs(features: torch.Tensor, text_features: torch.Tensor, temperature: float) -> torch.Tensor:
    """
    Softmax over [normal, abnormal] of cosine similarity / temperature.

    Args:
        features: (..., E) image or patch features (normalised here).
        text_features: (2, E) L2-normalised text features.
    """
    features = features / features.norm(dim=-1, keepdim=True)
    return (features @ text_features.t() / temperature).softmax(dim=-1)


def similarity_maps(
    patch_features: list[torch.Tensor],
    text_features: torch.Tensor,
    grid: tuple[int, int],
    size: tuple[int, int],
    temperature: float,
) -> list[torch.Tensor]:
    """
    Per feature layer, the two-channel [normal, abnormal] probability map upsampled to ``size``.

    Args:
        patch_features: per layer (B, 1 + gh*gw, E); the class token (index 0) is dropped.

    Returns:
        per layer (B, 2, H, W), bilinear with ``align_corners=False`` as the reference.
    """
    maps = []
    for tokens in patch_features:
        probs = similarity_probs(tokens[:, 1:].float(), text_features, temperature)
        probs = probs.reshape(probs.shape[0], grid[0], grid[1], 2).permute(0, 3, 1, 2)
        maps.append(F.interpolate(probs, size=size, mode="bilinear", align_corners=False))
    return maps


def layer_anomaly_maps(two_channel_maps: list[torch.Tensor]) -> torch.Tensor:
    """(abnormal + 1 - normal) / 2 of each layer's map, stacked to (L, B, H, W)."""
    return torch.stack([(m[:, 1] + 1 - m[:, 0]) / 2 for m in two_channel_maps])


def _reflect_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    # scipy's 'reflect' border (d c b a | a b c d | d c b a), valid for any radius
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def gaussian_smooth(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """
    Gaussian filter of (B, H, W) maps, equal to ``scipy.ndimage.gaussian_filter(m, sigma)`` on each map
    (sampled kernel of radius ``int(truncate * sigma + 0.5)``, reflect border) but batched on the maps' device.
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=truncate, approx="sampled", normalize=True)
    kernel = kernel.to(device=maps.device, dtype=torch.float32)
    radius = (kernel.numel() - 1) // 2
    h, w = maps.shape[-2:]
    x = maps.float().unsqueeze(1)
    x = x.index_select(2, _reflect_index(h, radius, maps.device)).index_select(3, _reflect_index(w, radius, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return x.squeeze(1)
