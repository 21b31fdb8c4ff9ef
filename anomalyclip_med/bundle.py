"""
Entry points for the MONAI bundle configs in ``bundles/``: data lists, the model, evaluation and training.

Each is a thin face over the package's typed API (:mod:`anomalyclip_med.api`: ``build_model``, ``evaluate``,
``calibrate``, ``train``) and its run engine (:class:`anomalyclip_med.runs.engine.CaseRunner`, whose MONAI adapters
make the batch ``evaluator``), the same ones the command line calls: config keys are the option dataclasses' field
names. User errors end the run at once with one ``error: ...`` line (``SystemExit``)
instead of a traceback from inside the config parser.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import torch

from anomalyclip_med import api
from anomalyclip_med.calibration.calibration import CalibrateOptions, CalibrationOptions, Decision
from anomalyclip_med.data.dataset import AnomalyDataset
from anomalyclip_med.data.registry import load_samples
from anomalyclip_med.errors import AnomalyCLIPMedError, InputError
from anomalyclip_med.evaluation.options import BenchmarkOptions, CohortOptions
from anomalyclip_med.inference.options import LoadingOptions, ScoringOptions
from anomalyclip_med.io.cases import ScanCase, datalist_cases
from anomalyclip_med.network.factory import ModelOptions, resolve_device
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.network.net import AnomalyCLIPNet
from anomalyclip_med.runs.calibrate import CalibrationRun
from anomalyclip_med.runs.engine import CaseRunner, RunSummary
from anomalyclip_med.runs.monai import CaseEvaluator
from anomalyclip_med.training.loop import TrainResult
from anomalyclip_med.training.settings import TrainData, TrainSettings
from anomalyclip_med.weights import DEFAULT_PROMPTS, WeightsUnavailableError

__all__ = [
    "BundleNetwork",
    "announce_prompts",
    "as_bool",
    "build_model",
    "calibrate",
    "calibration_decision",
    "default_prompts",
    "default_weights_dir",
    "evaluate",
    "prompt_dataset",
    "preflight",
    "resume_mode",
    "run_batch",
    "scan_cases",
    "torch_device",
    "train",
]

T = TypeVar("T")
_FIX = "(bundle overrides: --backbone_weights PATH, --prompts NAME_OR_PATH, --weights_dir DIR)"
# the bundle's names for the options an offline error points to
_BUNDLE_FLAGS = {"backbone": "--backbone_weights", "prompts": "--prompts", "weights_dir": "--weights_dir"}


def default_prompts(bundle_root: str | os.PathLike) -> str:
    """The bundle's own prompts ``models/model.pt`` (see ``anomalyclip-med export-bundle``) when present, else the
    named default (``mvtec-trained``: fetched, verified and cached on first use)."""
    path = Path(bundle_root) / "models" / "model.pt"
    return str(path) if path.is_file() else DEFAULT_PROMPTS


def default_weights_dir(bundle_root: str | os.PathLike) -> str | None:
    """The bundle's ``models`` folder, where ``large_files.yml`` puts the weights (and where ``anomalyclip-med
    fetch-weights --dest`` can put them), if it exists: searched before the cache."""
    path = Path(bundle_root) / "models"
    return str(path) if path.is_dir() else None


def _user_errors(call: Callable[[], T], hint: str = "") -> T:
    try:
        return call()
    except WeightsUnavailableError as err:  # one line naming each missing file with the bundle's overrides
        print(f"error: {err.describe(_BUNDLE_FLAGS)}", file=sys.stderr)
        raise SystemExit(2) from None
    except AnomalyCLIPMedError as err:  # exit status 2, as the command line's
        print(f"error: {err}" + (f" {hint}" if hint else ""), file=sys.stderr)
        raise SystemExit(2) from None


class BundleNetwork(AnomalyCLIPNet):
    """
    The bundle's ``network_def``: :class:`anomalyclip_med.network.AnomalyCLIPNet` (same arguments, state dict and
    outputs, built by ``create_model`` as ``score`` builds its network) whose construction errors (missing or unfit
    weights, a damaged prompt file, a setting against the prompt file's) end the run with one ``error:`` line
    naming the bundle override that fixes it, instead of a traceback from inside the config parser.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _user_errors(lambda: super(BundleNetwork, self).__init__(*args, **kwargs), _FIX)


def torch_device(name: str | torch.device) -> torch.device:
    """The bundle's ``device`` override as a torch device: ``auto`` (CUDA when available, else CPU) or a name."""
    return _user_errors(lambda: torch.device(resolve_device(str(name))), "(bundle override --device)")


def announce_prompts(network: AnomalyCLIPNet) -> None:
    """Say loudly, once at start, when the scores will not mean anything (random backbone, or untrained prompts)."""
    warning = network.anomalyclip.untrained_warning
    if warning:
        print(warning)


def prompt_dataset(dataset: str, dataset_dir: str | os.PathLike, image_size: int, split: str = "test") -> AnomalyDataset:
    """The training / validation images of a dataset in its native layout (``anomalyclip_med.data`` formats)."""
    return _user_errors(lambda: AnomalyDataset(load_samples(dataset, dataset_dir, split), image_size))


def scan_cases(dataset_dir: str | os.PathLike, output_dir: str | os.PathLike, case_name: str = "stem",
               key: str = "testing") -> list[ScanCase]:
    """
    The cases of ``dataset_dir`` (:func:`anomalyclip_med.io.cases.datalist_cases`): a folder of scans (walked,
    nested folders and DICOM series folders too), one DICOM series folder, or a MONAI datalist JSON's ``key`` list
    of ``{"image": path}`` items (paths relative to the JSON's folder). Named by the ``case_name`` rule
    (``stem|parent|relpath``); outputs mirror their folders below ``dataset_dir`` (or the datalist's folder) under
    ``output_dir``, and a scan outside it (an absolute datalist path) is placed by its name at the top.
    """
    return _user_errors(lambda: datalist_cases(dataset_dir, case_name, key, output_dir))


def resume_mode(resume: bool, overwrite: bool) -> str:
    """The runner's resume mode from the ``continue`` and ``overwrite`` overrides (as ``score --continue`` /
    ``--overwrite``); both at once is an error."""
    if resume and overwrite:
        raise SystemExit("error: choose one of continue=true (reuse finished cases) and overwrite=true (replace them).")
    return "continue" if resume else "overwrite" if overwrite else "refuse"


def preflight(runner: CaseRunner) -> None:
    """:meth:`CaseRunner.preflight` before any weights load: a refused run ends with one ``error:`` line."""
    _user_errors(runner.preflight)


def run_batch(evaluator: CaseEvaluator) -> RunSummary:
    """
    Run the inference evaluator: each case that fails is named on one ``error:`` line and the others go on.

    Raises:
        SystemExit: status 2 when any case failed or the run was refused (as ``anomalyclip-med score``).
    """
    _user_errors(evaluator.run)
    if evaluator.summary.exit_status:
        raise SystemExit(evaluator.summary.exit_status)
    return evaluator.summary


def as_bool(value: Any) -> bool:
    """
    A config or command-line boolean, read one way whatever its spelling: ``python -m monai.bundle`` passes
    ``True``/``False`` as booleans but ``true``/``false`` (as the README writes defaults) as text, which would be
    truthy. Anything else ends the run with one ``error:`` line.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise SystemExit(f"error: expected a boolean (true or false), got {value!r}.")


def _options(cls: type[T], values: dict[str, Any]) -> T:
    """``cls`` from the entries of ``values`` named like its fields (booleans given as text are parsed)."""
    kwargs = {}
    for f in fields(cls):
        if f.name in values:
            value = values[f.name]
            kwargs[f.name] = as_bool(value) if f.type in ("bool", bool) else value
    return cls(**kwargs)


def _check_known(values: dict[str, Any], *classes: type) -> None:
    known = {f.name for cls in classes for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"Unknown option(s) {unknown}; known: {sorted(known)}.")


def build_model(**options: Any) -> AnomalyCLIP:
    """The model as every face builds it: keyword options are :class:`ModelOptions` fields (``backbone``,
    ``backbone_weights`` (``"none"`` = random), ``prompts``, ``weights_dir``, ``feature_layers``, ``map_layers``,
    ``image_size``, ``device`` ("auto"), ``precision``, ``seed``)."""

    def check() -> ModelOptions:  # option errors (a device this machine lacks...) name their own override
        _check_known(options, ModelOptions)
        return _options(ModelOptions, options)

    model_options = _user_errors(check)
    model = _user_errors(lambda: api.build_model(model_options), _FIX)
    if model.untrained_warning:
        print(model.untrained_warning)
    return model


def evaluate(dataset: str, root: str | os.PathLike, out_dir: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """
    :func:`anomalyclip_med.evaluation.evaluate`: keyword options are fields of :class:`ModelOptions`,
    :class:`ScoringOptions`, :class:`CohortOptions`, :class:`BenchmarkOptions` (``batch_size`` goes to the
    last two: slices for a manifest, images for a benchmark) and :class:`CalibrationOptions`.
    """

    def run() -> dict[str, Any]:
        _check_known(options, ModelOptions, ScoringOptions, CohortOptions, BenchmarkOptions, CalibrationOptions)
        return api.evaluate(
            dataset, root, out_dir, _options(ModelOptions, options), benchmark=_options(BenchmarkOptions, options),
            cohort=_options(CohortOptions, options), scoring=_options(ScoringOptions, options),
            calibration=_options(CalibrationOptions, options),
        ).run

    return _user_errors(run, _FIX)


def train(
    dataset: str, root: str | os.PathLike, out_dir: str | os.PathLike, split: str = TrainData.split,
    resume: bool | str = False, **options: Any,
) -> TrainResult | None:
    """
    :func:`anomalyclip_med.training.train_on_dataset` on the layout ``dataset`` under ``root``: keyword options
    are fields of :class:`TrainSettings` and :class:`ModelOptions` (``seed`` is the training's).
    """

    def run() -> TrainResult | None:
        _check_known(options, ModelOptions, TrainSettings)
        return api.train(TrainData(root, dataset, split), out_dir, _options(TrainSettings, options),
                         _options(ModelOptions, options), resume=as_bool(resume))

    return _user_errors(run, _FIX)


def calibrate(dataset_dir: str | os.PathLike, out: str | os.PathLike, **options: Any) -> CalibrationRun:
    """
    :func:`anomalyclip_med.calibration.calibrate` on the known-normal scans or images of ``dataset_dir`` (a folder,
    a MONAI datalist JSON's ``testing`` list, or with ``dataset=`` a benchmark dataset root), writing the calibration
    JSON ``out``: keyword options are fields of :class:`ModelOptions`, :class:`ScoringOptions`,
    :class:`LoadingOptions` and :class:`CalibrateOptions`. A case that fails is named and left out; the run ends with
    status 2 when any failed.
    """

    def run() -> CalibrationRun:
        _check_known(options, ModelOptions, ScoringOptions, LoadingOptions, CalibrateOptions)
        settings = _options(CalibrateOptions, options)
        path = Path(dataset_dir)
        inputs = [path] if settings.dataset or path.suffix.lower() != ".json" else \
            [case.source for case in datalist_cases(path)]
        return api.calibrate(inputs, out, _options(ModelOptions, options), _options(ScoringOptions, options),
                             _options(LoadingOptions, options), settings)

    done = _user_errors(run, _FIX)
    cal, counts = done.calibration, done.summary.counts
    print(f"calibrated on {cal.counts['cases']} normal {cal.kind} ({counts['scored']} scored, {counts['reused']} "
          f"reused, {counts['failed']} failed) -> {out}")
    if counts["failed"] or not cal.counts["cases"]:
        raise SystemExit(2)
    return done


def calibration_decision(network: AnomalyCLIP, scoring: ScoringOptions, **options: Any) -> Decision:
    """
    The decision of the inference config: ``scoring`` is the config's one ``scoring`` component (its threshold without
    a calibration; checked against the calibration's scoring options with one); keyword options are fields of
    :class:`CalibrationOptions`. The bundle writes the probability map; calibrated p-value maps come from ``score
    --map calibrated``.
    """

    def make() -> Decision:
        _check_known(options, CalibrationOptions)
        settings = _options(CalibrationOptions, options)
        if settings.map_output != "probability":
            raise InputError("The bundle writes the probability map; write calibrated p-value maps with "
                             "'anomalyclip-med score --map calibrated'.")
        return settings.decision("scans", network.identity(), scoring)

    return _user_errors(make)
