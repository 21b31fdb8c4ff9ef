"""
The typed API: one function per job, each taking the option dataclasses and returning a typed summary. The command
line (the ``cli`` package: argparse -> options -> one call here) and the MONAI bundle (``anomalyclip_med.bundle``)
are two faces over these functions, so they cannot disagree about a run.

Every batch job runs on the one run engine (:class:`anomalyclip_med.runs.engine.CaseRunner`); the network is
built by the one constructor (:func:`build_model`, i.e. :func:`anomalyclip_med.network.factory.create_model`) on
the device the run's session resolved; the labelmap threshold and a calibration's p-values and flags come from one
decision (:meth:`anomalyclip_med.calibration.CalibrationOptions.decision`).

Library calls raise the package's :class:`anomalyclip_med.errors.InputError` family; only the command line and
the bundle's process entry turn it into one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from anomalyclip_med.calibration.calibration import CalibrateOptions, CalibrationOptions
from anomalyclip_med.errors import InputError
from anomalyclip_med.evaluation.options import MANIFEST, BenchmarkOptions, CohortOptions
from anomalyclip_med.inference.options import BatchOptions, LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.network.factory import ModelOptions
from anomalyclip_med.runs.engine import (
    DEFAULT_PREFETCH,
    CaseResult,
    CaseRunner,
    RunSession,
    RunSummary,
    check_outputs,
    load_itk_readers,
)

__all__ = [
    "RUN_INFO",
    "EvaluationSummary",
    "build_model",
    "score",
    "score_scan",
    "predict",
    "calibrate",
    "evaluate",
    "train",
]

RUN_INFO = "run.json"


def build_model(options: ModelOptions | None = None, device: str | None = None):
    """The network as every face builds it (:func:`anomalyclip_med.network.factory.create_model`), on ``device``
    when given (a run's session resolves it once) [``options.device``]."""
    from anomalyclip_med.network.factory import create_model

    options = options or ModelOptions()
    return create_model(options if device is None else replace(options, device=str(device)))


def _announce(model, ctx) -> None:
    if model.untrained_warning and ctx.is_main:
        print(model.untrained_warning)


def score(
    inputs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    model: ModelOptions | None = None,
    scoring: ScoringOptions | None = None,
    loading: LoadingOptions | None = None,
    output: OutputOptions | None = None,
    batch: BatchOptions | None = None,
    calibration: CalibrationOptions | None = None,
    quiet: bool = False,
) -> RunSummary:
    """
    Score scans (volume files, DICOM series folders, folders walked with their sub-folders) into ``out_dir``: per
    case an anomaly map and a labelmap in the scan's geometry, a scores JSON and an overlay montage (see
    :class:`anomalyclip_med.runs.scans.ScanJob`). A case that fails is named on one ``error:`` line and the others
    go on. Under ``torchrun`` each process scores every ``WORLD_SIZE``-th case.

    Raises:
        InputError, OutputExistsError, OutputLockedError: the run is refused before anything is written.
    """
    from anomalyclip_med.io.cases import find_cases
    from anomalyclip_med.runs.scans import ScanJob

    model, scoring, output = model or ModelOptions(), scoring or ScoringOptions(), output or OutputOptions()
    batch, calibration = batch or BatchOptions(), calibration or CalibrationOptions()
    calibration.check("scans", scoring)
    job = ScanJob(out_dir, scoring, loading, output, progress=output.progress)
    runner = CaseRunner(find_cases(inputs, batch.case_name, out_dir), out_dir, job, batch.resume, model.device,
                        output.progress, quiet=quiet)

    def setup(ctx) -> None:
        net = build_model(model, ctx.device)
        _announce(net, ctx)
        job.bind(net, calibration.decision("scans", net.identity(), scoring))

    return runner.run(setup)


def score_scan(
    network, source: str | os.PathLike, out_dir: str | os.PathLike, scoring: ScoringOptions | None = None,
    loading: LoadingOptions | None = None, output: OutputOptions | None = None,
    calibration: CalibrationOptions | None = None,
) -> CaseResult:
    """
    One scan through :func:`score`'s job with an already built ``network`` (:func:`build_model`), its outputs at
    the top of ``out_dir``; the case's error is raised instead of reported (a library call about one scan).

    Returns:
        the case's result: ``outputs`` (paths) and ``record`` (the scores JSON as written).

    Raises:
        InputError, OutputExistsError: a bad scan, outputs that may not be written (``output.overwrite``).
    """
    from anomalyclip_med.io.cases import ScanCase
    from anomalyclip_med.runs.engine import Status
    from anomalyclip_med.runs.scans import ScanJob

    if not os.path.exists(source):
        raise InputError(f"Scan '{source}' does not exist.")
    source = Path(os.path.abspath(source))
    scoring, output = scoring or ScoringOptions(), output or OutputOptions()
    calibration = calibration or CalibrationOptions()
    calibration.check("scans", scoring)
    job = ScanJob(out_dir, scoring, loading, output, progress=output.progress)
    case = ScanCase(_case_name(source), source, walked=source if source.is_dir() else None)
    runner = CaseRunner([case], out_dir, job, "overwrite" if output.overwrite else "refuse", str(network.device),
                        progress=False, prefetch=0, background_write=False, quiet=True)
    (result,) = runner.run(lambda ctx: job.bind(network, calibration.decision("scans", network.identity(),
                                                                                scoring))).results
    if result.status is Status.FAILED:
        raise InputError(result.error)
    return result


def _case_name(source: str | os.PathLike) -> str:
    from anomalyclip_med.io.names import case_id_of, safe_case_id

    return safe_case_id(case_id_of(source))


def predict(
    inputs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    model: ModelOptions | None = None,
    batch: BatchOptions | None = None,
    calibration: CalibrationOptions | None = None,
    progress: bool = True,
    quiet: bool = False,
) -> RunSummary:
    """
    Score 2D images (files, folders walked) into ``out_dir``: per image ``<name>_anomaly_map.npy`` (float32 in
    [0, 1], the image's own size), ``<name>_overlay.png`` and ``<name>_scores.json``, and ``scores.csv`` listing
    every image (with a calibration its p-value, flag and flagged pixels). On the run engine: locked, resumable
    (``batch.resume``), an image fails alone.

    Raises:
        InputError, OutputExistsError, OutputLockedError: the run is refused before anything is written.
    """
    from anomalyclip_med.io.cases import find_cases
    from anomalyclip_med.runs.images import SCORES_CSV, ImageJob

    model, batch, calibration = model or ModelOptions(), batch or BatchOptions(), calibration or CalibrationOptions()
    calibration.check("images")
    job = ImageJob(out_dir)
    runner = CaseRunner(find_cases(inputs, batch.case_name, out_dir, kind="images"), out_dir, job, batch.resume,
                        model.device, progress, quiet=quiet, run_outputs=[Path(out_dir) / SCORES_CSV])

    def setup(ctx) -> None:
        net = build_model(model, ctx.device)
        _announce(net, ctx)
        job.bind(net, calibration.decision("images", net.identity()))

    def finish(summary: RunSummary, ctx) -> None:
        if ctx.is_main:
            job.write_table(summary)

    return runner.run(setup, finish)


def calibrate(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    model: ModelOptions | None = None,
    scoring: ScoringOptions | None = None,
    loading: LoadingOptions | None = None,
    options: CalibrateOptions | None = None,
    batch: BatchOptions | None = None,
):
    """
    Score known-normal ``inputs`` (scans, or 2D images, or with ``options.dataset`` a benchmark dataset's normal
    images) and write their calibration JSON to ``out`` (per-case parts in ``<out>.parts/``; see
    :class:`anomalyclip_med.runs.calibrate.CalibrationJob`). A case that fails is named and left out.

    Returns:
        :class:`anomalyclip_med.runs.calibrate.CalibrationRun`: the calibration and every case's outcome.
    """
    from anomalyclip_med.io.cases import find_cases
    from anomalyclip_med.runs.calibrate import CalibrationJob, parts_dir

    model, options, batch = model or ModelOptions(), options or CalibrateOptions(), batch or BatchOptions()
    if options.resume and options.overwrite:
        raise InputError("Choose one of --continue (add to the parts of an earlier run) and --overwrite.")
    kind, cases = _calibration_cases(inputs, options, batch.case_name)
    job = CalibrationJob(kind, out, scoring, loading)
    resume = "continue" if options.resume else "overwrite" if options.overwrite else "refuse"
    runner = CaseRunner(cases, parts_dir(out), job, resume, model.device, options.progress, quiet=True,
                        run_outputs=[out])
    merged = []

    def setup(ctx) -> None:
        net = build_model(model, ctx.device)
        _announce(net, ctx)
        job.bind(net)

    def finish(summary: RunSummary, ctx) -> None:
        if ctx.is_main:
            merged.append(job.merge(summary))

    runner.run(setup, finish)
    return merged[0] if merged else None


def _calibration_cases(inputs: list[str | os.PathLike], options: CalibrateOptions, naming: str):
    """``(kind, cases)``: a dataset's normal images, every image given (all files images), or scans."""
    from anomalyclip_med.io.cases import ScanCase, find_cases, name_cases
    from anomalyclip_med.io.names import image_suffix

    paths = [Path(os.path.abspath(p)) for p in inputs]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise InputError(f"Input '{missing[0]}' does not exist.")
    if options.dataset:
        from anomalyclip_med.data import load_samples

        if len(paths) != 1:
            raise InputError(f"A dataset is read from one root folder, got {len(paths)} inputs.")
        normals = [Path(s.image) for s in load_samples(options.dataset, paths[0], split=options.split)
                   if s.label == 0]
        if not normals:
            raise InputError(f"Dataset '{paths[0]}' ({options.dataset}, split {options.split}) holds no normal "
                             "images.")
        names = name_cases(normals, [paths[0]] * len(normals), naming)
        return "images", [ScanCase(n, s) for n, s in zip(names, normals)]
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p])
             if f.is_file() and not f.name.startswith(".")]
    kind = "images" if files and all(image_suffix(f) for f in files) else "scans"
    return kind, find_cases(paths, naming, kind=kind)


