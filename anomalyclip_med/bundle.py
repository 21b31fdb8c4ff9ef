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

import torch
from monai.data import load_decathlon_datalist

from anomalyclip_med.cli.options import model_from_args
from anomalyclip_med.errors import AnomalyCLIPMedError
from anomalyclip_med.io.scans import expand_sources
from anomalyclip_med.data.dataset import AnomalyDataset
from anomalyclip_med.data.registry import load_samples
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.network.net import AnomalyCLIPNet

__all__ = [
    "BundleNetwork",
    "default_prompts",
    "scan_datalist",
    "prompt_dataset",
    "as_bool",
    "torch_device",
    "warn_untrained",
    "build_model",
    "run_command",
]

# what a user changes when the network cannot be built
_NETWORK_OVERRIDES = "(bundle overrides: --backbone_weights PATH, --prompts PATH)"


def default_prompts(bundle_root: str | os.PathLike) -> str | None:
    """The packaged prompts ``models/model.pt`` of a bundle (see ``anomalyclip-med export-bundle``), if present."""
    path = Path(bundle_root) / "models" / "model.pt"
    return str(path) if path.is_file() else None


class BundleNetwork(AnomalyCLIPNet):
    """
    The bundle's ``network_def``: :class:`anomalyclip_med.network.AnomalyCLIPNet` (same arguments, state dict and
    outputs) whose construction errors (missing or unfit weights) end the run with one ``error:`` line naming
    the bundle override that fixes it, instead of a traceback from inside the config parser.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        except AnomalyCLIPMedError as err:
            raise SystemExit(f"error: {err}\n{_NETWORK_OVERRIDES}") from None


def as_bool(value: bool | str | int) -> bool:
    """
    A boolean bundle override, read one way whatever its spelling: ``python -m monai.bundle`` passes ``True`` /
    ``False`` as booleans but ``true`` / ``false`` (as the README writes defaults) as text, which would be truthy.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise SystemExit(f"error: {value!r} is not a boolean; write true or false")


def torch_device(name: str | torch.device) -> torch.device:
    """The bundle's ``device`` override as a torch device: ``auto`` (CUDA when available, else CPU) or a name."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SystemExit(f"error: unknown device {name!r} (bundle override --device auto|cpu|cuda|cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: device {name!r} requested but CUDA is not available here (bundle override --device cpu)")
    return device


def warn_untrained(network: AnomalyCLIPNet, prompts: str | os.PathLike | None) -> None:
    """Say loudly, once at start, when the scores will not mean anything (random backbone, or no prompts)."""
    parts = ["the backbone has RANDOM weights"] if network.anomalyclip.backbone_info.random_weights else []
    if prompts is None:
        parts.append("no prompts are given (models/model.pt or --prompts): the prompts are UNTRAINED")
    if parts:
        print("WARNING: " + " and ".join(parts) + " - these scores are not meaningful.")


def prompt_dataset(dataset: str, dataset_dir: str | os.PathLike, image_size: int, split: str = "test") -> AnomalyDataset:
    """The training / validation images of a dataset in its native layout (``anomalyclip_med.data`` formats)."""
    try:
        return AnomalyDataset(load_samples(dataset, dataset_dir, split), image_size)
    except AnomalyCLIPMedError as err:
        raise SystemExit(f"error: {err}") from None


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


def build_model(
    backbone: str | None = None,
    backbone_weights: str | None = "openai",
    prompts: str | None = None,
    image_size: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    compile_network: bool = False,
) -> AnomalyCLIP:
    """The model exactly as the CLI builds it (``model_from_args``: ``"none"`` weights = random, ``"auto"``
    device, seed 0 before a random backbone is drawn; ``compile_network`` is ``--compile``)."""
    args = argparse.Namespace(backbone=backbone or None, backbone_weights=backbone_weights, prompts=prompts or None,
                              image_size=image_size, device=device, precision=precision, compile=compile_network)
    try:
        model = model_from_args(args)
    except AnomalyCLIPMedError as err:
        raise SystemExit(f"error: {err}\n{_NETWORK_OVERRIDES}") from None
    if model.untrained_warning:
        print(model.untrained_warning)
    return model.eval()


def _flag(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = as_bool(value)
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
