"""
Entry points for the MONAI bundle configs in ``bundles/``: data lists, the model, the calibration decision, override
checks, and how errors end a run.

Each is a thin face over the package's typed API (:mod:`anomalyclip_med.api`) and its run engine
(:class:`anomalyclip_med.runs.engine.CaseRunner`, whose MONAI adapters make the batch ``evaluator``), the same ones
the command line calls: config keys are the option dataclasses' field names, and their defaults are the
dataclasses' (:data:`JOB_OPTIONS`).

Library calls raise, processes exit. Every entry raises the package's error family
(:class:`anomalyclip_med.errors.AnomalyCLIPMedError`: ``InputError``, ``MissingWeightsError``...) naming the bundle
override that fixes it. A MONAI Label server, a MONAI Deploy application or any ``ConfigWorkflow`` /
``monai.bundle.load`` caller gets that exception, not a dead process; only a process started as
``python -m monai.bundle`` (also each ``torchrun`` worker) turns it into one ``error: ...`` line on stderr and exit
status 2, as the ``anomalyclip-med`` commands do (:func:`_through_monai` says how).
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from monai.bundle import ConfigParser
from monai.bundle.config_item import ConfigComponent, ConfigExpression

from anomalyclip_med import api
from anomalyclip_med.calibration.calibration import CalibrateOptions, CalibrationOptions, Decision
from anomalyclip_med.data.dataset import AnomalyDataset
from anomalyclip_med.data.registry import load_samples
from anomalyclip_med.errors import AnomalyCLIPMedError, InputError
from anomalyclip_med.inference.options import BatchOptions, LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.io.cases import ScanCase, datalist_cases
from anomalyclip_med.network.factory import ModelOptions, resolve_device
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.network.net import AnomalyCLIPNet
from anomalyclip_med.runs.calibrate import CalibrationRun
from anomalyclip_med.runs.engine import CaseRunner, RunSummary
from anomalyclip_med.runs.monai import CaseEvaluator
from anomalyclip_med.training.settings import TrainSettings
from anomalyclip_med.weights import DEFAULT_PROMPTS, WeightsUnavailableError

__all__ = [
    "JOB_OPTIONS",
    "BundleNetwork",
    "announce_prompts",
    "as_bool",
    "calibrate",
    "calibration_decision",
    "check_overrides",
    "default_prompts",
    "default_weights_dir",
    "prompt_dataset",
    "preflight",
    "resume_mode",
    "run_batch",
    "scan_cases",
    "scoring_options",
    "torch_device",
]

T = TypeVar("T")
_FIX = "(bundle overrides: --backbone_weights PATH, --prompts NAME_OR_PATH, --weights_dir DIR)"
# the bundle's names for the options an offline error points to
_BUNDLE_FLAGS = {"backbone": "--backbone_weights", "prompts": "--prompts", "weights_dir": "--weights_dir"}

# The option dataclasses whose fields each job's top-level config keys are (``check_overrides(job)`` in the job's
# ``initialize``): a key is checked as, and defaults to, the field of the first class that has it (``seed`` is the
# training's in train.json, the model's in calibrate.json; ``batch_size`` the scoring's in inference.json).
JOB_OPTIONS: dict[str, tuple[type, ...]] = {
    "inference": (ScoringOptions, ModelOptions, OutputOptions, BatchOptions, CalibrationOptions),
    "calibrate": (CalibrateOptions, ScoringOptions, ModelOptions, LoadingOptions, BatchOptions),
    "train": (TrainSettings, ModelOptions),
}
# config keys named unlike their dataclass field (MONAI's customary names in train.json)
FIELD_OF = {"learning_rate": "lr", "max_epochs": "epochs"}
# the bundle's own settings, no dataclass field: what each accepts
_SETTINGS = {"continue": "bool", "verbose": "bool", "find_unused_parameters": "bool", "prefetch": "count",
             "val_interval": "count"}


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


def _bundle_process() -> bool:
    """Whether this process is ``python -m monai.bundle ...`` (directly or as a ``torchrun -m monai.bundle``
    worker): the one place where a user error ends the process."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "monai.bundle.__main__"


