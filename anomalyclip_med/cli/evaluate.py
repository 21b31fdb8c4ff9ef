"""
``anomalyclip-med evaluate``: metrics on a benchmark dataset (per-class tables as in the paper) or on a hospital
cohort manifest (per-case metrics, summary, report and figures). Runs as one process or under ``torchrun``.
"""

from __future__ import annotations

import argparse
import os

from anomalyclip_med.cli.options import (
    add_batch_options,
    add_calibration_options,
    add_model_options,
    add_scan_options,
    calibration_options_from_args,
    existing_inputs,
    model_options_from_args,
    scoring_options_from_args,
)
from anomalyclip_med.data import DATASETS
from anomalyclip_med.evaluation.options import COHORT_RESUME, MANIFEST, BenchmarkOptions, CohortOptions
from anomalyclip_med.evaluation.protocols import METRIC_SETS
from anomalyclip_med.inference.options import OutputOptions
from anomalyclip_med.network.factory import ModelOptions

# torch, MONAI and open_clip are imported where a command runs, not here: --help and argument errors stay fast


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
    p.add_argument("--batch-size", type=int, default=BenchmarkOptions.batch_size,
                   help="images (benchmark) or slices (manifest) per batch")
    add_batch_options(p, resume=COHORT_RESUME)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=OutputOptions.progress,
                   help="no progress bar")
    p.add_argument("--seed", type=int, default=ModelOptions.seed, help="torch seed before building the model (makes "
                   "a random test backbone the same in every process)")
    g = p.add_argument_group("benchmark datasets")
    g.add_argument("--split", default=BenchmarkOptions.split, help="dataset split (default test, as in the paper)")
    g.add_argument("--limit", type=int, default=BenchmarkOptions.limit, help="at most N images per class, evenly "
                   "spaced over the class's sorted list (quick checks)")
    g.add_argument("--num-workers", type=int, default=BenchmarkOptions.num_workers, help="DataLoader worker processes")
    g.add_argument("--metric-set", default=BenchmarkOptions.metric_set, choices=sorted(METRIC_SETS),
                   help="table columns of a published protocol: anomalyclip, bmad (image AUROC, pixel AUROC, AUPRO) "
                   "or medianomaly (image AUROC/AP, pixel AUROC/AP, best Dice); default: the dataset's own")
    g = p.add_argument_group("cohort manifest")
    g.add_argument("--datalist-key", default=CohortOptions.datalist_key,
                   help="list to read from a MONAI datalist JSON")
    add_scan_options(g)
    g.add_argument("--montage", type=int, default=CohortOptions.montage, help="worst misses shown in worst_misses.png")
    add_calibration_options(p)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # every input is found and every option checked (by its dataclass) before the run's modules import
    existing_inputs([args.root])
    # --batch-size counts images for a benchmark and slices for a manifest; each options class takes it
    options = dict(
        benchmark=BenchmarkOptions(split=args.split, limit=args.limit, batch_size=args.batch_size,
                                   num_workers=args.num_workers, metric_set=args.metric_set,
                                   overwrite=args.overwrite),
        cohort=CohortOptions(datalist_key=args.datalist_key, montage=args.montage, overwrite=args.overwrite,
                             case_name=args.case_name),
        scoring=scoring_options_from_args(args), progress=args.progress,
        calibration=calibration_options_from_args(args),
    )
    model = model_options_from_args(args)
    from anomalyclip_med.api import evaluate

    summary = evaluate(args.dataset, args.root, args.out, model, **options)
    return summary.exit_status if int(os.environ.get("RANK", "0")) == 0 else 0  # some cases failed alone
