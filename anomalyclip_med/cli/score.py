"""``anomalyclip-med score``: anomaly volumes for CT/MRI scans (NIfTI, NRRD, MetaImage, DICOM series)."""

from __future__ import annotations

import argparse
import os

from anomalyclip_med.cli.options import (
    add_batch_options,
    add_calibration_options,
    add_model_options,
    add_scan_options,
    batch_options_from_args,
    calibration_options_from_args,
    existing_inputs,
    model_options_from_args,
    scoring_options_from_args,
)
from anomalyclip_med.inference.options import LoadingOptions, OutputOptions, ScoringOptions

# torch, MONAI and open_clip are imported where a command runs, not here: --help and argument errors stay fast


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score CT/MRI scans slice by slice",
        description="Write <case>_anomaly_map.nii.gz (float32 0..1), <case>_anomaly_seg.nii.gz (uint8 labelmap), "
        "<case>_scores.json and <case>_overlay.png per scan into --out, in the scan's own geometry. Folders are "
        "walked (sub-folders too) and their layout is kept below --out. A case that fails is reported and the "
        "others go on (exit 2 when any failed); --continue resumes an interrupted run.",
    )
    p.add_argument("inputs", nargs="+", metavar="SCAN_OR_FOLDER",
                   help="volume files (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd), DICOM series folders, or folders "
                   "holding them (walked with their sub-folders)")
    p.add_argument("--out", required=True, help="output folder")
    g = p.add_argument_group("scoring")
    add_scan_options(g)
    g.add_argument("--batch-size", type=int, default=ScoringOptions.batch_size,
                   help=f"slices per forward pass (default {ScoringOptions.batch_size})")
    g.add_argument("--series-uid", default=LoadingOptions.series_uid,
                   help="SeriesInstanceUID to score in a folder with several series")
    g.add_argument("--volume-index", type=int, default=LoadingOptions.volume_index,
                   help="volume of a 4D file to score (0-based)")
    g.add_argument("--dicom-seg", action="store_true", default=OutputOptions.dicom_seg,
                   help="also write <case>_anomaly_seg.dcm, a DICOM SEG referencing the series (DICOM series "
                   "inputs only; others are refused before scoring starts)")
    add_batch_options(g)
    g.add_argument("--no-progress", dest="progress", action="store_false", default=OutputOptions.progress,
                   help="no progress bar")
    add_calibration_options(p)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # every input is found and every option checked (by its dataclass) before the run's modules import
    inputs = existing_inputs(args.inputs)
    options = (model_options_from_args(args), scoring_options_from_args(args),
               LoadingOptions(series_uid=args.series_uid, volume_index=args.volume_index),
               OutputOptions(dicom_seg=args.dicom_seg, progress=args.progress), batch_options_from_args(args),
               calibration_options_from_args(args))
    from anomalyclip_med.api import score

    summary = score(inputs, args.out, *options)
    # under torchrun rank 0 alone reports failed cases by its status: torchrun stops the other ranks as soon as one
    # exits non-zero
    return summary.exit_status if int(os.environ.get("RANK", "0")) == 0 else 0