def _error_line(err: BaseException) -> str:
    return "error: " + " ".join(str(err).split())


def _through_monai(method: Callable[..., T]) -> Callable[..., T]:
    """
    ``method`` (``ConfigExpression.evaluate`` or ``ConfigComponent.instantiate``), letting the package's errors out
    as themselves.

    MONAI runs every config item through these two methods, and each wraps whatever its item raises in a new
    ``RuntimeError("Failed to evaluate/instantiate ...")``: a caller would have to dig ``__cause__`` for the
    ``InputError`` and its message. Wrapped here, an error of the package crosses MONAI's config layer unchanged
    (its own traceback, cause and context), so ``ConfigWorkflow(...).initialize()/run()``, ``monai.bundle.load`` and
    ``ConfigParser.get_parsed_content`` raise it; any other error keeps MONAI's wrapping. In the ``python -m
    monai.bundle`` process it instead becomes one ``error:`` line and ``SystemExit(2)``: an exception that is not an
    ``Exception`` passes every MONAI, ignite and fire layer above, the ``finally`` blocks (lock, temporaries) still
    run, and nothing prints a traceback. (A ``sys.excepthook`` could not: the interpreter exits 1 after it.)
    """

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except AnomalyCLIPMedError as err:  # raised by a nested item already let through
            ours = err
        except RuntimeError as err:
            ours = err.__cause__ if isinstance(err.__cause__, AnomalyCLIPMedError) else None
            if ours is None:
                raise
        if _bundle_process():
            print(_error_line(ours), file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        raise ours  # outside the except blocks: MONAI's RuntimeError does not become its context

    call.__anomalyclip_med__ = True  # type: ignore[attr-defined]
    return call


for _cls, _name in ((ConfigExpression, "evaluate"), (ConfigComponent, "instantiate")):
    if not getattr(getattr(_cls, _name), "__anomalyclip_med__", False):  # once, also if this module is reloaded
        setattr(_cls, _name, _through_monai(getattr(_cls, _name)))


def _exit_status(status: int) -> None:
    """A finished batch with failed cases (each already named on its ``error:`` line): exit status ``status`` for
    the ``python -m monai.bundle`` process; a library caller reads the returned summary instead."""
    if status and _bundle_process():
        raise SystemExit(status)


def _user_errors(call: Callable[[], T], hint: str = "") -> T:
    """``call()``, its package errors raised with the bundle's wording: missing weights name the bundle overrides
    that provide them, others end with ``hint`` (the overrides that fix them)."""
    try:
        return call()
    except WeightsUnavailableError as err:
        raise WeightsUnavailableError(err.missing, err.reason, _BUNDLE_FLAGS) from err.__cause__
    except AnomalyCLIPMedError as err:
        if hint:
            err.args = (f"{err} {hint}", *err.args[1:])
        raise


class BundleNetwork(AnomalyCLIPNet):
    """
    The bundle's ``network_def``: :class:`anomalyclip_med.network.AnomalyCLIPNet` (same arguments, state dict and
    outputs, built by ``create_model`` as ``score`` builds its network) whose construction errors (missing or unfit
    weights, a damaged prompt file, a setting against the prompt file's) name the bundle override that fixes it
    (one ``error:`` line in the ``python -m monai.bundle`` process, the exception in a library call).
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
    return AnomalyDataset(load_samples(dataset, dataset_dir, split), image_size)


def scan_cases(dataset_dir: str | os.PathLike, output_dir: str | os.PathLike, case_name: str = "stem",
               key: str = "testing") -> list[ScanCase]:
    """
    The cases of ``dataset_dir`` (:func:`anomalyclip_med.io.cases.datalist_cases`): a folder of scans (walked,
    nested folders and DICOM series folders too), one DICOM series folder, or a MONAI datalist JSON's ``key`` list
    of ``{"image": path}`` items (paths relative to the JSON's folder). Named by the ``case_name`` rule
    (``stem|parent|relpath``); outputs mirror their folders below ``dataset_dir`` (or the datalist's folder) under
    ``output_dir``, and a scan outside it (an absolute datalist path) is placed by its name at the top.
    """
    return datalist_cases(dataset_dir, case_name, key, output_dir)


def resume_mode(resume: bool, overwrite: bool) -> str:
    """The runner's resume mode from the ``continue`` and ``overwrite`` overrides (as ``score --continue`` /
    ``--overwrite``); both at once is an error."""
    if resume and overwrite:
        raise InputError("choose one of --continue true (reuse finished cases) and --overwrite true (replace them).")
    return "continue" if resume else "overwrite" if overwrite else "refuse"


def preflight(runner: CaseRunner) -> None:
    """:meth:`CaseRunner.preflight` before any weights load (a refused run raises, naming why)."""
    runner.preflight()


def run_batch(evaluator: CaseEvaluator) -> RunSummary:
    """
    Run the inference evaluator: each case that fails is named on one ``error:`` line and the others go on.

    Returns:
        The batch summary (``exit_status`` 2 when any case failed). The ``python -m monai.bundle`` process ends
        with that status instead, as ``anomalyclip-med score``.
    """
    evaluator.run()
    _exit_status(evaluator.summary.exit_status)
    return evaluator.summary


def as_bool(value: Any) -> bool:
    """
    A config or command-line boolean, read one way whatever its spelling: ``python -m monai.bundle`` passes
    ``True``/``False`` as booleans but ``true``/``false`` (as the README writes defaults) as text, which would be
    truthy.

    Raises:
        InputError: anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InputError(f"expected a boolean (true or false), got {value!r}.")


# ---------------------------------------------------------------------------------------------- override checks

_ACCEPTS = {"bool": "true or false", "count": "an integer >= 1", "int": "an integer", "float": "a number",
            "str": "text (quote it)", "tuple": "a list, e.g. [24]", "None": "None"}


def _kinds(annotation: Any) -> list[str]:
    """``"int | None"`` -> ``["int", "None"]`` (the dataclasses' annotations are strings: postponed evaluation)."""
    return [part.strip().split("[")[0] for part in str(annotation).split("|")]


def _typed(override: str, value: Any, kinds: list[str]) -> Any:
    """``value`` checked against the kinds of its field, as the command line's ``type=`` would check its text:
    booleans read with :func:`as_bool`, integral floats as integers."""
    if value is None and "None" in kinds:
        return None
    if "bool" in kinds:
        try:
            return as_bool(value)
        except InputError:
            pass
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and ("int" in kinds or "count" in kinds) and float(value).is_integer() and \
            ("count" not in kinds or value >= 1):
        return int(value)
    if (number and "float" in kinds) or (isinstance(value, (str, os.PathLike)) and "str" in kinds) or \
            (isinstance(value, (list, tuple, int)) and not isinstance(value, bool) and "tuple" in kinds):
        return value
    accepts = " or ".join(_ACCEPTS.get(kind, kind) for kind in kinds)
    raise InputError(f"bundle override --{override} {value!r}: expected {accepts}.")


def _field_names(cls: type) -> dict[str, Any]:
    return {f.name: f for f in fields(cls)}


def _options(cls: type[T], values: dict[str, Any], prefix: str = "", names: dict[str, str] | None = None) -> T:
    """
    ``cls`` from ``values`` (field names), each value checked alone first so that an error names its override
    (``names[field]``, else ``{prefix}{field}``) and what it accepts, as the command line's flag would.

    Raises:
        InputError: naming the override; ``cls``'s own error where only the values together are refused.
    """
    known = _field_names(cls)
    checked = {}
    for name, value in values.items():
        override = (names or {}).get(name, prefix + name)
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise InputError(f"bundle override --{override}: {cls.__name__} has no option {name!r}"
                             + (f"; did you mean --{prefix}{close[0]}?" if close else "."))
        value = _typed(override, value, _kinds(known[name].type))
        try:
            cls(**{name: value})
        except (AnomalyCLIPMedError, TypeError, ValueError) as err:
            raise InputError(f"bundle override --{override} {value!r}: {err}") from None
        checked[name] = value
    return cls(**checked)


def scoring_options(**values: Any) -> ScoringOptions:
    """The config's ``scoring`` component: :class:`ScoringOptions` with each value checked as its override
    (``--threshold`` or, for a field without a top-level key, ``--scoring#topk``)."""
    return _options(ScoringOptions, values, "scoring#")


def _evaluating_parser() -> ConfigParser:
    """The MONAI ``ConfigParser`` evaluating the caller's config expression: every config item is evaluated under
    ``ConfigParser.get_parsed_content``, the one frame on the stack that holds the whole config."""
    frame = sys._getframe(1)
    while frame is not None:
        parser = frame.f_locals.get("self")
        if isinstance(parser, ConfigParser):
            return parser
        frame = frame.f_back
    raise RuntimeError("check_overrides runs as an expression of a MONAI bundle config.")


def _monai_ids() -> set[str]:
    """Top-level ids MONAI itself reads (workflow properties, what ``--tracking`` adds): keys that nothing in the
    config needs to refer to."""
    from monai.bundle.properties import InferProperties, MetaProperties, TrainProperties
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    ids = {"imports", "initialize", "run", "finalize", "_meta_", "save_execute_config"}
    for table in (TrainProperties, InferProperties, MetaProperties):
        ids |= {re.split("#|::", str(p.get("id", "")))[0] for p in table.values()}
    for settings in DEFAULT_EXP_MGMT_SETTINGS.values():
        ids |= set(settings.get("configs", {}))
    return ids


def _nested_keys(value: Any) -> set[str]:
    """The argument names below the top level (``scoring#threshold`` -> ``threshold``)."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _nested_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _nested_keys(v)}
    return set()


def _check_keys(config: dict[str, Any], job: str) -> None:
    """
    Refuse a top-level key the config does not know: ``python -m monai.bundle run`` (and ``ConfigWorkflow``) add a
    misspelt override (``--treshold 0.9``) to the config as a new key, and the run would go on at the default.

    A key is known when something in the config refers to it (``@key``) or MONAI itself reads it (workflow
    properties, tracking settings), and an option key whose only reference a nested override replaced (``--scoring#
    threshold 0.3``, ``monai.bundle.load``'s ``network_def#backbone``): a field of the job's option dataclasses that
    some component still takes as an argument of that name.
    """
    options = {f for cls in JOB_OPTIONS[job] for f in _field_names(cls)} | set(FIELD_OF) | set(_SETTINGS)
    used = set(re.findall(r"@(\w+)", json.dumps(config, default=str))) | _monai_ids()
    arguments = {k for key, value in config.items() for k in _nested_keys(value) if key not in ("_meta_",)}
    for key in config:
        if key in used or (key in options and key in arguments):
            continue
        names = [k for k in config if k in used and not k.startswith("_")]
        close = difflib.get_close_matches(key, names, n=1)
        if not close and key in _field_names(ScoringOptions) and "scoring" in config:
            close = [f"scoring#{key}"]
        raise InputError(f"bundle override --{key} names no key of this config"
                         + (f"; did you mean --{close[0]}?" if close else " (docs/README.md lists them)."))


def check_overrides(job: str) -> None:
    """
    First of a job's ``initialize`` expressions: every top-level key is one the config uses (a misspelt override
    names the closest key), and every value is checked as its command-line flag would be, by the option dataclass
    field it is (:data:`JOB_OPTIONS`; ``continue``, ``prefetch``... by :data:`_SETTINGS`), before anything is built.

    Raises:
        InputError: one message naming the override and what it accepts.
    """
    parser = _evaluating_parser()
    config = parser.get()
    _check_keys(config, job)
    per_class: dict[type, dict[str, Any]] = {}
    for key in config:
        field = FIELD_OF.get(key, key)
        cls = next((c for c in JOB_OPTIONS[job] if field in _field_names(c)), None)
        if cls is not None:
            value = parser.get_parsed_content(key)
            _options(cls, {field: value}, names={field: key})  # alone: the error names this override
            per_class.setdefault(cls, {})[field] = value
        elif key in _SETTINGS:
            _typed(key, parser.get_parsed_content(key), [_SETTINGS[key]])
    for cls, values in per_class.items():  # together: what only a combination refuses (bf16 on a GPU without it)
        _options(cls, values)


def calibrate(dataset_dir: str | os.PathLike, out: str | os.PathLike, scoring: ScoringOptions | None = None,
              **options: Any) -> CalibrationRun:
    """
    :func:`anomalyclip_med.calibration.calibrate` on the known-normal scans or images of ``dataset_dir`` (a folder,
    a MONAI datalist JSON's ``testing`` list, or with ``dataset=`` a benchmark dataset root), writing the calibration
    JSON ``out`` with the config's ``scoring`` component (the one ``inference.json`` builds the same way): keyword
    options are fields of :class:`ModelOptions`, :class:`LoadingOptions`, :class:`BatchOptions` and
    :class:`CalibrateOptions`.

    Returns:
        The run; a case that fails is named and left out. The ``python -m monai.bundle`` process ends with status 2
        when any failed or none was calibrated.
    """
    # each key to the first class that has it, in JOB_OPTIONS's order (resume is the calibration's, not the batch's)
    classes = (CalibrateOptions, ModelOptions, LoadingOptions, BatchOptions)
    parts: dict[type, dict[str, Any]] = {cls: {} for cls in classes}
    for key, value in options.items():
        parts[next((c for c in classes if key in _field_names(c)), CalibrateOptions)][key] = value
    settings = _options(CalibrateOptions, parts[CalibrateOptions])
    path = Path(dataset_dir)
    inputs = [path] if settings.dataset or path.suffix.lower() != ".json" else \
        [case.source for case in datalist_cases(path)]
    done = _user_errors(lambda: api.calibrate(inputs, out, _options(ModelOptions, parts[ModelOptions]), scoring,
                                              _options(LoadingOptions, parts[LoadingOptions]), settings,
                                              _options(BatchOptions, parts[BatchOptions])), _FIX)
    cal, counts = done.calibration, done.summary.counts
    print(f"calibrated on {cal.counts['cases']} normal {cal.kind} ({counts['scored']} scored, {counts['reused']} "
          f"reused, {counts['failed']} failed) -> {out}")
    _exit_status(2 if counts["failed"] or not cal.counts["cases"] else 0)
    return done


def calibration_decision(network: AnomalyCLIP, scoring: ScoringOptions, **options: Any) -> Decision:
    """
    The decision of the inference config (the fixed threshold when ``calibration`` is None), checked against the
    model and the ONE ``scoring`` component the scans are scored with (an override such as ``--scoring#topk 3``
    reaches both): keyword options are fields of :class:`CalibrationOptions`. The bundle writes the probability
    map; calibrated p-value maps come from ``score --map calibrated``.
    """
    settings = _options(CalibrationOptions, options)
    if settings.map_output != "probability":
        raise InputError("The bundle writes the probability map; write calibrated p-value maps with "
                         "'anomalyclip-med score --map calibrated'.")
    return settings.decision("scans", network.identity(), scoring)
