"""One typed core, two faces: the layout rules of the package, checked on its source, and the typed options."""

from __future__ import annotations

import ast
import dataclasses
import re
import warnings

import pytest
import torch

from anomalyclip_med.cli.main import build_parser
from anomalyclip_med.errors import InputError
from anomalyclip_med.inference.options import LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.network.factory import ModelOptions, create_model, resolve_device
from anomalyclip_med.training.loop import TrainSettings
from anomalyclip_med.training.run import TRAIN_PROMPTS
from conftest import TESTS, TINY_CLIP_JSON

PACKAGE = TESTS.parent / "anomalyclip_med"


def _imports(path) -> set[str]:
    """Every module a source file imports (``from x import y`` gives ``x`` and ``x.y``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


# The floors of the package, lowest first: a module imports only from its own floor and those below, so the data
# flow io -> transforms -> network -> inference -> metrics/evaluation reads off the layout, and the run engine, the
# typed API and the two faces (command line, bundle) sit on top. Function-level and TYPE_CHECKING imports count:
# a loop hidden inside a function is still a loop.
FLOORS = [
    {"__init__", "_exports", "errors", "utils"},
    {"weights"},
    {"io"},
    {"calibration"},
    {"transforms"},
    {"network"},
    {"data"},
    {"inference"},
    {"metrics"},
    {"training"},
    {"evaluation"},
    {"runs"},
    {"api"},
    {"bundle", "cli", "__main__"},
]


def _floor(part: str) -> int:
    return next(i for i, names in enumerate(FLOORS) if part in names)


def test_no_import_runs_up_a_floor():
    """Every anomalyclip_med import (at module level or inside a function) targets the importer's floor or a lower
    one; every sub-package and top-level module has a floor."""
    up = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        here = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == "anomalyclip_med":
                targets = [f"anomalyclip_med.{a.name}" for a in node.names if a.name != "__version__"]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                if parts[0] != "anomalyclip_med" or len(parts) < 2 or parts[1] == here:
                    continue
                if _floor(parts[1]) > _floor(here):
                    up.append(f"{rel}:{node.lineno} imports {target}")
    assert up == []


def test_nothing_outside_cli_imports_cli():
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(m for m in _imports(p) if m.startswith("anomalyclip_med.cli"))
        for p in PACKAGE.rglob("*.py")
        # ``python -m anomalyclip_med`` is the command line itself
        if "cli" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_weights_import_nothing_from_the_network():
    """weights/ lies below network/: the network imports the weights layer, never the other way, not even inside a
    function (relative imports resolved)."""
    offenders = []
    for path in sorted((PACKAGE / "weights").rglob("*.py")):
        package = ["anomalyclip_med", *path.relative_to(PACKAGE).parent.parts]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            else:
                continue
            offenders += [(path.name, node.lineno, n) for n in names
                          if n == "anomalyclip_med.network" or n.startswith("anomalyclip_med.network.")]
    assert offenders == []


def test_network_model_does_not_import_io_or_transforms():
    imported = _imports(PACKAGE / "network" / "model.py")
    assert not [m for m in imported if m.startswith(("anomalyclip_med.io", "anomalyclip_med.transforms", "PIL"))]


def test_the_reference_seed_is_written_once():
    hits = [(str(p.relative_to(PACKAGE)), line) for p in PACKAGE.rglob("*.py")
            for line in p.read_text(encoding="utf-8").splitlines() if re.search(r"(?<![\d.])111(?![\d.])", line)
            and not line.lstrip().startswith("#")]
    assert hits == [("network/config.py", "REFERENCE_SEED = 111")]
    assert TrainSettings.seed == 111 and ModelOptions.seed == 0


MINIMAL_ARGS = {
    "score": ["score", "scan.nii.gz", "--out", "o"],
    "evaluate": ["evaluate", "--dataset", "manifest", "m.csv", "--out", "o"],
    "train": ["train", "--data", "d", "--format", "headct", "--out", "o"],
    "predict": ["predict", "x.png", "--out", "o"],
}


def _parser_defaults(command: str) -> dict:
    return vars(build_parser().parse_args(MINIMAL_ARGS[command]))


@pytest.mark.parametrize("command", ["score", "evaluate", "train", "predict"])
def test_command_line_defaults_are_the_dataclass_defaults(command):
    defaults = _parser_defaults(command)
    classes = [ModelOptions]
    if command in ("score", "evaluate"):
        classes.append(ScoringOptions)
    if command == "score":
        classes += [LoadingOptions, OutputOptions]
    if command == "train":
        classes.append(TrainSettings)
    checked = 0
    for cls in classes:
        for f in dataclasses.fields(cls):
            # training has its own seed and starts from its own prompts (TRAIN_PROMPTS: untrained, as the paper)
            own = command == "train" and cls is ModelOptions and f.name in ("seed", "prompts")
            if f.name in defaults and not own:
                assert defaults[f.name] == f.default, (command, cls.__name__, f.name)
                checked += 1
    assert checked >= 6
    if command == "train":
        assert defaults["prompts"] == TRAIN_PROMPTS == "untrained"


def test_command_line_writes_no_default_of_its_own():
    """Every flag's default is read from the typed core (a dataclass field or a named constant), never a literal."""
    literal = re.compile(r"default=(-?\d|\"|'|True|False)")
    hits = [(p.name, line.strip()) for p in (PACKAGE / "cli").glob("*.py")
            for line in p.read_text(encoding="utf-8").splitlines() if literal.search(line)]
    assert hits == []


