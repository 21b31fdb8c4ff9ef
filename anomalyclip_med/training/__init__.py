"""Training the object-agnostic prompts: the reference's objective, optimiser and a resumable loop."""

from anomalyclip_med.training.loop import TrainResult, TrainSettings, find_checkpoints, train
from anomalyclip_med.training.objective import compute_losses
from anomalyclip_med.training.optim import make_optimizer
from anomalyclip_med.training.run import TrainData, train_on_dataset

__all__ = [
    "TrainData",
    "TrainResult",
    "TrainSettings",
    "compute_losses",
    "find_checkpoints",
    "make_optimizer",
    "train",
    "train_on_dataset",
]
