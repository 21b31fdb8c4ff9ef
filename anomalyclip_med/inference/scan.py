"""
Score one scan end to end: load it, run AnomalyCLIP slice by slice, aggregate a scan score, and write the
anomaly map, labelmap, scores JSON, overlay montage (and optionally a DICOM SEG) in the scan's own geometry.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import convert_to_tensor

from anomalyclip_med import __version__
from anomalyclip_med.errors import InputError
from anomalyclip_med.inference.options import (
    AGGREGATIONS,
    LoadingOptions,
    OutputOptions,
    ScoringOptions,
    scan_options_record,
)
from anomalyclip_med.inference.slices import SliceScores, score_slices
from anomalyclip_med.io.scans import LoadScan, case_id_of
from anomalyclip_med.io.writers import write_dicom_seg, write_json, write_montage, write_volume
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.utils.atomic import atomic_path
from anomalyclip_med.utils.paths import check_outputs

__all__ = [
    "OUTPUT_SUFFIXES",
    "DICOM_SEG_SUFFIX",
    "ScanResult",
    "aggregate_scores",
    "case_id_of",
    "expected_outputs",
    "scan_report",
    "score_loaded_scan",
    "score_scan",
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


@dataclass
class ScanResult:
    """
    What :func:`score_scan` wrote and computed for one scan.

    Attributes:
        case_id: the case name used in the output file names.
        source: the scan's path as given.
        map_path: ``<case>_anomaly_map.nii.gz``.
        seg_path: ``<case>_anomaly_seg.nii.gz``.
        scores_path: ``<case>_scores.json``.
        slice_scores: score of each slice along the slicing axis, in the scan's voxel order (0 if not scored).
        scan_score: the aggregated scan score.
        montage_path: ``<case>_overlay.png``.
        dicom_seg_path: ``<case>_anomaly_seg.dcm`` when requested.
        preset: the intensity preset used (``auto`` resolved).
        scored_slices: how many slices went through the network.
    """

    case_id: str
    source: str
    map_path: Path
    seg_path: Path
    scores_path: Path
    slice_scores: list[float]
    scan_score: float
    montage_path: Path | None = None
    dicom_seg_path: Path | None = None
    preset: str = ""
    scored_slices: int = 0


def expected_outputs(source: str | os.PathLike, out_dir: str | os.PathLike, dicom_seg: bool = False) -> dict[str, Path]:
    """
    The paths :func:`score_scan` writes for ``source``: keys ``map``, ``seg``, ``scores``, ``montage`` (and
    ``dicom_seg`` when requested and ``source`` is a DICOM series folder). ``scores`` is renamed into place last,
    so its presence means a finished case.
    """
    case = case_id_of(source)
    out = {key: Path(out_dir) / f"{case}{suffix}" for key, suffix in OUTPUT_SUFFIXES.items()}
    if dicom_seg and Path(source).is_dir():
        out["dicom_seg"] = Path(out_dir) / f"{case}{DICOM_SEG_SUFFIX}"
    return out


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


def score_loaded_scan(
    model: AnomalyCLIP, image, scoring: ScoringOptions, progress: bool = False, desc: str | None = None
) -> tuple[SliceScores, float]:
    """Slice-wise scores of a scan loaded by :class:`LoadScan`, and the scan score aggregated from them."""
    result = score_slices(
        model, image, scoring.intensity_preset(), axis=scoring.axis, batch_size=scoring.batch_size,
        skip_empty=scoring.skip_empty, min_foreground=scoring.min_foreground, z_smooth=scoring.z_smooth,
        body_mask=scoring.body_mask,
        progress=progress, desc=desc,
    )
    return result, aggregate_scores(result.slice_scores, result.scored, scoring.aggregation, scoring.topk)


def _montage_slices(result: SliceScores, count: int) -> list[int]:
    """The ``count`` highest-scoring scored slices (the middle slice when none was scored), in slice order."""
    scored = np.flatnonzero(result.scored)
    if scored.size == 0:
        return [result.geometry.n_slices // 2]
    best = scored[np.argsort(-result.slice_scores[scored], kind="stable")[:count]]
    return sorted(int(i) for i in best)


def _write_montage(path: str, image: torch.Tensor, result: SliceScores, count: int, warning: str | None) -> None:
    g = result.geometry
    index = _montage_slices(result, count)
    raw = image.as_tensor()[0].movedim(g.axis, 0)[index]
    shown = convert_to_tensor(result.preset.transform(raw), track_meta=False)
    maps = torch.from_numpy(np.ascontiguousarray(np.moveaxis(result.anomaly_map, g.axis, 0)[index]))
    captions = [f"{g.plane} slice {i} (axis {g.axis}): score {result.slice_scores[i]:.3f}"
                + ("" if result.scored[i] else " (skipped)") for i in index]
    write_montage(path, g.to_square(shown, _MONTAGE_TILE), g.to_square(maps, _MONTAGE_TILE), captions, warning)


def scan_report(
    model: AnomalyCLIP, image, result: SliceScores, scan_score: float, scoring: ScoringOptions,
    outputs: dict[str, Path] | None = None, loading: LoadingOptions | None = None, output: OutputOptions | None = None,
) -> dict[str, Any]:
    """The ``<case>_scores.json`` content of a scored scan (``image`` as loaded by :class:`LoadScan`)."""
    meta = image.meta
    source = Path(meta["filename_or_obj"])
    case = case_id_of(source)
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
                    "body_mask": scoring.body_mask, "body_voxels": result.body_voxels},
        "slice_scores": [round(float(s), 6) for s in result.slice_scores],
        "scored": [bool(s) for s in result.scored],
        "scan_score": scan_score,
        "aggregation": {"method": scoring.aggregation, "topk": scoring.topk},
        "threshold": scoring.threshold,
        "anomalous_voxels": int((result.anomaly_map >= scoring.threshold).sum()),
        "outputs": {k: p.name for k, p in (outputs or {}).items()},
        "options": scan_options_record(scoring, loading, output),
        "model": identity,
        "package_version": __version__,
        "warning": model.untrained_warning,
    }


def score_scan(
    model: AnomalyCLIP,
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    scoring: ScoringOptions | None = None,
    loading: LoadingOptions | None = None,
    output: OutputOptions | None = None,
) -> ScanResult:
    """
    Score one scan and write its outputs into ``out_dir`` (see :func:`expected_outputs`).

    Outputs, all in the input scan's voxel grid and geometry (same shape, affine, spacing, orientation):
    ``<case>_anomaly_map.nii.gz`` (float32, 0..1), ``<case>_anomaly_seg.nii.gz`` (uint8 0/1 labelmap at
    ``scoring.threshold``), ``<case>_scores.json``, ``<case>_overlay.png`` and, for DICOM input with
    ``output.dicom_seg``, ``<case>_anomaly_seg.dcm``. Nothing is written until every output is computed; each
    is written to a temporary file and renamed, the scores JSON last. Inputs are never modified.

    Args:
        model: the AnomalyCLIP network.
        source: a volume file (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) or a DICOM series folder.
        out_dir: output folder (created if needed).
        scoring: how the scan is scored (defaults: :class:`ScoringOptions`).
        loading: which volume of the input is scored (defaults: :class:`LoadingOptions`).
        output: what is written and how (defaults: :class:`OutputOptions`).

    Raises:
        InputError: a bad scan, or an unwritable output folder.
        OutputExistsError: outputs exist and ``output.overwrite`` is false.
    """
    scoring, loading, output = scoring or ScoringOptions(), loading or LoadingOptions(), output or OutputOptions()
    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise InputError(f"Scan '{source}' does not exist.")
    case = case_id_of(source)
    outputs = expected_outputs(source, out_dir, output.dicom_seg)
    check_outputs(out_dir, outputs.values(), [source], output.overwrite)

    image = LoadScan(loading.series_uid, loading.volume_index)(source)
    result, scan_score = score_loaded_scan(model, image, scoring, output.progress, desc=case)
    seg = (result.anomaly_map >= scoring.threshold).astype(np.uint8)
    logger.info("%s: preset %s (%s); %d/%d %s slices scored; scan score %.4f", case, result.preset.name,
                result.preset.reason, int(result.scored.sum()), result.geometry.n_slices, result.geometry.plane,
                scan_score)

    order = ["scores", *[k for k in outputs if k != "scores"]]  # entered first = renamed last
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(outputs[k], overwrite=output.overwrite)) for k in order}
        write_volume(result.anomaly_map, image.meta, tmp["map"])
        write_volume(seg, image.meta, tmp["seg"], label=True)
        _write_montage(tmp["montage"], image, result, output.montage_slices, model.untrained_warning)
        if "dicom_seg" in outputs:
            write_dicom_seg(seg, image.meta["original_affine"], image.meta["dicom_files"], tmp["dicom_seg"],
                            __version__, f"AnomalyCLIP anomaly >= {scoring.threshold:g}")
        write_json(scan_report(model, image, result, scan_score, scoring, outputs, loading, output), tmp["scores"])
    return ScanResult(
        case_id=case,
        source=str(source),
        map_path=outputs["map"],
        seg_path=outputs["seg"],
        scores_path=outputs["scores"],
        slice_scores=[float(s) for s in result.slice_scores],
        scan_score=scan_score,
        montage_path=outputs["montage"],
        dicom_seg_path=outputs.get("dicom_seg"),
        preset=result.preset.name,
        scored_slices=int(result.scored.sum()),
    )
