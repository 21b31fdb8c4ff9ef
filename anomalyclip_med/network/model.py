"""The AnomalyCLIP model: a frozen open_clip backbone plus learned object-agnostic prompts."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP
from torch import nn

from anomalyclip_med.errors import InputError
from anomalyclip_med.network.backbone import BackboneInfo
from anomalyclip_med.network.checkpoint import (
    load_prompt_state,
    read_prompt_checkpoint,
    save_prompt_checkpoint,
)
from anomalyclip_med.network.config import PRECISION_NAMES, AnomalyCLIPConfig
from anomalyclip_med.network.factory import ModelOptions, create_model
from anomalyclip_med.network.prompt_learner import PromptLearner, encode_text_with_prompts
from anomalyclip_med.network.scoring import gaussian_smooth, layer_anomaly_maps, similarity_maps
from anomalyclip_med.network.visual import dpam_forward, patch_grid
from anomalyclip_med.utils.hashing import file_digest
from anomalyclip_med.weights import DEFAULT_PROMPTS, DEFAULT_WEIGHTS, UNTRAINED

__all__ = ["PRECISIONS", "AnomalyCLIPForward", "AnomalyCLIPOutput", "AnomalyCLIP", "scores_from_forward"]

PRECISIONS = dict(zip(PRECISION_NAMES, (torch.float32, torch.bfloat16, torch.float16)))


@dataclass
class AnomalyCLIPForward:
    """What the network computes for a batch; the training losses are defined on it.

    Attributes:
        image_logits: (B, 2) cosine similarity / temperature against [normal, abnormal] text features.
        similarity_maps: per map layer, (B, 2, H, W) [normal, abnormal] probabilities at input resolution.
        image_features: (B, E) global image features (unnormalised).
        patch_features: per feature layer, (B, 1 + gh*gw, E) tokens (unnormalised; index 0 is the class token).
    """

    image_logits: torch.Tensor
    similarity_maps: list[torch.Tensor]
    image_features: torch.Tensor
    patch_features: list[torch.Tensor]


@dataclass
class AnomalyCLIPOutput:
    """Scores of a batch: the image score and the anomaly map, and what :meth:`AnomalyCLIP.predict` was asked for.

    Attributes:
        image_score: (B,) probability of "abnormal" from the global feature, in [0, 1].
        anomaly_map: (B, H, W) Gaussian-smoothed sum of the layer maps divided by their number, in [0, 1] (times
            the number of layers it is the reference's final map).
        layer_maps: (L, B, H, W) per-layer (abnormal + 1 - normal) / 2 maps (``layer_maps=True``).
        image_features: (B, E) global image features, unnormalised (``features=True``).
        patch_features: per feature layer, (B, 1 + gh*gw, E) tokens, unnormalised, index 0 the class token
            (``features=True``).
    """

    image_score: torch.Tensor
    anomaly_map: torch.Tensor
    layer_maps: torch.Tensor | None = None
    image_features: torch.Tensor | None = None
    patch_features: list[torch.Tensor] | None = None


class AnomalyCLIP(nn.Module):
    """
    AnomalyCLIP (Zhou et al., ICLR 2024) on an open_clip backbone.

    Build it with :meth:`from_pretrained`. Only :attr:`prompt_learner` has trainable parameters; the text
    features of the two prompts do not depend on the image, so :meth:`predict` computes them once and caches
    them until the prompts change (:meth:`train`, :meth:`load_prompts`).

    Args:
        clip: open_clip CLIP model (frozen here).
        backbone_info: identity of the backbone weights.
        config: network settings.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``: autocast dtype of the image tower.
        compile_network: run the image tower through ``torch.compile`` (opt-in: the first batch of each input
            shape then compiles, which takes minutes for ViT-L; see docs/performance.md for when it pays).
    """

    def __init__(
        self,
        clip: CLIP,
        backbone_info: BackboneInfo,
        config: AnomalyCLIPConfig | None = None,
        precision: str = "fp32",
        compile_network: bool = False,
    ) -> None:
        super().__init__()
        self.config = config or AnomalyCLIPConfig()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}.")
        self.precision = precision
        self.compile_network = bool(compile_network)
        self._image_tower = torch.compile(dpam_forward, dynamic=False) if compile_network else dpam_forward
        self.clip = clip.eval().requires_grad_(False)
        self.backbone_info = backbone_info
        n_layers = backbone_info.vision_layers
        self.feature_layers = self.config.resolved_feature_layers(n_layers)
        self.dpam_layers = self.config.resolved_dpam_layers(n_layers)
        self.map_layers = self.config.resolved_map_layers(self.feature_layers)
        self._map_indices = tuple(self.feature_layers.index(i) for i in self.map_layers)
        patch_grid(clip.visual, self.config.image_size, self.config.image_size)  # validates image_size early
        generator = torch.Generator().manual_seed(self.config.seed)
        self.prompt_learner = PromptLearner(
            clip, self.config.n_ctx, self.config.depth, self.config.t_n_ctx, generator=generator
        )
        self.prompt_source: dict[str, Any] = {"source": f"fresh initialisation (seed {self.config.seed})",
                                              "trained": False}
        self.register_buffer("_text_features", None, persistent=False)
        preprocess_cfg = getattr(clip.visual, "preprocess_cfg", None) or {}
        self.mean = tuple(preprocess_cfg.get("mean", OPENAI_DATASET_MEAN))
        self.std = tuple(preprocess_cfg.get("std", OPENAI_DATASET_STD))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        backbone: str | dict | os.PathLike | None = None,
        backbone_weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
        prompts: str | os.PathLike | None = DEFAULT_PROMPTS,
        image_size: int | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        config: AnomalyCLIPConfig | None = None,
        cache_dir: str | None = None,
        weights_dir: str | os.PathLike | None = None,
        feature_layers: Sequence[int] | None = None,
        map_layers: Sequence[int] | None = None,
        compile_network: bool = False,
    ) -> AnomalyCLIP:
        """
        Build AnomalyCLIP from backbone weights and prompts: :func:`anomalyclip_med.network.create_model` with
        keyword arguments (the same loading rules, the same merge of a prompt file's recorded settings).

        Args:
            backbone: open_clip model name or model config; ``None`` reads the architecture from an
                OpenAI-format weights file, else uses ``ViT-L-14-336``.
            backbone_weights: open_clip pretrained tag, a weights file, or ``None`` for random weights (tests).
                ``"openai"`` on the default architecture is the registry's verified CLIP file (weights folder,
                cache, else downloaded; see ``anomalyclip_med.weights``).
            prompts: ``"mvtec-trained"`` (default: the authors' prompts trained on MVTec AD, fetched and cached on
                first use), ``"visa-trained"``, a prompt checkpoint file (the authors' format or this package's),
                or ``"untrained"`` (or ``None``): fresh, seeded prompts, with a warning that they are untrained.
            image_size: network input side; ``None`` takes ``config.image_size`` (518 by default).
            device: torch device (``"auto"``: CUDA when available).
            precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (autocast of the image tower) or ``"auto"`` (per device).
            config: network settings the caller sets, all of them; by default those recorded in a package prompt
                checkpoint, else the paper's.
            cache_dir: open_clip download cache (other open_clip tags).
            weights_dir: a folder written by ``anomalyclip-med fetch-weights``, searched before the cache.
            feature_layers: visual layers (1-based) whose patch features are computed (replaces the config's).
            map_layers: which of those layers are summed into the anomaly map (replaces the config's).
            compile_network: ``torch.compile`` the image tower (opt-in, see the class).
        """
        settings = None
        if config is not None:  # all of it is the caller's: image size and layers unless given separately
            settings = config.to_dict()
            image_size = config.image_size if image_size is None else image_size
            feature_layers = config.feature_layers if feature_layers is None else feature_layers
            map_layers = config.map_layers if map_layers is None else map_layers
            for key in ("image_size", "feature_layers", "map_layers"):
                del settings[key]
        options = ModelOptions(
            backbone=backbone, backbone_weights="none" if backbone_weights is None else backbone_weights,
            prompts=UNTRAINED if prompts is None else prompts, weights_dir=weights_dir,
            feature_layers=feature_layers, map_layers=map_layers, image_size=image_size, device=str(device),
            precision=precision, compile_network=compile_network, cache_dir=cache_dir,
        )
        return create_model(options, settings)

    def load_prompts(self, path: str | os.PathLike, _checkpoint: dict | None = None, _name: str | None = None) -> None:
        """Load a prompt checkpoint (either format) into the prompt learner, all or nothing."""
        checkpoint = _checkpoint or read_prompt_checkpoint(path)
        load_prompt_state(self.prompt_learner, checkpoint["state_dict"], f"'{_name or path}' ({path})" if _name
                          else f"'{path}'")
        self.prompt_source = {"source": str(Path(path).resolve()), "sha256": file_digest(path),
                              "format": checkpoint["format"], "trained": True}
        if _name:
            self.prompt_source["name"] = _name
        self._text_features = None

    def save_prompts(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write the prompts in the package format (with settings, backbone identity and version), atomically."""
        # the prompt settings, and the layers the prompts were trained (or are used) with
        recorded = ("n_ctx", "depth", "t_n_ctx", "seed", "feature_layers", "map_layers")
        prompt_cfg = {k: v for k, v in self.config.to_dict().items() if k in recorded}
        prompt_cfg.update(feature_layers=list(self.feature_layers), map_layers=list(self.map_layers))
        return save_prompt_checkpoint(
            path, self.prompt_learner.state_dict(), prompt_cfg, self.backbone_info.to_dict(), extra
        )

    # ------------------------------------------------------------------ identity
    @property
    def device(self) -> torch.device:
        return self.prompt_learner.ctx_pos.device

    @property
    def untrained_warning(self) -> str | None:
        """A loud note when the backbone is random or the prompts are untrained, else ``None``."""
        parts = []
        if self.backbone_info.random_weights:
            parts.append("the backbone has RANDOM weights")
        if not self.prompt_source.get("trained"):
            parts.append("the prompts are freshly initialised and UNTRAINED")
        return None if not parts else "WARNING: " + " and ".join(parts) + " - these scores are not meaningful."

    def identity(self) -> dict[str, Any]:
        """Model and weights identity for output files."""
        from anomalyclip_med import __version__

        return {
            "package_version": __version__,
            "backbone": self.backbone_info.to_dict(),
            "prompts": dict(self.prompt_source),
            "config": self.config.to_dict(),
            "precision": self.precision,
            "warning": self.untrained_warning,
        }

    # ------------------------------------------------------------------ text side
    def train(self, mode: bool = True) -> AnomalyCLIP:
        super().train(mode)
        self.clip.eval()  # the backbone never leaves eval mode
        self._text_features = None
        return self

    def encode_text(self) -> torch.Tensor:
        """(2, E) L2-normalised [normal, abnormal] text features from the current prompts (with gradients)."""
        prompts, tokens, deep = self.prompt_learner()
        features = encode_text_with_prompts(self.clip, prompts, tokens, deep).float()
        return features / features.norm(dim=-1, keepdim=True)

    def text_features(self) -> torch.Tensor:
        """Cached text features for inference (recomputed after the prompts change)."""
        if self._text_features is None:
            with torch.no_grad():
                self._text_features = self.encode_text()
        return self._text_features

    # ------------------------------------------------------------------ image side
    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    def _as_batch(self, batch: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(batch):
            raise InputError(f"Expected a (B, 3, H, W) image tensor, got {type(batch).__name__}; image files are "
                             "read by anomalyclip_med.inference.images2d.preprocess_images.")
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise InputError(f"Expected a (B, 3, H, W) image batch, got shape {tuple(batch.shape)}.")
        return batch.to(self.device, torch.float32)

    def forward(self, images: torch.Tensor, text_features: torch.Tensor | None = None) -> AnomalyCLIPForward:
        """
        Network forward used by training and prediction.

        Args:
            images: (B, 3, H, W) normalised images.
            text_features: (2, E) normalised text features; by default computed from the prompts with gradients
                when training, taken from the cache otherwise.
        """
        if text_features is None:
            text_features = self.encode_text() if self.training else self.text_features()
        with self._autocast():
            global_features, patch_features = self._image_tower(
                self.clip.visual, images, self.feature_layers, self.dpam_layers
            )
        global_features = global_features.float()
        patch_features = [p.float() for p in patch_features]
        g = global_features / global_features.norm(dim=-1, keepdim=True)
        image_logits = g @ text_features.t() / self.config.temperature
        grid = patch_grid(self.clip.visual, images.shape[-2], images.shape[-1])
        maps = similarity_maps(
            [patch_features[i] for i in self._map_indices], text_features, grid, tuple(images.shape[-2:]),
            self.config.temperature,
        )
        return AnomalyCLIPForward(image_logits, maps, global_features, patch_features)

    @torch.inference_mode()
    def predict(
        self, batch: torch.Tensor, smooth: bool = True, layer_maps: bool = False, features: bool = False
    ) -> AnomalyCLIPOutput:
        """
        Score a batch: the image score and the anomaly map; per-layer maps and features only when asked for.

        Args:
            batch: (B, 3, H, W) or (3, H, W) normalised images.
            smooth: apply the Gaussian filter (sigma ``config.sigma``) to the summed map.
            layer_maps: also return the per-layer maps.
            features: also return the global and patch features.
        """
        images = self._as_batch(batch)
        return scores_from_forward(
            self.forward(images, self.text_features()), self.config.sigma if smooth else 0.0, layer_maps, features
        )


def scores_from_forward(
    fwd: AnomalyCLIPForward, sigma: float, layer_maps: bool = False, features: bool = False
) -> AnomalyCLIPOutput:
    """
    The scores of a network forward: the image score and the anomaly map (the sum of the layer maps, Gaussian-smoothed
    with ``sigma`` pixels (0: not smoothed), divided by the number of layers); the per-layer maps and the features
    only when asked for.
    """
    layers = layer_anomaly_maps(fwd.similarity_maps)
    smoothed = gaussian_smooth(layers.sum(dim=0), sigma)
    return AnomalyCLIPOutput(
        image_score=fwd.image_logits.softmax(dim=-1)[:, 1],
        anomaly_map=(smoothed / layers.shape[0]).clamp_(0, 1),
        layer_maps=layers if layer_maps else None,
        image_features=fwd.image_features if features else None,
        patch_features=fwd.patch_features if features else None,
    )
