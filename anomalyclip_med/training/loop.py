"""
The training loop: epochs over a dataset, a checkpoint after every epoch, exact resumption.

Each epoch ends with ``OUT/epoch_<n>.pth`` in the package prompt format (loadable with
``AnomalyCLIP.from_pretrained(prompts=...)``), written atomically, holding besides the prompts everything a
resumed run needs to continue exactly as if never stopped: the epoch, the optimiser state, the random number
generator states (global and data order), the per-epoch losses so far and the settings.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from monai.utils import optional_import, set_determinism
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from anomalyclip_med.data.dataset import AnomalyDataset
from anomalyclip_med.errors import AnomalyCLIPMedError, CheckpointError, InputError
from anomalyclip_med.io.writers import write_csv
from anomalyclip_med.network.checkpoint import load_failure
from anomalyclip_med.network.config import REFERENCE_SEED
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.training.objective import compute_losses
from anomalyclip_med.training.optim import LEARNING_RATE, make_optimizer
from anomalyclip_med.utils.distributed import DistributedContext

__all__ = ["TrainSettings", "TrainResult", "LOSS_KEYS", "checkpoint_path", "find_checkpoints", "check_out_dir", "train"]

logger = logging.getLogger(__name__)
SummaryWriter, _has_tensorboard = optional_import("torch.utils.tensorboard", name="SummaryWriter")

LOSS_KEYS = ("focal", "dice", "image", "total")
CSV_LOG = "train_log.csv"
TENSORBOARD_DIR = "tensorboard"
_CHECKPOINT = re.compile(r"^epoch_(\d+)\.pth$")
# settings that change the optimisation path: a resumed run must use the same ones
_RESUME_KEYS = ("batch_size", "lr", "seed")
# what a checkpoint holds besides the prompts, for resuming
_STATE_KEYS = ("epoch", "optimizer", "rng_state", "losses", "training")


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
class TrainResult:
    """
    Attributes:
        checkpoint: the last epoch's checkpoint.
        history: per epoch, ``{"epoch", "focal", "dice", "image", "total", "seconds"}`` (means over batches).
        resumed_from: the epoch a resumed run started after (0 for a fresh run).
    """

    checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0


def checkpoint_path(out_dir: str | Path, epoch: int) -> Path:
    return Path(out_dir) / f"epoch_{epoch}.pth"


def find_checkpoints(out_dir: str | Path) -> dict[int, Path]:
    """The epoch checkpoints in ``out_dir``, by epoch."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return {}
    found = {}
    for p in out_dir.iterdir():
        match = _CHECKPOINT.match(p.name)
        if match and p.is_file():
            found[int(match.group(1))] = p
    return dict(sorted(found.items()))


