"""
What an evaluation is given besides the model and scoring options: :class:`BenchmarkOptions` for a benchmark
dataset, :class:`CohortOptions` for a cohort manifest. Plain dataclasses in a module without torch, so that the
command line reads their defaults for ``--help`` without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from anomalyclip_med.errors import InputError
from anomalyclip_med.evaluation.protocols import METRIC_SETS
from anomalyclip_med.inference.options import BatchOptions, OutputOptions

__all__ = ["MANIFEST", "COHORT_RESUME", "BenchmarkOptions", "CohortOptions"]

MANIFEST = "manifest"  # the ``dataset`` value of a cohort manifest (CSV or MONAI datalist JSON)
COHORT_RESUME = "continue"  # a cohort reuses its finished cases unless told to overwrite (``--continue`` is implied)


@dataclass
class BenchmarkOptions:
    """
    A benchmark dataset evaluation (defaults in brackets).

    Attributes:
        split: dataset split ["test", as in the paper].
        limit: at most this many images per class, evenly spaced over the class's sorted list [None: all].
        batch_size: images per forward pass [8].
        num_workers: DataLoader worker processes [0].
        overwrite: replace the report of an earlier run in the output folder [False: refuse, as every command].
        metric_set: table columns of a published protocol (``anomalyclip``, ``bmad``, ``medianomaly``; see
            :mod:`anomalyclip_med.evaluation.protocols`) [None: the protocol the dataset comes from].
    """

    split: str = "test"
    limit: int | None = None
    batch_size: int = 8
    num_workers: int = 0
    overwrite: bool = OutputOptions.overwrite
    metric_set: str | None = None

    def __post_init__(self) -> None:
        if self.metric_set is not None and self.metric_set not in METRIC_SETS:
            raise InputError(f"Invalid evaluation option metric_set={self.metric_set!r}: one of "
                             f"{', '.join(METRIC_SETS)}.")
        for name, low in (("limit", 1), ("batch_size", 1), ("num_workers", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < low):
                raise InputError(f"Invalid evaluation option {name}={value!r}: an integer >= {low}.")


@dataclass
class CohortOptions:
    """
    A cohort manifest evaluation (defaults in brackets); how each scan is scored is a :class:`ScoringOptions`.

    Attributes:
        datalist_key: the list to read from a MONAI datalist JSON ["testing"].
        montage: worst misses shown in ``worst_misses.png`` [6].
        overwrite: recompute cases that finished in an earlier run [False: reuse a finished case whose input,
            model, options, mask and label are unchanged].
        case_name: how cases without a ``case_id`` are named (:data:`anomalyclip_med.inference.options.CASE_NAMING`)
            ["stem"].
    """

    datalist_key: str = "testing"
    montage: int = 6
    overwrite: bool = OutputOptions.overwrite
    case_name: str = BatchOptions.case_name

    def __post_init__(self) -> None:
        if isinstance(self.montage, bool) or int(self.montage) != self.montage or self.montage < 0:
            raise InputError(f"Invalid evaluation option montage={self.montage!r}: an integer >= 0.")
