"""``anomalyclip-med train``: learn the object-agnostic prompts on an annotated dataset."""

from __future__ import annotations

import argparse
import sys
import warnings

from anomalyclip_med.cli.options import add_model_options, model_from_args, resolve_device
from anomalyclip_med.data import DATASETS, load_samples
from anomalyclip_med.data.dataset import AnomalyDataset, verify_samples
from anomalyclip_med.training.loop import TrainSettings, check_out_dir, train
from anomalyclip_med.training.optim import LEARNING_RATE
from anomalyclip_med.utils.distributed import DistributedContext
from anomalyclip_med.weights import UNTRAINED


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
    p.add_argument("--split", default="test", help="split to train on (default 'test': the paper trains on the "
                   "test split of an auxiliary dataset, e.g. MVTec AD's, then detects zero-shot elsewhere)")
    p.add_argument("--out", required=True, help="output folder for checkpoints and logs")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=LEARNING_RATE, help="Adam learning rate (betas 0.5, 0.999)")
    p.add_argument("--seed", type=int, default=111, help="seed of the data order and all random generators")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--num-workers", type=int, default=0, help="data loading worker processes")
    p.add_argument("--csv-log", action="store_true", help="write --out/train_log.csv with the per-epoch losses")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard scalars to --out/tensorboard")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_options(p, prompts=UNTRAINED)  # the paper trains from fresh prompts; a name or file fine-tunes
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    progress = not args.no_progress and sys.stderr.isatty()
    settings = TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, num_workers=args.num_workers,
        csv_log=args.csv_log, tensorboard=args.tensorboard, progress=progress,
    )
    # every check on the inputs and the output folder comes before the (slow) model loading
    samples = load_samples(args.format, args.data, args.split)
    verify_samples(samples, progress=progress)
    check_out_dir(args.out, args.resume, settings)
    with DistributedContext.from_env(resolve_device(args.device)) as ctx:
        args.device = ctx.device
        with warnings.catch_warnings():
            # fresh prompts are where training starts, not a result to warn about
            warnings.filterwarnings("ignore", message=".*UNTRAINED prompts")
            model = model_from_args(args)
        if model.backbone_info.random_weights and ctx.is_main:
            print("WARNING: training on a backbone with RANDOM weights - the prompts will be meaningless for real use.")
        dataset = AnomalyDataset(samples, model.config.image_size, model.mean, model.std, verify=False)
        n_anomalous = sum(s.label for s in samples)
        if ctx.is_main:
            print(f"training on {len(samples)} images ({n_anomalous} anomalous) from '{args.data}' ({args.format}, "
                  f"{args.split}) in {ctx.world_size} process(es); "
                  f"{'pixel and image losses' if dataset.has_masks else 'image loss only (no masks)'}")
        result = train(model, dataset, args.out, settings, resume=args.resume,
                       run_info={"format": args.format, "root": str(args.data), "split": args.split}, ctx=ctx)
    if not ctx.is_main:
        return 0
    if result.history:
        last = result.history[-1]
        print(f"epoch {last['epoch']}: total loss {last['total']:.4f} (focal {last['focal']:.4f}, dice "
              f"{last['dice']:.4f}, image {last['image']:.4f})")
    print(f"prompts: {result.checkpoint}")
    return 0
