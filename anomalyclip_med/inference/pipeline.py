"""
Overlapped scoring of many scans: while the network scores one scan, the next ones are read and planned by a
reader thread and the previous one's outputs are written by a writer thread.

The three stages are :func:`~anomalyclip_med.inference.scan.prepare_scan` (host: read, preset, foreground),
:func:`~anomalyclip_med.inference.scan.compute_scan` (device: network and map post-processing, one copy back)
and :func:`~anomalyclip_med.inference.scan.write_scan` (host: atomic writes). The network stays in the calling
thread; reading and writing release the GIL in zlib/numpy/torch, so they run beside it. Queues are bounded, so
at most ``prefetch`` scans wait ahead of the network and ``max_pending_writes`` behind it.

Each case fails alone: an exception in any stage becomes that case's :class:`CaseOutcome` and the others go on.
The writer finishes the file it is on before the pipeline closes, and every output is renamed into place only
when whole (``atomic_path``), so a case's outputs stay whole or absent.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from anomalyclip_med.inference.options import LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.calibration.calibration import CalibratedDecision
from anomalyclip_med.inference.scan import (
    PreparedScan,
    ScanResult,
    ScoredScan,
    check_destination,
    compute_scan,
    prepare_scan,
    write_scan,
)
from anomalyclip_med.network.model import AnomalyCLIP

__all__ = ["CaseOutcome", "StagedPipeline", "WriteBehind", "ScanPipeline", "DEFAULT_PREFETCH"]

DEFAULT_PREFETCH = 2  # scans read ahead of the network: enough to hide one slow read, bounded in memory

I = TypeVar("I")
P = TypeVar("P")
C = TypeVar("C")
R = TypeVar("R")


@dataclass
class CaseOutcome(Generic[I, R]):
    """
    How one item went through the pipeline.

    Attributes:
        index: the item's position in the input order.
        item: the item.
        result: what the write stage returned (``None`` when the case failed).
        error: the exception that stopped the case (``None`` when it succeeded).
        seconds: wall seconds spent in each stage that ran (``prepare``, ``compute``, ``write``).
    """

    index: int
    item: I
    result: R | None = None
    error: BaseException | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def timed(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, its wall seconds recorded as the ``stage``'s."""
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[stage] = time.perf_counter() - start


class _Inline(Executor):
    """Runs every task at once in the calling thread: the sequential pipeline."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the case's outcome
            future.set_exception(err)
        return future


class StagedPipeline(Generic[I, P, C, R]):
    """
    ``write(item, prepare(item), compute(item, prepared))`` for each item, in three overlapped stages.

    Args:
        prepare: host-side work ahead of ``compute`` (a reader thread).
        compute: the stage that holds the device (the calling thread).
        write: host-side work after ``compute`` (a writer thread).
        prefetch: items prepared ahead of ``compute``; 0 prepares in the calling thread.
        background_write: write in a writer thread (else in the calling thread, after ``compute``).
        max_pending_writes: computed items waiting for the writer before ``compute`` waits.
    """

    def __init__(
        self,
        prepare: Callable[[I], P],
        compute: Callable[[I, P], C],
        write: Callable[[I, P, C], R],
        prefetch: int = DEFAULT_PREFETCH,
        background_write: bool = True,
        max_pending_writes: int = 1,
    ) -> None:
        if prefetch < 0 or max_pending_writes < 1:
            raise ValueError(f"prefetch must be >= 0 and max_pending_writes >= 1, got {prefetch}, {max_pending_writes}.")
        self.prepare, self.compute, self.write = prepare, compute, write
        self.prefetch, self.background_write, self.max_pending_writes = prefetch, background_write, max_pending_writes

    def run(self, items: Iterable[I]) -> Iterator[CaseOutcome[I, R]]:
        """Yield one :class:`CaseOutcome` per item, in input order, as each item's write finishes."""
        outcomes = [CaseOutcome(i, item) for i, item in enumerate(items)]
        reader = ThreadPoolExecutor(1, thread_name_prefix="scan-reader") if self.prefetch else _Inline()
        reads: list[Future | None] = []
        # an interrupted run: reads not started are dropped; the write under way finishes (whole outputs)
        with WriteBehind(self.background_write, self.max_pending_writes) as writes:
            try:
                for outcome in outcomes:
                    while len(reads) < min(len(outcomes), outcome.index + 1 + self.prefetch):
                        ahead = outcomes[len(reads)]
                        reads.append(reader.submit(ahead.timed, "prepare", self.prepare, ahead.item))
                    read, reads[outcome.index] = reads[outcome.index], None  # the scan's memory goes with its write
                    try:
                        prepared = read.result()
                        computed = outcome.timed("compute", self.compute, outcome.item, prepared)
                    except Exception as err:  # noqa: BLE001 - the case fails alone
                        outcome.error = err
                        writes.add(outcome)
                    else:
                        writes.add(outcome, self.write, outcome.item, prepared, computed)
                    yield from writes.ready()
                yield from writes.drain()
            finally:
                reader.shutdown(wait=True, cancel_futures=True)


