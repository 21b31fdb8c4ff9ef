"""
Issue 18, the bundle face against the typed core: library calls raise (``ConfigWorkflow``, ``ConfigParser`` as MONAI
Deploy and MONAI Label use them) while ``python -m monai.bundle run`` ends with one ``error:`` line and status 2;
every override is checked as its command-line flag; a misspelt override is refused naming the closest key; every
config's defaults are the option dataclasses'; face disagreements 2 (calibrate.json's literal defaults) and 4 (the
calibration checked against a second, re-listed ScoringOptions).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings
from dataclasses import MISSING

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from anomalyclip_med import bundle as bundle_module
from anomalyclip_med.bundle import as_bool, resume_mode
from anomalyclip_med.calibration import Calibration, CalibrateOptions, CalibrationOptions
from anomalyclip_med.calibration.calibration import CalibrationMismatchError
from anomalyclip_med.errors import AnomalyCLIPMedError, InputError, MissingWeightsError
from anomalyclip_med.inference import BatchOptions, LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.network import ModelOptions, factory
from anomalyclip_med.training import TrainSettings
from anomalyclip_med.utils.console import NOISY_LOGGERS
from conftest import TESTS, TINY_CLIP_JSON, offline_env
from scan_data import normal_volume

REPO = TESTS.parent
BUNDLES = REPO / "bundles"
BUNDLE = BUNDLES / "anomalyclip_zeroshot"
CONFIGS = BUNDLE / "configs"
TINY = {"backbone": str(TINY_CLIP_JSON), "backbone_weights": "none", "image_size": 56, "prompts": "untrained"}
TINY_ARGS = [a for k, v in TINY.items() for a in (f"--{k}", v)]
# configs a user runs on top of others (the README's commands)
STACKS = {"evaluate.json": ["train.json"], "multi_gpu_train.json": ["train.json"],
          "multi_gpu_evaluate.json": ["train.json", "evaluate.json"]}


@pytest.fixture(autouse=True)
def _keep_logger_levels():
    """The configs' first step quiets third-party loggers for the process; in-process runs leave them as found."""
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _workflow(config: str, **overrides) -> ConfigWorkflow:
    """The bundle's config as a library caller builds it (MONAI's logging config left alone)."""
    files = [str(CONFIGS / name) for name in [*STACKS.get(config, []), config]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ConfigWorkflow(config_file=files, meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
                              workflow_type=None, bundle_root=str(BUNDLE), **overrides)


def _bundle_run(config: str, *overrides, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / config),
                           "--bundle_root", str(BUNDLE), *map(str, overrides)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=REPO)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    """Exit status 2 and exactly one ``error:`` line, the last of stderr, and no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.stderr.rstrip().endswith(line) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return line


# ------------------------------------------------------------------------------ library calls raise, processes exit

def test_in_library_calls_missing_weights_raise_the_package_error(tmp_path, monkeypatch):
    """Offline without weights: ConfigWorkflow (a MONAI Deploy app) and ConfigParser (MONAI Label's bundle tasks)
    get MissingWeightsError naming each file and the bundle override that provides it; nothing ends the process."""
    for name, value in offline_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    workflow = _workflow("inference.json", output_dir=str(tmp_path / "out"))
    with pytest.raises(MissingWeightsError) as info:
        workflow.initialize()
    for needed in ("ViT-L-14-336px.pt", "anomalyclip_mvtec-trained.pth", "--backbone_weights", "--prompts",
                   "--weights_dir"):
        assert needed in str(info.value)
    assert not (tmp_path / "out").exists()
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE)})
    with pytest.raises(MissingWeightsError, match="--backbone_weights"):
        parser.get_parsed_content("network_def")
    # the helpers the configs call raise too
    with pytest.raises(InputError, match="'yes'"):
        as_bool("yes")
    with pytest.raises(InputError, match="choose one of --continue true"):
        resume_mode(True, True)


@pytest.mark.parametrize("overrides, needed", [
    (["--threshold", "abc"], ["--threshold 'abc'", "a number"]),
    (["--treshold", "0.9"], ["--treshold", "did you mean --threshold?"]),
    (["--device", "xyz"], ["--device 'xyz'", "Unknown device"]),
], ids=["threshold-abc", "misspelt", "device-xyz"])
def test_the_bundle_process_ends_with_one_error_line_and_status_2(overrides, needed, tmp_path):
    out = tmp_path / "out"
    line = _one_error_line(_bundle_run("inference.json", "--output_dir", out, *TINY_ARGS, *overrides))
    for text in needed:
        assert text in line
    assert not out.exists()



def test_the_bundle_process_offline_names_the_missing_files_on_one_line(tmp_path):
    line = _one_error_line(_bundle_run("inference.json", "--output_dir", tmp_path / "out",
                                       env_extra=offline_env(tmp_path)))
    assert "ViT-L-14-336px.pt" in line and "--backbone_weights" in line and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ overrides checked as their flags

BAD_OVERRIDES = [
    ("inference.json", {"threshold": "abc"}, ["--threshold 'abc'", "a number"]),
    ("inference.json", {"threshold": 1.5}, ["--threshold 1.5", "in [0, 1]"]),
    ("inference.json", {"batch_size": 8.5}, ["--batch_size 8.5", "an integer"]),
    ("inference.json", {"image_size": "abc"}, ["--image_size 'abc'", "an integer"]),
    ("inference.json", {"device": "xyz"}, ["--device 'xyz'", "cpu, cuda"]),
    ("inference.json", {"precision": "fp64"}, ["--precision 'fp64'", "fp32"]),
    ("inference.json", {"skip_empty": "yes"}, ["--skip_empty 'yes'", "true or false"]),
    ("inference.json", {"continue": "maybe"}, ["--continue 'maybe'", "true or false"]),
    ("inference.json", {"prefetch": 0}, ["--prefetch 0", "an integer >= 1"]),
    ("inference.json", {"case_name": "name"}, ["--case_name 'name'", "stem"]),
    ("inference.json", {"aggregation": "median"}, ["--aggregation 'median'", "topk_mean"]),
    ("inference.json", {"target_fpr": 2}, ["--target_fpr 2", "(0, 1)"]),
    ("inference.json", {"feature_layers": "24"}, ["--feature_layers '24'", "a list"]),
    ("inference.json", {"scoring#topk": "x"}, ["--scoring#topk 'x'", "an integer"]),
    ("inference.json", {"treshold": 0.9}, ["--treshold", "did you mean --threshold?"]),
    ("inference.json", {"scoring#threshold": 0.3, "continu": True}, ["--continu", "did you mean --continue?"]),
    ("inference.json", {"topk": 3}, ["--topk names no key", "did you mean --scoring#topk?"]),
    ("calibrate.json", {"batch_size": 8.5}, ["--batch_size 8.5", "an integer"]),
    ("calibrate.json", {"resume": "maybe"}, ["--resume 'maybe'", "true or false"]),
    ("calibrate.json", {"presett": "brain"}, ["--presett", "did you mean --preset?"]),
    ("train.json", {"max_epochs": 1.5}, ["--max_epochs 1.5", "an integer"]),
    ("train.json", {"learning_rate": "fast"}, ["--learning_rate 'fast'", "a number"]),
    ("train.json", {"val_interval": 0}, ["--val_interval 0", "an integer >= 1"]),
    ("evaluate.json", {"prompt": "x.pt"}, ["--prompt", "did you mean --prompts?"]),
]


@pytest.mark.parametrize("config, overrides, needed", BAD_OVERRIDES,
                         ids=[f"{c}-{next(iter(o))}" for c, o, _ in BAD_OVERRIDES])
def test_every_override_is_checked_as_its_flag_before_anything_is_built(config, overrides, needed, tmp_path):
    workflow = _workflow(config, output_dir=str(tmp_path / "out"), **overrides)  # the check comes first
    with pytest.raises(InputError) as info:
        workflow.initialize()
    for text in needed:
        assert text in str(info.value)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ the configs' defaults

def _config_files():
    return sorted(p for p in BUNDLES.glob("*/configs/*.json") if p.name != "metadata.json")


def _dataclass_default(cls: type, name: str):
    field = cls.__dataclass_fields__[name]
    return field.default_factory() if field.default is MISSING else field.default


# Which option dataclasses each job's keys are fields of, the first that has the field deciding (``seed`` is the
# training's in train.json, the model's in calibrate.json): the same classes the command line builds for the job.
JOBS = {
    "inference": (ScoringOptions, ModelOptions, OutputOptions, BatchOptions, CalibrationOptions),
    "calibrate": (CalibrateOptions, ScoringOptions, ModelOptions, LoadingOptions, BatchOptions),
    "train": (TrainSettings, ModelOptions),
}
FIELD_OF = {"learning_rate": "lr", "max_epochs": "epochs"}  # train.json keys named as MONAI's bundles name them
# defaults the bundle chooses itself, each an expression (never a copied literal): the prompts train.json saved
# (evaluate.json), and each torchrun process's own GPU
BUNDLE_CHOICES = {("evaluate.json", "prompts"), ("multi_gpu_train.json", "device"),
                  ("multi_gpu_evaluate.json", "device")}


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: p.name)
def test_every_config_reads_its_defaults_from_the_option_dataclasses(path, tmp_path):
    parser = ConfigParser()
    parser.read_config([str(path.parent / name) for name in [*STACKS.get(path.name, []), path.name]])
    parser.update({"bundle_root": str(tmp_path)})  # a bundle without prompts or weights of its own
    job = {"inference.json": "inference", "calibrate.json": "calibrate"}.get(path.name, "train")
    checked = []
    for key, raw in json.loads(path.read_text()).items():
        field = FIELD_OF.get(key, key)
        cls = next((c for c in JOBS[job] if field in c.__dataclass_fields__), None)
        if cls is None:
            continue
        default = _dataclass_default(cls, field)
        where = f"{path.name}: {key} (default {cls.__name__}.{field} = {default!r})"
        if not (isinstance(raw, str) and raw.startswith(("$", "@"))):  # a literal: only null, for a None default
            assert raw is None and default is None, f"{where} is written as the literal {raw!r}"
        else:
            named = re.fullmatch(r"\$anomalyclip_med(?:\.\w+)*\.(\w+)\.(\w+)", raw)
            assert (named and named.groups() == (cls.__name__, field)) or (path.name, key) in BUNDLE_CHOICES or \
                raw.startswith("$anomalyclip_med.bundle.default_"), f"{where} reads {raw!r}"
        if (path.name, key) not in BUNDLE_CHOICES:
            assert parser.get_parsed_content(key) == default, where
        checked.append(key)
    assert checked, path.name
    assert JOBS == bundle_module.JOB_OPTIONS and FIELD_OF == bundle_module.FIELD_OF  # what check_overrides checks
    assert f"check_overrides('{job}')" in json.dumps(parser.get()["initialize"])


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: p.name)
def test_every_config_key_is_known_so_that_only_a_misspelt_override_is_not(path):
    parser = ConfigParser()
    parser.read_config([str(path.parent / name) for name in [*STACKS.get(path.name, []), path.name]])
    job = {"inference.json": "inference", "calibrate.json": "calibrate"}.get(path.name, "train")
    bundle_module._check_keys(parser.get(), job)
    # a nested override replacing the only reference to a key (monai.bundle.load's net_override) is no misspelling
    parser.update({"network_def#backbone": str(TINY_CLIP_JSON)} if "network_def" in parser.get() else {})
    bundle_module._check_keys(parser.get(), job)
    parser.update({"treshold": 0.9})
    with pytest.raises(InputError, match="--treshold names no key"):
        bundle_module._check_keys(parser.get(), job)


# ------------------------------------------------------------------------------ face disagreements 2 and 4

@pytest.fixture(scope="module")
def normals(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces_normals")
    for i in range(3):
        normal_volume(root / f"n{i}.nii.gz", i, shape=(24, 24, 6))
    return root


def _calibrate(normals, out, **overrides) -> Calibration:
    """calibrate.json as a library caller runs it, with the defaults of everything not given."""
    workflow = _workflow("calibrate.json", dataset_dir=str(normals), calibration=str(out), progress=False,
                         device="cpu", **{**TINY, **overrides})
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return Calibration.load(out)


def _infer(scans, out, calibration, **overrides):
    workflow = _workflow("inference.json", dataset_dir=str(scans), output_dir=str(out), calibration=str(calibration),
                         target_fpr=0.5, progress=False, device="cpu", **{**TINY, **overrides})
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    (report,) = [json.loads(p.read_text()) for p in out.glob("n0_scores.json")]
    return report


def test_disagreement_2_the_bundle_accepts_its_own_calibration_where_auto_precision_is_not_fp32(
        normals, tmp_path, monkeypatch):
    """On a machine whose ``precision auto`` is not fp32 (fp16 on a GPU; here the CPU's entry made bf16),
    calibrate.json's defaults are inference.json's: the calibration is made and applied at the same precision."""
    monkeypatch.setitem(factory.AUTO_PRECISION, "cpu", "bf16")
    calibration = _calibrate(normals, tmp_path / "calibration.json")
    assert calibration.model["precision"] == "bf16"
    report = _infer(normals, tmp_path / "out", tmp_path / "calibration.json")
    assert report["calibration"]["sha256"] == calibration.sha256


def test_on_a_gpu_host_calibrate_and_inference_on_the_cpu_agree(normals, tmp_path, monkeypatch):
    """The GPU-host scenario of disagreements 1 and 2 (CUDA patched in, --device cpu): calibrate.json and
    inference.json both resolve ``precision auto`` for the CPU the network runs on. (With --device cpu the old fp32
    literal happens to agree; the test above is the one that catches a literal default.)"""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    calibration = _calibrate(normals, tmp_path / "calibration.json")
    assert calibration.model["precision"] == "fp32"  # the CPU's auto precision, as --device cpu
    _infer(normals, tmp_path / "out", tmp_path / "calibration.json")


def test_disagreement_4_the_calibration_is_checked_against_the_one_scoring_component(normals, tmp_path):
    """An override of ``scoring#topk`` changes the scoring and what the calibration is checked against."""
    path = tmp_path / "calibration.json"
    calibration = _calibrate(normals, path)
    assert calibration.scoring["topk"] == 5  # ScoringOptions.topk
    with pytest.raises(CalibrationMismatchError, match="topk") as info:
        _infer(normals, tmp_path / "topk3", path, **{"scoring#topk": 3})
    assert "5" in str(info.value) and "3" in str(info.value)
    assert not list((tmp_path / "topk3").rglob("*_scores.json"))
    report = _infer(normals, tmp_path / "topk5", path, **{"scoring#topk": 5})
    assert report["calibration"]["sha256"] == calibration.sha256


def test_package_errors_keep_their_type_through_monai_and_other_errors_keep_monais_wrapping():
    parser = ConfigParser({"bad": "$anomalyclip_med.bundle.as_bool('nope')", "other": "$int('x')",
                           "imports": ["$import anomalyclip_med", "$import anomalyclip_med.bundle"]})
    with pytest.raises(InputError) as info:
        parser.get_parsed_content("bad")
    assert isinstance(info.value, AnomalyCLIPMedError) and info.value.__context__ is None
    with pytest.raises(RuntimeError, match="Failed to evaluate"):
        parser.get_parsed_content("other")
