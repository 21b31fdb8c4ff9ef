"""
Calibrating on known-normal scans or 2D images: score each case, keep its distributions as a small per-case part
(so an interrupted run resumes where it stopped), and merge the parts into one calibration.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from anomalyclip_med.calibration.calibration import Calibration, comparable_model, comparable_scoring
from anomalyclip_med.calibration.distribution import ScoreDistribution
from anomalyclip_med.errors import AnomalyCLIPMedError, InputError, OutputExistsError
from anomalyclip_med.utils.atomic import atomic_path

if TYPE_CHECKING:  # the command line reads this package's options without loading torch
    from anomalyclip_med.inference.options import LoadingOptions, ScoringOptions
    from anomalyclip_med.network.model import AnomalyCLIP

__all__ = ["CalibrationRun", "parts_dir", "scan_levels", "calibrate_scans", "calibrate_images"]

logger = logging.getLogger(__name__)

# what makes one case fail alone (bad file, bad values); anything else is a fault of the run and stops it
_CASE_ERRORS = (AnomalyCLIPMedError, ValueError, OSError)


def parts_dir(out: str | os.PathLike) -> Path:
    """Where the per-case parts of ``out`` live: ``<out>.parts/`` beside it (kept, so a later run with
    ``resume`` adds normals without rescoring the ones already in)."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


@dataclass
class CalibrationRun:
    """
    What :func:`calibrate_scans` / :func:`calibrate_images` did.

    Attributes:
        calibration: the merged calibration (written to the output path unless every case failed).
        scored: cases scored in this run.
        reused: cases whose part from an earlier run matched (resume).
        failed: ``(case, error message)`` of cases that failed alone.
    """

    calibration: Calibration
    scored: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def _fingerprint(source: Path) -> list:
    """Identity of an input as it is on disk: every file's name, size and modification time."""
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _key(source: Path, model: AnomalyCLIP, scoring: Any) -> str:
    return json.dumps({"input": _fingerprint(source), "model": comparable_model(model.identity()),
                       "scoring": comparable_scoring(scoring)}, sort_keys=True)


