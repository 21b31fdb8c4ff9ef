"""
The evaluation runs behind ``anomalyclip-med evaluate`` and the bundle's ``evaluate.json``: a benchmark dataset
(:func:`run_benchmark`) or a hospital cohort manifest (:func:`run_cohort`), each from typed options, in one process
or under ``torchrun`` (the images or cases are shared out; rank 0 writes the report and ``run.json``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from anomalyclip_med.calibration.calibration import CalibrationOptions
from anomalyclip_med.data import DATASETS, load_samples
from anomalyclip_med.errors import AnomalyCLIPMedError, InputError, OutputLockedError
from anomalyclip_med.evaluation.benchmark import dataset_metrics, evaluate_samples, subsample, write_dataset_report
from anomalyclip_med.evaluation.cohort import cohort_runner, evaluate_cohort
from anomalyclip_med.evaluation.cohort_report import write_cohort_report
from anomalyclip_med.evaluation.manifest import read_manifest
from anomalyclip_med.evaluation.options import MANIFEST, BenchmarkOptions, CohortOptions
from anomalyclip_med.inference.options import OutputOptions, ScoringOptions
from anomalyclip_med.io.writers import write_json
from anomalyclip_med.network.factory import ModelOptions, create_model, resolve_device
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.utils.atomic import remove_stale_temporaries
from anomalyclip_med.utils.distributed import DistributedContext
from anomalyclip_med.utils.lock import FolderLock
from anomalyclip_med.utils.paths import check_outputs

__all__ = ["RUN_INFO", "run_benchmark", "run_cohort", "evaluate"]

RUN_INFO = "run.json"


def _run(
    kind: str, root: str | os.PathLike, out_dir: str | os.PathLike, model_options: ModelOptions,
    body: Callable[[AnomalyCLIP, DistributedContext], dict[str, Any]],
) -> dict[str, Any]:
    started = time.time()
    created = not Path(out_dir).exists()
    with DistributedContext.from_env(resolve_device(model_options.device)) as ctx:
        lock, refused = None, None
        if ctx.is_main:  # one run per output folder: rank 0 holds it for the job
            try:
                lock = FolderLock(out_dir).acquire()
                remove_stale_temporaries(out_dir)
            except AnomalyCLIPMedError as err:
                refused = err
        if any(ctx.gather(refused is not None)):
            if refused is not None:
                raise refused
            raise OutputLockedError(f"Output folder '{out_dir}' is in use by another run.")
        try:
            model = create_model(replace(model_options, device=str(ctx.device)))
            info = body(model, ctx)
            run = {"command": "evaluate", "dataset": kind, "root": str(root), "world_size": ctx.world_size,
                   "seconds": round(time.time() - started, 2), **info, "model": model.identity()}
            if ctx.is_main:
                write_json(run, Path(out_dir) / RUN_INFO)
                if model.untrained_warning:
                    print(model.untrained_warning)
            ctx.barrier()
        finally:
            if lock is not None:
                lock.release()
                if created:
                    with contextlib.suppress(OSError):
                        Path(out_dir).rmdir()  # a run that failed before writing anything leaves no folder
    return run


def run_benchmark(
    dataset: str,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    benchmark: BenchmarkOptions | None = None,
    model: ModelOptions | None = None,
    progress: bool | None = None,
    calibration: CalibrationOptions | None = None,
) -> dict[str, Any]:
    """
    Per-class image AUROC/AP/max-F1 and pixel AUROC/AP/AUPRO with their mean on a benchmark dataset, written as
    ``<dataset>_metrics.{md,csv,json}`` and ``<dataset>_images.csv`` (every image's score) into ``out_dir``, with
    ``run.json`` (what ran, how long, the model's identity); the metrics table is printed.

    Args:
        dataset: the dataset's layout, one of :data:`anomalyclip_med.data.DATASETS`.
        root: the dataset's root folder.
        out_dir: output folder.
        benchmark: split, subsampling and batching (defaults: :class:`BenchmarkOptions`).
        model: the network to build (defaults: :class:`ModelOptions`).
        progress: show a progress bar [None: when stderr is a terminal].
        calibration: a calibration on normal images of this model: every image gets its p-value and flag and the
            report the operating point at the calibrated image threshold (sensitivity and false-positive rate with
            exact intervals).

    Returns:
        the ``run.json`` content.
    """
    benchmark, model_options = benchmark or BenchmarkOptions(), model or ModelOptions()
    if dataset not in DATASETS:
        raise InputError(f"Unknown dataset layout {dataset!r}: one of {', '.join(DATASETS)} (or {MANIFEST!r}).")
    samples = subsample(load_samples(dataset, root, split=benchmark.split), benchmark.limit)
    calibration = calibration or CalibrationOptions()
    calibration.check("images")
    out = Path(out_dir)
    report = [*(out / f"{dataset}_metrics.{ext}" for ext in ("md", "csv", "json")), out / f"{dataset}_images.csv",
              out / RUN_INFO]
    check_outputs(out_dir, report, [root], benchmark.overwrite)

    def body(net: AnomalyCLIP, ctx: DistributedContext) -> dict[str, Any]:
        decision = calibration.decision("images", net.identity())
        bar = ctx.is_main and (sys.stderr.isatty() if progress is None else progress)
        images, pixels = evaluate_samples(net, samples, ctx, benchmark.batch_size, benchmark.num_workers, bar)
        if ctx.is_main:
            per_class, mean = dataset_metrics(images, pixels)
            extra = {"dataset": dataset, "root": str(root), "split": benchmark.split,
                     "limit": benchmark.limit}
            paths = write_dataset_report(images, per_class, mean, out_dir, dataset, extra, benchmark.metric_set,
                                         decision)
            print(Path(paths["metrics_md"]).read_text(encoding="utf-8"))
        return {"n_images": len(images)}

    return _run(dataset, root, out_dir, model_options, body)


def run_cohort(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    cohort: CohortOptions | None = None,
    scoring: ScoringOptions | None = None,
    model: ModelOptions | None = None,
    progress: bool | None = None,
    calibration: CalibrationOptions | None = None,
) -> dict[str, Any]:
    """
    Score every scan of a cohort manifest (CSV or MONAI datalist JSON; finished cases are reused), compute the
    per-case metrics and write ``cohort_summary.{json,csv}``, ``cohort_cases.csv``, ``cohort_report.md``, the
    figures and ``run.json`` into ``out_dir``; the summary is printed.

    Args:
        manifest: the manifest file.
        out_dir: output folder.
        cohort: manifest key, report montage and whether to recompute finished cases.
        scoring: how each scan is scored (defaults: :class:`ScoringOptions`).
        model: the network to build (defaults: :class:`ModelOptions`).
        progress: show a progress bar over cases [None: when stderr is a terminal].
        calibration: a calibration on normal scans of this model and these scoring options: the labelmaps (and
            Dice/IoU) use its voxel threshold, every case gets its scan p-value and flag, and the report the
            operating point at the calibrated scan threshold. Its map must stay the probability map (voxel metrics).

    Returns:
        the ``run.json`` content (with the counts of scored, rescored, reused and failed cases).
    """
    cohort, scoring, model_options = cohort or CohortOptions(), scoring or ScoringOptions(), model or ModelOptions()
    calibration = calibration or CalibrationOptions()
    if calibration.map_output != "probability":
        raise InputError("evaluate computes its voxel metrics from the probability maps: leave out --map calibrated "
                         "(write calibrated maps with 'score --map calibrated').")
    calibration.check("scans", scoring)
    cases = read_manifest(manifest, cohort.datalist_key, cohort.case_name)
    runner = cohort_runner(cases, out_dir, scoring, OutputOptions(overwrite=cohort.overwrite, progress=False))
    runner.preflight()  # before any weights load

    def body(net: AnomalyCLIP, ctx: DistributedContext) -> dict[str, Any]:
        decision = calibration.decision("scans", net.identity(), scoring)
        scored_with = scoring if decision is None else decision.scoring_options(scoring)
        bar = ctx.is_main and (sys.stderr.isatty() if progress is None else progress)
        records, counts = evaluate_cohort(net, cases, runner, ctx, bar, decision)
        if ctx.is_main:
            paths = write_cohort_report(records, out_dir, scored_with.threshold, cohort.montage, decision)
            print(Path(paths["report_md"]).read_text(encoding="utf-8").split("## Scan level")[0].strip())
            print(f"cases: {counts}; report: {paths['report_md']}")
        return {"cases": counts}

    return _run(MANIFEST, manifest, out_dir, model_options, body)


def evaluate(
    dataset: str,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    model: ModelOptions | None = None,
    benchmark: BenchmarkOptions | None = None,
    cohort: CohortOptions | None = None,
    scoring: ScoringOptions | None = None,
    calibration: CalibrationOptions | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """
    :func:`run_cohort` when ``dataset`` is ``"manifest"`` (``root`` is then the manifest file, scored with
    ``cohort`` and ``scoring``), else :func:`run_benchmark` on the dataset layout ``dataset`` (with ``benchmark``);
    ``calibration`` adds the operating point at calibrated thresholds to either; ``progress``: a progress bar
    [None: when stderr is a terminal].
    """
    if dataset == MANIFEST:
        return run_cohort(root, out_dir, cohort, scoring, model, progress, calibration=calibration)
    return run_benchmark(dataset, root, out_dir, benchmark, model, progress, calibration=calibration)
