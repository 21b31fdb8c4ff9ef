"""
Training the object-agnostic prompts: the reference's objective, optimiser and a resumable loop.

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "loop": (
            "TrainResult", "LOSS_KEYS", "checkpoint_path", "find_checkpoints", "check_out_dir", "train"
        ),
        "engine": ("prepare_prompt_batch",),
        "objective": ("PIXEL_WEIGHT", "PromptLoss", "compute_losses", "losses_from_forward"),
        "optim": ("BETAS", "make_optimizer"),
        "settings": ("LEARNING_RATE", "TRAIN_PROMPTS", "TrainSettings", "TrainData"),
        "losses": ("FocalLoss", "dice_loss"),
        "run": ("train_on_dataset",),
    },
)
