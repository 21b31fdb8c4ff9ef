"""
The run engine as MONAI parts, for the bundle's batch run (``inference.json``'s ``evaluator``): a dataset whose
items are the runner's cases read ahead (for MONAI's ``ThreadDataLoader``), an inferer that is the runner's device
stage, and a ``SupervisedEvaluator`` whose iterations are cases. They are adapters: the batch rules (preflight,
lock, resume, a case failing alone, outputs whole or absent and written behind the network, the per-case lines,
the summary) are :class:`anomalyclip_med.runs.engine.CaseRunner`'s, the same as ``anomalyclip-med score``'s.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer
from torch.utils.data import DataLoader, Dataset

from anomalyclip_med.errors import AnomalyCLIPMedError
from anomalyclip_med.runs.engine import CaseOutcome, CaseRunner, RunSummary, WriteBehind

__all__ = ["CaseDataset", "CaseInferer", "CaseEvaluator"]


class CaseDataset(Dataset):
    """
    The runner's cases, each read by the runner's read stage (:meth:`CaseRunner.prepare`) when a data loader asks
    for it. A case that cannot be read is handed on with its error, so that it fails alone instead of stopping the
    loader. Items are ``{"outcome": CaseOutcome, "prepared": ...}``; use :meth:`collate` with ``batch_size=1``
    (one case at a time: each is a whole volume).
    """

    def __init__(self, runner: CaseRunner) -> None:
        self.runner = runner

    def __len__(self) -> int:
        return len(self.runner.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        outcome = CaseOutcome(index, self.runner.cases[index])
        prepared = None
        try:
            prepared = outcome.timed("prepare", self.runner.prepare, outcome.item)
        except Exception as err:  # noqa: BLE001 - the case fails alone
            outcome.error = err
        return {"outcome": outcome, "prepared": prepared}

    @staticmethod
    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        """The one item of a batch of one, as it is (nothing to stack)."""
        if len(items) != 1:
            raise ValueError(f"CaseDataset is read one case at a time (batch_size=1), got {len(items)}.")
        return items[0]


class CaseInferer(Inferer):
    """The runner's device stage as a MONAI inferer: ``inferer(item, network)`` computes one read case
    (:meth:`CaseRunner.compute`; the job holds the network it was bound to)."""

    def __init__(self, runner: CaseRunner) -> None:
        super().__init__()
        self.runner = runner

    def __call__(self, inputs: dict[str, Any], network: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.runner.compute(inputs["outcome"].item, inputs["prepared"])


class CaseEvaluator(SupervisedEvaluator):
    """
    A MONAI ``SupervisedEvaluator`` whose iterations are the runner's cases: each takes one read case from
    ``val_data_loader`` (over :class:`CaseDataset`), runs ``inferer`` on it and hands it to the writer thread;
    ``run()`` holds the runner's session (preflight, lock, progress bar) and leaves the outcome in :attr:`summary`.
    Any exception of a case, in any stage, fails that case alone.

    Args:
        runner: the run engine (cases, output folder, job, resume).
        device: the network's device.
        val_data_loader: loader over ``CaseDataset(runner)`` (e.g. MONAI's ``ThreadDataLoader``: its queue holds
            ``buffer_size`` cases read ahead, and its thread reads one more).
        network: the network the job was bound to (handlers such as ``CheckpointLoader`` attach to it).
        inferer: the device stage [``CaseInferer(runner)``].
        val_handlers: ignite handlers.
        background_write: write each case's outputs in a writer thread, beside the network.
    """

    def __init__(
        self,
        runner: CaseRunner,
        device: torch.device | str,
        val_data_loader: DataLoader,
        network: torch.nn.Module,
        inferer: Inferer | None = None,
        val_handlers: list | None = None,
        background_write: bool = True,
    ) -> None:
        super().__init__(device=device, val_data_loader=val_data_loader, network=network,
                         inferer=inferer or CaseInferer(runner), val_handlers=val_handlers, decollate=False)
        network.eval()  # for good: MONAI's eval_mode would otherwise switch it back to training after every case,
        # which drops the cached text features (recomputed per scan)
        self.runner, self.background_write = runner, background_write
        self.summary: RunSummary | None = None
        self._writes: WriteBehind | None = None
        self._results: list = []

    def _iteration(self, engine: SupervisedEvaluator, batchdata: dict[str, Any]) -> dict[str, Any]:
        outcome = batchdata["outcome"]
        if outcome.error is not None:  # it could not be read: it just takes its turn
            self._writes.add(outcome)
        else:
            try:
                with engine.mode(engine.network):
                    computed = outcome.timed("compute", engine.inferer, batchdata, engine.network)
            except Exception as err:  # noqa: BLE001 - the case fails alone
                outcome.error = err
                self._writes.add(outcome)
            else:
                self._writes.add(outcome, self.runner.write, outcome.item, batchdata["prepared"], computed)
        self._results += [(o.index, o.report) for o in self._writes.ready()]
        return {"case": outcome.item.name}

    def run(self, global_epoch: int = 1) -> None:
        """Run every case (see the class docstring); the outcome is in :attr:`summary`.

        Raises:
            InputError, OutputExistsError, OutputLockedError: the run is refused (nothing written).
        """
        self._results = []
        with self.runner.session() as (ctx, _), \
                WriteBehind(self.background_write, on_done=self.runner.result) as self._writes:
            super().run(global_epoch)
            self._results += [(o.index, o.report) for o in self._writes.drain()]
            # a handler that ended the run early (engine.terminate()) leaves cases unscored: they count as failed
            done = {i for i, _ in self._results}
            self._results += [(i, self.runner.result(CaseOutcome(i, case, error=AnomalyCLIPMedError(
                "the run ended before this case was scored")))) for i, case in enumerate(self.runner.cases)
                if i not in done]
            self.summary = self.runner.summarise(self._results, ctx)
        self._writes = None