@dataclass
class EvaluationSummary:
    """
    What an evaluation did: ``run`` (the ``run.json`` content: what ran, how long, the model's identity, counts)
    and, for a cohort, every case's outcome.
    """

    run: dict[str, Any]
    cases: RunSummary | None = None

    @property
    def exit_status(self) -> int:
        return self.cases.exit_status if self.cases is not None else 0


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
) -> EvaluationSummary:
    """
    A cohort manifest (``dataset="manifest"``, ``root`` the CSV or MONAI datalist JSON: every scan scored on the
    engine, finished cases reused, per-case metrics, ``cohort_summary.{json,csv}``, ``cohort_cases.csv``,
    ``cohort_report.md``, figures) or a benchmark dataset in its layout (per-class image AUROC/AP/max-F1 and pixel
    AUROC/AP/AUPRO, ``<dataset>_metrics.{md,csv,json}``, ``<dataset>_images.csv``), with ``run.json``; the summary
    is printed. ``calibration`` adds the operating point at calibrated thresholds; ``progress``: a progress bar
    [None: when stderr is a terminal].
    """
    model = model or ModelOptions()
    progress = sys.stderr.isatty() if progress is None else progress
    if dataset == MANIFEST:
        return _evaluate_cohort(root, out_dir, model, cohort or CohortOptions(), scoring or ScoringOptions(),
                                calibration or CalibrationOptions(), progress)
    return _evaluate_benchmark(dataset, root, out_dir, model, benchmark or BenchmarkOptions(),
                               calibration or CalibrationOptions(), progress)