class WriteBehind:
    """
    The write stage of a pipeline: each case's write runs in a writer thread (or at once, in turn) while the
    caller goes on with the next case, and cases come back finished in the order they were added. Used by
    :class:`StagedPipeline` and by the MONAI engine face of the batch runner
    (:class:`anomalyclip_med.inference.evaluator.ScanBatchEvaluator`). Closing it waits for the write under way
    (outputs stay whole) and drops the writes not started.

    Args:
        background: write in a writer thread.
        max_pending: cases waiting for the writer before :meth:`ready` waits for the oldest.
    """

    def __init__(self, background: bool = True, max_pending: int = 1) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}.")
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="scan-writer") if background else _Inline()
        self._queue: deque[tuple[CaseOutcome, Future | None]] = deque()
        self.max_pending = max_pending

    def add(self, outcome: CaseOutcome, write: Callable[..., Any] | None = None, *args: Any) -> None:
        """Queue ``write(*args)`` as the case's last stage (its result becomes ``outcome.result``); without
        ``write``, or for a case that already failed, the case just takes its turn."""
        future = None
        if write is not None and outcome.error is None:
            future = self._pool.submit(outcome.timed, "write", write, *args)
        self._queue.append((outcome, future))

    def ready(self) -> Iterator[CaseOutcome]:
        """The cases finished so far, in order, waiting for the oldest write while too many are pending."""
        while self._queue and (len(self._queue) > self.max_pending or self._queue[0][1] is None
                               or self._queue[0][1].done()):
            yield self._finished(*self._queue.popleft())

    def drain(self) -> Iterator[CaseOutcome]:
        """Every remaining case, in order, as its write finishes."""
        while self._queue:
            yield self._finished(*self._queue.popleft())

    @staticmethod
    def _finished(outcome: CaseOutcome, write: Future | None) -> CaseOutcome:
        if write is not None:
            try:
                outcome.result = write.result()
            except Exception as err:  # noqa: BLE001 - the case fails alone
                outcome.error = err
        return outcome

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ScanPipeline:
    """
    Score many scans into their output folders with :class:`StagedPipeline`: reading and planning ahead,
    the network and device-side post-processing in the calling thread, writing behind.

    Args:
        model: the network.
        scoring: how every scan is scored.
        loading: which volume of each input is scored (defaults: :class:`LoadingOptions`).
        output: what is written and how (defaults: :class:`OutputOptions`).
        prefetch: scans read ahead (0: read in turn).
        background_write: write outputs in a writer thread.
        decision: thresholds, p-values and flags from a calibration (its labelmap threshold replaces
            ``scoring.threshold``).
    """

    def __init__(
        self, model: AnomalyCLIP, scoring: ScoringOptions, loading: LoadingOptions | None = None,
        output: OutputOptions | None = None, prefetch: int = DEFAULT_PREFETCH, background_write: bool = True,
        decision: CalibratedDecision | None = None,
    ) -> None:
        self.model, self.decision = model, decision
        self.scoring = scoring if decision is None else decision.scoring_options(scoring)
        self.loading, self.output = loading or LoadingOptions(), output or OutputOptions()
        self.stages: StagedPipeline[tuple[Path, Path], PreparedScan, ScoredScan, ScanResult] = StagedPipeline(
            self._prepare, self._compute, self._write, prefetch, background_write
        )

    def _prepare(self, job: tuple[Path, Path]) -> PreparedScan:
        m = self.model
        check_destination(job[0], job[1], self.output)
        return prepare_scan(job[0], job[1], self.scoring, self.loading, self.output, m.config.image_size, m.mean,
                            m.std, pin_memory=m.device.type == "cuda")

    def _compute(self, job: tuple[Path, Path], prepared: PreparedScan) -> ScoredScan:
        return compute_scan(self.model, prepared, self.scoring, self.output.progress)

    def _write(self, job: tuple[Path, Path], prepared: PreparedScan, scored: ScoredScan) -> ScanResult:
        return write_scan(self.model, prepared, scored, self.scoring, self.loading, self.output, self.decision)

    def run(self, jobs: Iterable[tuple[str | Path, str | Path]]) -> Iterator[CaseOutcome]:
        """Score each ``(source, out_dir)``; one outcome per job, in order (``result``: a :class:`ScanResult`)."""
        return self.stages.run((Path(s), Path(o)) for s, o in jobs)
