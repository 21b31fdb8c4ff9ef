"""
``AnomalyCLIPNet``: AnomalyCLIP as one MONAI network component, built from its arguments alone.

MONAI bundles name their network as a ``_target_`` with arguments and load its learned state with
``CheckpointLoader``; export tools (``verify_net_in_out``, ``ckpt_export``, ``onnx_export``) call it on a batch
and expect one tensor back. This module gives AnomalyCLIP that shape. It is built by
:func:`anomalyclip_med.network.create_model`, the constructor of every other face, so that the same arguments and
prompt file give the same network (settings recorded in the prompt file, precision for its device) as
``anomalyclip-med score``; the network's state dict is only what is learned, the prompts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from anomalyclip_med.errors import InputError
from anomalyclip_med.network.checkpoint import (
    NETWORK_PREFIX,
    PROMPT_FORMAT,
    load_prompt_state,
    prompt_state_from,
    read_prompt_checkpoint,
)
from anomalyclip_med.network.config import AnomalyCLIPConfig
from anomalyclip_med.network.factory import ModelOptions, create_model
from anomalyclip_med.network.model import AnomalyCLIP, AnomalyCLIPForward, scores_from_forward
from anomalyclip_med.utils.atomic import atomic_path
from anomalyclip_med.weights import DEFAULT_WEIGHTS, UNTRAINED

__all__ = ["AnomalyCLIPNet", "OUTPUT_CHANNELS", "as_anomalyclip", "network_state", "save_network_state"]

# The channels of the eval-mode output, in order (network_data_format in the bundle's metadata.json).
OUTPUT_CHANNELS = ("anomaly_map", "image_score")


class AnomalyCLIPNet(nn.Module):
    """
    AnomalyCLIP (frozen open_clip backbone, DPAM image path, learned object-agnostic prompts) as a network whose
    eval-mode ``forward`` maps a ``(B, 3, H, W)`` batch to one ``(B, 2, H, W)`` tensor:

    - channel 0: the anomaly map in [0, 1] (Gaussian-smoothed mean of the layer maps, as ``AnomalyCLIP.predict``);
    - channel 1: the image-level anomaly probability, the same value at every pixel of the image.

    In training mode ``forward`` returns the :class:`AnomalyCLIPForward` that the training losses are defined on
    (text features recomputed from the prompts, with gradients).

    Built by :func:`anomalyclip_med.network.create_model`: a settings argument left at ``None`` is taken from the
    ``prompts`` file when it records one, else the default; ``precision="auto"`` is resolved for ``device``.

    ``state_dict()`` holds only the learned prompts (``anomalyclip.prompt_learner.*``); the backbone is frozen
    and rebuilt from ``backbone_weights``. ``load_state_dict`` also takes the authors' released
    ``{"prompt_learner": ...}`` checkpoints and this package's prompt files, all or nothing; a package file whose
    recorded settings differ from this network's is refused (pass it as ``prompts`` to build the network from it).

    Args:
        backbone: open_clip model name, model config (dict or JSON path), or ``None`` (from an OpenAI weights
            file, else ``ViT-L-14-336``).
        backbone_weights: open_clip pretrained tag, weights file, or ``None``/``"none"`` for random weights (tests).
        prompts: a registry name (``mvtec-trained``, ``visa-trained``), a prompt file of any format, or
            ``"untrained"`` (the default: a MONAI network gets its learned state from ``load_state_dict``).
        image_size: network input side (a multiple of the patch size) [None: the prompt file's, else 518].
        device: where the network is built and run (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) [cpu: a
            MONAI engine moves its network].
        precision: ``"auto"`` (per ``device``), ``"fp32"``, ``"bf16"`` or ``"fp16"`` autocast of the image tower.
        n_ctx, depth, t_n_ctx, feature_layers, map_layers, sigma, seed: :class:`AnomalyCLIPConfig` fields
            [None: the prompt file's, else the default].
        compile_network: ``torch.compile`` the image tower (not for export).
        weights_dir: a folder written by ``anomalyclip-med fetch-weights``, searched before the cache.
        cache_dir: open_clip's download cache.

    Raises:
        InputError: an invalid option, or a setting against the prompt file's (:func:`create_model`).
        MissingWeightsError, BackboneError, CheckpointError: weights or prompts that cannot be used.
    """

    def __init__(
        self,
        backbone: str | dict | os.PathLike | None = None,
        backbone_weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
        prompts: str | os.PathLike | None = UNTRAINED,
        image_size: int | None = None,
        device: str = "cpu",
        precision: str = ModelOptions.precision,
        n_ctx: int | None = None,
        depth: int | None = None,
        t_n_ctx: int | None = None,
        feature_layers: tuple[int, ...] | None = None,
        map_layers: tuple[int, ...] | None = None,
        sigma: float | None = None,
        seed: int | None = None,
        compile_network: bool = ModelOptions.compile_network,
        weights_dir: str | os.PathLike | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        options = ModelOptions(backbone=backbone, backbone_weights="none" if backbone_weights is None
                               else backbone_weights, prompts=UNTRAINED if prompts is None else prompts,
                               weights_dir=weights_dir, feature_layers=feature_layers, map_layers=map_layers,
                               image_size=image_size, device=device, precision=precision,
                               compile_network=compile_network, cache_dir=cache_dir)
        settings = {"n_ctx": n_ctx, "depth": depth, "t_n_ctx": t_n_ctx, "sigma": sigma, "seed": seed}
        # the factory seeds torch for a random (test) backbone; the caller's random state stays as it was
        with torch.random.fork_rng(devices=[]):
            model = create_model(options, {k: v for k, v in settings.items() if v is not None})
        self.anomalyclip = model.train(self.training)  # a new module is in training mode, as MONAI expects

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
        for key in [k for k in full if not k.startswith(prefix + NETWORK_PREFIX)]:
            del full[key]
        return full

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """
        Load the prompts from this network's state dict, an authors' checkpoint (``{"prompt_learner": ...}``) or
        a package prompt file, all or nothing (``strict`` is always on: partial prompts are never right).

        Raises:
            InputError: a package prompt file recorded with other settings than this network's, naming both
                values (its maps would silently differ from those ``score`` gives with the file).
            CheckpointError: naming the missing, unexpected or mis-shaped tensor, or NaN/Inf values.
        """
        state = dict(state_dict)
        if state.get("format") == PROMPT_FORMAT and state.get("config"):
            self._refuse_other_settings(state["config"])
        prompts = prompt_state_from(state, strip=NETWORK_PREFIX)
        load_prompt_state(self.anomalyclip.prompt_learner, prompts, "given to AnomalyCLIPNet.load_state_dict")
        self.anomalyclip.prompt_source = {"source": "network state dict", "trained": True}
        self._cache_text_features()
        return _IncompatibleKeys([], [])

    def _refuse_other_settings(self, recorded: Mapping[str, Any]) -> None:
        """
        Refuse a prompt file whose recorded settings are not this network's. Layers are compared as resolved
        (a file records resolved layers; ``None`` means the default for the depth); the recorded ``seed`` is not
        compared: it only drew the initial prompts, which the file's tensors replace.
        """
        model = self.anomalyclip
        try:
            file = AnomalyCLIPConfig.from_dict(dict(recorded))
        except (TypeError, ValueError) as err:
            raise InputError(f"The prompt file given to load_state_dict records unreadable settings: {err}") from None
        features = file.resolved_feature_layers(model.backbone_info.vision_layers) \
            if "feature_layers" in recorded else model.feature_layers
        theirs = {k: getattr(file, k) for k in recorded if k not in ("seed", "feature_layers", "map_layers")}
        ours = {k: getattr(model.config, k) for k in theirs}
        if "feature_layers" in recorded:
            theirs["feature_layers"], ours["feature_layers"] = list(features), list(model.feature_layers)
        if "map_layers" in recorded:
            theirs["map_layers"] = list(file.resolved_map_layers(features))
            ours["map_layers"] = list(model.map_layers)
        differ = [f"{k}: the file records {theirs[k]}, the network has {ours[k]}" for k in theirs if theirs[k] != ours[k]]
        if differ:
            raise InputError(
                f"The prompt file given to load_state_dict was recorded with other settings than this network's "
                f"({'; '.join(differ)}): build the network from the file (prompts=FILE; bundle: --prompts FILE) "
                "to take its settings, or with the same settings."
            )

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
    return {NETWORK_PREFIX + key: tensor.detach().cpu().contiguous() for key, tensor in state.items()}


def save_network_state(prompts: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write :func:`network_state` of ``prompts`` to ``out``, atomically (a bundle's ``models/model.pt``)."""
    state = network_state(prompts)
    with atomic_path(out, overwrite=overwrite) as tmp:
        torch.save(state, tmp)
    return Path(out)
