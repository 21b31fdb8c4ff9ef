"""
What a training run is given: the dataset (:class:`TrainData`) and the hyper-parameters (:class:`TrainSettings`).
Plain dataclasses in a module without torch, so that the command line reads their defaults for ``--help``
without importing it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from anomalyclip_med.errors import InputError
from anomalyclip_med.network.config import REFERENCE_SEED
from anomalyclip_med.weights import UNTRAINED

__all__ = ["LEARNING_RATE", "TRAIN_PROMPTS", "TrainSettings", "TrainData"]

LEARNING_RATE = 1e-3  # the reference's Adam learning rate
# where training starts: the paper's fresh, seeded prompts (a named or file ``prompts`` fine-tunes from those)
TRAIN_PROMPTS = UNTRAINED


@dataclass
class TrainSettings:
    """
    Training hyper-parameters (the reference's by default) and logging options.

    Args:
        epochs: number of passes over the data.
        batch_size: images per optimiser step.
        lr: Adam learning rate.
        seed: seed of every random number generator (data order included).
        num_workers: DataLoader worker processes.
        csv_log: write ``train_log.csv`` (one row of mean losses per epoch).
        tensorboard: write TensorBoard scalars to ``tensorboard/`` (needs the ``tensorboard`` package).
        progress: show progress bars.
    """

    epochs: int = 15
    batch_size: int = 8
    lr: float = LEARNING_RATE
    seed: int = REFERENCE_SEED
    num_workers: int = 0
    csv_log: bool = False
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if not self.lr > 0:
            raise InputError(f"The learning rate must be positive, got {self.lr!r}.")
        if self.num_workers < 0:
            raise InputError(f"num_workers must be >= 0, got {self.num_workers!r}.")


@dataclass
class TrainData:
    """
    The annotated dataset to train on.

    Attributes:
        root: the dataset's root folder.
        format: its layout, one of :data:`anomalyclip_med.data.DATASETS` (docs/datasets.md).
        split: the split to train on ["test": the paper trains on the test split of an auxiliary dataset, e.g.
            MVTec AD's, then detects zero-shot elsewhere].
    """

    root: str | os.PathLike
    format: str
    split: str = "test"

    def __post_init__(self) -> None:
        from anomalyclip_med.data import DATASETS  # the dataset readers: not at import (fast --help)

        if self.format not in DATASETS:
            raise InputError(f"Invalid training option format={self.format!r}: one of {', '.join(DATASETS)}.")