def _write_part(path: Path, key: str, part: dict[str, ScoreDistribution]) -> None:
    arrays = {"key": np.array(key)}
    for level, dist in part.items():
        arrays[f"{level}_index"], arrays[f"{level}_count"] = dist.index, dist.count
        arrays[f"{level}_range"] = np.array([dist.min if dist.min is not None else np.nan,
                                             dist.max if dist.max is not None else np.nan])
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _read_part(path: Path, key: str, template: Calibration) -> dict[str, ScoreDistribution] | None:
    """The part at ``path`` if it was made from the same input, model and options; None otherwise (or damaged:
    the case is then scored again)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            part = {}
            for level, empty in template.case_part(np.empty(0), np.empty(0), 0.0).items():
                lo, hi = (None if np.isnan(v) else float(v) for v in data[f"{level}_range"])
                part[level] = ScoreDistribution.from_sparse(empty.bins, data[f"{level}_index"],
                                                            data[f"{level}_count"], lo, hi)
            return part
    except (OSError, KeyError, ValueError, IndexError) as err:
        logger.warning("calibration part '%s' is unreadable (%s); scoring the case again", path, err)
        return None


def _prepare(out: Path, overwrite: bool, resume: bool, inputs: list[Path]) -> Path:
    if out.resolve() in {p.resolve() for p in inputs}:
        raise InputError(f"Output '{out}' would overwrite an input; choose another --out.")
    if out.exists() and not (overwrite or resume):
        raise OutputExistsError(f"Output '{out}' exists; pass --overwrite to replace it or --continue to add to it.")
    parts = parts_dir(out)
    try:
        parts.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"Cannot create '{parts}' beside --out ({err.strerror or err}); choose another --out.") \
            from None
    return parts


def _run_cases(cases, template: Calibration, parts: Path, resume: bool, score, batch: int, progress: bool
               ) -> CalibrationRun:
    """``cases``: (name, source, key); ``score(sources) -> parts``, ``batch`` sources at a time. A failing case is
    reported and skipped: a batch that fails is scored again one case at a time to find it."""
    run = CalibrationRun(template)
    todo = []
    for name, source, key in cases:
        path = parts / f"{name}.npz"
        part = _read_part(path, key, template) if resume and path.is_file() else None
        if part is None:
            todo.append((name, source, key))
        else:
            run.reused += 1
            template.merge_case(part)

    def keep(case, part) -> None:
        _write_part(parts / f"{case[0]}.npz", case[2], part)
        run.scored += 1
        template.merge_case(part)

    with tqdm(total=len(todo), desc="calibrate", unit="case", disable=not progress) as bar:
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            try:
                for case, part in zip(chunk, score([c[1] for c in chunk])):
                    keep(case, part)
            except _CASE_ERRORS:
                for case in chunk:
                    try:
                        part = score([case[1]])[0]
                    except _CASE_ERRORS as err:  # one bad normal must not stop a cohort
                        print(f"error: {case[0]}: {err}", file=sys.stderr)
                        run.failed.append((case[0], str(err)))
                        continue
                    keep(case, part)
            bar.update(len(chunk))
    return run


def _finish(run: CalibrationRun, out: Path) -> CalibrationRun:
    if run.calibration.counts["cases"]:
        run.calibration.save(out)
    return run


def scan_levels(model: AnomalyCLIP, image, scoring: ScoringOptions) -> tuple[np.ndarray, np.ndarray, float]:
    """
    What one normal scan (as read by :func:`anomalyclip_med.io.scans.load_volume`) adds to a calibration: the map values of the voxels a labelmap
    can flag (those of scored slices, inside the body when the map is masked to it: outside, the map is 0 and never
    flagged), the scored slices' scores, and the scan score.
    """
    from anomalyclip_med.inference.scan import aggregate_scores
    from anomalyclip_med.inference.slices import plan_slices, score_planned

    plan = plan_slices(image, scoring.intensity_preset(), model.config.image_size, model.mean, model.std,
                       scoring.axis, scoring.skip_empty, scoring.min_foreground, body_mask=scoring.body_mask)
    result = score_planned(model, image, plan, scoring.batch_size, scoring.z_smooth)
    scan_score = aggregate_scores(result.slice_scores, result.scored, scoring.aggregation, scoring.topk)
    voxels = np.zeros(result.anomaly_map.shape, dtype=bool)
    np.moveaxis(voxels, result.geometry.axis, 0)[result.scored] = True
    if plan.body is not None:
        voxels &= plan.body.cpu().numpy().astype(bool)
    return result.anomaly_map[voxels], result.slice_scores[result.scored], scan_score


def calibrate_scans(
    model: AnomalyCLIP,
    sources: list[Path],
    out: str | os.PathLike,
    scoring: ScoringOptions | None = None,
    loading: LoadingOptions | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> CalibrationRun:
    """
    Score known-normal scans and write their calibration to ``out``.

    Per scan, the values of the anomaly map on the scored slices, the scored slices' scores and the scan score go
    into the voxel, slice and scan distributions. Each scan's distributions are kept in ``<out>.parts/`` keyed on
    the scan's files (names, sizes, times), the model identity and the scoring options; with ``resume`` a matching
    part is reused instead of scoring the scan again.

    Args:
        model: the detector.
        sources: scans (volume files, DICOM series folders).
        out: the calibration JSON to write.
        scoring: how scans are scored (defaults: :class:`ScoringOptions`); scoring with this calibration must use
            the same (``threshold`` and ``batch_size`` aside).
        loading: which volume of each input is read (defaults: :class:`LoadingOptions`).
        overwrite: replace an existing ``out``.
        resume: reuse matching parts of an earlier run (and add to an existing ``out``).
        progress: show a progress bar.

    Raises:
        InputError: clashing case names, an output that would overwrite an input, an unwritable location.
        OutputExistsError: ``out`` exists without ``overwrite`` or ``resume``.
    """
    from anomalyclip_med.inference.options import LoadingOptions, ScoringOptions
    from anomalyclip_med.io.scans import case_id_of, load_volume

    out = Path(out)
    scoring, loading = scoring or ScoringOptions(), loading or LoadingOptions()
    scoring.intensity_preset()
    names = [case_id_of(s) for s in sources]
    clashing = [c for c, n in Counter(names).items() if n > 1]
    if clashing:
        raise InputError(f"Several inputs share the case name {clashing[0]!r}; calibrate them from separate runs "
                         "or rename them.")
    parts = _prepare(out, overwrite, resume, sources)
    template = Calibration.empty("scans", model.identity(), scoring)
    def score(batch: list[Path]) -> list[dict[str, ScoreDistribution]]:
        (source,) = batch
        image = load_volume(source, loading.series_uid, loading.volume_index)
        return [template.case_part(*scan_levels(model, image, scoring))]

    cases = [(n, s, _key(s, model, scoring)) for n, s in zip(names, sources)]
    return _finish(_run_cases(cases, template, parts, resume, score, 1, progress), out)


def calibrate_images(
    model: AnomalyCLIP,
    images: list[Path],
    out: str | os.PathLike,
    overwrite: bool = False,
    resume: bool = False,
    batch_size: int = 8,
    progress: bool = True,
) -> CalibrationRun:
    """
    Score known-normal 2D images and write their calibration (pixel and image levels) to ``out``; pixels are
    those of the map at the image's own size, as ``predict`` writes it. Resumable as :func:`calibrate_scans`.
    """
    from anomalyclip_med.inference.images2d import image_maps, output_names
    from anomalyclip_med.io.images import read_image

    out = Path(out)
    parts = _prepare(out, overwrite, resume, images)
    template = Calibration.empty("images", model.identity())

    def score(batch: list[Path]) -> list[dict[str, ScoreDistribution]]:
        return [template.case_part(amap, [s]) for s, amap in image_maps(model, [read_image(p) for p in batch])]

    cases = [(n, p, _key(p, model, None)) for n, p in zip(output_names(images), images)]
    return _finish(_run_cases(cases, template, parts, resume, score, batch_size, progress), out)
