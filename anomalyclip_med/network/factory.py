"""
The model factory shared by the command line, the bundle and the Python API: :class:`ModelOptions` says which
backbone, weights, prompts, size, device and precision; :func:`create_model` builds the network from them. Devices
are checked and ``auto`` device and precision resolved here, once, for every face.

torch and the network are imported inside the functions: the command line reads this module's defaults to build
its parser, and ``--help`` must not wait seconds for torch and open_clip to import.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anomalyclip_med.errors import CheckpointError, InputError
from anomalyclip_med.network.config import PRECISION_NAMES
from anomalyclip_med.weights import DEFAULT_PROMPTS, DEFAULT_WEIGHTS, UNTRAINED, resolve_weights

if TYPE_CHECKING:
    from anomalyclip_med.network.model import AnomalyCLIP

__all__ = [
    "RANDOM_WEIGHTS",
    "PRECISION_CHOICES",
    "AUTO_PRECISION",
    "AUTO_PRECISION_TOLERANCE",
    "ModelOptions",
    "resolve_device",
    "resolve_precision",
    "create_model",
]

# backbone_weights values that mean "random weights" (tiny test models; never for real use)
RANDOM_WEIGHTS = ("none", "random")
PRECISION_CHOICES = ("auto", *PRECISION_NAMES)
# `--precision auto` per device type: the fastest precision whose anomaly map stays within
# AUTO_PRECISION_TOLERANCE (largest absolute difference on the 0..1 map) of fp32's, as measured with
# benchmarks/bench_precision.py (docs/network.md, "Precision"). CUDA: fp16 differs by 1.9e-4 (bf16 by 1.8e-3) and
# both run ~8x faster than fp32 (H200, ViT-L/14@336, 518 px); every CUDA GPU runs fp16 autocast. CPU: see the
# measurement in docs/network.md. MPS: not measured, so fp32.
AUTO_PRECISION_TOLERANCE = 1e-3
AUTO_PRECISION = {"cuda": "fp16", "cpu": "fp32", "mps": "fp32"}
# AnomalyCLIPConfig fields create_model takes as settings (layers and size are ModelOptions fields)
_SETTINGS = frozenset({"n_ctx", "depth", "t_n_ctx", "sigma", "temperature", "seed", "dpam_layers"})
_DEVICE_FIX = "use --device auto, cpu, cuda, cuda:N or mps (bundle: the same override, e.g. --device cpu)"


@dataclass
class ModelOptions:
    """
    How to build the AnomalyCLIP network (defaults in brackets).

    Attributes:
        backbone: open_clip model name (e.g. ``ViT-L-14-336``) or model config (JSON file or dict) [None: read from an
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
        device: ``auto`` (CUDA when available, else Apple MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``
            ["auto"]; a device this machine does not have is refused (:func:`resolve_device`).
        precision: autocast dtype of the image tower: ``auto`` (per device, :func:`resolve_precision`), ``fp32``,
            ``bf16`` or ``fp16`` ["auto"].
        compile_network: ``torch.compile`` the image tower: faster batches after a compilation of minutes per
            input shape [False].
        seed: torch seed set right before the backbone is built, so a random test backbone is the same in every
            command and every ``torchrun`` process [0].
        cache_dir: open_clip download cache [None: open_clip's default].

    Raises:
        InputError: an invalid value, naming the option.
    """

    backbone: str | dict | None = None
    backbone_weights: str | None = DEFAULT_WEIGHTS
    prompts: str = DEFAULT_PROMPTS
    weights_dir: str | None = None
    feature_layers: tuple[int, ...] | None = None
    map_layers: tuple[int, ...] | None = None
    image_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    compile_network: bool = False
    seed: int = 0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        # config files and command lines give "" or null for "not set": both mean the default
        for name in ("backbone", "weights_dir", "cache_dir"):
            value = getattr(self, name)
            if not isinstance(value, dict):  # a backbone may be an open_clip model config itself
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
        if self.precision not in PRECISION_CHOICES:
            raise InputError(f"Invalid model option precision={self.precision!r}: choose one of "
                             f"{', '.join(PRECISION_CHOICES)}.")
        if self.image_size is not None:
            if int(self.image_size) != self.image_size or int(self.image_size) < 1:
                raise InputError(f"Invalid model option image_size={self.image_size!r}: a positive integer, a "
                                 "multiple of the backbone's patch size.")
            self.image_size = int(self.image_size)
        self.device = str(self.device).strip().lower()
        resolve_precision(self.precision, resolve_device(self.device))  # a missing device fails before any work

    @property
    def random_weights(self) -> bool:
        """Whether ``backbone_weights`` asks for a randomly initialised backbone."""
        return self.backbone_weights is None or self.backbone_weights.lower() in RANDOM_WEIGHTS


def _has_mps() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str) -> str:
    """
    The torch device ``name`` stands for on this machine: ``auto`` -> ``cuda`` when CUDA is available, else
    ``mps`` (Apple GPU) when available, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are returned as
    given once checked.

    Raises:
        InputError: an unknown device name, or a device this machine does not have, naming the flag to use.
    """
    import torch

    name = str(name).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if _has_mps() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"Unknown device {name!r}: {_DEVICE_FIX}.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU or driver is visible"
            raise InputError(f"Device {name!r} is not available here ({why}; torch {torch.__version__}): use "
                             "--device cpu, or --device auto to take a GPU when there is one.")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InputError(f"Device {name!r} is not available: this machine has {count} CUDA GPU(s), "
                             f"cuda:0 to cuda:{count - 1}; use one of them, or --device cuda.")
    if device.type == "mps" and not _has_mps():
        raise InputError(f"Device {name!r} is not available here (no Apple MPS GPU): use --device cpu, or "
                         "--device auto.")
    return name


def resolve_precision(precision: str, device: str) -> str:
    """
    The precision ``precision`` stands for on ``device`` (a name :func:`resolve_device` returned): ``auto`` ->
    :data:`AUTO_PRECISION` of the device type; ``bf16`` on a CUDA GPU without bfloat16 is refused.

    Raises:
        InputError: an unknown precision, or bf16 on a GPU that cannot run it.
    """
    if precision not in PRECISION_CHOICES:
        raise InputError(f"Unknown precision {precision!r}: use --precision {' | '.join(PRECISION_CHOICES)}.")
    kind = device.split(":")[0]
    if precision == "auto":
        return AUTO_PRECISION[kind]
    if precision == "bf16" and kind == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise InputError(f"This GPU ({torch.cuda.get_device_name(device)}) cannot run bf16: use --precision "
                             "fp16, or --precision auto.")
    return precision


def create_model(options: ModelOptions | None = None, settings: Mapping[str, Any] | None = None) -> AnomalyCLIP:
    """
    Build the network from ``options`` (in eval mode, on the resolved device): the one constructor behind every
    face (command line, bundle network, API).

    In order: the device is resolved and ``precision="auto"`` is resolved for that device (a CPU network on a CUDA
    machine runs fp32); the weights are resolved (registry names found in ``weights_dir`` or the cache, else
    fetched and verified) and the prompt file is read and checked (unreadable, NaN/Inf); the network settings are
    the prompt file's recorded ones merged with the caller's (:meth:`AnomalyCLIPConfig.merged`: what the caller
    set, ``options.feature_layers``, ``map_layers``, ``image_size`` when not None and ``settings``, wins;
    a prompt shape that contradicts the file is refused); then the backbone is built and the prompts loaded.

    The torch seed ``options.seed`` is set right before the backbone is built, so that a random test backbone is
    drawn identically by every face and every process.

    Args:
        options: which backbone, weights, prompts, layers, size, device and precision.
        settings: further :class:`AnomalyCLIPConfig` fields the caller sets (``n_ctx``, ``depth``, ``t_n_ctx``,
            ``sigma``, ``temperature``, ``seed``, ``dpam_layers``); those left out come from the prompt file, else
            the defaults.

    Raises:
        InputError: a setting against the prompt file's, an unknown setting, a device or precision this machine
            lacks.
        MissingWeightsError, BackboneError, CheckpointError: weights or prompts that cannot be used.
    """
    import torch

    from anomalyclip_med.network.backbone import load_backbone
    from anomalyclip_med.network.checkpoint import read_prompt_checkpoint
    from anomalyclip_med.network.config import AnomalyCLIPConfig
    from anomalyclip_med.network.model import AnomalyCLIP

    options = options or ModelOptions()
    settings = dict(settings or {})
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise InputError(f"Unknown network setting(s) {unknown}: use ModelOptions for layers and image size; "
                         f"settings are {sorted(_SETTINGS)}.")
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    files = resolve_weights(options.backbone, None if options.random_weights else options.backbone_weights,
                            options.prompts, options.weights_dir)
    checkpoint = read_prompt_checkpoint(files.prompts) if files.prompts is not None else None
    chosen = {"image_size": options.image_size, "feature_layers": options.feature_layers,
              "map_layers": options.map_layers}
    explicit = {**settings, **{k: v for k, v in chosen.items() if v is not None}}
    config = AnomalyCLIPConfig.merged(checkpoint["config"] if checkpoint else None, explicit)
    torch.manual_seed(options.seed)
    # a weights file is read straight onto the device into a backbone built without random initialisation
    clip, info = load_backbone(files.backbone, files.backbone_weights, cache_dir=options.cache_dir, device=device)
    model = AnomalyCLIP(clip, info, config, precision, options.compile_network)
    if checkpoint is not None:
        name = files.prompts_entry.name if files.prompts_entry else None
        try:
            model.load_prompts(files.prompts, _checkpoint=checkpoint, _name=name)
        except CheckpointError as err:
            if name is None:
                raise
            raise CheckpointError(
                f"{err} The named prompts '{name}' fit only the backbone they were trained with (OpenAI "
                f"ViT-L/14@336px); with another backbone pass --prompts with a file trained for it, or "
                f"--prompts {UNTRAINED}."
            ) from None
    else:
        warnings.warn(
            f"Prompts '{UNTRAINED}': AnomalyCLIP uses freshly initialised, UNTRAINED prompts "
            f"(seed {config.seed}); its scores are not meaningful until prompts are trained or loaded.",
            stacklevel=2,
        )
    return model.to(device).eval()
