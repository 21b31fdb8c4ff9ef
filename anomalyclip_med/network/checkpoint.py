"""
Prompt checkpoints: the original authors' ``{"prompt_learner": state_dict}`` files, this package's format, and the
state dict of the bundle's network (``models/model.pt``: the prompt tensors under :data:`NETWORK_PREFIX`).

The package format is a dict with ``format``, ``version``, ``package_version``, the prompt hyper-parameters
(``config``), the identity of the backbone it was trained with (``backbone``) and the ``state_dict``.
Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from anomalyclip_med.errors import CheckpointError
from anomalyclip_med.utils.atomic import atomic_path
from anomalyclip_med.weights import missing_prompt_file

__all__ = [
    "PROMPT_FORMAT",
    "PROMPT_FORMAT_VERSION",
    "NETWORK_PREFIX",
    "read_prompt_checkpoint",
    "load_prompt_state",
    "prompt_state_from",
    "save_prompt_checkpoint",
    "load_failure",
]

PROMPT_FORMAT = "anomalyclip_med.prompts"
PROMPT_FORMAT_VERSION = 1
# where the prompt tensors lie in the state dict of the bundle's network (AnomalyCLIPNet)
NETWORK_PREFIX = "anomalyclip.prompt_learner."
# In the authors' checkpoints but never used by their forward pass.
_UNUSED_AUTHOR_KEYS = ("compound_prompt_projections.",)


def load_failure(err: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in one line a user can act on."""
    lines = str(err).strip().splitlines()
    return (f"{type(err).__name__}: {lines[0] if lines else ''}. The file is truncated or damaged, not a torch file, "
            "or holds objects other than tensors (it is read with weights_only=True, so nothing in it runs).")


def _check_tensors(source: str, state_dict: Any) -> None:
    """Refuse a state dict that is not named tensors, or holds NaN/Inf: it would score every image NaN."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"Prompt checkpoint {source} is damaged: its state_dict is not a dict of tensors.")
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CheckpointError(f"Prompt checkpoint {source} is damaged: tensor '{key}' holds {bad} NaN/Inf "
                                      "value(s) (a diverged training run or a corrupt file); use another checkpoint.")


def _is_network_state(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and k.startswith(NETWORK_PREFIX)
                                                       for k in obj)


def read_prompt_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """
    Read a prompt checkpoint of any format: the authors', this package's, or the bundle network's state dict.

    Returns:
        ``{"state_dict", "config" (dict or None), "format" ("authors", "package" or "network"), "backbone" (dict
        or None)}``; only the package format records settings (``config``) and the backbone.

    Raises:
        MissingWeightsError: no such file.
        CheckpointError: a file torch cannot load with ``weights_only=True`` (truncated, or a pickle that would run
            code), another kind of file, or tensors holding NaN/Inf.
    """
    path = Path(path)
    if not path.is_file():
        raise missing_prompt_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"Cannot read prompt checkpoint '{path}': {load_failure(err)}") from None
    if isinstance(obj, dict) and obj.get("format") == PROMPT_FORMAT:
        version = obj.get("version")
        if not isinstance(version, int) or version > PROMPT_FORMAT_VERSION:
            raise CheckpointError(
                f"Prompt checkpoint '{path}' has format version {version!r}; this anomalyclip_med reads versions "
                f"<= {PROMPT_FORMAT_VERSION}. Upgrade the package."
            )
        _check_tensors(f"'{path}'", obj.get("state_dict"))
        return {"state_dict": obj["state_dict"], "config": obj.get("config"), "format": "package",
                "backbone": obj.get("backbone")}
    if isinstance(obj, dict) and isinstance(obj.get("prompt_learner"), dict):
        sd = prompt_state_from(obj)
        _check_tensors(f"'{path}'", sd)
        return {"state_dict": sd, "config": None, "format": "authors", "backbone": None}
    if _is_network_state(obj):
        sd = prompt_state_from(obj, strip=NETWORK_PREFIX)
        _check_tensors(f"'{path}'", sd)
        return {"state_dict": sd, "config": None, "format": "network", "backbone": None}
    raise CheckpointError(
        f"'{path}' is not a prompt checkpoint: expected the authors' {{'prompt_learner': state_dict}}, a file "
        f"written by anomalyclip_med (format '{PROMPT_FORMAT}') or a bundle network's state dict "
        f"({NETWORK_PREFIX}* tensors)."
    )


def prompt_state_from(obj: dict[str, Any], strip: str = "") -> dict[str, torch.Tensor]:
    """
    The prompt learner's tensors from a loaded checkpoint of any format: the authors' ``{"prompt_learner": ...}``
    (without its unused tensors), a package prompt file (its ``state_dict``), or a state dict whose prompt keys
    start with ``strip`` (e.g. a bundle network's ``anomalyclip.prompt_learner.``), which is removed.
    """
    if obj.get("format") == PROMPT_FORMAT:
        return dict(obj["state_dict"])
    if isinstance(obj.get("prompt_learner"), dict):
        return {k: v for k, v in obj["prompt_learner"].items() if not k.startswith(_UNUSED_AUTHOR_KEYS)}
    return {k[len(strip):] if strip and k.startswith(strip) else k: v for k, v in obj.items()}


def load_prompt_state(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """
    Load ``state_dict`` into a prompt learner, all or nothing: every path that loads prompts (a file, a MONAI
    checkpoint loader) passes this gate, so NaN/Inf prompts are refused the same way on every face.

    Raises:
        CheckpointError: naming the first missing, unexpected or mis-shaped tensor and what it means, or NaN/Inf.
    """
    _check_tensors(source, state_dict)
    expected = module.state_dict()
    for key in expected:
        if key not in state_dict:
            raise CheckpointError(
                f"Prompt checkpoint {source} lacks tensor '{key}': it was made with other prompt settings "
                "(deep prompt depth or layout) than the model's."
            )
    for key, tensor in state_dict.items():
        if key not in expected:
            raise CheckpointError(
                f"Prompt checkpoint {source} has tensor '{key}' that the model lacks: it was made with other "
                "prompt settings (e.g. a larger deep prompt depth)."
            )
        want, got = tuple(expected[key].shape), tuple(tensor.shape)
        if want != got:
            hint = (
                "its last dimension is the text width of the backbone it was trained with; use that backbone"
                if want[-1] != got[-1]
                else "it was trained with other prompt lengths (n_ctx / t_n_ctx); set them to match"
            )
            raise CheckpointError(
                f"Prompt checkpoint {source} does not fit this model: tensor '{key}' has shape {got}, "
                f"the model expects {want} ({hint})."
            )
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()}, strict=True)


def save_prompt_checkpoint(
    path: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    backbone: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a prompt checkpoint in the package format, atomically."""
    from anomalyclip_med import __version__

    payload = {
        "format": PROMPT_FORMAT,
        "version": PROMPT_FORMAT_VERSION,
        "package_version": __version__,
        "config": config,
        "backbone": backbone,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
