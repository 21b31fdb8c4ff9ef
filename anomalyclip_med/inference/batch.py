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

The per-case work is split in stages (:meth:`ScanBatchRunner.load`, :meth:`ScanBatchRunner.score`,
:meth:`ScanBatchRunner.write`) so a pipelined loop can overlap them; :meth:`ScanBatchRunner.process` runs them in
turn for one case.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from anomalyclip_med.errors import AnomalyCLIPMedError, InputError, OutputExistsError
from anomalyclip_med.inference.inferer import SliceAnomalyInferer
from anomalyclip_med.inference.scan import ScanScoringOptions, expected_outputs, resume_record, write_scan_outputs
from anomalyclip_med.inference.slices import SliceScores
from anomalyclip_med.io.case_outputs import read_finished_case
from anomalyclip_med.io.cases import ScanCase
from anomalyclip_med.io.scans import LoadScand
from anomalyclip_med.io.writers import dicom_seg_problem
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.utils.atomic import remove_stale_temporaries
from anomalyclip_med.utils.lock import FolderLock
from anomalyclip_med.utils.paths import check_writable_dir

__all__ = ["RESUME_MODES", "CaseOutcome", "BatchSummary", "ScanBatchRunner", "describe_error"]

logger = logging.getLogger(__name__)

# "refuse": existing outputs stop the run before it starts; "continue": finished cases with the same input, model
# and options are reused, every other case is (re)computed; "overwrite": every case is computed again
RESUME_MODES = ("refuse", "continue", "overwrite")


def describe_error(err: BaseException) -> str:
    """One line naming the cause: the package's own message, or ``Type: message`` of the innermost cause (MONAI
    wraps transform errors in ``RuntimeError: applying transform ...``)."""
    while err.__cause__ is not None and not isinstance(err, AnomalyCLIPMedError):
        err = err.__cause__
    text = str(err) if isinstance(err, AnomalyCLIPMedError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())


@dataclass
class CaseOutcome:
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
        how = "reused" if self.status == "reused" else "scored"
        return (f"{self.case.name}: scan score {r.get('scan_score', float('nan')):.4f}, "
                f"{slicing.get('scored_slices', '?')}/{slicing.get('n_slices', '?')} slices {how} -> "
                f"{self.outputs['scores'].parent}")