def _run_info(kind: str, root, started: float, ctx, net, **info: Any) -> dict[str, Any]:
    return {"command": "evaluate", "dataset": kind, "root": str(root), "world_size": ctx.world_size,
            "seconds": round(time.time() - started, 2), **info, "model": net.identity()}


def _evaluate_cohort(manifest, out_dir, model: ModelOptions, cohort: CohortOptions, scoring: ScoringOptions,
                     calibration: CalibrationOptions, progress: bool) -> EvaluationSummary:
    from anomalyclip_med.evaluation.cohort_report import write_cohort_report
    from anomalyclip_med.evaluation.manifest import read_manifest
    from anomalyclip_med.io.writers import write_json
    from anomalyclip_med.runs.cohort import CohortJob, cohort_cases, failed_record
    from anomalyclip_med.runs.scans import ScanJob

    if calibration.map_output != "probability":
        raise InputError("evaluate computes its voxel metrics from the probability maps: leave out --map calibrated "
                         "(write calibrated maps with 'score --map calibrated').")
    calibration.check("scans", scoring)
    entries = read_manifest(manifest, cohort.datalist_key, cohort.case_name)
    job = CohortJob(ScanJob(out_dir, scoring, output=OutputOptions(progress=False)), entries)
    # a cohort resumes by default: finished cases with the same input, model, options, mask and label are reused
    runner = CaseRunner(cohort_cases(entries), out_dir, job, "overwrite" if cohort.overwrite else "continue",
                        model.device, progress, prefetch=DEFAULT_PREFETCH,
                        run_outputs=[Path(out_dir) / RUN_INFO])
    started, run = time.time(), {}

    def setup(ctx) -> None:
        load_itk_readers([e.mask for e in entries if e.mask is not None])  # masks are read in the writer thread
        net = build_model(model, ctx.device)
        job.scans.bind(net, calibration.decision("scans", net.identity(), scoring))

    def finish(summary: RunSummary, ctx) -> None:
        net, decision = job.scans.model, job.scans.decision
        if ctx.is_main:
            records = [r.record if r.ok else failed_record(job.cohort[r.case.name], r.error) for r in summary.results]
            paths = write_cohort_report(records, out_dir, decision.map_threshold, cohort.montage, decision.calibrated)
            print(Path(paths["report_md"]).read_text(encoding="utf-8").split("## Scan level")[0].strip())
            counts = summary.counts
            print(f"cases: {counts}; report: {paths['report_md']}")
            run.update(_run_info(MANIFEST, manifest, started, ctx, net, cases=counts))
            write_json(run, Path(out_dir) / RUN_INFO)
            _announce(net, ctx)
        ctx.barrier()

    summary = runner.run(setup, finish)
    return EvaluationSummary(run, summary)


