"""
Command-line options shared by several commands. Every default is read from the option dataclasses
(:class:`ModelOptions`, :class:`ScoringOptions`, ...), so the command line, the bundle and the API agree.
"""

from __future__ import annotations

import argparse

from anomalyclip_med.inference.options import AGGREGATIONS, BatchOptions, ScoringOptions
from anomalyclip_med.io.cases import CASE_NAMING
from anomalyclip_med.network.factory import AUTO_PRECISION, AUTO_PRECISION_TOLERANCE, PRECISION_CHOICES, ModelOptions
from anomalyclip_med.transforms.windows import PRESETS
from anomalyclip_med.weights import CACHE_ENV, DEFAULT_PROMPTS, UNTRAINED, WEIGHTS_DIR_ENV

__all__ = [
    "existing_inputs",
    "add_model_options",
    "model_options_from_args",
    "add_scan_options",
    "scoring_options_from_args",
    "add_calibration_options",
    "calibration_options_from_args",
    "add_batch_options",
    "batch_options_from_args",
]


def existing_inputs(paths: list[str]) -> list[str]:
    """``paths`` once each exists: a wrong path is one ``error:`` line at once, before torch and MONAI import."""
    from pathlib import Path

    from anomalyclip_med.errors import InputError

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise InputError(f"Input '{missing[0]}' does not exist.")
    return paths


def add_model_options(parser: argparse.ArgumentParser, prompts: str = ModelOptions.prompts) -> None:
    """The flags of :class:`ModelOptions` (``--seed`` is a command's own flag where it has one); ``prompts`` is the
    command's default for ``--prompts`` (``train`` starts from untrained prompts, as the paper)."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--backbone",
        default=ModelOptions.backbone,
        help="open_clip model name (e.g. ViT-L-14-336) or open_clip model config JSON; default: read from an "
        "OpenAI-format weights file, else ViT-L-14-336",
    )
    g.add_argument(
        "--backbone-weights",
        default=ModelOptions.backbone_weights,
        help=f"open_clip pretrained tag (default '{ModelOptions.backbone_weights}': for ViT-L-14-336 OpenAI's file, "
        "downloaded, verified and cached on first use; other tags through open_clip), a weights file (OpenAI .pt "
        "TorchScript or state dict, open_clip checkpoint), or 'none' for RANDOM weights (tests only)",
    )
    g.add_argument("--prompts", default=prompts,
                   help=f"'{DEFAULT_PROMPTS}' (the authors' prompts trained on MVTec AD, for medical data; downloaded, "
                   "verified and cached on first use), 'visa-trained' (theirs trained on VisA, for MVTec AD), a prompt "
                   f"checkpoint file (authors' or anomalyclip_med format), or '{UNTRAINED}' (fresh, seeded prompts); "
                   f"default {prompts}")
    g.add_argument("--weights-dir", default=ModelOptions.weights_dir, metavar="DIR",
                   help="folder written by 'anomalyclip-med fetch-weights --dest DIR' (air-gapped machines), searched "
                   f"before the cache (also ${WEIGHTS_DIR_ENV}; cache: ${CACHE_ENV}, default ~/.cache/anomalyclip_med)")
    g.add_argument("--feature-layers", type=int, nargs="+", default=ModelOptions.feature_layers, metavar="N",
                   help="visual layers (1-based) whose patch features are used: default the paper's 6 12 18 24 "
                   "(scaled to the backbone's depth); 24 alone is the authors' train.sh/test.sh protocol")
    g.add_argument("--map-layers", type=int, nargs="+", default=ModelOptions.map_layers, metavar="N",
                   help="which feature layers are summed into the anomaly map (-1: the deepest); default all")
    g.add_argument("--image-size", type=int, default=ModelOptions.image_size, help="network input size, a multiple "
                   "of the patch size (default 518)")
    g.add_argument("--device", default=ModelOptions.device,
                   help=f"auto (a CUDA GPU when there is one, else Apple MPS, else the CPU), cpu, cuda, cuda:N or mps "
                   f"(default {ModelOptions.device}); a device this machine lacks is an error")
    auto = ", ".join(f"{kind} {precision}" for kind, precision in AUTO_PRECISION.items())
    g.add_argument("--precision", default=ModelOptions.precision, choices=PRECISION_CHOICES,
                   help=f"image tower precision (default {ModelOptions.precision}: the fastest whose map stays within "
                   f"{AUTO_PRECISION_TOLERANCE:g} of fp32's: {auto}; docs/network.md)")
    g.add_argument("--compile", dest="compile_network", action="store_true", default=ModelOptions.compile_network,
                   help="torch.compile the image tower: faster batches after a compilation of minutes per input "
                   "shape (pays on long GPU runs; see docs/performance.md)")


def model_options_from_args(args: argparse.Namespace) -> ModelOptions:
    """:class:`ModelOptions` from :func:`add_model_options`'s flags (and the command's ``--seed``, if any)."""
    return ModelOptions(
        backbone=args.backbone, backbone_weights=args.backbone_weights, prompts=args.prompts,
        weights_dir=args.weights_dir, feature_layers=args.feature_layers, map_layers=args.map_layers,
        image_size=args.image_size, device=args.device, precision=args.precision,
        compile_network=args.compile_network, seed=getattr(args, "seed", ModelOptions.seed),
    )


def _axis(value: str) -> str | int:
    return int(value) if value.lstrip("-").isdigit() else value


def add_scan_options(g: argparse._ActionsContainer) -> None:
    """How scans are scored (``score`` and ``evaluate --dataset manifest``): the flags of :class:`ScoringOptions`
    (``--batch-size`` is each command's own)."""
    d = ScoringOptions
    g.add_argument("--preset", default=d.preset, choices=PRESETS,
                   help=f"intensity preset: CT window, 'mri' percentile normalisation, or 'auto' (default {d.preset})")
    g.add_argument("--window-level", type=float, default=d.window_level,
                   help="CT window level in HU (replaces the preset's)")
    g.add_argument("--window-width", type=float, default=d.window_width,
                   help="CT window width in HU (replaces the preset's)")
    g.add_argument("--axis", type=_axis, default=d.axis,
                   help="slicing axis: axial (default, whatever the scan's orientation), coronal, sagittal, or an "
                   "array axis 0/1/2")
    g.add_argument("--threshold", type=float, default=d.threshold,
                   help=f"labelmap threshold on the 0..1 map (default {d.threshold})")
    g.add_argument("--z-smooth", type=float, default=d.z_smooth, metavar="MM",
                   help=f"Gaussian smoothing of the map across slices, sigma in mm (default {d.z_smooth:g}: off)")
    g.add_argument("--aggregation", default=d.aggregation, choices=AGGREGATIONS,
                   help=f"scan score from slice scores (default {d.aggregation})")
    g.add_argument("--topk", type=int, default=d.topk, help=f"slices averaged by topk_mean (default {d.topk})")
    g.add_argument("--keep-empty", dest="skip_empty", action="store_false", default=d.skip_empty,
                   help="score every slice, also those without body (default: skip them, score 0)")
    g.add_argument("--no-body-mask", dest="body_mask", action="store_false", default=d.body_mask,
                   help="keep the raw map outside the body (default: the map is 0 in air, padding and background)")


def scoring_options_from_args(args: argparse.Namespace) -> ScoringOptions:
    """:class:`ScoringOptions` from :func:`add_scan_options`'s flags and the command's ``--batch-size``."""
    return ScoringOptions(
        preset=args.preset, window_level=args.window_level, window_width=args.window_width, axis=args.axis,
        threshold=args.threshold, batch_size=args.batch_size, z_smooth=args.z_smooth, aggregation=args.aggregation,
        topk=args.topk, skip_empty=args.skip_empty, body_mask=args.body_mask,
    )


def add_batch_options(g: argparse._ActionsContainer, resume: str = BatchOptions.resume) -> None:
    """Case naming and what to do with existing outputs (``score``, ``evaluate --dataset manifest``); see
    :class:`BatchOptions` (``resume``: the command's default mode)."""
    resume_default = resume == "continue"
    g.add_argument("--case-name", default=BatchOptions.case_name, choices=CASE_NAMING,
                   help="how cases are named in outputs, logs and reports: 'stem' (file stem or DICOM series folder, "
                   "parent folders added where names collide; default), 'parent' (parent folder + stem), "
                   "'relpath' (path below the input folder)")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--continue", dest="resume", action="store_true", default=resume_default,
                     help="reuse finished cases whose outputs are whole and were made from the same input, model "
                     "and options; compute the others" + (" (the default)" if resume_default else ""))
    how.add_argument("--overwrite", action="store_true", help="compute every case again, replacing its outputs")