def test_model_options_validate_and_default_to_auto_device():
    assert ModelOptions().device == "auto"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    for bad, name in (({"precision": "fp8"}, "precision"), ({"image_size": 0}, "image_size"),
                      ({"image_size": 3.5}, "image_size")):
        with pytest.raises(InputError, match=rf"Invalid model option {name}="):
            ModelOptions(**bad)
    unset = ModelOptions(backbone="", prompts="")  # "" from a config means "not set": the default
    assert unset.backbone is None and unset.prompts == "mvtec-trained"


def test_create_model_with_auto_device_seeds_the_random_backbone():
    options = ModelOptions(backbone=str(TINY_CLIP_JSON), backbone_weights="none", prompts="untrained", image_size=56)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = create_model(options), create_model(options)
        c = create_model(dataclasses.replace(options, seed=1))
    assert a.device.type == resolve_device("auto") and not a.training
    assert a.backbone_info.random_weights
    first = next(a.clip.parameters())
    assert torch.equal(first, next(b.clip.parameters())) and not torch.equal(first, next(c.clip.parameters()))


def test_loaders_live_with_the_transforms():
    from monai.transforms import MapTransform

    from anomalyclip_med.transforms import LoadImage2Dd, LoadScand

    assert all(issubclass(t, MapTransform) for t in (LoadImage2Dd, LoadScand))
    # io/ reads and writes file formats; no MONAI transform class is defined there
    for path in (PACKAGE / "io").glob("*.py"):
        classes = [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.ClassDef)]
        bases = {ast.unparse(b) for c in classes for b in c.bases}
        assert not bases & {"Transform", "MapTransform"}, path.name


@pytest.mark.parametrize("package", ["data", "evaluation", "inference", "io", "network", "training", "transforms",
                                     "utils"])
def test_each_subpackage_exports_its_public_names(package):
    import importlib

    pkg = importlib.import_module(f"anomalyclip_med.{package}")
    for path in sorted((PACKAGE / package).glob("*.py")):
        if path.name == "__init__.py" or (package == "data" and path.stem not in ("registry", "samples", "dataset")):
            continue  # data: one reader module per layout, reached through the registry
        module = importlib.import_module(f"anomalyclip_med.{package}.{path.stem}")
        missing = [n for n in module.__all__ if n not in pkg.__all__]
        assert not missing, (path.name, missing)
        assert all(getattr(pkg, n) is getattr(module, n) for n in module.__all__ if n in vars(module))