def _evaluate_benchmark(dataset: str, root, out_dir, model: ModelOptions, benchmark: BenchmarkOptions,
                        calibration: CalibrationOptions, progress: bool) -> EvaluationSummary:
    from anomalyclip_med.data import DATASETS, load_samples
    from anomalyclip_med.evaluation.benchmark import (
        dataset_metrics,
        evaluate_samples,
        subsample,
        write_dataset_report,
    )
    from anomalyclip_med.io.writers import write_json

    if dataset not in DATASETS:
        raise InputError(f"Unknown dataset layout {dataset!r}: one of {', '.join(DATASETS)} (or {MANIFEST!r}).")
    samples = subsample(load_samples(dataset, root, split=benchmark.split), benchmark.limit)
    calibration.check("images")
    out = Path(out_dir)
    report = [*(out / f"{dataset}_metrics.{ext}" for ext in ("md", "csv", "json")), out / f"{dataset}_images.csv",
              out / RUN_INFO]
    check_outputs(out_dir, [{str(i): p for i, p in enumerate(report)}], [root],
                  resume="overwrite" if benchmark.overwrite else "refuse")
    started = time.time()
    with RunSession(out_dir, model.device) as ctx:
        net = build_model(model, ctx.device)
        decision = calibration.decision("images", net.identity())
        images, pixels = evaluate_samples(net, samples, ctx, benchmark.batch_size, benchmark.num_workers,
                                          ctx.is_main and progress)
        run = _run_info(dataset, root, started, ctx, net, n_images=len(images))
        if ctx.is_main:
            per_class, mean = dataset_metrics(images, pixels)
            extra = {"dataset": dataset, "root": str(root), "split": benchmark.split, "limit": benchmark.limit}
            paths = write_dataset_report(images, per_class, mean, out_dir, dataset, extra, benchmark.metric_set,
                                         decision.calibrated)
            print(Path(paths["metrics_md"]).read_text(encoding="utf-8"))
            write_json(run, out / RUN_INFO)
            _announce(net, ctx)
        ctx.barrier()
    return EvaluationSummary(run)


def train(data, out_dir: str | os.PathLike, settings=None, model: ModelOptions | None = None, resume: bool = False):
    """Train the prompts (:func:`anomalyclip_med.training.run.train_on_dataset`): ``data`` a
    :class:`anomalyclip_med.training.settings.TrainData`, ``settings`` a ``TrainSettings``."""
    from anomalyclip_med.training.run import train_on_dataset

    return train_on_dataset(data, out_dir, settings, model, resume=resume)
