"""``anomalyclip-med predict``: anomaly maps and scores for 2D images (PNG/JPEG/TIFF)."""

from __future__ import annotations

import argparse

from anomalyclip_med.cli.options import (
    add_calibration_options,
    add_model_options,
    calibration_options_from_args,
    model_options_from_args,
)
from anomalyclip_med.inference.images2d import PREDICT_BATCH_SIZE, predict_images
from anomalyclip_med.io.images import list_images
from anomalyclip_med.network.factory import create_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="score 2D images",
        description="Write <name>_anomaly_map.npy (float32 in [0,1], the image's size) and <name>_overlay.png per "
        "image, and scores.csv, into --out.",
    )
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=PREDICT_BATCH_SIZE,
                   help=f"images per forward pass (default {PREDICT_BATCH_SIZE})")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_calibration_options(p)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    images = list_images(args.inputs)  # fail on a bad path before loading any weights
    calibration = calibration_options_from_args(args)
    calibration.check("images")
    model = create_model(model_options_from_args(args))
    decision = calibration.decision("images", model.identity())
    if model.untrained_warning:
        print(model.untrained_warning)
    results = predict_images(model, images, args.out, batch_size=args.batch_size, overwrite=args.overwrite,
                             decision=decision)
    if decision is not None:
        flagged = sum(r.calibrated["flag"] for r in results)
        print(f"{flagged} of {len(results)} images flagged at false-positive rate {decision.target_fpr} "
              f"(image threshold {decision.thresholds['image']}, pixel threshold {decision.thresholds['pixel']})")
    print(f"wrote {len(results)} anomaly maps and scores.csv to {args.out}")
    if model.untrained_warning:
        print(model.untrained_warning)
    return 0
