"""
Entry points for the MONAI bundle configs in ``bundles/``: data lists, the model, and the package's commands.

Bundle configs call these so that nothing is implemented twice: inference runs the package's transforms,
inferer and writers; evaluation and training run the very code of ``anomalyclip-med evaluate`` / ``train``.
User errors end the run at once with one ``error: ...`` line (``SystemExit``) instead of a traceback from
inside the config parser.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist

from anomalyclip_med.cli.options import model_from_args
from anomalyclip_med.errors import AnomalyCLIPMedError
from anomalyclip_med.io.scans import expand_sources
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.weights import DEFAULT_PROMPTS, WeightsUnavailableError

__all__ = ["default_prompts", "default_weights_dir", "scan_datalist", "build_model", "run_command"]


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


def scan_datalist(dataset_dir: str | os.PathLike, key: str = "testing") -> list[dict[str, str]]:
    """
    ``[{"image": path}, ...]`` for a folder of scans (volume files, or one DICOM series folder) or a MONAI
    datalist JSON (its ``key`` list, paths relative to the JSON's folder).
    """
    try:
        path = Path(dataset_dir)
        if path.suffix.lower() == ".json" and path.is_file():
            if key not in json.loads(path.read_text()):
                raise AnomalyCLIPMedError(f"Datalist '{path}' has no '{key}' list of {{\"image\": ...}} items.")
            return [{"image": str(item["image"])} for item in load_decathlon_datalist(path, False, key)]
        return [{"image": str(p)} for p in expand_sources([path])]
    except AnomalyCLIPMedError as err:
        raise SystemExit(f"error: {err}") from None


# the bundle's names for the options an offline error points to
_BUNDLE_FLAGS = {"backbone": "--backbone_weights", "prompts": "--prompts", "weights_dir": "--weights_dir"}


def build_model(
    backbone: str | None = None,
    backbone_weights: str | None = "openai",
    prompts: str | None = DEFAULT_PROMPTS,
    image_size: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    weights_dir: str | None = None,
    feature_layers: list[int] | None = None,
    map_layers: list[int] | None = None,
    compile_network: bool = False,
) -> AnomalyCLIP:
    """The model exactly as the CLI builds it (``model_from_args``: ``"none"`` weights = random, ``"auto"``
    device, seed 0 before a random backbone is drawn; ``compile_network`` is ``--compile``)."""
    args = argparse.Namespace(backbone=backbone or None, backbone_weights=backbone_weights, prompts=prompts,
                              image_size=image_size, device=device, precision=precision, weights_dir=weights_dir,
                              feature_layers=feature_layers, map_layers=map_layers, compile=compile_network)
    try:
        model = model_from_args(args)
    except WeightsUnavailableError as err:
        raise SystemExit(f"error: {err.describe(_BUNDLE_FLAGS)}") from None
    except AnomalyCLIPMedError as err:
        raise SystemExit(f"error: {err} (bundle overrides: --backbone_weights PATH, --prompts NAME_OR_PATH, "
                         "--weights_dir DIR)") from None
    if model.untrained_warning:
        print(model.untrained_warning)
    return model.eval()


def _flag(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"  # lower-case booleans from the command line arrive as text
    if value is None or value is False:
        return []
    if value is True:
        return [flag]
    if isinstance(value, (list, tuple)):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def run_command(command: str, *positional: Any, **options: Any) -> int:
    """
    Run ``anomalyclip-med COMMAND`` in this process with keyword options turned into flags
    (``batch_size=8`` -> ``--batch-size 8``; ``True`` -> bare flag; ``None``/``False`` -> omitted).

    Raises:
        SystemExit: with the command's status when it fails.
    """
    from anomalyclip_med.cli.main import main

    argv = [command, *map(str, positional)]
    for name, value in options.items():
        argv += _flag(name, value)
    status = main(argv)
    if status:
        raise SystemExit(status)
    return status
