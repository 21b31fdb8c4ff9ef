"""Command-line options shared by every command that builds a model."""

from __future__ import annotations

import argparse

import torch

from anomalyclip_med.network.backbone import DEFAULT_WEIGHTS
from anomalyclip_med.network.model import PRECISIONS, AnomalyCLIP

__all__ = ["add_model_options", "model_from_args", "resolve_device", "add_scan_options", "scan_options_from_args",
           "add_batch_options", "resume_mode"]

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
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the image tower: faster batches after a compilation of minutes per input "
                   "shape (pays on long GPU runs; see docs/performance.md)")


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
        compile_network=getattr(args, "compile", False),
    )


def _axis(value: str) -> str | int:
    return int(value) if value.lstrip("-").isdigit() else value


def add_scan_options(g: argparse._ActionsContainer) -> None:
    """How scans are scored (``score`` and ``evaluate --dataset manifest``); see ``ScanScoringOptions``."""
    from anomalyclip_med.inference.scan import AGGREGATIONS
    from anomalyclip_med.transforms.intensity import PRESETS

    g.add_argument("--preset", default="auto", choices=PRESETS,
                   help="intensity preset: CT window, 'mri' percentile normalisation, or 'auto' (default)")
    g.add_argument("--window-level", type=float, default=None, help="CT window level in HU (replaces the preset's)")
    g.add_argument("--window-width", type=float, default=None, help="CT window width in HU (replaces the preset's)")
    g.add_argument("--axis", type=_axis, default=None,
                   help="slicing axis: axial (default, whatever the scan's orientation), coronal, sagittal, or an "
                   "array axis 0/1/2")
    g.add_argument("--threshold", type=float, default=0.5, help="labelmap threshold on the 0..1 map (default 0.5)")
    g.add_argument("--z-smooth", type=float, default=0.0, metavar="MM",
                   help="Gaussian smoothing of the map across slices, sigma in mm (default 0: off)")
    g.add_argument("--aggregation", default="topk_mean", choices=AGGREGATIONS,
                   help="scan score from slice scores (default topk_mean)")
    g.add_argument("--topk", type=int, default=5, help="slices averaged by topk_mean (default 5)")
    g.add_argument("--keep-empty", action="store_true",
                   help="score every slice, also those without body (default: skip them, score 0)")
    g.add_argument("--no-body-mask", action="store_true",
                   help="keep the raw map outside the body (default: the map is 0 in air, padding and background)")


def scan_options_from_args(args: argparse.Namespace, **extra):
    """``ScanScoringOptions`` from :func:`add_scan_options`'s flags, ``--batch-size``, and ``extra`` fields."""
    from anomalyclip_med.inference.scan import ScanScoringOptions

    return ScanScoringOptions(
        preset=args.preset, window_level=args.window_level, window_width=args.window_width, axis=args.axis,
        threshold=args.threshold, batch_size=args.batch_size, z_smooth=args.z_smooth, aggregation=args.aggregation,
        topk=args.topk, skip_empty=not args.keep_empty, body_mask=not args.no_body_mask, **extra,
    )


def add_batch_options(g: argparse._ActionsContainer, resume_default: bool = False) -> None:
    """Case naming and what to do with existing outputs (``score`` and ``evaluate --dataset manifest``)."""
    from anomalyclip_med.io.cases import CASE_NAMING

    g.add_argument("--case-name", default="stem", choices=CASE_NAMING,
                   help="how cases are named in outputs, logs and reports: 'stem' (file stem, DICOM series folder; "
                   "parent folders added where names collide; default), 'parent' (parent folder + stem), "
                   "'relpath' (path below the input folder)")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--continue", dest="resume", action="store_true", default=resume_default,
                     help="reuse finished cases whose outputs are whole and were made from the same input, model "
                     "and options; compute the others" + (" (default)" if resume_default else ""))
    how.add_argument("--overwrite", action="store_true", help="compute every case again, replacing its outputs")


def resume_mode(args: argparse.Namespace) -> str:
    """``overwrite``, ``continue`` or ``refuse`` (see ``anomalyclip_med.inference.batch.RESUME_MODES``)."""
    return "overwrite" if args.overwrite else "continue" if args.resume else "refuse"
