"""Training the object-agnostic prompts: the reference's objective, optimiser and a resumable loop."""

from anomalyclip_med.training.loop import TrainResult, TrainSettings, find_checkpoints, train
from anomalyclip_med.training.objective import compute_losses
from anomalyclip_med.training.optim import make_optimizer

__all__ = ["compute_losses", "make_optimizer", "train", "TrainSettings", "TrainResult", "find_checkpoints"]
