"""``anomalyclip-med calibrate``: the distributions of scores on known-normal scans or images, for thresholds with a
known false-positive rate (``score/predict/evaluate --calibration``)."""

from __future__ import annotations

import argparse

from anomalyclip_med.cli.options import (
    add_model_options,
    add_scan_options,
    existing_inputs,
    model_options_from_args,
    scoring_options_from_args,
)
from anomalyclip_med.inference.options import BatchOptions, LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.io.cases import CASE_NAMING
from anomalyclip_med.calibration.calibration import CalibrateOptions


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
    p.add_argument("--dataset", default=CalibrateOptions.dataset, metavar="NAME",
                   help="read the normal images of a benchmark dataset layout from the root given (e.g. bmad-brain: "
                   "its normal-only train split)")
    p.add_argument("--split", default=CalibrateOptions.split,
                   help=f"dataset split whose normal images are used (default {CalibrateOptions.split})")
    p.add_argument("--continue", dest="resume", action="store_true", default=CalibrateOptions.resume,
                   help="reuse the parts of an earlier run made from the same files, model and options")
    p.add_argument("--overwrite", action="store_true", default=CalibrateOptions.overwrite,
                   help="replace an existing --out")
    p.add_argument("--case-name", default=BatchOptions.case_name, choices=CASE_NAMING,
                   help="how cases are named in the parts folder (as score's --case-name)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=OutputOptions.progress,
                   help="no progress bar")
    g = p.add_argument_group("scoring (scans; score/evaluate must use the same with this calibration)")
    add_scan_options(g)
    g.add_argument("--batch-size", type=int, default=ScoringOptions.batch_size,
                   help=f"slices (scans) or images per forward pass (default {ScoringOptions.batch_size})")
    g.add_argument("--series-uid", default=LoadingOptions.series_uid,
                   help="SeriesInstanceUID to use in a folder with several series")
    g.add_argument("--volume-index", type=int, default=LoadingOptions.volume_index,
                   help="volume of a 4D file (0-based)")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # every input is found and every option checked (by its dataclass) before the run's modules import
    inputs = existing_inputs(args.inputs)
    scoring = scoring_options_from_args(args)
    loading = LoadingOptions(series_uid=args.series_uid, volume_index=args.volume_index)
    options = CalibrateOptions(dataset=args.dataset, split=args.split, resume=args.resume, overwrite=args.overwrite,
                               progress=args.progress)
    model = model_options_from_args(args)
    batch = BatchOptions(case_name=args.case_name)
    from anomalyclip_med.api import calibrate

    done = calibrate(inputs, args.out, model, scoring, loading, options, batch)
    if done is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    cal, counts = done.calibration, done.summary.counts
    print(f"calibrated on {cal.counts['cases']} normal {cal.kind} ({counts['scored']} scored, {counts['reused']} "
          f"reused, {counts['failed']} failed): {cal.counts['slices']} {cal.item_level}s, {cal.counts['voxels']} "
          f"{cal.map_level}s" + (f" -> {args.out}" if cal.counts["cases"] else "; nothing written"))
    return 2 if counts["failed"] or not cal.counts["cases"] else 0
