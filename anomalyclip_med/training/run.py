"""
The training run behind ``anomalyclip-med train`` and the bundle's ``train.json``: a dataset in its native layout,
typed settings and model options in, epoch checkpoints out (in one process or under ``torchrun``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace

from anomalyclip_med.data import DATASETS, load_samples
from anomalyclip_med.data.dataset import AnomalyDataset, verify_samples
from anomalyclip_med.errors import InputError
from anomalyclip_med.network.factory import ModelOptions, create_model, resolve_device
from anomalyclip_med.training.loop import TrainResult, TrainSettings, check_out_dir, train
from anomalyclip_med.utils.distributed import DistributedContext
from anomalyclip_med.weights import UNTRAINED

__all__ = ["TRAIN_PROMPTS", "TrainData", "train_on_dataset"]

# where training starts: the paper's fresh, seeded prompts (a named or file ``prompts`` fine-tunes from those)
TRAIN_PROMPTS = UNTRAINED


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
        if self.format not in DATASETS:
            raise InputError(f"Invalid training option format={self.format!r}: one of {', '.join(DATASETS)}.")


def train_on_dataset(
    data: TrainData,
    out_dir: str | os.PathLike,
    settings: TrainSettings | None = None,
    model: ModelOptions | None = None,
    resume: bool = False,
) -> TrainResult | None:
    """
    Train the prompts on ``data``, writing ``out_dir/epoch_<n>.pth`` after every epoch (see
    :func:`anomalyclip_med.training.train`).

    Every check on the inputs and the output folder comes before the (slow) model loading. One seed drives the
    whole run: the backbone is built after seeding torch with ``settings.seed`` (``model.seed`` is not used).

    Args:
        data: the dataset.
        out_dir: output folder for checkpoints and logs.
        settings: hyper-parameters and logging (defaults: :class:`TrainSettings`).
        model: the network to build (defaults: :class:`ModelOptions` with ``prompts=TRAIN_PROMPTS``).
        resume: continue the run in ``out_dir`` from its last checkpoint.

    Returns:
        the last checkpoint and the per-epoch losses (``None`` in ``torchrun`` processes other than rank 0).
    """
    settings, model_options = settings or TrainSettings(), model or ModelOptions(prompts=TRAIN_PROMPTS)
    samples = load_samples(data.format, data.root, data.split)
    verify_samples(samples, progress=settings.progress)
    check_out_dir(out_dir, resume, settings)
    with DistributedContext.from_env(resolve_device(model_options.device)) as ctx:
        with warnings.catch_warnings():
            # fresh prompts are where training starts, not a result to warn about
            warnings.filterwarnings("ignore", message=".*UNTRAINED prompts")
            net = create_model(replace(model_options, device=str(ctx.device), seed=settings.seed))
        if net.backbone_info.random_weights and ctx.is_main:
            print("WARNING: training on a backbone with RANDOM weights - the prompts will be meaningless for real use.")
        dataset = AnomalyDataset(samples, net.config.image_size, net.mean, net.std, verify=False)
        n_anomalous = sum(s.label for s in samples)
        if ctx.is_main:
            print(f"training on {len(samples)} images ({n_anomalous} anomalous) from '{data.root}' ({data.format}, "
                  f"{data.split}) in {ctx.world_size} process(es); "
                  f"{'pixel and image losses' if dataset.has_masks else 'image loss only (no masks)'}")
        result = train(net, dataset, out_dir, settings, resume=resume,
                       run_info={"format": data.format, "root": str(data.root), "split": data.split}, ctx=ctx)
    return result if ctx.is_main else None
