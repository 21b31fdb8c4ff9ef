"""Training the object-agnostic prompts: the reference's objective, optimiser and a resumable loop."""

from anomalyclip_med.training.engine import prepare_prompt_batch
from anomalyclip_med.training.loop import TrainResult, TrainSettings, find_checkpoints, train
from anomalyclip_med.training.objective import PromptLoss, compute_losses, losses_from_forward
from anomalyclip_med.training.optim import make_optimizer
from anomalyclip_med.training.run import TrainData, train_on_dataset

__all__ = [
    "PromptLoss",
    "TrainData",
    "TrainResult",
    "TrainSettings",
    "compute_losses",
    "find_checkpoints",
    "losses_from_forward",
    "make_optimizer",
    "prepare_prompt_batch",
    "train",
    "train_on_dataset",
]
