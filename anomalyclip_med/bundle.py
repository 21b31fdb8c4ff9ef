"""
Entry points for the MONAI bundle configs in ``bundles/``: data lists, the model, and the package's commands.

Bundle configs call these so that nothing is implemented twice: inference runs the package's transforms,
inferer and writers; evaluation and training run the very code of ``anomalyclip-med evaluate`` / ``train``.
User errors end the run at once with one ``error: ...`` line (``SystemExit``) instead of a traceback from
inside the config parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from anomalyclip_med.cli.options import model_from_args
from anomalyclip_med.errors import AnomalyCLIPMedError
from anomalyclip_med.inference.batch import ScanBatchRunner
from anomalyclip_med.io.cases import ScanCase, datalist_cases
from anomalyclip_med.network.model import AnomalyCLIP

__all__ = ["default_prompts", "scan_cases", "resume_mode", "preflight", "run_batch", "build_model", "run_command"]


def default_prompts(bundle_root: str | os.PathLike) -> str | None:
    """The packaged prompts ``models/model.pt`` of a bundle (see ``anomalyclip-med export-bundle``), if present."""
    path = Path(bundle_root) / "models" / "model.pt"
    return str(path) if path.is_file() else None


def _bool(value: Any) -> bool:
    """A boolean override: lower-case text from the command line (``true``/``false``) or a JSON boolean."""
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


def scan_cases(
    dataset_dir: str | os.PathLike, output_dir: str | os.PathLike, case_name: str = "stem", key: str = "testing"
) -> list[ScanCase]:
    """
    The scans of ``dataset_dir`` as batch cases (:func:`anomalyclip_med.io.cases.datalist_cases`): a folder of
    scans (walked, sub-folders too), a DICOM series folder, or a MONAI datalist JSON (its ``key`` list of
    ``{"image": ...}``, paths relative to the JSON's folder). Outputs mirror them below ``output_dir``.
    """
    try:
        return datalist_cases(dataset_dir, case_name, key, output_dir)
    except AnomalyCLIPMedError as err:
        _exit(err)


def resume_mode(resume: Any = False, overwrite: Any = False) -> str:
    """The runner's resume mode from the bundle's ``continue`` and ``overwrite`` overrides."""
    return "overwrite" if _bool(overwrite) else "continue" if _bool(resume) else "refuse"


def preflight(runner: ScanBatchRunner) -> None:
    """The runner's checks (:meth:`ScanBatchRunner.preflight`), run before the network is built."""
    try:
        runner.preflight()
    except AnomalyCLIPMedError as err:
        _exit(err)


def run_batch(runner: ScanBatchRunner, network: AnomalyCLIP) -> int:
    """
    Run the batch; a case that fails is reported and the others go on.

    Raises:
        SystemExit: status 2 when any case failed (or the run was refused), as ``anomalyclip-med score``.
    """
    try:
        summary = runner.run(network)
    except AnomalyCLIPMedError as err:
        _exit(err)
    if summary.exit_status:
        raise SystemExit(summary.exit_status)
    return 0


def _exit(err: AnomalyCLIPMedError) -> NoReturn:
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2) from None


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
        raise SystemExit(f"error: {err}\n(bundle overrides: --backbone_weights PATH, --prompts PATH)") from None
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
