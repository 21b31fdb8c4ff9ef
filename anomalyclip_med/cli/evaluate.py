"""
``anomalyclip-med evaluate``: metrics on a benchmark dataset (per-class tables as in the paper) or on a hospital
cohort manifest (per-case metrics, summary, report and figures). Runs as one process or under ``torchrun``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from anomalyclip_med.cli.options import (
    add_calibration_options,
    add_model_options,
    add_scan_options,
    calibration_options_from_args,
    model_from_args,
    resolve_device,
    scan_options_from_args,
)
from anomalyclip_med.data import DATASETS, load_samples
from anomalyclip_med.errors import InputError
from anomalyclip_med.evaluation.benchmark import dataset_metrics, evaluate_samples, subsample, write_dataset_report
from anomalyclip_med.evaluation.cohort import evaluate_cohort
from anomalyclip_med.evaluation.cohort_report import write_cohort_report
from anomalyclip_med.evaluation.manifest import read_manifest
from anomalyclip_med.evaluation.protocols import METRIC_SETS
from anomalyclip_med.io.writers import write_json
from anomalyclip_med.utils.distributed import DistributedContext

MANIFEST = "manifest"



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics on a benchmark dataset or a cohort manifest",
        description="Benchmark: per-class image AUROC/AP/max-F1 and pixel AUROC/AP/AUPRO with their mean, as "
        "<dataset>_metrics.{md,csv,json}, and every image's score in <dataset>_images.csv. Manifest: scores every "
        "scan (resuming finished cases), writes per-case metrics, cohort_summary.{json,csv}, cohort_cases.csv, "
        "cohort_report.md and PNG figures. Under 'torchrun --nproc_per_node N -m anomalyclip_med evaluate ...' the "
        "images or cases are shared out over the processes; rank 0 writes the same report as one process.",
    )
    p.add_argument("--dataset", required=True, choices=[*DATASETS, MANIFEST],
                   help="dataset layout of ROOT_OR_FILE (trees in docs/evaluation.md), or 'manifest' for a cohort CSV / "
                   "MONAI datalist JSON")
    p.add_argument("root", metavar="ROOT_OR_FILE", help="dataset root folder, or the manifest file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=8, help="images (benchmark) or slices (manifest) per batch")
    p.add_argument("--seed", type=int, default=0, help="torch seed before building the model (makes a random "
                   "test backbone the same in every process)")
    g = p.add_argument_group("benchmark datasets")
    g.add_argument("--split", default="test", help="dataset split (default test, as in the paper)")
    g.add_argument("--limit", type=int, default=None, help="at most N images per class, evenly spaced over the "
                   "class's sorted list (quick checks)")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument("--metric-set", default=None, choices=sorted(METRIC_SETS),
                   help="table columns of a published protocol: anomalyclip, bmad (image AUROC, pixel AUROC, AUPRO) "
                   "or medianomaly (image AUROC/AP, pixel AUROC/AP, best Dice); default: the dataset's own")
    g = p.add_argument_group("cohort manifest")
    g.add_argument("--datalist-key", default="testing", help="list to read from a MONAI datalist JSON")
    add_scan_options(g)
    g.add_argument("--montage", type=int, default=6, help="worst misses shown in worst_misses.png")
    g.add_argument("--overwrite", action="store_true", help="recompute cases that finished in an earlier run")
    add_calibration_options(p)
    add_model_options(p)
    p.set_defaults(func=run)


def _benchmark(args, model, ctx: DistributedContext) -> dict:
    samples = subsample(load_samples(args.dataset, args.root, split=args.split), args.limit)
    progress = ctx.is_main and sys.stderr.isatty()
    decision = calibration_options_from_args(args).decision("images", model.identity())
    images, pixels = evaluate_samples(model, samples, ctx, args.batch_size, args.num_workers, progress)
    info = {"n_images": len(images)}
    if ctx.is_main:
        per_class, mean = dataset_metrics(images, pixels)
        extra = {"dataset": args.dataset, "root": str(args.root), "split": args.split, "limit": args.limit}
        paths = write_dataset_report(images, per_class, mean, args.out, args.dataset, extra, args.metric_set,
                                     decision)
        print(Path(paths["metrics_md"]).read_text(encoding="utf-8"))
    return info


def _cohort(args, model, ctx: DistributedContext) -> dict:
    cases = read_manifest(args.root, args.datalist_key)
    options = scan_options_from_args(args, overwrite=args.overwrite, progress=False)
    decision = calibration_options_from_args(args).decision("scans", model.identity(), options)
    if decision is not None:
        options = decision.scoring_options(options)
    progress = ctx.is_main and sys.stderr.isatty()
    records, counts = evaluate_cohort(model, cases, args.out, options, ctx, progress, decision)
    if ctx.is_main:
        paths = write_cohort_report(records, args.out, options.threshold, args.montage, decision)
        print(Path(paths["report_md"]).read_text(encoding="utf-8").split("## Scan level")[0].strip())
        print(f"cases: {counts}; report: {paths['report_md']}")
    return {"cases": counts}


def run(args: argparse.Namespace) -> int:
    started = time.time()
    if calibration_options_from_args(args).map_output == "calibrated":
        raise InputError("evaluate computes its voxel metrics from the probability maps: leave out --map calibrated "
                         "(write calibrated maps with 'score --map calibrated').")
    with DistributedContext.from_env(resolve_device(args.device)) as ctx:
        args.device = ctx.device
        model = model_from_args(args).eval()
        info = (_cohort if args.dataset == MANIFEST else _benchmark)(args, model, ctx)
        if ctx.is_main:
            write_json({"command": "evaluate", "dataset": args.dataset, "root": str(args.root),
                        "world_size": ctx.world_size, "seconds": round(time.time() - started, 2), **info,
                        "model": model.identity()}, Path(args.out) / "run.json")
            if model.untrained_warning:
                print(model.untrained_warning)
        ctx.barrier()
    return 0
