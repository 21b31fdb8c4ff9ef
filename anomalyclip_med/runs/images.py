"""
The 2D image job of the run engine (``anomalyclip-med predict``): each image is read ahead of the network, scored,
and its map (``.npy``, float32 in [0, 1] at the image's own size), overlay PNG and scores JSON written whole behind
it; at the end ``scores.csv`` lists every image. Like every job on the engine it holds the output folder's lock,
resumes finished images (``--continue``) and lets an image fail alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from anomalyclip_med import __version__
from anomalyclip_med.calibration.calibration import Decision
from anomalyclip_med.inference.images2d import image_maps
from anomalyclip_med.io.case_outputs import read_finished_case, write_case_outputs
from anomalyclip_med.io.cases import OutputLayout, ScanCase, input_fingerprint
from anomalyclip_med.io.images import read_image
from anomalyclip_med.io.overlay import heatmap_overlay, save_png
from anomalyclip_med.io.writers import write_csv
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.runs.engine import CaseResult, Reused, RunSummary, Status

__all__ = ["IMAGE_OUTPUTS", "SCORES_CSV", "CSV_FIELDS", "ImageJob"]

IMAGE_OUTPUTS = {"map": "{case}_anomaly_map.npy", "overlay": "{case}_overlay.png", "scores": "{case}_scores.json"}
SCORES_CSV = "scores.csv"
CSV_FIELDS = ("image", "image_score", "max_pixel_score", "map_file", "overlay_file", "warning")


class ImageJob:
    """
    Score 2D images into their outputs. The network and the decision are bound when the run holds its output
    folder (:meth:`bind`).

    Args:
        out_dir: the output folder.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.layout = OutputLayout(Path(out_dir), IMAGE_OUTPUTS)
        self.model: AnomalyCLIP | None = None
        self.decision: Decision = Decision(None)

    def bind(self, model: AnomalyCLIP, decision: Decision | None = None) -> None:
        """Score with ``model``; a calibrated ``decision`` adds each image's p-value, flag and flagged pixels
        (and its map output)."""
        self.model, self.decision = model, decision or Decision(None)

    def _record(self, case: ScanCase) -> dict[str, Any]:
        """What a finished image was computed from, compared on resume."""
        cal = self.decision.calibration
        record = {"input": input_fingerprint(case.source), "model": self.model.identity(),
                  "calibration_sha256": cal.sha256 if cal is not None else None,
                  "map_output": getattr(self.decision, "map_output", "probability")}
        return json.loads(json.dumps(record, default=str))

    # ------------------------------------------------------------------ CaseJob
    def outputs(self, case: ScanCase) -> dict[str, Path]:
        return self.layout.paths(case)

    def check(self, case: ScanCase) -> str | None:
        return None

    def reusable(self, case: ScanCase) -> dict[str, Any] | None:
        report = read_finished_case(self.outputs(case))
        if report is None:
            return None
        return report if all(report.get(k) == v for k, v in self._record(case).items()) else None

    def prepare(self, case: ScanCase) -> Image.Image:
        return read_image(case.source)

    def compute(self, case: ScanCase, image: Image.Image) -> tuple[float, np.ndarray]:
        ((score, amap),) = image_maps(self.model, [image])
        return score, amap

    def write(self, case: ScanCase, image: Image.Image | Reused, computed: tuple[float, np.ndarray] | None
              ) -> tuple[Status, dict[str, Any]]:
        if isinstance(image, Reused):
            return Status.REUSED, image.record
        score, amap = computed
        outputs, warning = self.outputs(case), self.model.untrained_warning

        def write_map(path: str) -> None:
            with open(path, "wb") as f:
                np.save(f, self.decision.output_map(amap))

        report = {"image": str(case.source.resolve()), "image_score": score, "max_pixel_score": float(amap.max()),
                  **self.decision.image_fields(score, amap), "warning": warning, "package_version": __version__,
                  **self._record(case)}
        writers = {"map": write_map, "overlay": lambda p: save_png(heatmap_overlay(image, amap), p, warning=warning)}
        return Status.SCORED, write_case_outputs(outputs, writers, report)

    def line(self, result: CaseResult) -> str:
        r = result.record
        flag = "" if r.get("p_value") is None else f", p-value {r['p_value']:.4f}" + (" FLAGGED" if r["flag"] else "")
        reused = " (reused)" if result.status is Status.REUSED else ""
        return f"{result.case.name}: image score {r['image_score']:.4f}{flag}{reused} -> {result.outputs['map'].parent}"

    def write_table(self, summary: RunSummary) -> Path:
        """``scores.csv``: every image that did not fail, in case order (with a calibration its p-value, flag and
        flagged pixels)."""
        rows = []
        for r in summary.results:
            if not r.ok:
                continue
            rec = r.record
            row = dict(zip(CSV_FIELDS, (rec["image"], f"{rec['image_score']:.6f}", f"{rec['max_pixel_score']:.6f}",
                                        os.path.relpath(r.outputs["map"], self.layout.out_dir),
                                        os.path.relpath(r.outputs["overlay"], self.layout.out_dir),
                                        rec.get("warning") or "")))
            rows.append(row | {k: rec[k] for k in ("p_value", "flag", "flagged_pixels") if k in rec})
        path = self.layout.out_dir / SCORES_CSV
        write_csv(rows, path)
        return path
