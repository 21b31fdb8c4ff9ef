"""
The one run engine behind every batch job: ``score`` (scans), ``predict`` (2D images), cohort ``evaluate`` (scans
plus a metrics stage), ``calibrate`` (per-case parts merged at the end) and the bundle's ``inference.json``.

A job (:class:`CaseJob`) says what one case is: its output files, how it is read (host, ahead of the network),
computed (the device) and written (host, behind the network), and when a finished case may be reused. The engine
(:class:`CaseRunner`) owns, once, every batch rule a hospital's overnight run relies on:

- **before any weights load** (:meth:`CaseRunner.preflight`): no two cases write one path, no output lands on an
  input or inside a walked input folder, existing outputs are refused unless the run continues or overwrites, each
  case fits the job (e.g. a DICOM SEG needs a DICOM series), the output folder is writable;
- **the session** (:class:`RunSession`): the device resolved once, the ``torchrun`` process group, one run at a time
  per output folder (:class:`anomalyclip_med.utils.lock.FolderLock`, rank 0 for the whole job), temporaries of
  killed runs removed, folders the run created and left empty removed;
- **the pipeline** (:class:`StagedPipeline`): the next cases read by a reader thread while the network computes one,
  the previous one written by a writer thread; a case fails alone, whatever stage raises, with one
  ``error: <case>: <cause>`` line; a case's outputs are whole or absent (the jobs write through
  :func:`anomalyclip_med.io.case_outputs.write_case_outputs`);
- **the outcome**: a :class:`Status` per case, its line printed and the progress bar moved on when its outputs are
  written, the cases shared out round-robin under ``torchrun`` and gathered into one :class:`RunSummary` in case
  order, exit status 2 when any case failed.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from tqdm.auto import tqdm

from anomalyclip_med.errors import AnomalyCLIPMedError, InputError, OutputExistsError, OutputLockedError
from anomalyclip_med.inference.options import RESUME_MODES
from anomalyclip_med.io.cases import ScanCase
from anomalyclip_med.utils.atomic import remove_stale_temporaries
from anomalyclip_med.utils.distributed import DistributedContext
from anomalyclip_med.utils.lock import FolderLock
from anomalyclip_med.utils.paths import check_writable_dir

__all__ = [
    "DEFAULT_PREFETCH",
    "Status",
    "Reused",
    "CaseResult",
    "RunSummary",
    "CaseJob",
    "CaseOutcome",
    "StagedPipeline",
    "WriteBehind",
    "RunSession",
    "CaseRunner",
    "check_outputs",
    "describe_error",
]

logger = logging.getLogger(__name__)

DEFAULT_PREFETCH = 2  # cases read ahead of the network: enough to hide one slow read, bounded in memory

P = TypeVar("P")
C = TypeVar("C")
I = TypeVar("I")
R = TypeVar("R")


class Status(str, Enum):
    """What happened to a case."""

    SCORED = "scored"  # computed and written
    RESCORED = "rescored"  # a job's last stage redone over reused outputs (cohort metrics over reused maps)
    REUSED = "reused"  # a finished case of an earlier run, made from the same input, model and options
    FAILED = "failed"


def describe_error(err: BaseException) -> str:
    """One line naming the cause: the package's own message, or ``Type: message`` of the innermost cause (MONAI
    wraps transform errors in ``RuntimeError: applying transform ...``)."""
    while err.__cause__ is not None and not isinstance(err, AnomalyCLIPMedError):
        err = err.__cause__
    text = str(err) if isinstance(err, AnomalyCLIPMedError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())


@dataclass
class Reused:
    """What the read stage hands on for a finished case that is reused: its record (e.g. its scores JSON)."""

    record: dict[str, Any]


@dataclass
class CaseResult:
    """
    One case's outcome.

    Attributes:
        case: the case.
        status: what happened.
        outputs: its output paths (the job's layout).
        record: what the job recorded for it (a scan's scores JSON, a cohort case's metrics; None when failed).
        error: one line naming the cause (failed cases).
        seconds: wall seconds of each stage that ran (``prepare``, ``compute``, ``write``).
    """

    case: ScanCase
    status: Status
    outputs: dict[str, Path]
    record: dict[str, Any] | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED


@dataclass
class RunSummary:
    """The outcomes of a run, in case order (every process's, under ``torchrun``)."""

    results: list[CaseResult] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {s.value: sum(r.status is s for r in self.results) for s in Status}

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status is Status.FAILED]

    @property
    def exit_status(self) -> int:
        """0 when every case succeeded, 2 when any failed."""
        return 2 if self.failed else 0

    def line(self, out_dir: str | os.PathLike) -> str:
        c = self.counts
        rescored = f"{c['rescored']} rescored, " if c["rescored"] else ""
        return (f"{c['scored']} scored, {rescored}{c['reused']} reused, {c['failed']} failed of {len(self.results)} "
                f"case(s) in {out_dir}")


class CaseJob(Protocol[P, C]):
    """
    What a batch job plugs into :class:`CaseRunner`. ``prepare`` runs in the reader thread, ``compute`` in the
    calling thread (it holds the device), ``write`` in the writer thread; each may raise, which fails that case
    alone.
    """

    def outputs(self, case: ScanCase) -> dict[str, Path]:
        """Every file the case writes (its layout below the output folder)."""

    def check(self, case: ScanCase) -> str | None:
        """Why the case cannot run with this job's options (refused before anything loads), or None."""

    def reusable(self, case: ScanCase) -> dict[str, Any] | None:
        """The record of a finished case that may be reused (same input, model and options), or None."""

    def prepare(self, case: ScanCase) -> P:
        """Host side, ahead of the network: read the case."""

    def compute(self, case: ScanCase, prepared: P) -> C:
        """Device side."""

    def write(self, case: ScanCase, prepared: P | Reused, computed: C | None) -> tuple[Status, dict[str, Any]]:
        """Host side, behind the network: write the outputs whole (or take a reused case as it is)."""

    def line(self, result: CaseResult) -> str:
        """The per-case line of a case that did not fail."""


# ---------------------------------------------------------------------------------------------------- the pipeline
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
    report: Any = None  # what the pipeline's ``on_done`` made of it (the engine: the case's CaseResult)

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


class WriteBehind:
    """
    The write stage: each case's write runs in a writer thread (or at once, in turn) while the caller goes on with
    the next case. Every case, failed ones too, takes its turn in that one thread, so cases finish in the order they
    were added and ``on_done`` sees each one as soon as its outputs are written (not when the caller next looks).
    Closing it waits for the write under way (outputs stay whole) and drops the writes not started.

    Args:
        background: write in a writer thread.
        max_pending: cases waiting for the writer before :meth:`ready` waits for the oldest.
        on_done: called with each finished case's outcome, in the writer thread, in order.
    """

    def __init__(self, background: bool = True, max_pending: int = 1,
                 on_done: Callable[[CaseOutcome], None] | None = None) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}.")
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="case-writer") if background else _Inline()
        self._queue: deque[tuple[CaseOutcome, Future]] = deque()
        self.max_pending, self.on_done = max_pending, on_done

    def add(self, outcome: CaseOutcome, write: Callable[..., Any] | None = None, *args: Any) -> None:
        """Queue ``write(*args)`` as the case's last stage (its result becomes ``outcome.result``); without
        ``write``, or for a case that already failed, the case just takes its turn."""
        self._queue.append((outcome, self._pool.submit(self._finish, outcome, write, args)))

    def _finish(self, outcome: CaseOutcome, write: Callable[..., Any] | None, args: tuple) -> None:
        if write is not None and outcome.error is None:
            try:
                outcome.result = outcome.timed("write", write, *args)
            except Exception as err:  # noqa: BLE001 - the case fails alone
                outcome.error = err
        if self.on_done is not None:
            self.on_done(outcome)

    def ready(self) -> Iterator[CaseOutcome]:
        """The cases finished so far, in order, waiting for the oldest write while too many are pending."""
        while self._queue and (len(self._queue) > self.max_pending or self._queue[0][1].done()):
            yield self._finished(*self._queue.popleft())

    def drain(self) -> Iterator[CaseOutcome]:
        """Every remaining case, in order, as its write finishes."""
        while self._queue:
            yield self._finished(*self._queue.popleft())

    @staticmethod
    def _finished(outcome: CaseOutcome, done: Future) -> CaseOutcome:
        done.result()  # re-raises only what on_done itself raised
        return outcome

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StagedPipeline(Generic[I, P, C, R]):
    """
    ``write(item, prepare(item), compute(item, prepared))`` for each item, in three overlapped stages.

    Reading and writing release the GIL in zlib/numpy/torch, so they run beside the network. Queues are bounded:
    at most ``prefetch`` items wait ahead of ``compute`` and ``max_pending_writes`` behind it.

    Args:
        prepare: host-side work ahead of ``compute`` (a reader thread).
        compute: the stage that holds the device (the calling thread).
        write: host-side work after ``compute`` (a writer thread).
        prefetch: items prepared ahead of ``compute``; 0 prepares in the calling thread.
        background_write: write in a writer thread (else in the calling thread, after ``compute``).
        max_pending_writes: computed items waiting for the writer before ``compute`` waits.
        on_done: called with each item's outcome as soon as it is finished (see :class:`WriteBehind`).
    """

    def __init__(
        self,
        prepare: Callable[[I], P],
        compute: Callable[[I, P], C],
        write: Callable[[I, P, C], R],
        prefetch: int = DEFAULT_PREFETCH,
        background_write: bool = True,
        max_pending_writes: int = 1,
        on_done: Callable[[CaseOutcome], None] | None = None,
    ) -> None:
        if prefetch < 0 or max_pending_writes < 1:
            raise ValueError(f"prefetch must be >= 0 and max_pending_writes >= 1, got {prefetch}, {max_pending_writes}.")
        self.prepare, self.compute, self.write = prepare, compute, write
        self.prefetch, self.background_write, self.max_pending_writes = prefetch, background_write, max_pending_writes
        self.on_done = on_done

    def run(self, items: Iterable[I]) -> Iterator[CaseOutcome[I, R]]:
        """Yield one :class:`CaseOutcome` per item, in input order, as each item's write finishes."""
        outcomes = [CaseOutcome(i, item) for i, item in enumerate(items)]
        reader = ThreadPoolExecutor(1, thread_name_prefix="case-reader") if self.prefetch else _Inline()
        reads: list[Future | None] = []
        # an interrupted run: reads not started are dropped; the write under way finishes (whole outputs)
        with WriteBehind(self.background_write, self.max_pending_writes, self.on_done) as writes:
            try:
                for outcome in outcomes:
                    while len(reads) < min(len(outcomes), outcome.index + 1 + self.prefetch):
                        ahead = outcomes[len(reads)]
                        reads.append(reader.submit(ahead.timed, "prepare", self.prepare, ahead.item))
                    read, reads[outcome.index] = reads[outcome.index], None  # the case's memory goes with its write
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


