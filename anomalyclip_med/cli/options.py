"""Command-line options shared by every command that builds a model."""

from __future__ import annotations

import argparse

import torch

from anomalyclip_med.network.backbone import DEFAULT_WEIGHTS
from anomalyclip_med.network.model import PRECISIONS, AnomalyCLIP

__all__ = ["add_model_options", "model_from_args", "resolve_device"]

_RANDOM = ("none", "random")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument(
        "--backbone",
        default=None,
        help="open_clip model name (e.g. ViT-L-14-336) or open_clip model config JSON; default: read from an "
        "OpenAI-format weights file, else ViT-L-14-336",
    )
    g.add_argument(
        "--backbone-weights",
        default=DEFAULT_WEIGHTS,
        help=f"open_clip pretrained tag (default '{DEFAULT_WEIGHTS}', downloaded by open_clip), a weights file "
        "(OpenAI .pt TorchScript or state dict, open_clip checkpoint), or 'none' for RANDOM weights (tests only)",
    )
    g.add_argument("--prompts", default=None, help="prompt checkpoint (authors' or anomalyclip_med format); "
                   "default: freshly initialised UNTRAINED prompts")
    g.add_argument("--image-size", type=int, default=None, help="network input size, a multiple of the patch "
                   "size (default 518)")
    g.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1 ...")
    g.add_argument("--precision", default="fp32", choices=sorted(PRECISIONS), help="image tower precision")


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def model_from_args(args: argparse.Namespace) -> AnomalyCLIP:
    """Build the model; the torch seed (``args.seed`` where a command has one, else 0) is set first, so a random
    test backbone is the same in every command and every ``torchrun`` process."""
    weights = None if str(args.backbone_weights).lower() in _RANDOM else args.backbone_weights
    torch.manual_seed(getattr(args, "seed", 0))
    return AnomalyCLIP.from_pretrained(
        backbone=args.backbone,
        backbone_weights=weights,
        prompts=args.prompts,
        image_size=args.image_size,
        device=resolve_device(args.device),
        precision=args.precision,
    )
