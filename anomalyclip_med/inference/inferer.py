"""A MONAI ``Inferer`` that scores whole scans slice by slice, for MONAI engines and bundle configs."""

from __future__ import annotations

import json
from typing import Any

import torch
from monai.data import MetaTensor, decollate_batch
from monai.inferers import Inferer

from anomalyclip_med.calibration.calibration import CalibratedDecision
from anomalyclip_med.inference.options import OutputOptions, ScoringOptions
from anomalyclip_med.inference.scan import scan_report, score_loaded_scan
from anomalyclip_med.network.net import as_anomalyclip
from anomalyclip_med.transforms.io import REPORT_KEY

__all__ = ["SliceAnomalyInferer"]


class SliceAnomalyInferer(Inferer):
    """
    Score each scan of a batch slice by slice with :func:`anomalyclip_med.inference.slices.score_slices`
    (streaming batches of slices through the network) and return the anomaly maps in the scans' voxel grid.

    The returned ``MetaTensor`` carries the input's meta data (so ``SaveImaged`` writes it in the input's
    geometry) plus ``meta[REPORT_KEY]``: per scan, the JSON text of the scores report that ``score_scan`` writes
    (per-slice scores, scan score, preset, model identity), for :class:`anomalyclip_med.transforms.io.SaveScanReportd`.

    Args:
        scoring: scoring options.
        progress: show a progress bar per scan.
        decision: thresholds from a calibration on normals: its voxel threshold replaces ``scoring.threshold`` and
            the reports hold each slice's and the scan's p-value and flag.
        scoring_kwargs: :class:`ScoringOptions` fields, when ``scoring`` is not given (bundle configs); they are
            checked here, before any scan is read.
    """

    def __init__(self, scoring: ScoringOptions | None = None, progress: bool = OutputOptions.progress,
                 decision: CalibratedDecision | None = None, **scoring_kwargs: Any) -> None:
        super().__init__()
        scoring = scoring or ScoringOptions(**scoring_kwargs)
        self.scoring = scoring if decision is None else decision.scoring_options(scoring)
        self.progress, self.decision = progress, decision

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> MetaTensor:
        """
        Args:
            inputs: (B, 1, X, Y, Z) scans with raw intensities, as loaded by ``LoadScand``.
            network: the AnomalyCLIP model (or the bundle's ``AnomalyCLIPNet`` holding it).

        Returns:
            (B, 1, X, Y, Z) float32 anomaly maps in [0, 1].
        """
        if inputs.ndim != 5 or inputs.shape[1] != 1:
            raise ValueError(f"SliceAnomalyInferer expects (B, 1, X, Y, Z) scans, got {tuple(inputs.shape)}.")
        if not isinstance(inputs, MetaTensor):
            raise ValueError("SliceAnomalyInferer needs MetaTensor scans (with their affine), as LoadScand gives.")
        network = as_anomalyclip(network)
        maps, reports = [], []
        for image in decollate_batch(inputs.detach().cpu()):
            result, score = score_loaded_scan(network, image, self.scoring, self.progress)
            maps.append(torch.from_numpy(result.anomaly_map)[None])
            reports.append(json.dumps(scan_report(network, image, result, score, self.scoring,
                                                  decision=self.decision)))
        out = MetaTensor(torch.stack(maps), meta=dict(inputs.meta))
        out.is_batch = True
        out.meta[REPORT_KEY] = reports
        return out
