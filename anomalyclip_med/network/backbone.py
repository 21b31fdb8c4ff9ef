"""
Loading the frozen CLIP backbone through open_clip.

As open_clip's factory does, the source is parsed first (:func:`parse_backbone_source`: a pretrained tag, an
OpenAI TorchScript archive, an OpenAI state dict, an open_clip state dict for a named architecture or a model
config, or random weights), then one builder per kind makes the model. Every real loading path stays open_clip's:
pretrained tags (downloaded and cached by open_clip), OpenAI files (``build_model_from_openai_state_dict``), named
architectures (``create_model``) and model configs (``CLIP(**cfg)``). What this module adds is the checks that turn
a library traceback into an error naming the file, the tensor, the block type and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import warnings
import zipfile
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.factory import load_state_dict
from open_clip.model import CLIP, build_model_from_openai_state_dict
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from anomalyclip_med.errors import BackboneError, MissingWeightsError
from anomalyclip_med.network.materialize import build_on_meta, load_into_meta
from anomalyclip_med.weights import DEFAULT_BACKBONE, DEFAULT_WEIGHTS

__all__ = [
    "BackboneInfo",
    "BackboneSource",
    "SourceKind",
    "parse_backbone_source",
    "check_image_tower",
    "load_backbone",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

# Where a user without network access gets the default weights by hand.
_OPENAI_VITL14_336_HINT = (
    "download OpenAI's ViT-L/14@336px CLIP file 'ViT-L-14-336px.pt' (the URL is in open_clip's pretrained "
    "table: open_clip.get_pretrained_url('ViT-L-14-336', 'openai')) on a machine with internet access, copy it "
    "here and pass its path with --backbone-weights (API: backbone_weights=PATH)"
)
_OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class BackboneInfo:
    """Identity of a loaded backbone, written into every output file."""

    name: str
    weights: str
    random_weights: bool
    patch_size: int
    vision_layers: int
    text_width: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_path_like(value: str | os.PathLike) -> bool:
    s = str(value)
    return isinstance(value, os.PathLike) or os.sep in s or s.endswith((".pt", ".pth", ".bin", ".safetensors"))


def read_state_dict(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], bool]:
    """
    Read a backbone weights file, straight onto ``device``: an OpenAI TorchScript archive or a (possibly wrapped)
    state dict.

    Returns:
        the state dict and whether it came from a TorchScript archive.

    Raises:
        BackboneError: the file cannot be read as either.
    """
    path = str(path)
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                sd = torch.jit.load(path, map_location=device).state_dict()
        except Exception as err:
            raise BackboneError(f"Cannot read TorchScript archive '{path}': {type(err).__name__}: {err}") from None
        # traced archives also carry buffers that are not parameters of the model
        sd = {k: v for k, v in sd.items() if k not in _OPENAI_ONLY_KEYS and not k.endswith("attn_mask")}
        return sd, True
    try:
        sd = load_state_dict(path, device=str(device), weights_only=True)
    except Exception as err:
        raise BackboneError(
            f"Cannot read backbone weights file '{path}': {type(err).__name__}: {err}. Expected an OpenAI CLIP "
            "TorchScript archive (.pt), an OpenAI-format state dict or an open_clip checkpoint."
        ) from None
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise BackboneError(f"Backbone weights file '{path}' does not hold a state dict of tensors.")
    for key in _OPENAI_ONLY_KEYS:
        sd.pop(key, None)
    return sd, False


def _is_torchscript(path: str) -> bool:
    # TorchScript archives are zip files holding serialized code next to the tensors
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _is_openai_vit(sd: dict[str, torch.Tensor]) -> bool:
    return "visual.proj" in sd and "visual.conv1.weight" in sd and "token_embedding.weight" in sd


def _check_fits(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str, source: str) -> None:
    """Raise naming the first tensor of ``sd`` that ``model`` lacks or that has another shape."""
    expected = model.state_dict()
    for key, tensor in sd.items():
        if key not in expected:
            raise BackboneError(f"{what} does not fit {source}: the file has tensor '{key}' that {what} lacks.")
        if tuple(expected[key].shape) != tuple(tensor.shape):
            raise BackboneError(
                f"{what} does not fit {source}: tensor '{key}' has shape {tuple(tensor.shape)} in the file but "
                f"{tuple(expected[key].shape)} in {what}. Name the architecture the weights were trained with "
                "(--backbone), or leave it out for OpenAI-format files, whose architecture is read from the tensors."
            )
    missing = sorted(set(expected) - set(sd) - {"attn_mask"})
    if missing:
        raise BackboneError(f"{what} does not fit {source}: the file lacks tensor '{missing[0]}'.")


def _config_from(spec: dict | str | os.PathLike) -> dict:
    if isinstance(spec, dict):
        return dict(spec)
    try:
        return json.loads(Path(spec).read_text())
    except (OSError, ValueError) as err:
        raise BackboneError(f"Cannot read open_clip model config '{spec}': {err}") from None


def _build_from_config(cfg: dict) -> CLIP:
    if "model_cfg" in cfg:  # the layout open_clip writes next to hub checkpoints
        cfg = cfg["model_cfg"]
    if "hf_model_name" in cfg.get("text_cfg", {}) or "timm_model_name" in cfg.get("vision_cfg", {}):
        raise BackboneError("AnomalyCLIP needs CLIP's own ViT image tower and text transformer, not HF/timm towers.")
    try:
        return CLIP(**cfg)
    except TypeError as err:
        raise BackboneError(f"Invalid open_clip model config: {err}") from None


def _named_model(name: str, **kwargs: Any) -> CLIP:
    if open_clip.get_model_config(name) is None:
        raise BackboneError(
            f"Unknown backbone architecture '{name}'. Use an open_clip model name "
            f"(e.g. {DEFAULT_BACKBONE}, ViT-B-16; see open_clip.list_models()) or an open_clip model config."
        )
    return open_clip.create_model(name, pretrained=None, **kwargs)


def _cached_or_reachable(tag_cfg: dict, cache_dir: str | None) -> tuple[str | None, bool]:
    """Where a tag's weights already lie in a download cache, and whether their host answers at all."""
    from urllib.parse import urlparse

    cached, host = None, None
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import constants, try_to_load_from_cache

        repo, filename = os.path.split(tag_cfg["hf_hub"])
        for name in ([filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]):
            hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(hit, str):
                cached = hit
                break
        host = urlparse(constants.ENDPOINT).hostname
    elif tag_cfg.get("url"):
        target = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(tag_cfg["url"])
        cached = str(target) if target.is_file() else None
        host = urlparse(tag_cfg["url"]).hostname
    if cached or host is None:
        return cached, host is not None
    try:  # fail in seconds instead of retrying a download for a minute on an offline machine
        socket.create_connection((host, 443), timeout=5).close()
        return None, True
    except OSError:
        return None, False


