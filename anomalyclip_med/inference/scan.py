"""
One scan's stages, as the run engine's scan job (:class:`anomalyclip_med.runs.scans.ScanJob`) runs them: read it
and plan its slices (:func:`prepare_scan`, host), run AnomalyCLIP slice by slice and aggregate a scan score
(:func:`compute_scan`, device), and write the anomaly map, labelmap, scores JSON, overlay montage (and optionally a
DICOM SEG) in the scan's own geometry, whole or not at all (:func:`write_scan`, host).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import convert_to_tensor

from anomalyclip_med import __version__
from anomalyclip_med.calibration.calibration import Decision
from anomalyclip_med.inference.options import (
    AGGREGATIONS,
    LoadingOptions,
    OutputOptions,
    ScoringOptions,
    scan_options_record,
)
from anomalyclip_med.inference.slices import SlicePlan, SliceScores, plan_slices, score_planned
from anomalyclip_med.io.case_outputs import write_case_outputs
from anomalyclip_med.io.cases import OutputLayout, ScanCase, input_fingerprint
from anomalyclip_med.io.scans import case_id_of, load_volume
from anomalyclip_med.io.writers import write_dicom_seg, write_montage, write_volume
from anomalyclip_med.network.model import AnomalyCLIP

__all__ = [
    "OUTPUT_SUFFIXES",
    "DICOM_SEG_SUFFIX",
    "PreparedScan",
    "ScoredScan",
    "aggregate_scores",
    "case_id_of",
    "scan_layout",
    "expected_outputs",
    "plan_scan",
    "resume_record",
    "scan_report",
    "prepare_scan",
    "compute_scan",
    "write_scan",
]

logger = logging.getLogger(__name__)

OUTPUT_SUFFIXES = {
    "map": "_anomaly_map.nii.gz",
    "seg": "_anomaly_seg.nii.gz",
    "scores": "_scores.json",
    "montage": "_overlay.png",
}
DICOM_SEG_SUFFIX = "_anomaly_seg.dcm"
_MONTAGE_TILE = 256


def scan_layout(out_dir: str | os.PathLike, dicom_seg: bool = False) -> OutputLayout:
    """Where a scan case's outputs go: ``<case>`` plus :data:`OUTPUT_SUFFIXES` (and :data:`DICOM_SEG_SUFFIX` when
    asked for) in the case's folder below ``out_dir``."""
    names = {key: "{case}" + suffix for key, suffix in OUTPUT_SUFFIXES.items()}
    if dicom_seg:
        names["dicom_seg"] = "{case}" + DICOM_SEG_SUFFIX
    return OutputLayout(Path(out_dir), names)


def expected_outputs(
    source: str | os.PathLike, out_dir: str | os.PathLike, dicom_seg: bool = False, case_id: str | None = None
) -> dict[str, Path]:
    """
    The paths :func:`score_scan` writes for ``source``: keys ``map``, ``seg``, ``scores``, ``montage`` (and
    ``dicom_seg`` when requested and ``source`` is a DICOM series folder), named after ``case_id`` [the file
    stem]. ``scores`` is renamed into place last and lists the others' sizes and hashes
    (:func:`anomalyclip_med.io.case_outputs.read_finished_case`).
    """
    case = ScanCase(case_id or case_id_of(source), Path(source))
    layout = scan_layout(out_dir, dicom_seg and case.source.is_dir())
    return layout.paths(case)


def aggregate_scores(slice_scores: np.ndarray, scored: np.ndarray, method: str = "topk_mean", topk: int = 5) -> float:
    """
    The scan score from the scored slices: mean of the ``topk`` highest (``topk_mean``), ``max`` or ``mean``;
    0 when no slice was scored.
    """
    values = np.sort(np.asarray(slice_scores, dtype=np.float64)[np.asarray(scored, dtype=bool)])[::-1]
    if values.size == 0:
        return 0.0
    if method == "topk_mean":
        return float(values[:topk].mean())
    if method == "max":
        return float(values[0])
    if method == "mean":
        return float(values.mean())
    raise ValueError(f"Unknown aggregation {method!r}; choose one of {AGGREGATIONS}.")


