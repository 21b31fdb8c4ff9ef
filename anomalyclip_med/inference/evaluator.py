"""
The batch runner as a MONAI engine: the bundle's ``evaluator``, ``dataset`` and ``inferer`` (MONAI's inference
workflow properties).

MONAI's parts do what they do elsewhere: a ``ThreadDataLoader`` over :class:`CaseDataset` reads and plans the next
scans in a background thread while the network scores one, ``CheckpointLoader`` (or any ignite handler) attaches
to the engine, and :class:`anomalyclip_med.inference.inferer.SliceAnomalyInferer` runs the network in eval mode.
What makes it a batch a hospital can trust is :class:`anomalyclip_med.inference.batch.ScanBatchRunner`'s, the same
as ``anomalyclip-med score``'s: the preflight, the output-folder lock, resume, a case failing alone, outputs whole
or absent and written behind the network by a writer thread (:class:`anomalyclip_med.inference.pipeline.WriteBehind`),
a line per case and the final count.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from torch.utils.data import DataLoader, Dataset

from anomalyclip_med.errors import AnomalyCLIPMedError
from anomalyclip_med.inference.batch import BatchSummary, CaseReport, ScanBatchRunner
from anomalyclip_med.inference.inferer import SliceAnomalyInferer
from anomalyclip_med.inference.pipeline import CaseOutcome, WriteBehind
from anomalyclip_med.network.net import as_anomalyclip

__all__ = ["CaseDataset", "ScanBatchEvaluator"]


class CaseDataset(Dataset):
    """
    The runner's cases, each read and planned (:meth:`ScanBatchRunner.prepare`: the scan loaded by the runner's
    ``loader``, or a finished case's scores JSON when it is reused) when a data loader asks for it. A case that
    cannot be read is handed on with its error, so that it fails alone instead of stopping the loader.

    Items are ``{"outcome": CaseOutcome, "prepared": PreparedScan | dict | None}``; use :meth:`collate` with
    ``batch_size=1`` (one scan at a time: each is a whole volume).

    Args:
        runner: the batch runner.
        network: the network the scans are prepared for (its input size, normalisation and identity).
    """

    def __init__(self, runner: ScanBatchRunner, network: torch.nn.Module) -> None:
        self.runner, self.network = runner, network

    def __len__(self) -> int:
        return len(self.runner.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        outcome = CaseOutcome(index, self.runner.cases[index])
        prepared = None
        try:
            prepared = outcome.timed("prepare", self.runner.prepare, as_anomalyclip(self.network), outcome.item)
        except Exception as err:  # noqa: BLE001 - the case fails alone
            outcome.error = err
        return {"outcome": outcome, "prepared": prepared}

    @staticmethod
    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        """The one item of a batch of one, as it is (nothing to stack)."""
        if len(items) != 1:
            raise ValueError(f"CaseDataset is read one case at a time (batch_size=1), got {len(items)}.")
        return items[0]


class ScanBatchEvaluator(SupervisedEvaluator):
    """
    A MONAI ``SupervisedEvaluator`` whose iterations are the runner's cases: each iteration takes one prepared
    case from ``val_data_loader`` (a loader over :class:`CaseDataset`), runs ``inferer`` on it and hands its
    outputs to the writer thread; ``run()`` holds the runner's :meth:`ScanBatchRunner.session` (preflight, lock,
    progress bar) and leaves the batch's outcome in :attr:`summary`. Any exception of a case, in any stage,
    fails that case alone.

    Args:
        runner: the batch runner (cases, output folder, options, resume).
        device: the network's device.
        val_data_loader: loader over ``CaseDataset(runner, network)`` (e.g. MONAI's ``ThreadDataLoader``: its
            queue holds ``buffer_size`` scans read ahead, and its thread reads one more).
        network: the AnomalyCLIP network (``AnomalyCLIPNet``), its prompts loaded by a handler if need be.
        inferer: the device stage [``SliceAnomalyInferer(runner)``].
        val_handlers: ignite handlers (e.g. MONAI's ``CheckpointLoader``).
        background_write: write each case's outputs in a writer thread, beside the network.
    """

    def __init__(
        self,
        runner: ScanBatchRunner,
        device: torch.device | str,
        val_data_loader: DataLoader,
        network: torch.nn.Module,
        inferer: SliceAnomalyInferer | None = None,
        val_handlers: list | None = None,
        background_write: bool = True,
    ) -> None:
        super().__init__(device=device, val_data_loader=val_data_loader, network=network,
                         inferer=inferer or SliceAnomalyInferer(runner), val_handlers=val_handlers, decollate=False)
        network.eval()  # for good: MONAI's eval_mode would otherwise switch it back to training after every case,
        # which drops the cached text features (recomputed per scan)
        self.runner, self.background_write = runner, background_write
        self.summary: BatchSummary | None = None
        self._writes: WriteBehind | None = None
        self._reports: list[tuple[int, CaseReport]] = []

    def _iteration(self, engine: SupervisedEvaluator, batchdata: dict[str, Any]) -> dict[str, Any]:
        outcome, prepared = batchdata["outcome"], batchdata["prepared"]
        if outcome.error is not None:  # it could not be read: it just takes its turn
            self._writes.add(outcome)
        else:
            try:
                with engine.mode(engine.network):
                    scored = outcome.timed("compute", engine.inferer, prepared, engine.network)
            except Exception as err:  # noqa: BLE001 - the case fails alone
                outcome.error = err
                self._writes.add(outcome)
            else:
                self._writes.add(outcome, self.runner.write, as_anomalyclip(engine.network), prepared, scored)
        self._reports += [(o.index, self.runner.report(o)) for o in self._writes.ready()]
        return {"case": outcome.item.name}

    def run(self, global_epoch: int = 1) -> None:
        """Score every case (see the class docstring); the outcome is in :attr:`summary`.

        Raises:
            InputError, OutputExistsError, OutputLockedError: the run is refused (nothing written).
        """
        self._reports = []
        with self.runner.session(), WriteBehind(self.background_write) as self._writes:
            super().run(global_epoch)
            self._reports += [(o.index, self.runner.report(o)) for o in self._writes.drain()]
            # a handler that ended the run early (engine.terminate()) leaves cases unscored: they count as failed
            reported = {i for i, _ in self._reports}
            self._reports += [(i, self.runner.report(CaseOutcome(i, case, error=AnomalyCLIPMedError(
                "the run ended before this case was scored")))) for i, case in enumerate(self.runner.cases)
                if i not in reported]
            self.summary = self.runner.summarise(self._reports)
        self._writes = None
