"""``anomalyclip-med train``: learn the object-agnostic prompts on an annotated dataset."""

from __future__ import annotations

import argparse
import sys

from anomalyclip_med.cli.options import add_model_options, model_options_from_args
from anomalyclip_med.data import DATASETS
from anomalyclip_med.training.settings import TRAIN_PROMPTS, TrainData, TrainSettings

# torch, MONAI and open_clip are imported where a command runs, not here: --help and argument errors stay fast


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the prompts on an annotated dataset",
        description="Train AnomalyCLIP's prompts (the backbone stays frozen) as the reference does, writing "
        "--out/epoch_<n>.pth after every epoch (loadable with --prompts). Image-level-only data (no masks) trains "
        "the image loss only. Dataset layouts: docs/datasets.md.",
    )
    p.add_argument("--data", required=True, help="dataset root folder")
    p.add_argument("--format", required=True, choices=list(DATASETS), help="dataset layout under --data")
    p.add_argument("--split", default=TrainData.split, help="split to train on (default 'test': the paper trains on "
                   "the test split of an auxiliary dataset, e.g. MVTec AD's, then detects zero-shot elsewhere)")
    p.add_argument("--out", required=True, help="output folder for checkpoints and logs")
    p.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    p.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    p.add_argument("--lr", type=float, default=TrainSettings.lr, help="Adam learning rate (betas 0.5, 0.999)")
    p.add_argument("--seed", type=int, default=TrainSettings.seed,
                   help="seed of the data order and all random generators")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--num-workers", type=int, default=TrainSettings.num_workers, help="data loading worker processes")
    p.add_argument("--csv-log", action="store_true", default=TrainSettings.csv_log,
                   help="write --out/train_log.csv with the per-epoch losses")
    p.add_argument("--tensorboard", action="store_true", default=TrainSettings.tensorboard,
                   help="write TensorBoard scalars to --out/tensorboard")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=TrainSettings.progress,
                   help="no progress bars")
    add_model_options(p, prompts=TRAIN_PROMPTS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, num_workers=args.num_workers,
        csv_log=args.csv_log, tensorboard=args.tensorboard, progress=args.progress and sys.stderr.isatty(),
    )
    data = TrainData(root=args.data, format=args.format, split=args.split)
    model = model_options_from_args(args)
    from anomalyclip_med.api import train

    result = train(data, args.out, settings, model, resume=args.resume)
    if result is None:  # a torchrun process other than rank 0
        return 0
    if result.history:
        last = result.history[-1]
        print(f"epoch {last['epoch']}: total loss {last['total']:.4f} (focal {last['focal']:.4f}, dice "
              f"{last['dice']:.4f}, image {last['image']:.4f})")
    print(f"prompts: {result.checkpoint}")
    return 0