def _montage_slices(result: SliceScores, count: int) -> list[int]:
    """The ``count`` highest-scoring scored slices (the middle slice when none was scored), in slice order."""
    scored = np.flatnonzero(result.scored)
    if scored.size == 0:
        return [result.geometry.n_slices // 2]
    best = scored[np.argsort(-result.slice_scores[scored], kind="stable")[:count]]
    return sorted(int(i) for i in best)


def _write_montage(
    path: str, image: torch.Tensor, result: SliceScores, count: int, threshold: float, warning: str | None
) -> None:
    g = result.geometry
    index = _montage_slices(result, count)
    raw = image.as_tensor()[0].movedim(g.axis, 0)[index]
    shown = convert_to_tensor(result.preset.transform(raw), track_meta=False)
    maps = torch.from_numpy(np.ascontiguousarray(np.moveaxis(result.anomaly_map, g.axis, 0)[index]))
    captions = [f"{g.plane} slice {i} (axis {g.axis}): score {result.slice_scores[i]:.3f}"
                + ("" if result.scored[i] else " (skipped)") for i in index]
    write_montage(path, g.to_square(shown, _MONTAGE_TILE), g.to_square(maps, _MONTAGE_TILE), captions, warning,
                  threshold=threshold)


def scan_report(
    model: AnomalyCLIP, image, result: SliceScores, scan_score: float, scoring: ScoringOptions, decision: Decision,
    labelmap: np.ndarray, outputs: dict[str, Path] | None = None, loading: LoadingOptions | None = None,
    output: OutputOptions | None = None, case_id: str | None = None,
) -> dict[str, Any]:
    """The ``<case>_scores.json`` content of a scored scan (``image`` as loaded by
    :func:`anomalyclip_med.io.scans.load_volume`), the case named ``case_id`` [the file stem]; with a calibrated
    ``decision`` also each slice's and the scan's p-value and flag, and the calibration used."""
    meta = image.meta
    source = Path(meta["filename_or_obj"])
    case = case_id or case_id_of(source)
    g = result.geometry
    identity = model.identity()
    return {
        "case_id": case,
        "source": str(source.resolve()),
        "source_format": meta.get("source_format"),
        "series_uid": meta.get("series_uid"),
        "volume_index": meta.get("volume_index"),
        "shape": [int(s) for s in image.shape[1:]],
        "affine": np.asarray(meta["original_affine"], dtype=float).round(6).tolist(),
        "nonfinite_voxels_replaced": int(meta.get("nonfinite_voxels", 0)),
        "preset": result.preset.to_dict(),
        "slicing": {"axis": g.axis, "plane": g.plane, "n_slices": g.n_slices, "scored_slices": int(result.scored.sum()),
                    "skip_empty": scoring.skip_empty, "foreground_threshold": result.foreground_threshold,
                    "min_foreground": scoring.min_foreground, "z_smooth_mm": scoring.z_smooth,
                    "body_mask": scoring.body_mask, "body_voxels": result.body_voxels,
                    "batch_size": scoring.batch_size},
        "slice_scores": [round(float(s), 6) for s in result.slice_scores],
        "scored": [bool(s) for s in result.scored],
        "scan_score": scan_score,
        "aggregation": {"method": scoring.aggregation, "topk": scoring.topk},
        "threshold": decision.map_threshold,
        "anomalous_voxels": int(labelmap.sum()),
        "outputs": {k: p.name for k, p in (outputs or {}).items()},
        "options": scan_options_record(scoring, loading, output),
        "model": identity,
        "package_version": __version__,
        "warning": model.untrained_warning,
        **decision.scan_fields(result.slice_scores, result.scored, scan_score),
    }


@dataclass
class PreparedScan:
    """
    A scan read and planned, ready for the network (:func:`prepare_scan`).

    Attributes:
        source: the scan's path as given.
        case_id: the case name used in the output file names.
        outputs: where its outputs go (:func:`expected_outputs`).
        image: the scan as loaded by :func:`anomalyclip_med.io.scans.load_volume` (raw intensities; in pinned memory for a CUDA model).
        plan: the slicing, intensity preset and slices to score.
    """

    source: Path
    case_id: str
    outputs: dict[str, Path]
    image: Any
    plan: SlicePlan


@dataclass
class ScoredScan:
    """What the network and the device-side post-processing made of a :class:`PreparedScan` (host arrays)."""

    result: SliceScores
    scan_score: float


def prepare_scan(
    source: str | os.PathLike, outputs: dict[str, Path], scoring: ScoringOptions, loading: LoadingOptions,
    image_size: int, mean: tuple[float, ...], std: tuple[float, ...], pin_memory: bool = False,
    case_id: str | None = None, loader: Callable[[Path], Any] | None = None,
) -> PreparedScan:
    """
    The host side before the network: read the scan whole and plan its slices (preset, foreground test). Runs
    ahead of the network in the run engine's reader thread.

    Args:
        outputs: where the case's outputs go (:func:`scan_layout`).
        image_size, mean, std: the network input's side and normalisation (``model.config.image_size``,
            ``model.mean``, ``model.std``; the model itself is not touched here).
        pin_memory: put the scan in page-locked memory for a fast, asynchronous upload to a CUDA device.
        case_id: the case name [the file stem].
        loader: reads the scan from its path [:class:`LoadScan` with ``loading``'s series/volume choice].
    """
    source = Path(source)
    case = case_id or case_id_of(source)
    image = loader(source) if loader else load_volume(source, loading.series_uid, loading.volume_index)
    plan = plan_scan(image, scoring, image_size, mean, std)
    if pin_memory:  # page-locked: the uploads to the GPU then run asynchronously, at full bus speed
        image = MetaTensor(image.as_tensor().pin_memory(), meta=image.meta)
        if plan.body is not None:
            plan.body = plan.body.pin_memory()
    return PreparedScan(source, case, outputs, image, plan)


def plan_scan(image, scoring: ScoringOptions, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
              ) -> SlicePlan:
    """The host side's plan of a loaded scan under ``scoring``: intensity preset, slicing, slices to score, body
    mask (:func:`anomalyclip_med.inference.slices.plan_slices`) for a network of that input size and normalisation."""
    return plan_slices(image, scoring.intensity_preset(), image_size, mean, std, scoring.axis, scoring.skip_empty,
                       scoring.min_foreground, body_mask=scoring.body_mask)


def compute_scan(
    model, image, plan: SlicePlan, scoring: ScoringOptions, threshold: float | None = None, progress: bool = False,
    desc: str | None = None,
) -> ScoredScan:
    """The device side: every planned slice through the network, map post-processing (and, given a ``threshold``,
    the labelmap) on the model's device, one device-to-host copy of the final volumes, and the scan score."""
    result = score_planned(model, image, plan, scoring.batch_size, scoring.z_smooth, threshold, progress, desc)
    scan_score = aggregate_scores(result.slice_scores, result.scored, scoring.aggregation, scoring.topk)
    g = result.geometry
    logger.info("%s: preset %s (%s); %d/%d %s slices scored; scan score %.4f", desc or "scan", result.preset.name,
                result.preset.reason, int(result.scored.sum()), g.n_slices, g.plane, scan_score)
    return ScoredScan(result, scan_score)


def write_scan(
    model: AnomalyCLIP, prepared: PreparedScan, scored: ScoredScan, scoring: ScoringOptions, loading: LoadingOptions,
    output: OutputOptions, decision: Decision,
) -> dict[str, Any]:
    """
    Write a scored scan's outputs whole or not at all (:func:`anomalyclip_med.io.case_outputs.write_case_outputs`:
    temporaries, fsync, the scores JSON last listing the others' sizes and hashes, with the
    :func:`resume_record`) and return the scores JSON as written. Reads only the model's identity, so it can run
    beside the network.
    """
    image, outputs, result, scan_score = prepared.image, prepared.outputs, scored.result, scored.scan_score
    seg = result.labelmap if result.labelmap is not None else decision.labelmap(result.anomaly_map)
    threshold = decision.map_threshold
    writers: dict[str, Callable[[str], None]] = {
        "map": lambda p: write_volume(decision.output_map(result.anomaly_map), image.meta, p),
        "seg": lambda p: write_volume(seg, image.meta, p, label=True),
        "montage": lambda p: _write_montage(p, image, result, output.montage_slices, threshold,
                                            model.untrained_warning),
    }
    if "dicom_seg" in outputs:
        writers["dicom_seg"] = lambda p: write_dicom_seg(
            seg, image.meta["original_affine"], image.meta["dicom_files"], p, __version__,
            f"AnomalyCLIP anomaly >= {threshold:g}")
    report = scan_report(model, image, result, scan_score, scoring, decision, seg, outputs, loading, output,
                         prepared.case_id)
    record = resume_record(model, prepared.source, scoring, loading, output, decision)
    return write_case_outputs(outputs, writers, {**report, **record})


def resume_record(
    model: AnomalyCLIP, source: str | os.PathLike, scoring: ScoringOptions, loading: LoadingOptions | None = None,
    output: OutputOptions | None = None, decision: Decision | None = None,
) -> dict[str, Any]:
    """
    What a finished case was computed from, stored in its scores JSON and compared on resume: ``input`` (the
    scan's :func:`anomalyclip_med.io.cases.input_fingerprint`), ``model`` (``model.identity()``: backbone,
    weights and prompts), ``options`` (:func:`scan_options_record`) and the calibration's hash, as they read back
    from JSON.
    """
    record = {"input": input_fingerprint(source), "model": model.identity(),
              "options": scan_options_record(scoring, loading, output),
              "calibration_sha256": decision.calibration.sha256 if decision and decision.calibration else None}
    return json.loads(json.dumps(record, default=str))
