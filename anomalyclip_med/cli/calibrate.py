"""``anomalyclip-med calibrate``: the distributions of scores on known-normal scans or images, for thresholds with a
known false-positive rate (``score/predict/evaluate --calibration``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from anomalyclip_med.cli.options import add_model_options, add_scan_options, model_from_args, scan_options_from_args
from anomalyclip_med.errors import InputError
from anomalyclip_med.io.images import IMAGE_SUFFIXES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="calibrate thresholds on known-normal scans or images",
        description="Score known-normal scans (or 2D images) with the given model and scoring options and write the "
        "distributions of map values, slice (image) scores and scan scores to --out, with the model identity, the "
        "options and the counts. Per-case parts are kept in <out>.parts/ so that --continue resumes an interrupted "
        "run or adds normals. Use the file with score/predict/evaluate --calibration (docs/calibration.md).",
    )
    p.add_argument("inputs", nargs="+", metavar="NORMAL_SCANS_OR_IMAGES",
                   help="known-normal volume files, DICOM series folders, folders of volumes, or 2D images / folders "
                   "of images; with --dataset, the dataset root")
    p.add_argument("--out", required=True, help="calibration JSON to write")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help="read the normal images of a benchmark dataset (e.g. bmad-brain: its normal-only train split) "
                   "from the root given as input")
    p.add_argument("--split", default="train", help="dataset split whose normal images are used (default train)")
    p.add_argument("--batch-size", type=int, default=8, help="slices (scans) or images per forward pass")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="reuse the parts of an earlier run made from the same files, model and options")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("scoring (scans; must match the options used with the calibration)")
    add_scan_options(g)
    g.add_argument("--series-uid", default=None, help="SeriesInstanceUID to use in a folder with several series")
    g.add_argument("--volume-index", type=int, default=None, help="volume of a 4D file (0-based)")
    add_model_options(p)
    p.set_defaults(func=run)


def _is_images(inputs: list[str]) -> bool:
    """2D images when every file given (or found directly in a folder given) is an image file."""
    files = []
    for p in map(Path, inputs):
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return bool(files) and all(f.suffix.lower() in IMAGE_SUFFIXES for f in files if not f.name.startswith("."))


def _inputs(args: argparse.Namespace) -> tuple[str, list[Path]]:
    from anomalyclip_med.io.images import list_images
    from anomalyclip_med.io.scans import expand_sources

    if args.dataset:
        from anomalyclip_med.data import load_samples

        if len(args.inputs) != 1:
            raise InputError(f"--dataset takes one dataset root, got {len(args.inputs)} inputs.")
        normals = [s.image for s in load_samples(args.dataset, args.inputs[0], split=args.split) if s.label == 0]
        if not normals:
            raise InputError(f"Dataset '{args.inputs[0]}' ({args.dataset}, split {args.split}) has no normal images.")
        return "images", normals
    if _is_images(args.inputs):
        return "images", list_images(args.inputs)
    return "scans", expand_sources(args.inputs)


def run(args: argparse.Namespace) -> int:
    from anomalyclip_med.calibration import calibrate_images, calibrate_scans

    options = scan_options_from_args(args, series_uid=args.series_uid, volume_index=args.volume_index,
                                     progress=False)
    options.intensity_preset()  # bad options fail before the weights load
    kind, sources = _inputs(args)
    model = model_from_args(args).eval()
    if model.untrained_warning:
        print(model.untrained_warning)
    progress = not args.no_progress
    if kind == "scans":
        done = calibrate_scans(model, sources, args.out, options, args.overwrite, args.resume, progress)
    else:
        done = calibrate_images(model, sources, args.out, args.overwrite, args.resume, args.batch_size, progress)
    cal = done.calibration
    print(f"calibrated on {cal.counts['cases']} normal {kind} ({done.scored} scored, {done.reused} reused, "
          f"{len(done.failed)} failed): {cal.counts['slices']} {cal.item_level}s, {cal.counts['voxels']} "
          f"{cal.map_level}s" + (f" -> {args.out}" if cal.counts["cases"] else "; nothing written"))
    return 2 if done.failed or not cal.counts["cases"] else 0
