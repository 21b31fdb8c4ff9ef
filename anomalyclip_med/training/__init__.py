"""
Training the object-agnostic prompts: the reference's objective, optimiser and a resumable loop.

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "loop": (
            "TrainSettings", "TrainResult", "LOSS_KEYS", "checkpoint_path", "find_checkpoints", "check_out_dir", "train"
        ),
        "engine": ("prepare_prompt_batch",),
        "objective": ("PIXEL_WEIGHT", "PromptLoss", "compute_losses", "losses_from_forward"),
        "optim": ("LEARNING_RATE", "BETAS", "make_optimizer"),
        "losses": ("FocalLoss", "dice_loss"),
        "run": ("TRAIN_PROMPTS", "TrainData", "train_on_dataset"),
    },
)