def batch_options_from_args(args: argparse.Namespace) -> BatchOptions:
    return BatchOptions(case_name=args.case_name,
                        resume="overwrite" if args.overwrite else "continue" if args.resume else "refuse")


def add_calibration_options(parser: argparse.ArgumentParser) -> None:
    """Decisions from a calibration on normals (``score``, ``predict``, ``evaluate``); see ``CalibrationOptions``."""
    from anomalyclip_med.calibration.calibration import MAP_OUTPUTS, CalibrationOptions

    d = CalibrationOptions()
    g = parser.add_argument_group("calibration (thresholds from known-normal cases; docs/calibration.md)")
    g.add_argument("--calibration", default=d.calibration, metavar="FILE",
                   help="calibration JSON from 'anomalyclip-med calibrate' with the same model and scoring options: "
                   "thresholds at --target-fpr replace the fixed labelmap threshold, and every slice/image and scan "
                   "gets a calibrated p-value and a flag")
    g.add_argument("--target-fpr", type=float, default=d.target_fpr, metavar="RATE",
                   help=f"share of normal slices (images) and of normal scans flagged (default {d.target_fpr})")
    g.add_argument("--map-fpr", type=float, default=d.map_fpr, metavar="RATE",
                   help="share of normal voxels (pixels) in the labelmap (default: --target-fpr)")
    g.add_argument("--map", dest="map_output", default=d.map_output, choices=MAP_OUTPUTS,
                   help="write the anomaly map as the network's probabilities (default) or as calibrated voxel "
                   "p-values (small = unusual among the normals; needs --calibration)")


def calibration_options_from_args(args: argparse.Namespace):
    """``CalibrationOptions`` from :func:`add_calibration_options`'s flags (checked: one ``error:`` line)."""
    from anomalyclip_med.calibration.calibration import CalibrationOptions

    return CalibrationOptions(calibration=args.calibration, target_fpr=args.target_fpr, map_fpr=args.map_fpr,
                              map_output=args.map_output)
