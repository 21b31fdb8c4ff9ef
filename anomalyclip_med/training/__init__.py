"""Training the object-agnostic prompts: the reference's objective, optimiser and a resumable loop."""

from anomalyclip_med.training.loop import TrainResult, TrainSettings, find_checkpoints, train
from anomalyclip_med.training.engine import prepare_prompt_batch
from anomalyclip_med.training.objective import PromptLoss, compute_losses, losses_from_forward
from anomalyclip_med.training.optim import make_optimizer

__all__ = [
    "PromptLoss",
    "compute_losses",
    "losses_from_forward",
    "prepare_prompt_batch",
    "make_optimizer", "train", "TrainSettings", "TrainResult", "find_checkpoints"]