def _from_tag(name: str, tag: str, cache_dir: str | None) -> CLIP:
    tag_cfg = open_clip.get_pretrained_cfg(name, tag)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise MissingWeightsError(
            f"'{tag}' is neither a weights file that exists nor an open_clip pretrained tag of {name} "
            f"(known tags: {tags}). Pass an existing file with --backbone-weights."
        )
    hint = _OPENAI_VITL14_336_HINT if (name, tag) == (DEFAULT_BACKBONE, DEFAULT_WEIGHTS) else (
        "download them on a machine with internet access (open_clip.create_model("
        f"'{name}', pretrained='{tag}') caches them) and pass the file with --backbone-weights"
    )
    cached, reachable = _cached_or_reachable(tag_cfg, cache_dir)
    if not cached and not reachable:
        raise MissingWeightsError(
            f"The weights of backbone {name} (open_clip tag '{tag}') are not in the download cache and their "
            f"server cannot be reached (offline machine?). To fix: {hint}."
        )
    # open_clip knows which released weights were trained with QuickGELU; its plain configs do not.
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    try:
        return open_clip.create_model(
            name, pretrained=cached or tag, force_quick_gelu=quick_gelu, cache_dir=cache_dir
        )
    except Exception as err:
        raise MissingWeightsError(
            f"Could not load the weights of backbone {name} (open_clip tag '{tag}'): {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}. To fix: {hint}."
        ) from None


class SourceKind(str, Enum):
    """The kinds of backbone source :func:`parse_backbone_source` tells apart."""

    RANDOM = "random"  # an architecture (name or config) with random weights: tests only
    TAG = "tag"  # an open_clip model name and pretrained tag, downloaded and cached by open_clip
    OPENAI_TORCHSCRIPT = "openai_torchscript"  # OpenAI's released .pt archive; architecture read from the tensors
    OPENAI_STATE_DICT = "openai_state_dict"  # an OpenAI-format state dict without a name; architecture from tensors
    OPEN_CLIP_STATE_DICT = "open_clip_state_dict"  # a state dict for a named open_clip architecture
    CONFIG_STATE_DICT = "config_state_dict"  # a state dict for an open_clip model config


