"""
Building a backbone from a weights file without first initialising it at random.

open_clip's constructors draw every parameter (428 M for ViT-L/14, several seconds on a CPU) only for the
weights file to overwrite them. Here the module is built on the ``meta`` device (shapes only, no memory, no
random numbers), the file's tensors are assigned in place of the meta parameters (no copy; they already lie on
the target device), and the few buffers that are not in a state dict are computed afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from anomalyclip_med.errors import BackboneError

__all__ = ["build_on_meta", "load_into_meta"]

M = TypeVar("M", bound=nn.Module)


def build_on_meta(factory: Callable[[], M]) -> M:
    """``factory()`` with every tensor it creates on the ``meta`` device: the architecture without its values."""
    with torch.device("meta"):
        return factory()


def _causal_mask(n: int, device: torch.device) -> torch.Tensor:
    # open_clip's text attention mask: -inf above the diagonal, 0 on and below it
    return torch.full((n, n), float("-inf"), device=device).triu_(1)


def load_into_meta(model: M, state_dict: dict[str, torch.Tensor], device: torch.device | str) -> M:
    """
    Give a :func:`build_on_meta` model the tensors of ``state_dict`` (by reference where their dtype is the
    architecture's, keeping their device) and compute its non-persistent buffers on ``device``.

    Raises:
        BackboneError: a state-dict key is missing or extra, or a tensor stays without a value.
    """
    device = torch.device(device)
    # each tensor takes the dtype the architecture gives it, as an in-place copy would (open_clip's OpenAI builder
    # makes some weights float16, so float32 files are rounded as OpenAI's own are)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    state_dict = {k: v.to(dtypes[k]) if k in dtypes else v for k, v in state_dict.items()}
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as err:
        raise BackboneError(f"The backbone weights do not fit the architecture: {err}") from None
    for module_name, module in model.named_modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is None or not buffer.is_meta:
                continue
            if name == "attn_mask" and buffer.ndim == 2 and buffer.shape[0] == buffer.shape[1]:
                module._buffers[name] = _causal_mask(buffer.shape[0], device)
            else:  # a buffer this loader does not know how to compute: refuse rather than leave it empty
                raise BackboneError(f"Buffer '{module_name}.{name}' of the backbone has no value after loading.")
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise BackboneError(f"Parameter '{left[0]}' of the backbone has no value after loading.")
    return model
