"""
The AnomalyCLIP image path over an open_clip ``VisionTransformer``: resized positional embedding and DPAM.

The open_clip modules (patch embedding, blocks' norms, attention projections, MLPs, ``ln_post``, ``proj``)
are used as they are; only the order in which they are called differs from open_clip's own forward, to run
the dual path of DPAM (diagonally prominent attention map) in the last layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

from anomalyclip_med.errors import InputError
from torch import nn

__all__ = ["resize_positional_embedding", "patch_grid", "dpam_forward"]


def resize_positional_embedding(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """
    Resize a ViT positional embedding (1 + g*g, D) to ``grid`` = (gh, gw) patches, keeping the class position.

    Bilinear, ``align_corners=False``, no antialiasing: the reference's resizing.
    """
    # a parameter's length is fixed: read it as a Python int (under torch.jit.trace shapes are traced tensors)
    side = math.isqrt(int(pos.shape[0]) - 1)
    if (side, side) == tuple(grid):
        return pos
    patch_pos = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos.float(), size=grid, mode="bilinear", align_corners=False).to(pos.dtype)
    return torch.cat([pos[:1], patch_pos.flatten(2).transpose(1, 2)[0]], dim=0)


def _attention(
    attn: nn.MultiheadAttention, x: torch.Tensor, with_vv: bool, queries: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    Self-attention of ``x`` (B, N, D) with ``attn``'s weights, and, if ``with_vv``, the V-V attention from the
    same qkv projection (computed once for both). Both run through ``scaled_dot_product_attention`` (flash /
    memory-efficient kernels where the device has them) rather than ``nn.MultiheadAttention``, whose
    batch-first path hands a transposed view to its input projection: under CPU bf16 autocast that one matmul
    took ~30 s and ~9 GB for a batch of 8 ViT-L slices at 518 px.

    ``queries``: only the first ``queries`` tokens of the original attention are computed (all by default).
    """
    b, n, d = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    if queries is not None:
        q = q[:, :, :queries]

    def out(t: torch.Tensor) -> torch.Tensor:
        return attn.out_proj(t.transpose(1, 2).reshape(b, t.shape[2], d))

    # scaled_dot_product_attention's default scale is head_dim ** -0.5, the reference's for both paths
    ori = out(F.scaled_dot_product_attention(q, k, v))
    return ori, out(F.scaled_dot_product_attention(v, v, v)) if with_vv else None


def patch_grid(visual: VisionTransformer, height: int, width: int) -> tuple[int, int]:
    """Patch grid of an input of ``height`` x ``width`` pixels; both must be multiples of the patch size."""
    patch = int(visual.conv1.kernel_size[0])
    if height % patch or width % patch:
        raise InputError(
            f"Input size {height}x{width} is not a multiple of the backbone's patch size {patch}; "
            f"use a size such as {max(1, round(height / patch)) * patch}."
        )
    return height // patch, width // patch


def dpam_forward(
    visual: VisionTransformer, images: torch.Tensor, feature_layers: tuple[int, ...], dpam_layers: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """
    Run an open_clip ViT image tower the AnomalyCLIP way (the tower is not modified).

    In the last ``dpam_layers`` blocks each block computes attention twice from its qkv projection of the
    original path's tokens: the original attention (followed by the MLP) continues the original path, and
    V-V attention (softmax(v vᵀ s) v, output projection, no MLP) is added to the V-V path, which starts from
    the first dual block's input. Patch features are the V-V path's tokens after ``feature_layers`` (the
    original tokens for layers before DPAM starts), through ``ln_post`` and ``proj``; the global feature is
    the original path's class token times ``proj`` without ``ln_post``, as in the reference.

    Args:
        visual: open_clip ``VisionTransformer``.
        images: (B, 3, H, W) normalised images, H and W multiples of the patch size.
        feature_layers: 1-based layer indices whose tokens become patch features.
        dpam_layers: number of final layers running the dual path.

    Returns:
        global features (B, E) and, per feature layer, tokens (B, 1 + gh*gw, E) (index 0: class token).
    """
    grid = patch_grid(visual, images.shape[-2], images.shape[-1])
    blocks = visual.transformer.resblocks
    dpam_start = len(blocks) - dpam_layers + 1
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
    x = x + resize_positional_embedding(visual.positional_embedding, grid).to(x.dtype)
    x = visual.ln_pre(x)

    vv: torch.Tensor | None = None
    features = []
    last_feature = max(feature_layers)
    for index, block in enumerate(blocks, start=1):
        dual = dpam_start <= index <= last_feature  # V-V tokens after the last feature layer are never used
        # the last block's original tokens serve only the class token's global feature (unless they are a
        # feature themselves): its attention, projection and MLP run for that one token
        last = index == len(blocks) and not (index in feature_layers and vv is None and not dual)
        attn_out, vv_out = _attention(block.attn, block.ln_1(x), with_vv=dual, queries=1 if last else None)
        if dual:
            vv = (x if vv is None else vv) + block.ls_1(vv_out)
        x = (x[:, :1] if last else x) + block.ls_1(attn_out)
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
        if index in feature_layers:
            features.append(vv if vv is not None else x)
    return x[:, 0] @ visual.proj, [visual.ln_post(t) @ visual.proj for t in features]
