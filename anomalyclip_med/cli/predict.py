"""``anomalyclip-med predict``: anomaly maps and scores for 2D images (PNG/JPEG/TIFF)."""

from __future__ import annotations

import argparse
import os

from anomalyclip_med.cli.options import (
    add_batch_options,
    add_calibration_options,
    add_model_options,
    batch_options_from_args,
    calibration_options_from_args,
    existing_inputs,
    model_options_from_args,
)
from anomalyclip_med.inference.options import OutputOptions

# torch, MONAI and open_clip are imported where a command runs, not here: --help and argument errors stay fast


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="score 2D images",
        description="Write <name>_anomaly_map.npy (float32 in [0,1], the image's size), <name>_overlay.png and "
        "<name>_scores.json per image, and scores.csv listing every image, into --out. Folders are walked "
        "(sub-folders too) and their layout is kept below --out. An image that fails is reported and the others go "
        "on (exit 2 when any failed); --continue resumes an interrupted run.",
    )
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    add_batch_options(p)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=OutputOptions.progress,
                   help="no progress bar")
    add_calibration_options(p)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # every input is found and every option checked before the run's modules import
    inputs = existing_inputs(args.inputs)
    options = model_options_from_args(args), batch_options_from_args(args), calibration_options_from_args(args)
    from anomalyclip_med.api import predict

    summary = predict(inputs, args.out, *options, progress=args.progress)
    flagged = [r for r in summary.results if r.ok and r.record.get("flag")]
    if options[2].calibration:
        print(f"{len(flagged)} of {len(summary.results)} images flagged at false-positive rate "
              f"{options[2].target_fpr}")
    print(f"wrote {summary.counts['scored'] + summary.counts['reused']} anomaly maps and scores.csv to {args.out}")
    return summary.exit_status if int(os.environ.get("RANK", "0")) == 0 else 0
