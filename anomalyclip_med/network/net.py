"""
``AnomalyCLIPNet``: AnomalyCLIP as one MONAI network component, built from its arguments alone.

MONAI bundles name their network as a ``_target_`` with arguments and load its learned state with
``CheckpointLoader``; export tools (``verify_net_in_out``, ``ckpt_export``, ``onnx_export``) call it on a batch
and expect one tensor back. This module gives AnomalyCLIP that shape: the frozen CLIP backbone comes from its
weights argument, and the network's state dict is only what is learned, the prompts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from anomalyclip_med.network.backbone import DEFAULT_WEIGHTS, load_backbone
from anomalyclip_med.network.checkpoint import file_sha256, load_prompt_state, prompt_state_from, read_prompt_checkpoint
from anomalyclip_med.network.config import AnomalyCLIPConfig
from anomalyclip_med.network.factory import ModelOptions
from anomalyclip_med.network.model import AnomalyCLIP, AnomalyCLIPForward, scores_from_forward
from anomalyclip_med.utils.atomic import atomic_path
from anomalyclip_med.weights import UNTRAINED, resolve_weights

__all__ = ["AnomalyCLIPNet", "OUTPUT_CHANNELS", "as_anomalyclip", "network_state", "save_network_state"]

# The channels of the eval-mode output, in order (network_data_format in the bundle's metadata.json).
OUTPUT_CHANNELS = ("anomaly_map", "image_score")

_LEARNED = "anomalyclip.prompt_learner."


class AnomalyCLIPNet(nn.Module):
    """
    AnomalyCLIP (frozen open_clip backbone, DPAM image path, learned object-agnostic prompts) as a network whose
    eval-mode ``forward`` maps a ``(B, 3, H, W)`` batch to one ``(B, 2, H, W)`` tensor:

    - channel 0: the anomaly map in [0, 1] (Gaussian-smoothed mean of the layer maps, as ``AnomalyCLIP.predict``);
    - channel 1: the image-level anomaly probability, the same value at every pixel of the image.

    In training mode ``forward`` returns the :class:`AnomalyCLIPForward` that the training losses are defined on
    (text features recomputed from the prompts, with gradients).

    ``state_dict()`` holds only the learned prompts (``anomalyclip.prompt_learner.*``); the backbone is frozen
    and rebuilt from ``backbone_weights``. ``load_state_dict`` also takes the authors' released
    ``{"prompt_learner": ...}`` checkpoints and this package's prompt files, all or nothing.

    Args:
        backbone: open_clip model name, model config (dict or JSON path), or ``None`` (from an OpenAI weights
            file, else ``ViT-L-14-336``).
        backbone_weights: open_clip pretrained tag, weights file, or ``None``/``"none"`` for random weights (tests).
        image_size: network input side (a multiple of the patch size).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` autocast of the image tower.
        n_ctx, depth, t_n_ctx, feature_layers, map_layers, sigma, seed: :class:`AnomalyCLIPConfig` fields.
        compile_network: ``torch.compile`` the image tower (not for export).
        weights_dir: a folder written by ``anomalyclip-med fetch-weights``, searched before the cache.
        cache_dir: open_clip's download cache.

    Raises:
        InputError: an invalid backbone, weights, size or precision option (checked by :class:`ModelOptions`).
    """

    def __init__(
        self,
        backbone: str | dict | os.PathLike | None = None,
        backbone_weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
        image_size: int = AnomalyCLIPConfig.image_size,
        precision: str = "fp32",
        n_ctx: int = AnomalyCLIPConfig.n_ctx,
        depth: int = AnomalyCLIPConfig.depth,
        t_n_ctx: int = AnomalyCLIPConfig.t_n_ctx,
        feature_layers: tuple[int, ...] | None = None,
        map_layers: tuple[int, ...] | None = None,
        sigma: float = AnomalyCLIPConfig.sigma,
        seed: int = AnomalyCLIPConfig.seed,
        compile_network: bool = ModelOptions.compile_network,
        weights_dir: str | os.PathLike | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        options = ModelOptions(backbone=backbone, backbone_weights=backbone_weights, image_size=image_size,
                               precision=precision, compile_network=compile_network, cache_dir=cache_dir)
        config = AnomalyCLIPConfig(image_size=options.image_size, n_ctx=n_ctx, depth=depth, t_n_ctx=t_n_ctx,
                                   feature_layers=feature_layers, map_layers=map_layers, sigma=sigma, seed=seed)
        # a random (test) backbone is drawn from the factory's seed, as every other face draws it, without
        # touching the caller's random state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            # named weights (the default OpenAI file) are found in weights_dir or the cache, or fetched, verified
            files = resolve_weights(options.backbone, None if options.random_weights else options.backbone_weights,
                                    UNTRAINED, weights_dir)
            clip, info = load_backbone(files.backbone, files.backbone_weights, cache_dir=options.cache_dir)
        self.anomalyclip = AnomalyCLIP(clip, info, config, options.precision, options.compile_network)
        self._prompt_file: tuple[str, str | None] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor | AnomalyCLIPForward:
        if self.training:
            return self.anomalyclip(images)
        scores = scores_from_forward(self.anomalyclip(images), self.anomalyclip.config.sigma)
        score_plane = scores.image_score[:, None, None].expand_as(scores.anomaly_map)
        return torch.stack([scores.anomaly_map, score_plane], dim=1)

    def train(self, mode: bool = True) -> AnomalyCLIPNet:
        super().train(mode)
        self.anomalyclip.train(mode)  # keeps the backbone in eval mode and drops cached text features
        self._cache_text_features()
        return self

    def _cache_text_features(self) -> None:
        # In eval mode the text features are computed once, here, not inside the first forward: a traced
        # (TorchScript) network then holds them as a constant, the same in every trace of it.
        if not self.training:
            self.anomalyclip._text_features = None
            self.anomalyclip.text_features()

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The learned state: the prompt learner's tensors under this network's keys (no backbone)."""
        full = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        for key in [k for k in full if not k.startswith(prefix + _LEARNED)]:
            del full[key]
        return full

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """
        Load the prompts from this network's state dict, an authors' checkpoint (``{"prompt_learner": ...}``) or
        a package prompt file, all or nothing (``strict`` is always on: partial prompts are never right).

        Raises:
            CheckpointError: naming the missing, unexpected or mis-shaped tensor.
        """
        prompts = prompt_state_from(dict(state_dict), strip=_LEARNED)
        load_prompt_state(self.anomalyclip.prompt_learner, prompts, "given to AnomalyCLIPNet.load_state_dict")
        if self._prompt_file is None:
            self.anomalyclip.prompt_source = {"source": "network state dict", "trained": True}
        self._cache_text_features()
        return _IncompatibleKeys([], [])

    def record_prompt_file(self, path: str | os.PathLike, name: str | None = None) -> None:
        """Name the file (and registry name) whose state ``load_state_dict`` will receive, e.g. from MONAI's
        ``CheckpointLoader``, so that the reports identify the prompts by file, digest and name."""
        self._prompt_file = (str(path), name)
        # the identity is needed before the loader runs (e.g. to check a calibration against the model)
        self.anomalyclip.prompt_source = {"source": str(Path(path).resolve()), "sha256": file_sha256(path),
                                          "trained": True, **({"name": name} if name else {})}

    @property
    def device(self) -> torch.device:
        return self.anomalyclip.device



def as_anomalyclip(network: nn.Module) -> AnomalyCLIP:
    """The :class:`AnomalyCLIP` inside a network that engines hand over (plain, ``AnomalyCLIPNet``, or DDP-wrapped)."""
    network = getattr(network, "module", network)  # DistributedDataParallel / DataParallel
    return network.anomalyclip if isinstance(network, AnomalyCLIPNet) else network


def network_state(prompts: str | os.PathLike) -> dict[str, torch.Tensor]:
    """
    A prompt checkpoint of either format (the authors' released ``epoch_15.pth`` or a package file) as the state
    dict of :class:`AnomalyCLIPNet`: what a bundle's ``models/model.pt`` holds and ``CheckpointLoader`` loads.
    """
    state = read_prompt_checkpoint(prompts)["state_dict"]
    return {_LEARNED + key: tensor.detach().cpu().contiguous() for key, tensor in state.items()}


def save_network_state(prompts: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write :func:`network_state` of ``prompts`` to ``out``, atomically (a bundle's ``models/model.pt``)."""
    state = network_state(prompts)
    with atomic_path(out, overwrite=overwrite) as tmp:
        torch.save(state, tmp)
    return Path(out)
