"""A MONAI ``Inferer`` that scores a read and planned scan slice by slice, for MONAI engines and bundle configs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from monai.inferers import Inferer

from anomalyclip_med.inference.scan import PreparedScan, ScoredScan
from anomalyclip_med.network.net import as_anomalyclip

if TYPE_CHECKING:
    from anomalyclip_med.inference.batch import ScanBatchRunner

__all__ = ["SliceAnomalyInferer"]


class SliceAnomalyInferer(Inferer):
    """
    The device stage of a batch run as a MONAI inferer: every planned slice of a scan through the network, the
    map post-processing on the network's device and one copy of the final volumes back
    (:meth:`anomalyclip_med.inference.batch.ScanBatchRunner.compute`, with the runner's scoring options and
    calibration at the time of the call).

    Args:
        runner: the batch runner whose cases are scored.
    """

    def __init__(self, runner: ScanBatchRunner) -> None:
        super().__init__()
        self.runner = runner

    def __call__(self, inputs: PreparedScan | dict, network: torch.nn.Module, *args: Any, **kwargs: Any
                 ) -> ScoredScan | None:
        """
        Args:
            inputs: the scan read and planned (:meth:`ScanBatchRunner.prepare`), or the scores JSON of a finished
                case being reused (nothing to compute).
            network: the AnomalyCLIP model (or the bundle's ``AnomalyCLIPNet`` holding it).

        Returns:
            the scores and volumes, or None for a reused case.
        """
        return self.runner.compute(as_anomalyclip(network), inputs)