@dataclass
class BatchSummary:
    """The outcomes of a batch, in case order."""

    outcomes: list[CaseOutcome] = field(default_factory=list)

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
        options: scoring options [defaults]; ``options.overwrite`` is ignored (``resume`` says it).
        resume: one of :data:`RESUME_MODES` ["refuse"].
        progress: progress bars over cases and over each case's slices.
        loader: MONAI transform loading ``{"image": path}`` into ``{"image": MetaTensor}`` [``LoadScand`` with
            the options' series/volume choice] (the bundle passes its ``preprocessing``).
        inferer: the scorer [``SliceAnomalyInferer(options)``]; when given without ``options``, its options are
            the run's.
        quiet: no per-case lines on stdout (the error lines still go to stderr).
    """

    def __init__(
        self,
        cases: Sequence[ScanCase],
        out_dir: str | os.PathLike,
        options: ScanScoringOptions | None = None,
        resume: str = "refuse",
        progress: bool = True,
        loader: Callable[[dict], dict] | None = None,
        inferer: SliceAnomalyInferer | None = None,
        quiet: bool = False,
    ) -> None:
        if resume not in RESUME_MODES:
            raise InputError(f"Unknown resume mode {resume!r}; choose one of {', '.join(RESUME_MODES)}.")
        self.cases = list(cases)
        self.out_dir = Path(out_dir)
        self.options = options or (inferer.options if inferer is not None else ScanScoringOptions())
        self.resume = resume
        self.progress = progress
        # the slice bar follows the runner's progress setting
        self.inferer = inferer or SliceAnomalyInferer(replace(self.options, progress=progress))
        self.loader = loader or LoadScand("image", self.options.series_uid, self.options.volume_index)
        self.quiet = quiet

    # ------------------------------------------------------------------ before anything runs
    def outputs(self, case: ScanCase) -> dict[str, Path]:
        """The case's outputs (:func:`anomalyclip_med.inference.scan.expected_outputs`) in its output folder."""
        return expected_outputs(case.source, case.output_dir(self.out_dir), self.options.dicom_seg, case.name)

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
        all_outputs = {c.name: self.outputs(c) for c in self.cases}
        paths = [p.resolve() for o in all_outputs.values() for p in o.values()]
        if len(set(paths)) != len(paths):
            raise InputError("Two cases would write the same output; use --case-name relpath.")
        sources = {c.source.resolve() for c in self.cases}
        onto = [p for p in paths if p in sources]
        if onto:
            raise InputError(f"Output '{onto[0]}' would overwrite an input; choose another output folder.")
        for case in self.cases:
            folder = case.walked.resolve() if case.walked is not None else None
            if folder is not None and (out == folder or folder in out.parents):
                raise InputError(f"Output folder '{self.out_dir}' lies inside the input folder '{case.walked}'; "
                                 "inputs are never written to: choose an output folder outside it.")
        if self.options.dicom_seg:
            for case in self.cases:
                problem = dicom_seg_problem(case.source, self.options.series_uid)
                if problem:
                    raise InputError(f"--dicom-seg: {case.name}: {problem}")
        if self.resume == "refuse":
            existing = [p for o in all_outputs.values() for p in o.values() if p.exists()]
            if existing:
                raise OutputExistsError(f"Output '{existing[0]}' exists (and {len(existing) - 1} more); pass "
                                        "--continue to reuse finished cases or --overwrite to replace them.")
        check_writable_dir(self.out_dir)

    # ------------------------------------------------------------------ the stages of one case
    def reusable(self, model: AnomalyCLIP, case: ScanCase) -> dict[str, Any] | None:
        """The case's scores JSON when it may be reused (``resume="continue"``, whole outputs, same record)."""
        if self.resume != "continue":
            return None
        report = read_finished_case(self.outputs(case))
        if report is None:
            return None
        expected = resume_record(model, case.source, self.options)
        return report if all(report.get(k) == v for k, v in expected.items()) else None

    def load(self, case: ScanCase):
        """The scan as a channel-first ``MetaTensor``."""
        return self.loader({"image": str(case.source)})["image"]

    def score(self, model: AnomalyCLIP, case: ScanCase, image) -> tuple[SliceScores, float]:
        """Slice scores and the scan score."""
        return self.inferer.score(model, image, desc=case.name)

    def write(self, model: AnomalyCLIP, case: ScanCase, image, result: SliceScores, scan_score: float) -> dict:
        """Write the case's outputs whole or not at all; returns its scores JSON content."""
        return write_scan_outputs(model, case.source, image, result, scan_score, self.options, self.outputs(case),
                                  case.name)

    def process(self, model: AnomalyCLIP, case: ScanCase) -> CaseOutcome:
        """Reuse, or load, score and write one case; any exception makes it failed (never raised)."""
        outputs = self.outputs(case)
        try:
            report = self.reusable(model, case)
            if report is not None:
                return CaseOutcome(case, "reused", outputs, report)
            image = self.load(case)
            result, scan_score = self.score(model, case, image)
            return CaseOutcome(case, "scored", outputs, self.write(model, case, image, result, scan_score))
        except Exception as err:  # noqa: BLE001 - one bad case must not stop the batch; it is reported by name
            logger.debug("case %s failed", case.name, exc_info=True)
            cause = describe_error(err)
            if str(case.source) not in cause:  # a library's message seldom names the file
                cause += f" (scan '{case.source}')"
            return CaseOutcome(case, "failed", outputs, error=cause)

    # ------------------------------------------------------------------ the batch
    def run(self, model: AnomalyCLIP | Callable[[], AnomalyCLIP]) -> BatchSummary:
        """
        Preflight, lock the output folder, remove stale temporaries, then process every case in order, printing
        a line per case and the final count.

        Args:
            model: the model, or a function building it (called after the preflight and the lock, so a refused
                run loads no weights).
        """
        self.preflight()
        created = _missing_folders(self.out_dir)
        summary = BatchSummary()
        try:
            with FolderLock(self.out_dir):
                stale = remove_stale_temporaries(self.out_dir)
                if stale:
                    logger.info("removed %d temporary file(s) left by an interrupted run", len(stale))
                if not isinstance(model, AnomalyCLIP):
                    model = model()
                    if model.untrained_warning:
                        print(model.untrained_warning)
                for case in tqdm(self.cases, desc="cases", unit="case", disable=not self.progress, position=0):
                    created += _missing_folders(case.output_dir(self.out_dir))
                    outcome = self.process(model, case)
                    summary.outcomes.append(outcome)
                    self._echo(outcome.line(), error=outcome.status == "failed")
        finally:
            _remove_empty(created)
        self._echo(summary.line(self.out_dir))
        return summary

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
