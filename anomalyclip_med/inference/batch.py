"""
The batch runner behind ``anomalyclip-med score``, cohort ``evaluate`` and the bundle's ``inference.json``.

What a hospital's overnight run needs from it:
- a case fails alone: any exception while loading, scoring or writing one case marks that case failed with one
  ``error: <case>: <cause>`` line (the traceback only in the debug log, ``--verbose``) and the batch goes on;
- a case's outputs are whole or absent (:mod:`anomalyclip_med.io.case_outputs`), the scores JSON last;
- one run at a time per output folder (:class:`anomalyclip_med.utils.lock.FolderLock`); temporaries of killed
  runs are removed when the next run starts; folders a failed run created and left empty are removed;
- resume, one rule: a case is reused only when its outputs are whole and its scores JSON records the same input
  (:func:`anomalyclip_med.io.cases.input_fingerprint`), model identity and options (:func:`anomalyclip_med.inference.scan.resume_record`);
- before any weights load: clashing outputs, outputs onto inputs or into input folders, existing outputs
  without ``continue``/``overwrite``, and ``dicom_seg`` on inputs that cannot carry a DICOM SEG are refused.

Cases run through :class:`anomalyclip_med.inference.pipeline.StagedPipeline`: the next scans are read (or their
finished outputs verified) by a reader thread while the network scores one, and the previous one is written by a
writer thread; :meth:`ScanBatchRunner.process` runs the same stages in turn for one case (cohort evaluation).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from anomalyclip_med.calibration.calibration import CalibratedDecision
from anomalyclip_med.errors import AnomalyCLIPMedError, InputError, OutputExistsError, OutputLockedError
from anomalyclip_med.inference.options import RESUME_MODES, LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.inference.pipeline import DEFAULT_PREFETCH, CaseOutcome, StagedPipeline
from anomalyclip_med.inference.scan import (
    PreparedScan,
    ScoredScan,
    compute_scan,
    expected_outputs,
    prepare_scan,
    resume_record,
    write_scan,
)
from anomalyclip_med.io.case_outputs import read_finished_case
from anomalyclip_med.io.cases import ScanCase
from anomalyclip_med.io.writers import dicom_seg_problem
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.utils.atomic import remove_stale_temporaries
from anomalyclip_med.utils.distributed import DistributedContext
from anomalyclip_med.utils.lock import FolderLock
from anomalyclip_med.utils.paths import check_writable_dir

__all__ = ["CaseReport", "BatchSummary", "ScanBatchRunner", "describe_error"]

logger = logging.getLogger(__name__)



def describe_error(err: BaseException) -> str:
    """One line naming the cause: the package's own message, or ``Type: message`` of the innermost cause (MONAI
    wraps transform errors in ``RuntimeError: applying transform ...``)."""
    while err.__cause__ is not None and not isinstance(err, AnomalyCLIPMedError):
        err = err.__cause__
    text = str(err) if isinstance(err, AnomalyCLIPMedError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())


@dataclass
class CaseReport:
    """
    What happened to one case.

    Attributes:
        case: the case.
        status: ``scored``, ``reused`` or ``failed``.
        outputs: its output paths (see :func:`case_outputs`).
        report: its scores JSON content (None when failed).
        error: one line naming the cause (failed cases).
    """

    case: ScanCase
    status: str
    outputs: dict[str, Path]
    report: dict[str, Any] | None = None
    error: str | None = None

    def line(self) -> str:
        """The per-case line: case, scan score, slices scored, where written."""
        if self.status == "failed":
            return f"error: {self.case.name}: {self.error}"
        r = self.report or {}
        slicing = r.get("slicing", {})
        reused = " (reused)" if self.status == "reused" else ""
        calibrated = "" if r.get("scan_p_value") is None else (
            f", scan p-value {r['scan_p_value']:.4f}" + (" FLAGGED" if r.get("scan_flag") else ""))
        return (f"{self.case.name}: scan score {r.get('scan_score', float('nan')):.4f}{calibrated}, "
                f"{slicing.get('scored_slices', '?')}/{slicing.get('n_slices', '?')} slices scored{reused} -> "
                f"{self.outputs['scores'].parent}")


@dataclass
class BatchSummary:
    """The outcomes of a batch, in case order."""

    outcomes: list[CaseReport] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(o.status == s for o in self.outcomes) for s in ("scored", "reused", "failed")}

    @property
    def exit_status(self) -> int:
        """0 when every case succeeded, 2 when any failed."""
        return 2 if self.counts["failed"] else 0

    def line(self, out_dir: str | os.PathLike) -> str:
        c = self.counts
        return (f"{c['scored']} scored, {c['reused']} reused, {c['failed']} failed of {len(self.outcomes)} "
                f"case(s) in {out_dir}")


class ScanBatchRunner:
    """
    Score a batch of scans into an output folder (see the module docstring for what it guarantees).

    Args:
        cases: the cases (:func:`anomalyclip_med.io.cases.find_cases` / ``datalist_cases``).
        out_dir: the output folder.
        scoring: how each scan is scored [defaults].
        loading: which volume of each input [defaults].
        output: what is written [defaults]; its ``overwrite`` and ``progress`` are replaced by ``resume`` and
            ``progress``.
        resume: one of :data:`anomalyclip_med.inference.options.RESUME_MODES` ["refuse"].
        progress: progress bars over cases and over each case's slices.
        loader: MONAI transform loading ``{"image": path}`` into ``{"image": MetaTensor}`` [``LoadScan`` with
            the options' series/volume choice] (the bundle passes its ``preprocessing``).
        prefetch: scans read ahead of the network (0: read in turn).
        background_write: write each case's outputs in a writer thread, beside the network.
        quiet: no per-case lines on stdout (the error lines still go to stderr).
    """

    def __init__(
        self,
        cases: Sequence[ScanCase],
        out_dir: str | os.PathLike,
        scoring: ScoringOptions | None = None,
        loading: LoadingOptions | None = None,
        output: OutputOptions | None = None,
        resume: str = "refuse",
        progress: bool = True,
        loader: Callable[[dict], dict] | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        background_write: bool = True,
        quiet: bool = False,
    ) -> None:
        if resume not in RESUME_MODES:
            raise InputError(f"Unknown resume mode {resume!r}; choose one of {', '.join(RESUME_MODES)}.")
        self.cases = list(cases)
        self.out_dir = Path(out_dir)
        self.scoring, self.loading = scoring or ScoringOptions(), loading or LoadingOptions()
        # outputs of a case being recomputed are replaced whole; the slice bar follows the runner's
        self.output = replace(output or OutputOptions(), overwrite=True, progress=progress)
        self.resume = resume
        self.progress = progress
        self.loader = loader
        self.prefetch, self.background_write = prefetch, background_write
        self.quiet = quiet
        self.decision: CalibratedDecision | None = None
        self._bar: tqdm | None = None

    def use_decision(self, decision: CalibratedDecision | None) -> None:
        """Score with a calibration on normals (its labelmap threshold replaces ``scoring.threshold``; p-values
        and flags in the reports); finished cases made with another calibration (or none) are not reused."""
        if decision is not None:
            self.decision, self.scoring = decision, decision.scoring_options(self.scoring)

    # ------------------------------------------------------------------ before anything runs
    def outputs(self, case: ScanCase) -> dict[str, Path]:
        """The case's outputs (:func:`anomalyclip_med.inference.scan.expected_outputs`) in its output folder."""
        return expected_outputs(case.source, case.output_dir(self.out_dir), self.output.dicom_seg, case.name)

    def preflight(self) -> None:
        """
        Refuse the whole run before any weights load: outputs of two cases on one path, an output onto an input
        or into an input folder, existing outputs (``resume="refuse"``), ``dicom_seg`` for an input that cannot
        carry a DICOM SEG, an unwritable output folder. Creates nothing.

        Raises:
            InputError, OutputExistsError: naming the first problem.
        """
        if not self.cases:
            raise InputError("No scans to score.")
        out = self.out_dir.resolve()
        all_outputs = [self.outputs(c) for c in self.cases]
        paths = [p.resolve() for o in all_outputs for p in o.values()]
        if len(set(paths)) != len(paths):
            raise InputError("Two cases would write the same output; choose another --case-name.")
        sources = {c.source.resolve() for c in self.cases}
        onto = [p for p in paths if p in sources]
        if onto:
            raise InputError(f"Output '{onto[0]}' would overwrite an input; choose another output folder.")
        for case in self.cases:
            folder = case.walked.resolve() if case.walked is not None else None
            if folder is not None and (out == folder or folder in out.parents):
                raise InputError(f"Output folder '{self.out_dir}' lies inside the input folder '{case.walked}'; "
                                 "inputs are never written to: choose an output folder outside it.")
        if self.output.dicom_seg:
            for case in self.cases:
                problem = dicom_seg_problem(case.source, self.loading.series_uid)
                if problem:
                    raise InputError(f"--dicom-seg: {case.name}: {problem}")
        if self.resume == "refuse":
            existing = [p for o in all_outputs for p in o.values() if p.exists()]
            if existing:
                raise OutputExistsError(f"Output '{existing[0]}' exists (and {len(existing) - 1} more); pass "
                                        "--continue to reuse finished cases or --overwrite to replace them.")
        check_writable_dir(self.out_dir)

    # ------------------------------------------------------------------ the stages of one case
    def reusable(self, model: AnomalyCLIP, case: ScanCase) -> dict[str, Any] | None:
        """The case's scores JSON when it may be reused (``resume="continue"``, whole outputs, same input, model
        and options: :func:`anomalyclip_med.inference.scan.resume_record`)."""
        if self.resume != "continue":
            return None
        report = read_finished_case(self.outputs(case))
        if report is None:
            return None
        expected = resume_record(model, case.source, self.scoring, self.loading, self.output, self.decision)
        return report if all(report.get(k) == v for k, v in expected.items()) else None

    def _load(self, source: Path):
        return self.loader({"image": str(source)})["image"]

    def prepare(self, model: AnomalyCLIP, case: ScanCase) -> PreparedScan | dict[str, Any]:
        """Host side, ahead of the network: a reusable case's scores JSON, or the scan read and planned."""
        report = self.reusable(model, case)
        if report is not None:
            return report
        return prepare_scan(case.source, case.output_dir(self.out_dir), self.scoring, self.loading, self.output,
                            model.config.image_size, model.mean, model.std, pin_memory=model.device.type == "cuda",
                            case_id=case.name, loader=self._load if self.loader is not None else None)

    def compute(self, model: AnomalyCLIP, prepared: PreparedScan | dict[str, Any]) -> ScoredScan | None:
        """Device side: the network and the map post-processing (nothing for a reused case)."""
        return None if isinstance(prepared, dict) else compute_scan(model, prepared, self.scoring, self.progress)

    def write(self, model: AnomalyCLIP, prepared: PreparedScan | dict[str, Any], scored: ScoredScan | None
              ) -> tuple[str, dict[str, Any]]:
        """``("scored", report)`` after writing the outputs whole, or ``("reused", report)``."""
        if scored is None:
            return "reused", prepared
        return "scored", write_scan(model, prepared, scored, self.scoring, self.loading, self.output,
                                    self.decision).report

    def process(self, model: AnomalyCLIP, case: ScanCase) -> tuple[str, dict[str, Any]]:
        """The stages in turn for one case: ``(how, report)`` with ``how`` ``scored`` or ``reused``.

        Raises:
            whatever a stage raises.
        """
        prepared = self.prepare(model, case)
        return self.write(model, prepared, self.compute(model, prepared))

    def report(self, outcome: CaseOutcome) -> CaseReport:
        """A case's :class:`CaseReport` from its pipeline outcome, with its line printed (``error: <case>: <cause>``
        on stderr for a failed case) and the progress bar moved on."""
        case, outputs = outcome.item, self.outputs(outcome.item)
        if outcome.error is None:
            report = CaseReport(case, outcome.result[0], outputs, outcome.result[1])
        else:
            logger.debug("case %s failed", case.name, exc_info=outcome.error)
            cause = describe_error(outcome.error)
            if str(case.source) not in cause:  # a library's message seldom names the file
                cause += f" (scan '{case.source}')"
            report = CaseReport(case, "failed", outputs, error=cause)
        self._echo(report.line(), error=report.status == "failed")
        if self._bar is not None:
            self._bar.update()
        return report

    # ------------------------------------------------------------------ the batch
    @contextmanager
    def session(self, ctx: DistributedContext | None = None) -> Iterator[list[tuple[int, ScanCase]]]:
        """
        What every run of the batch holds while it scores: the preflight, the output folder locked (rank 0 for the
        whole ``torchrun`` job) and cleared of stale temporaries, and a progress bar over this process's cases;
        yields ``(index, case)`` of those cases (every ``world_size``-th under ``torchrun``). On exit the lock is
        released and the folders the run created and left empty are removed.

        Raises:
            InputError, OutputExistsError, OutputLockedError: the run is refused (nothing written).
        """
        ctx = ctx or DistributedContext()
        self.preflight()
        created = _missing_folders(self.out_dir)
        for case in self.cases:
            created += _missing_folders(case.output_dir(self.out_dir))
        lock, refused = None, None
        if ctx.is_main:
            try:
                lock = FolderLock(self.out_dir).acquire()
                stale = remove_stale_temporaries(self.out_dir)
                if stale:
                    logger.info("removed %d temporary file(s) left by an interrupted run", len(stale))
            except AnomalyCLIPMedError as err:
                refused = err
            except OSError as err:  # a temporary that cannot be removed: refused, and the lock let go below
                refused = OutputLockedError(f"Output folder '{self.out_dir}' cannot be cleared of an interrupted "
                                            f"run's temporaries: {err}")
        if any(ctx.gather(refused is not None)):  # no rank writes before the lock is held and the folder clean
            if lock is not None:
                lock.release()
            if refused is not None:
                raise refused
            raise OutputLockedError(f"Output folder '{self.out_dir}' is in use by another run.")
        shard = ctx.shard(self.cases)
        try:
            with tqdm(total=len(shard), desc="cases", unit="case", disable=not self.progress) as self._bar:
                yield shard
        finally:
            self._bar = None
            if lock is not None:  # empty folders go while the lock is held: a next run may already be creating
                _remove_empty(created)
                lock.release()

    def summarise(self, mine: Sequence[tuple[int, CaseReport]], ctx: DistributedContext | None = None) -> BatchSummary:
        """Every process's ``(index, report)`` gathered into one summary, in case order; rank 0 prints the count."""
        ctx = ctx or DistributedContext()
        summary = BatchSummary([r for _, r in sorted((x for part in ctx.gather(list(mine)) for x in part),
                                                     key=lambda x: x[0])])
        ctx.barrier()
        if ctx.is_main:
            self._echo(summary.line(self.out_dir) + (f" by {ctx.world_size} processes" if ctx.world_size > 1 else ""))
        return summary

    def run(self, model: AnomalyCLIP | Callable[[], AnomalyCLIP], ctx: DistributedContext | None = None
            ) -> BatchSummary:
        """
        Run every case through the staged pipeline within :meth:`session`, printing a line per case (in case
        order) and the final count.

        Args:
            model: the model, or a function building it (called after the preflight and the lock, so a refused
                run loads no weights).
            ctx: the process group [one process].

        Returns:
            every case's report (all processes'), in case order.
        """
        with self.session(ctx) as shard:
            if not isinstance(model, AnomalyCLIP):
                model = model()
                if model.untrained_warning and (ctx is None or ctx.is_main):
                    print(model.untrained_warning)
            pipeline = StagedPipeline(
                lambda case: self.prepare(model, case),
                lambda case, prepared: self.compute(model, prepared),
                lambda case, prepared, scored: self.write(model, prepared, scored),
                self.prefetch, self.background_write,
            )
            mine = [(shard[o.index][0], self.report(o)) for o in pipeline.run([case for _, case in shard])]
            return self.summarise(mine, ctx)

    def _echo(self, text: str, error: bool = False) -> None:
        if error:
            tqdm.write(text, file=sys.stderr)
        elif not self.quiet:
            tqdm.write(text, file=sys.stdout)


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