@dataclass
class BackboneSource:
    """
    A backbone source, parsed (:func:`parse_backbone_source`) before anything is built.

    Attributes:
        kind: what the source is.
        name: the architecture's display name (``None`` until read from an OpenAI file's tensors).
        model_name: the open_clip model name, when one was given or implied.
        config: the open_clip model config, when one was given.
        weights: the resolved weights file or the pretrained tag (``None`` for random weights).
        state_dict: the weights file's tensors (file kinds only).
    """

    kind: SourceKind
    name: str | None
    model_name: str | None = None
    config: dict | None = None
    weights: str | None = None
    state_dict: dict[str, torch.Tensor] | None = None


def parse_backbone_source(
    backbone: str | dict | os.PathLike | None, weights: str | os.PathLike | None, device: str | torch.device = "cpu"
) -> BackboneSource:
    """
    Tell what ``load_backbone(backbone, weights)`` was given; a weights file is read here (onto ``device``), since
    its content says its kind.

    Raises:
        MissingWeightsError: ``weights`` looks like a file path but does not exist.
        BackboneError: the file cannot be read, or a combination that cannot work (a tag with a config, a
            non-OpenAI file without an architecture).
    """
    is_config = isinstance(backbone, dict) or (backbone is not None and str(backbone).endswith(".json"))
    config = _config_from(backbone) if is_config else None
    if is_config:
        name = "open_clip config" if isinstance(backbone, dict) else f"open_clip config {backbone}"
    else:
        name = str(backbone) if backbone is not None else None
    model_name = None if is_config else name

    if weights is None:
        if not is_config and model_name is None:
            name = model_name = DEFAULT_BACKBONE
        return BackboneSource(SourceKind.RANDOM, name, model_name, config)
    if Path(weights).is_file():
        path = str(Path(weights).resolve())
        sd, scripted = read_state_dict(path, device)
        if is_config:
            return BackboneSource(SourceKind.CONFIG_STATE_DICT, name, None, config, path, sd)
        if scripted or (model_name is None and _is_openai_vit(sd)):
            if not _is_openai_vit(sd):
                raise BackboneError(f"'{path}' is not a ViT CLIP model; AnomalyCLIP needs a ViT image tower.")
            kind = SourceKind.OPENAI_TORCHSCRIPT if scripted else SourceKind.OPENAI_STATE_DICT
            return BackboneSource(kind, name, model_name, None, path, sd)
        if model_name is None:
            raise BackboneError(
                f"Cannot infer the architecture of '{path}': it is not an OpenAI-format CLIP file. "
                "Pass the open_clip model name it was trained with (--backbone NAME, e.g. ViT-B-16)."
            )
        return BackboneSource(SourceKind.OPEN_CLIP_STATE_DICT, name, model_name, None, path, sd)
    if _is_path_like(weights):
        raise MissingWeightsError(
            f"Backbone weights file '{weights}' does not exist. Pass an existing CLIP weights file with "
            f"--backbone-weights (API: backbone_weights=PATH); to get the default weights, {_OPENAI_VITL14_336_HINT}."
        )
    if is_config:
        raise BackboneError("A pretrained tag needs an open_clip model name, not a model config.")
    model_name = model_name or DEFAULT_BACKBONE
    return BackboneSource(SourceKind.TAG, model_name, model_name, None, str(weights))


def _build_random(source: BackboneSource, device: str | torch.device, cache_dir: str | None) -> CLIP:
    warnings.warn(
        f"Backbone {source.name} has RANDOM weights (no backbone weights given): its outputs are meaningless for "
        "anomaly detection; use it only for tests.",
        stacklevel=3,
    )
    return _build_from_config(source.config) if source.config is not None else _named_model(source.model_name)


def _build_tag(source: BackboneSource, device: str | torch.device, cache_dir: str | None) -> CLIP:
    return _from_tag(source.model_name, source.weights, cache_dir)


def _build_openai(source: BackboneSource, device: str | torch.device, cache_dir: str | None) -> CLIP:
    # every architecture is built on the meta device and takes the file's tensors: no random initialisation
    shapes = {k: v.to("meta") for k, v in source.state_dict.items()}  # what open_clip reads the architecture from
    try:
        model = build_on_meta(lambda: build_model_from_openai_state_dict(shapes, cast_dtype=torch.float32))
    except (KeyError, ValueError, RuntimeError) as err:
        raise BackboneError(
            f"'{source.weights}' looks like an OpenAI CLIP file but its architecture cannot be read from it "
            f"({type(err).__name__}: {err}). Pass the open_clip model name it was trained with (--backbone)."
        ) from None
    if source.model_name is not None:  # an explicit name must agree with what the tensors say
        named = build_on_meta(lambda: _named_model(source.model_name, device="meta"))
        _check_fits(named, model.state_dict(), f"backbone {source.name}", f"'{source.weights}'")
    source.name = source.name or "OpenAI CLIP (architecture read from the file)"
    return load_into_meta(model, source.state_dict, device)