# ----------------------------------------------------------------------------------------------------- preflight
def check_outputs(
    out_dir: str | os.PathLike,
    outputs: Sequence[dict[str, Path]],
    inputs: Iterable[str | os.PathLike],
    walked: Iterable[str | os.PathLike] = (),
    resume: str = "refuse",
) -> None:
    """
    The one check, before any work, that a run may write ``outputs`` (each case's files) into ``out_dir``: no two
    cases write one path, no output is an input, the output folder is not an input nor inside a walked input folder
    (inputs are never written to), no output exists unless the run continues or overwrites, and the folder is
    writable. Creates nothing.

    Raises:
        InputError: naming the first problem.
        OutputExistsError: an output exists and ``resume`` is ``"refuse"``.
    """
    out = Path(out_dir).resolve()
    paths = [Path(p).resolve() for o in outputs for p in o.values()]
    if len(set(paths)) != len(paths):
        raise InputError("Two cases would write the same output; choose another --case-name.")
    sources = {Path(p).resolve() for p in inputs}
    if out in sources:
        raise InputError(f"Output folder '{out_dir}' is an input; writing there would change it. Choose another "
                         "output folder.")
    onto = [p for p in paths if p in sources]
    if onto:
        raise InputError(f"Output '{onto[0]}' would overwrite an input; choose another output folder.")
    for folder in {Path(w).resolve() for w in walked}:
        if out == folder or folder in out.parents:
            raise InputError(f"Output folder '{out_dir}' lies inside the input folder '{folder}'; inputs are never "
                             "written to: choose an output folder outside it.")
    if resume == "refuse":
        existing = [p for o in outputs for p in o.values() if Path(p).exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise OutputExistsError(f"Output '{existing[0]}' exists{more}; pass --continue to reuse finished cases "
                                    "or --overwrite to replace them.")
    check_writable_dir(out_dir)


# ------------------------------------------------------------------------------------------------------- session
class RunSession:
    """
    What every run holds while it writes into an output folder: the process group (``torchrun``) on the device
    resolved once, the folder locked by rank 0 for the whole job and cleared of stale temporaries, and on exit the
    folders the run created and left empty removed before the lock is released. Use as a context manager; it
    yields the :class:`DistributedContext`.

    Args:
        out_dir: the output folder.
        device: the device asked for (``auto``, ``cpu``, ``cuda``...): resolved here, once, for the whole run.
        folders: further folders the run may create (each case's output folder), removed on exit if left empty.

    Raises:
        OutputLockedError: another run holds the folder, or its stale temporaries cannot be removed.
    """

    def __init__(self, out_dir: str | os.PathLike, device: str = "cpu", folders: Iterable[Path] = ()) -> None:
        self.out_dir, self.device = Path(out_dir), device
        self.folders = list(folders)
        self.ctx: DistributedContext | None = None
        self._lock: FolderLock | None = None
        self._created: list[Path] = []
        self._group = None

    def __enter__(self) -> DistributedContext:
        from anomalyclip_med.network.factory import resolve_device

        self._created = [f for folder in (self.out_dir, *self.folders) for f in _missing_folders(folder)]
        self._group = DistributedContext.from_env(resolve_device(self.device))
        ctx = self.ctx = self._group.__enter__()
        refused = None
        if ctx.is_main:
            try:
                self._lock = FolderLock(self.out_dir).acquire()
                stale = remove_stale_temporaries(self.out_dir)
                if stale:
                    logger.info("removed %d temporary file(s) left by an interrupted run", len(stale))
            except AnomalyCLIPMedError as err:
                refused = err
            except OSError as err:  # a temporary that cannot be removed: refused, and the lock let go below
                refused = OutputLockedError(f"Output folder '{self.out_dir}' cannot be cleared of an interrupted "
                                            f"run's temporaries: {err}")
        if any(ctx.gather(refused is not None)):  # no rank writes before the lock is held and the folder clean
            self._release()
            self._group.__exit__(None, None, None)
            if refused is not None:
                raise refused
            raise OutputLockedError(f"Output folder '{self.out_dir}' is in use by another run.")
        return ctx

    def _release(self) -> None:
        if self._lock is not None:  # empty folders go while the lock is held: a next run may already be creating
            _remove_empty(self._created)
            self._lock.release()
            self._lock = None

    def __exit__(self, *exc: object) -> None:
        try:
            self._release()
        finally:
            self._group.__exit__(*exc)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet (deepest first)."""
    missing = []
    for f in (folder, *folder.parents):
        if f.exists():
            break
        missing.append(f)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a run created and left empty (a failed case, a run that wrote nothing)."""
    for f in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            f.rmdir()
        except OSError:
            pass  # not empty, or already gone


# -------------------------------------------------------------------------------------------------------- runner
class CaseRunner(Generic[P, C]):
    """
    Run a :class:`CaseJob` over cases into an output folder (see the module docstring for what it guarantees).

    Args:
        cases: the cases (:func:`anomalyclip_med.io.cases.find_cases` / ``datalist_cases``).
        out_dir: the output folder (made absolute here, once: nothing later depends on the working directory).
        job: what each case is.
        resume: one of :data:`RESUME_MODES` ["refuse"].
        device: the device the run asks for (resolved once by the session).
        progress: a progress bar over cases.
        prefetch: cases read ahead of the network (0: read in turn).
        background_write: write each case's outputs in a writer thread, beside the network.
        quiet: no per-case lines on stdout (the error lines still go to stderr).
        run_outputs: files the run writes besides its cases' (a table of every case, a merged calibration):
            checked with the cases' before the run starts.
    """

    def __init__(
        self,
        cases: Sequence[ScanCase],
        out_dir: str | os.PathLike,
        job: CaseJob[P, C],
        resume: str = "refuse",
        device: str = "cpu",
        progress: bool = True,
        prefetch: int = DEFAULT_PREFETCH,
        background_write: bool = True,
        quiet: bool = False,
        run_outputs: Sequence[str | os.PathLike] = (),
    ) -> None:
        if resume not in RESUME_MODES:
            raise InputError(f"Unknown resume mode {resume!r}; choose one of {', '.join(RESUME_MODES)}.")
        self.cases = list(cases)
        self.out_dir = Path(os.path.abspath(out_dir))
        self.job, self.resume, self.device = job, resume, device
        self.progress, self.prefetch, self.background_write, self.quiet = progress, prefetch, background_write, quiet
        self.run_outputs = {f"run:{i}": Path(os.path.abspath(p)) for i, p in enumerate(run_outputs)}
        self._bar: tqdm | None = None

    def preflight(self) -> None:
        """
        Refuse the whole run before any weights load (:func:`check_outputs`, and each case against the job).

        Raises:
            InputError, OutputExistsError: naming the first problem.
        """
        if not self.cases:
            raise InputError("No cases to run.")
        for case in self.cases:
            problem = self.job.check(case)
            if problem:
                raise InputError(f"{case.name}: {problem}")
        check_outputs(self.out_dir, [self.job.outputs(c) for c in self.cases] + [self.run_outputs],
                      [c.source for c in self.cases],
                      [c.walked for c in self.cases if c.walked is not None], self.resume)

    # ------------------------------------------------------------------ the stages of one case
    def prepare(self, case: ScanCase) -> P | Reused:
        """Host side: a reusable finished case (``resume="continue"``), or the case read by the job."""
        if self.resume == "continue":
            record = self.job.reusable(case)
            if record is not None:
                return Reused(record)
        return self.job.prepare(case)

    def compute(self, case: ScanCase, prepared: P | Reused) -> C | None:
        """Device side (nothing for a reused case)."""
        return None if isinstance(prepared, Reused) else self.job.compute(case, prepared)

    def write(self, case: ScanCase, prepared: P | Reused, computed: C | None) -> tuple[Status, dict[str, Any]]:
        return self.job.write(case, prepared, computed)

    def result(self, outcome: CaseOutcome) -> CaseResult:
        """A case's :class:`CaseResult` from its pipeline outcome, its line printed (``error: <case>: <cause>`` on
        stderr for a failed case) and the progress bar moved on: called (by the writer thread) as soon as the
        case's outputs are written. Also left in ``outcome.report``."""
        case, outputs = outcome.item, self.job.outputs(outcome.item)
        if outcome.error is None:
            status, record = outcome.result
            result = CaseResult(case, status, outputs, record, seconds=outcome.seconds)
            self._echo(self.job.line(result))
        else:
            logger.debug("case %s failed", case.name, exc_info=outcome.error)
            cause = describe_error(outcome.error)
            if str(case.source) not in cause:  # a library's message seldom names the file
                cause += f" (input '{case.source}')"
            result = CaseResult(case, Status.FAILED, outputs, error=cause, seconds=outcome.seconds)
            self._echo(f"error: {case.name}: {cause}", error=True)
        if self._bar is not None:
            self._bar.update()
        outcome.report = result
        return result

    # ------------------------------------------------------------------ the run
    @contextmanager
    def session(self) -> Iterator[tuple[DistributedContext, list[tuple[int, ScanCase]]]]:
        """
        The preflight, then the :class:`RunSession` and a progress bar over this process's cases; yields the
        context and ``(index, case)`` of this process's cases (every ``world_size``-th under ``torchrun``).

        Raises:
            InputError, OutputExistsError, OutputLockedError: the run is refused (nothing written).
        """
        self.preflight()
        folders = {self.job.outputs(c)[k].parent for c in self.cases for k in self.job.outputs(c)}
        with RunSession(self.out_dir, self.device, folders) as ctx:
            shard = ctx.shard(self.cases)
            try:
                with tqdm(total=len(shard), desc="cases", unit="case", disable=not self.progress) as self._bar:
                    yield ctx, shard
            finally:
                self._bar = None

    def summarise(self, mine: Sequence[tuple[int, CaseResult]], ctx: DistributedContext) -> RunSummary:
        """Every process's ``(index, result)`` gathered into one summary, in case order; rank 0 prints the count."""
        summary = RunSummary([r for _, r in sorted((x for part in ctx.gather(list(mine)) for x in part),
                                                   key=lambda x: x[0])])
        ctx.barrier()
        if ctx.is_main:
            self._echo(summary.line(self.out_dir) + (f" by {ctx.world_size} processes" if ctx.world_size > 1 else ""))
        return summary

    def run(self, setup: Callable[[DistributedContext], None] | None = None,
            finish: Callable[[RunSummary, DistributedContext], None] | None = None) -> RunSummary:
        """
        Every case through the staged pipeline within :meth:`session`, a line per case (in case order, as each
        is written) and the final count.

        Args:
            setup: called once the folder is held, before the first case (e.g. build the network on the session's
                device: a refused run loads no weights).
            finish: called with the gathered summary while the folder is still held (e.g. write a table of every
                case, merge per-case parts).

        Returns:
            every case's result (all processes'), in case order.
        """
        with self.session() as (ctx, shard):
            if setup is not None:
                setup(ctx)
            pipeline = StagedPipeline(self.prepare, self.compute, self.write, self.prefetch, self.background_write,
                                      on_done=self.result)
            mine = [(shard[o.index][0], o.report) for o in pipeline.run([case for _, case in shard])]
            summary = self.summarise(mine, ctx)
            if finish is not None:
                finish(summary, ctx)
            return summary

    def _echo(self, text: str, error: bool = False) -> None:
        if error:
            tqdm.write(text, file=sys.stderr)
        elif not self.quiet:
            tqdm.write(text, file=sys.stdout)
