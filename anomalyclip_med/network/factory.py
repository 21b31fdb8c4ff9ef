"""
The model factory shared by the command line, the bundle and the Python API: :class:`ModelOptions` says which
backbone, weights, prompts, size, device and precision; :func:`create_model` builds the network from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anomalyclip_med.errors import InputError
from anomalyclip_med.network.backbone import DEFAULT_WEIGHTS
from anomalyclip_med.network.model import PRECISIONS, AnomalyCLIP
from anomalyclip_med.weights import DEFAULT_PROMPTS

__all__ = ["RANDOM_WEIGHTS", "ModelOptions", "resolve_device", "create_model"]

# backbone_weights values that mean "random weights" (tiny test models; never for real use)
RANDOM_WEIGHTS = ("none", "random")


@dataclass
class ModelOptions:
    """
    How to build the AnomalyCLIP network (defaults in brackets).

    Attributes:
        backbone: open_clip model name (e.g. ``ViT-L-14-336``) or model config JSON [None: read from an
            OpenAI-format weights file, else ``ViT-L-14-336``].
        backbone_weights: open_clip pretrained tag, a weights file, or ``"none"``/``"random"`` for RANDOM weights
            (tests only) ["openai"].
        prompts: ``"mvtec-trained"`` (the authors' prompts trained on MVTec AD, fetched and cached on first use),
            ``"visa-trained"``, a prompt checkpoint file (the authors' or this package's format), or ``"untrained"``
            (fresh prompts: scores not meaningful) ["mvtec-trained"].
        weights_dir: a folder written by ``anomalyclip-med fetch-weights``, searched before the cache [None].
        feature_layers: visual layers (1-based) whose patch features are used [None: 6 12 18 24, scaled to the
            depth; the prompt file's when it records them]. ``(24,)``: the authors' scripts' protocol.
        map_layers: which feature layers are summed into the map (negative: from the deepest) [None: all].
        image_size: network input side, a multiple of the patch size [None: the checkpoint's or 518].
        device: torch device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ... ["auto"].
        precision: autocast dtype of the image tower: ``fp32``, ``bf16`` or ``fp16`` ["fp32"].
        compile_network: ``torch.compile`` the image tower: faster batches after a compilation of minutes per
            input shape [False].
        seed: torch seed set right before the backbone is built, so a random test backbone is the same in every
            command and every ``torchrun`` process [0].
        cache_dir: open_clip download cache [None: open_clip's default].

    Raises:
        InputError: an invalid value, naming the option.
    """

    backbone: str | None = None
    backbone_weights: str | None = DEFAULT_WEIGHTS
    prompts: str = DEFAULT_PROMPTS
    weights_dir: str | None = None
    feature_layers: tuple[int, ...] | None = None
    map_layers: tuple[int, ...] | None = None
    image_size: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    compile_network: bool = False
    seed: int = 0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        # config files and command lines give "" or null for "not set": both mean the default
        for name in ("backbone", "weights_dir", "cache_dir"):
            value = getattr(self, name)
            setattr(self, name, None if value is None or str(value) == "" else str(value))
        self.prompts = DEFAULT_PROMPTS if self.prompts is None or str(self.prompts) == "" else str(self.prompts)
        for name in ("feature_layers", "map_layers"):
            value = getattr(self, name)
            if value is not None:
                layers = [value] if isinstance(value, int) else list(value)
                if not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
                    raise InputError(f"Invalid model option {name}={value!r}: a list of layer numbers, e.g. [24].")
                setattr(self, name, tuple(layers))
        if self.backbone_weights is not None:
            self.backbone_weights = str(self.backbone_weights)
        if self.precision not in PRECISIONS:
            raise InputError(f"Invalid model option precision={self.precision!r}: choose one of {sorted(PRECISIONS)}.")
        if self.image_size is not None:
            if int(self.image_size) != self.image_size or int(self.image_size) < 1:
                raise InputError(f"Invalid model option image_size={self.image_size!r}: a positive integer, a "
                                 "multiple of the backbone's patch size.")
            self.image_size = int(self.image_size)
        if not str(self.device):
            raise InputError("Invalid model option device='': use auto, cpu, cuda or cuda:N.")

    @property
    def random_weights(self) -> bool:
        """Whether ``backbone_weights`` asks for a randomly initialised backbone."""
        return self.backbone_weights is None or self.backbone_weights.lower() in RANDOM_WEIGHTS


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when CUDA is available, else ``cpu``; any other name is returned unchanged."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def create_model(options: ModelOptions | None = None) -> AnomalyCLIP:
    """
    Build the network from ``options`` (in eval mode, on the resolved device).

    The torch seed ``options.seed`` is set first, so that a random test backbone is drawn identically by every
    face (command line, bundle, API) and every process.

    Raises:
        MissingWeightsError, BackboneError, CheckpointError: weights or prompts that cannot be used.
    """
    options = options or ModelOptions()
    torch.manual_seed(options.seed)
    model = AnomalyCLIP.from_pretrained(
        backbone=options.backbone,
        backbone_weights=None if options.random_weights else options.backbone_weights,
        prompts=options.prompts,
        weights_dir=options.weights_dir,
        feature_layers=options.feature_layers,
        map_layers=options.map_layers,
        image_size=options.image_size,
        device=resolve_device(options.device),
        precision=options.precision,
        cache_dir=options.cache_dir,
        compile_network=options.compile_network,
    )
    return model.eval()