def check_out_dir(out_dir: str | Path, resume: bool, settings: TrainSettings) -> dict[int, Path]:
    """
    Check, without writing anything, that a run can use ``out_dir``; returns the checkpoints already there.

    Raises:
        InputError: ``out_dir`` is a file, or holds checkpoints and ``resume`` is false.
        AnomalyCLIPMedError: TensorBoard logging is asked for but the package is missing.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"Output '{out_dir}' is a file; --out must be a folder.")
    existing = find_checkpoints(out_dir)
    if existing and not resume:
        raise InputError(
            f"Output folder '{out_dir}' already holds checkpoints ({existing[max(existing)].name}); pass --resume to "
            "continue that run, or choose another --out folder."
        )
    if settings.tensorboard and not _has_tensorboard:
        raise AnomalyCLIPMedError(
            "--tensorboard needs the 'tensorboard' package: pip install tensorboard (or leave --tensorboard out)."
        )
    return existing


def _data_identity(dataset: AnomalyDataset, pixel_losses: bool) -> dict[str, Any]:
    # file names (not full paths, so a moved dataset still resumes), labels and mask presence
    digest = hashlib.sha256()
    for s in dataset.samples:
        digest.update(f"{s.cls_name}/{s.image.name},{s.label},{s.mask is not None}\n".encode())
    return {"samples": len(dataset.samples), "sha256": digest.hexdigest(), "pixel_losses": pixel_losses}


def _backbone_key(info: dict[str, Any] | None) -> dict[str, Any] | None:
    # the weights file may have moved: compare its name, not its folder
    return None if info is None else {**info, "weights": Path(str(info.get("weights"))).name}


def _rng_state(shuffle: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], shuffle: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _average_gradients(model: AnomalyCLIP, world_size: int) -> None:
    for p in model.prompt_learner.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world_size)


def _resume(
    path: Path,
    model: AnomalyCLIP,
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    settings: TrainSettings,
    data: dict[str, Any],
) -> tuple[int, list[dict[str, float]]]:
    """Load a checkpoint's prompts, optimiser and generator states; returns its epoch and loss history."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"Cannot read checkpoint '{path}' to resume from: {load_failure(err)} Remove it to "
                              "resume from the checkpoint before, or start a new --out folder.") from None
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in _STATE_KEYS):
        raise CheckpointError(
            f"'{path}' is a prompt file without training state; it cannot be resumed. Start a new run in another "
            "--out folder (pass it with --prompts to start from these prompts)."
        )
    stored = ckpt["training"]
    if not (isinstance(stored, dict) and isinstance(stored.get("settings"), dict)
            and all(k in stored["settings"] for k in _RESUME_KEYS) and isinstance(stored.get("data"), dict)):
        raise CheckpointError(
            f"Checkpoint '{path}' is damaged: its training state lacks the settings or data description it was "
            "trained with, so resuming cannot be checked. Remove it to resume from the checkpoint before, or start "
            "a new --out folder."
        )
    for key in _RESUME_KEYS:
        if stored["settings"][key] != getattr(settings, key):
            raise CheckpointError(
                f"Cannot resume from '{path}': it was trained with {key}={stored['settings'][key]!r}, this run has "
                f"{key}={getattr(settings, key)!r}. Resume with the same settings, or start a new --out folder."
            )
    if stored["data"] != data:
        raise CheckpointError(
            f"Cannot resume from '{path}': it was trained on other data ({stored['data']['samples']} samples, "
            f"pixel losses {stored['data']['pixel_losses']}) than this run ({data['samples']} samples, pixel "
            f"losses {data['pixel_losses']}). Resume with the same dataset, or start a new --out folder."
        )
    if stored.get("image_size") != model.config.image_size:
        raise CheckpointError(
            f"Cannot resume from '{path}': it was trained at image size {stored.get('image_size')}, this model runs "
            f"at {model.config.image_size}. Pass the same --image-size."
        )
    layers = {k: (ckpt.get("config") or {}).get(k) for k in ("feature_layers", "map_layers")}
    if layers != {"feature_layers": list(model.feature_layers), "map_layers": list(model.map_layers)}:
        raise CheckpointError(
            f"Cannot resume from '{path}': it was trained with feature layers {layers['feature_layers']} and map "
            f"layers {layers['map_layers']}, this model has {list(model.feature_layers)} and "
            f"{list(model.map_layers)}. Pass the same --feature-layers / --map-layers."
        )
    if _backbone_key(ckpt.get("backbone")) != _backbone_key(model.backbone_info.to_dict()):
        raise CheckpointError(
            f"Cannot resume from '{path}': it was trained with backbone {ckpt.get('backbone')}, this model has "
            f"{model.backbone_info.to_dict()}. Pass the same --backbone/--backbone-weights."
        )
    model.load_prompts(path)
    optimizer.load_state_dict(ckpt["optimizer"])
    _restore_rng(ckpt["rng_state"], shuffle)
    return int(ckpt["epoch"]), list(ckpt["losses"])


