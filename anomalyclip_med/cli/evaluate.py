"""
``anomalyclip-med evaluate``: metrics on a benchmark dataset (per-class tables as in the paper) or on a hospital
cohort manifest (per-case metrics, summary, report and figures). Runs as one process or under ``torchrun``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from anomalyclip_med.cli.options import (
    add_batch_options,
    add_model_options,
    add_scan_options,
    model_from_args,
    resolve_device,
    scan_options_from_args,
)
from anomalyclip_med.data import DATASETS, load_samples
from anomalyclip_med.evaluation.benchmark import dataset_metrics, evaluate_samples, subsample, write_dataset_report
from anomalyclip_med.errors import AnomalyCLIPMedError, OutputExistsError, OutputLockedError
from anomalyclip_med.evaluation.cohort import cohort_runner, evaluate_cohort
from anomalyclip_med.evaluation.cohort_report import write_cohort_report
from anomalyclip_med.evaluation.manifest import read_manifest
from anomalyclip_med.io.writers import write_json
from anomalyclip_med.utils.atomic import remove_stale_temporaries
from anomalyclip_med.utils.distributed import DistributedContext
from anomalyclip_med.utils.lock import FolderLock
from anomalyclip_med.utils.paths import check_writable_dir

MANIFEST = "manifest"
RUN_JSON = "run.json"



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
    add_batch_options(p, resume_default=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0, help="torch seed before building the model (makes a random "
                   "test backbone the same in every process)")
    g = p.add_argument_group("benchmark datasets")
    g.add_argument("--split", default="test", help="dataset split (default test, as in the paper)")
    g.add_argument("--limit", type=int, default=None, help="at most N images per class, evenly spaced over the "
                   "class's sorted list (quick checks)")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    g = p.add_argument_group("cohort manifest")
    g.add_argument("--datalist-key", default="testing", help="list to read from a MONAI datalist JSON")
    add_scan_options(g)
    g.add_argument("--montage", type=int, default=6, help="worst misses shown in worst_misses.png")
    add_model_options(p)
    p.set_defaults(func=run)


def _benchmark(args, model, ctx: DistributedContext) -> dict:
    samples = subsample(load_samples(args.dataset, args.root, split=args.split), args.limit)
    progress = ctx.is_main and sys.stderr.isatty() and not args.no_progress
    images, pixels = evaluate_samples(model, samples, ctx, args.batch_size, args.num_workers, progress)
    info = {"n_images": len(images)}
    if ctx.is_main:
        per_class, mean = dataset_metrics(images, pixels)
        extra = {"dataset": args.dataset, "root": str(args.root), "split": args.split, "limit": args.limit}
        paths = write_dataset_report(images, per_class, mean, args.out, args.dataset, extra)
        print(Path(paths["metrics_md"]).read_text(encoding="utf-8"))
    return info


def _benchmark_outputs(args) -> list[Path]:
    out = Path(args.out)
    return [*(out / f"{args.dataset}_metrics.{ext}" for ext in ("md", "csv", "json")),
            out / f"{args.dataset}_images.csv", out / RUN_JSON]


def _prepare(args):
    """Everything checked before the weights load: the manifest and its cases (cohort), or existing outputs
    (benchmark, refused without --overwrite like every other command's)."""
    if args.dataset != MANIFEST:
        existing = [p for p in _benchmark_outputs(args) if p.exists()]
        if existing and not args.overwrite:
            raise OutputExistsError(f"Output '{existing[0]}' exists; pass --overwrite to replace the benchmark "
                                    "report.")
        check_writable_dir(args.out)
        return None
    cases = read_manifest(args.root, args.datalist_key, args.case_name)
    runner = cohort_runner(cases, args.out, scan_options_from_args(args, progress=False), args.overwrite)
    runner.preflight()
    return cases, runner


def _cohort(args, model, ctx: DistributedContext, prepared) -> dict:
    cases, runner = prepared
    progress = ctx.is_main and not args.no_progress
    records, counts = evaluate_cohort(model, cases, runner, ctx, progress)
    if ctx.is_main:
        paths = write_cohort_report(records, args.out, args.threshold, args.montage)
        print(Path(paths["report_md"]).read_text(encoding="utf-8").split("## Scan level")[0].strip())
        print(f"cases: {counts}; report: {paths['report_md']}")
    return {"cases": counts}


def _lock(out: str, ctx: DistributedContext) -> FolderLock | None:
    """Rank 0 locks the output folder (every rank learns whether it could) and removes stale temporaries."""
    lock, problem = None, None
    if ctx.is_main:
        try:
            lock = FolderLock(out).acquire()
            remove_stale_temporaries(out)
        except AnomalyCLIPMedError as err:
            problem = str(err)
    problems = [p for p in ctx.gather(problem) if p]
    if problems:
        raise OutputLockedError(problems[0])
    return lock


def run(args: argparse.Namespace) -> int:
    started = time.time()
    prepared = _prepare(args)
    created = not Path(args.out).exists()
    with DistributedContext.from_env(resolve_device(args.device)) as ctx:
        lock = _lock(args.out, ctx)
        try:
            args.device = ctx.device
            model = model_from_args(args).eval()
            info = _cohort(args, model, ctx, prepared) if prepared else _benchmark(args, model, ctx)
            if ctx.is_main:
                write_json({"command": "evaluate", "dataset": args.dataset, "root": str(args.root),
                            "world_size": ctx.world_size, "seconds": round(time.time() - started, 2), **info,
                            "model": model.identity()}, Path(args.out) / RUN_JSON)
                if model.untrained_warning:
                    print(model.untrained_warning)
            ctx.barrier()
        finally:
            if lock is not None:
                lock.release()
                if created:
                    with contextlib.suppress(OSError):
                        Path(args.out).rmdir()  # a run that failed before writing anything leaves no folder
    return 2 if info.get("cases", {}).get("failed") else 0