def _build_from_state_dict(source: BackboneSource, device: str | torch.device, cache_dir: str | None) -> CLIP:
    if source.config is not None:
        model = build_on_meta(lambda: _build_from_config(source.config))
    else:
        model = build_on_meta(lambda: _named_model(source.model_name, device="meta"))
    _check_fits(model, source.state_dict, f"backbone {source.name}", f"weights file '{source.weights}'")
    return load_into_meta(model, source.state_dict, device)


# open_clip factory style: one builder per kind of source
_BUILDERS = {
    SourceKind.RANDOM: _build_random,
    SourceKind.TAG: _build_tag,
    SourceKind.OPENAI_TORCHSCRIPT: _build_openai,
    SourceKind.OPENAI_STATE_DICT: _build_openai,
    SourceKind.OPEN_CLIP_STATE_DICT: _build_from_state_dict,
    SourceKind.CONFIG_STATE_DICT: _build_from_state_dict,
}


def check_image_tower(model: CLIP, name: str) -> None:
    """
    Refuse an image tower that :func:`anomalyclip_med.network.visual.dpam_forward` cannot run: it needs a ViT whose
    blocks are open_clip's ``ResidualAttentionBlock`` with a ``torch.nn.MultiheadAttention`` (packed q/k/v
    projection) and no attentional pooling.

    Raises:
        BackboneError: naming the block or attention type found.
    """
    visual = model.visual
    if not hasattr(visual, "conv1") or not hasattr(visual, "transformer"):
        raise BackboneError(f"Backbone {name} has no ViT image tower; AnomalyCLIP needs one.")
    if getattr(visual, "attn_pool", None) is not None:
        raise BackboneError(f"Backbone {name} uses attentional pooling, which AnomalyCLIP does not support.")
    for block in visual.transformer.resblocks:
        attn = getattr(block, "attn", None)
        if type(block) is not ResidualAttentionBlock or not isinstance(attn, nn.MultiheadAttention) \
                or not attn._qkv_same_embed_dim:
            raise BackboneError(
                f"Backbone {name} has visual blocks of type {type(block).__name__} (attention "
                f"{type(attn).__name__}); AnomalyCLIP's DPAM image path runs open_clip's ResidualAttentionBlock with "
                "torch.nn.MultiheadAttention only (no qk-norm, scaled cosine or scaled-head attention)."
            )


def load_backbone(
    backbone: str | dict | os.PathLike | None = None,
    weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[CLIP, BackboneInfo]:
    """
    Build the CLIP backbone: :func:`parse_backbone_source`, then the builder for that kind of source, then
    :func:`check_image_tower`.

    Args:
        backbone: an open_clip model name, an open_clip model config (dict, or a JSON file path), or ``None``:
            read the architecture from an OpenAI-format ``weights`` file, else use ``ViT-L-14-336``.
        weights: an open_clip pretrained tag (``"openai"``), a weights file (OpenAI TorchScript archive,
            OpenAI-format state dict, open_clip state dict), or ``None`` for random initialisation.
        cache_dir: open_clip's download cache.
        device: where a weights file's tensors are loaded (random and tag-downloaded models are built on the CPU).

    Returns:
        the open_clip ``CLIP`` model in eval mode (fp32) and its identity.

    Raises:
        MissingWeightsError: the weights file does not exist or a tag cannot be downloaded.
        BackboneError: the weights do not fit the named architecture, cannot be read, or the image tower is not
            one AnomalyCLIP can run.
    """
    source = parse_backbone_source(backbone, weights, device)
    model = _BUILDERS[source.kind](source, device, cache_dir)
    check_image_tower(model, source.name)
    model = model.float().eval()
    model.requires_grad_(False)
    weights_id = {SourceKind.RANDOM: "random", SourceKind.TAG: f"open_clip:{source.model_name}:{source.weights}"}
    visual = model.visual
    info = BackboneInfo(
        name=source.name or DEFAULT_BACKBONE,
        weights=weights_id.get(source.kind, source.weights),
        random_weights=source.kind is SourceKind.RANDOM,
        patch_size=int(visual.conv1.kernel_size[0]),
        vision_layers=len(visual.transformer.resblocks),
        text_width=int(model.ln_final.weight.shape[0]),
    )
    return model, info