def train(
    model: AnomalyCLIP,
    dataset: AnomalyDataset,
    out_dir: str | Path,
    settings: TrainSettings | None = None,
    resume: bool = False,
    run_info: dict[str, Any] | None = None,
    ctx: DistributedContext | None = None,
) -> TrainResult:
    """
    Train the prompt learner of ``model`` on ``dataset``, writing a checkpoint per epoch into ``out_dir``.

    The pixel losses are trained only when every anomalous sample has a mask (``dataset.has_masks``);
    otherwise (image-level-only data) only the image loss is. Nothing is written before the first epoch ends.

    Args:
        model: the model; only its prompt learner changes.
        dataset: training samples.
        out_dir: output folder (created at the first checkpoint).
        settings: hyper-parameters and logging options.
        resume: continue from the last checkpoint in ``out_dir`` (a fresh start when there is none); the
            result is bit-identical to an uninterrupted run on the same hardware and software.
        run_info: extra description stored in each checkpoint (e.g. dataset format and root).
        ctx: the ``torchrun`` process group, if any: each rank then trains on its ``DistributedSampler`` shard
            with ``settings.batch_size`` images per step, the prompt gradients are averaged over ranks (as
            ``DistributedDataParallel`` does) and rank 0 alone writes checkpoints and logs.

    Returns:
        the last checkpoint and the per-epoch mean losses.

    Raises:
        InputError: ``out_dir`` already holds checkpoints and ``resume`` is false.
        CheckpointError: the checkpoint to resume was made with other settings, data or backbone.
    """
    settings = settings or TrainSettings()
    out_dir = Path(out_dir)
    existing = check_out_dir(out_dir, resume, settings)
    pixel_losses = dataset.has_masks
    if not pixel_losses:
        logger.info("Not every anomalous image has a mask: training the image loss only.")
    data = _data_identity(dataset, pixel_losses)

    set_determinism(seed=settings.seed)  # seeds torch, numpy and random as the reference's setup_seed
    shuffle = torch.Generator().manual_seed(settings.seed)
    optimizer = make_optimizer(model, settings.lr)
    start, history = 0, []
    if resume and existing:
        start, history = _resume(existing[max(existing)], model, optimizer, shuffle, settings, data)
        logger.info("Resuming after epoch %d from '%s'.", start, existing[max(existing)])
    elif resume:
        logger.info("No checkpoint in '%s' to resume from: starting at epoch 1.", out_dir)
    if start >= settings.epochs:
        logger.info("The run in '%s' already finished %d epoch(s); nothing to do.", out_dir, start)
        return TrainResult(existing[max(existing)], history, start)

    ctx = ctx or DistributedContext()
    sampler = None
    if ctx.world_size > 1:
        sampler = DistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=True, seed=settings.seed)
        loader = DataLoader(dataset, batch_size=settings.batch_size, sampler=sampler, num_workers=settings.num_workers)
    else:
        loader = DataLoader(
            dataset, batch_size=settings.batch_size, shuffle=True, generator=shuffle, num_workers=settings.num_workers
        )
    writer = None
    training = {"settings": asdict(settings), "data": data, "image_size": model.config.image_size,
                "run": run_info or {}}
    last = checkpoint_path(out_dir, start)
    try:
        for epoch in range(start + 1, settings.epochs + 1):
            model.train()
            if sampler is not None:
                sampler.set_epoch(epoch)
            began = time.perf_counter()
            sums = dict.fromkeys(LOSS_KEYS, 0.0)
            batches = tqdm(loader, desc=f"epoch {epoch}/{settings.epochs}", disable=not settings.progress, leave=False)
            for batch in batches:
                losses = compute_losses(model, batch["image"], batch["mask"] if pixel_losses else None, batch["label"])
                optimizer.zero_grad()
                losses["total"].backward()
                if ctx.world_size > 1:
                    _average_gradients(model, ctx.world_size)
                optimizer.step()
                for key in LOSS_KEYS:
                    sums[key] += losses[key].item()
                batches.set_postfix(loss=f"{losses['total'].item():.4f}")
            means = [{k: v / len(loader) for k, v in rank_sums.items()} for rank_sums in ctx.gather(sums)]
            row = {"epoch": epoch, **{k: sum(m[k] for m in means) / len(means) for k in LOSS_KEYS},
                   "seconds": round(time.perf_counter() - began, 3)}
            history.append(row)
            log = logger.info if ctx.is_main else logger.debug
            log(
                "epoch [%d/%d], loss:%.4f, image_loss:%.4f (focal %.4f, dice %.4f, total %.4f)",
                epoch, settings.epochs, row["total"] - row["image"], row["image"], row["focal"], row["dice"],
                row["total"],
            )
            last = checkpoint_path(out_dir, epoch)
            if not ctx.is_main:
                ctx.barrier()  # the next epoch starts once rank 0 has written this one's checkpoint
                continue
            model.save_prompts(
                checkpoint_path(out_dir, epoch),
                extra={"epoch": epoch, "optimizer": optimizer.state_dict(), "rng_state": _rng_state(shuffle),
                       "losses": history, "training": training},
            )
            if settings.csv_log:
                write_csv(history, out_dir / CSV_LOG)
            if settings.tensorboard:
                writer = writer or SummaryWriter(log_dir=str(out_dir / TENSORBOARD_DIR), purge_step=start + 1)
                for key in LOSS_KEYS:
                    writer.add_scalar(f"loss/{key}", row[key], epoch)
                writer.flush()
            ctx.barrier()
    finally:
        model.eval()
        if writer is not None:
            writer.close()
    return TrainResult(last, history, start)
