"""
The calibration run behind ``anomalyclip-med calibrate`` and the bundle's ``calibrate.json``: inputs (scans, 2D
images, or a benchmark dataset's normal images) and typed options in, the calibration JSON out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from anomalyclip_med.errors import InputError

if TYPE_CHECKING:  # the command line reads CalibrateOptions' defaults without loading torch, MONAI or PIL
    from anomalyclip_med.calibration.collect import CalibrationRun
    from anomalyclip_med.inference.options import LoadingOptions, ScoringOptions
    from anomalyclip_med.network.factory import ModelOptions

__all__ = ["CalibrateOptions", "calibration_inputs", "calibrate"]


@dataclass
class CalibrateOptions:
    """
    A calibration run (defaults in brackets).

    Attributes:
        dataset: read the normal images of this benchmark dataset layout (e.g. ``bmad-brain``) under the one input
            root [None: the inputs are scans or images].
        split: the dataset split whose normal images are used ["train": BMAD's and MedIAnomaly's normal-only split].
        resume: reuse the parts of an earlier run made from the same files, model and options [False].
        overwrite: replace an existing output [False].
        progress: show a progress bar [True].
    """

    dataset: str | None = None
    split: str = "train"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True


def _all_images(inputs: list[Path]) -> bool:
    """2D images when every file given, or found in a folder given, is an image file (hidden files aside)."""
    from anomalyclip_med.io.images import IMAGE_SUFFIXES

    files = []
    for p in inputs:
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    files = [f for f in files if not f.name.startswith(".")]
    return bool(files) and all(f.suffix.lower() in IMAGE_SUFFIXES for f in files)


def calibration_inputs(inputs: list[str | os.PathLike], dataset: str | None = None, split: str = "train"
                       ) -> tuple[str, list[Path]]:
    """
    ``(kind, sources)``: ``"images"`` and the image files (a dataset's normal images of ``split``, or every image
    given) or ``"scans"`` and the scans (volume files, DICOM series folders, folders of volumes).

    Raises:
        InputError: a missing input, a dataset root that does not fit its layout, no normal images.
    """
    from anomalyclip_med.io.images import list_images
    from anomalyclip_med.io.cases import find_cases

    paths = [Path(p) for p in inputs]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise InputError(f"Input '{missing[0]}' does not exist.")
    if dataset:
        from anomalyclip_med.data import load_samples

        if len(paths) != 1:
            raise InputError(f"A dataset is read from one root folder, got {len(paths)} inputs.")
        normals = [s.image for s in load_samples(dataset, paths[0], split=split) if s.label == 0]
        if not normals:
            raise InputError(f"Dataset '{paths[0]}' ({dataset}, split {split}) holds no normal images.")
        return "images", normals
    if _all_images(paths):
        return "images", list_images(paths)
    return "scans", [case.source for case in find_cases(paths)]


def calibrate(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    model: ModelOptions | None = None,
    scoring: ScoringOptions | None = None,
    loading: LoadingOptions | None = None,
    options: CalibrateOptions | None = None,
) -> CalibrationRun:
    """
    Build the model and calibrate it on the known-normal ``inputs`` (see :func:`calibration_inputs`), writing the
    calibration JSON to ``out`` (and per-case parts beside it, see :func:`calibrate_scans`).

    Args:
        inputs: known-normal scans or 2D images, or a dataset root with ``options.dataset``.
        out: the calibration JSON.
        model: the network (defaults: :class:`ModelOptions`).
        scoring: how scans are scored (and ``batch_size``: images per forward pass for 2D images).
        loading: which volume of each scan is read.
        options: dataset, split, resume, overwrite, progress (defaults: :class:`CalibrateOptions`).
    """
    from anomalyclip_med.calibration.collect import calibrate_images, calibrate_scans
    from anomalyclip_med.inference.options import ScoringOptions
    from anomalyclip_med.network.factory import ModelOptions, create_model

    model, scoring, options = model or ModelOptions(), scoring or ScoringOptions(), options or CalibrateOptions()
    kind, sources = calibration_inputs(inputs, options.dataset, options.split)
    net = create_model(model)
    if net.untrained_warning:
        print(net.untrained_warning)
    if kind == "scans":
        return calibrate_scans(net, sources, out, scoring, loading, options.overwrite, options.resume,
                               options.progress)
    return calibrate_images(net, sources, out, options.overwrite, options.resume, scoring.batch_size,
                            options.progress)
