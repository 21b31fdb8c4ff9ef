"""Hyper-parameters of the AnomalyCLIP network, with the paper's values as defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from anomalyclip_med.errors import InputError

__all__ = ["REFERENCE_SEED", "PRECISION_NAMES", "PROMPT_SHAPE_SETTINGS", "AnomalyCLIPConfig"]

# the reference seeds everything with this value (its setup_seed(111)): the prompt initialisation and training
REFERENCE_SEED = 111
# autocast dtypes of the image tower (network.model.PRECISIONS maps them to torch dtypes)
PRECISION_NAMES = ("fp32", "bf16", "fp16")
# The settings that decide the shapes of the prompt tensors: a prompt file fits only a network built with its values.
PROMPT_SHAPE_SETTINGS = ("n_ctx", "depth", "t_n_ctx")


@dataclass
class AnomalyCLIPConfig:
    """
    Settings of the AnomalyCLIP network that do not live in the backbone weights.

    Args:
        image_size: side of the square network input in pixels; must be a multiple of the backbone's patch size.
        n_ctx: learnable context tokens per prompt ("[V1..Vn] object." / "[W1..Wn] damaged object.").
        depth: deep compound prompt depth; text layers 2..depth get ``t_n_ctx`` learned tokens each.
        t_n_ctx: learned tokens inserted after the start token in each deep text layer.
        feature_layers: 1-based visual layers whose V-V tokens give patch features; ``None`` scales the
            paper's (6, 12, 18, 24) to the backbone depth (quarters of the depth). The authors' scripts
            (``train.sh``/``test.sh``, ``--features_list 24``) use ``(24,)``; their ``test.py`` default is
            ``(6, 12, 18, 24)``.
        dpam_layers: how many of the last visual layers run the dual (DPAM) path; ``None`` scales the
            paper's 19 of 24 (the reference's ``DPAM_layer=20``) to the backbone depth.
        map_layers: which of the ``feature_layers`` (1-based layer numbers) give the maps summed into the
            anomaly map and trained by the pixel losses; negative values count from the deepest feature layer
            (``-1``: the deepest). ``None`` uses all of them (the paper); ``(24,)`` or ``(-1,)`` only the last.
        sigma: Gaussian smoothing of the summed map, in pixels (scipy ``gaussian_filter``, reflect border).
        temperature: softmax temperature of the cosine similarities.
        seed: seed of the fresh prompt initialisation when no prompt checkpoint is given.
    """

    image_size: int = 518
    n_ctx: int = 12
    depth: int = 9
    t_n_ctx: int = 4
    feature_layers: tuple[int, ...] | None = None
    dpam_layers: int | None = None
    map_layers: tuple[int, ...] | None = None
    sigma: float = 4.0
    temperature: float = 0.07
    seed: int = REFERENCE_SEED

    def __post_init__(self) -> None:
        if self.feature_layers is not None:
            self.feature_layers = tuple(int(i) for i in self.feature_layers)
        if self.map_layers is not None:
            self.map_layers = tuple(int(i) for i in self.map_layers)
        for name in ("image_size", "n_ctx", "depth", "t_n_ctx"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"AnomalyCLIPConfig.{name} must be a positive integer, got {getattr(self, name)!r}.")

    def resolved_feature_layers(self, n_layers: int) -> tuple[int, ...]:
        """Feature layers for a visual tower of ``n_layers`` blocks (1-based, ascending)."""
        layers = self.feature_layers or tuple(max(1, round(n_layers * k / 4)) for k in range(1, 5))
        bad = [i for i in layers if not 1 <= i <= n_layers]
        if bad:
            raise InputError(f"feature_layers {list(layers)} out of range: the visual tower has layers 1..{n_layers}.")
        return tuple(sorted(set(layers)))

    def resolved_map_layers(self, feature_layers: tuple[int, ...]) -> tuple[int, ...]:
        """Map layers as layer numbers among ``feature_layers`` (ascending)."""
        if not self.map_layers:
            return feature_layers
        layers = [feature_layers[i] if -len(feature_layers) <= i < 0 else i for i in self.map_layers]
        bad = [i for i in layers if i not in feature_layers]
        if bad:
            raise InputError(f"map_layers {list(self.map_layers)}: layer(s) {bad} are not among the feature layers "
                             f"{list(feature_layers)}; a map needs that layer's patch features.")
        return tuple(sorted(set(layers)))

    def resolved_dpam_layers(self, n_layers: int) -> int:
        """Number of final visual layers that run the dual DPAM path."""
        n = self.dpam_layers if self.dpam_layers is not None else n_layers - n_layers // 4 + 1
        if not 0 <= n <= n_layers:
            raise ValueError(f"dpam_layers={n} out of range for a visual tower with {n_layers} layers.")
        return n

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("feature_layers", "map_layers"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def merged(cls, recorded: Mapping[str, Any] | None, explicit: Mapping[str, Any]) -> AnomalyCLIPConfig:
        """
        The settings of a network built from a prompt file: the caller's ``explicit`` values (the fields it set),
        else the file's ``recorded`` ones, else the defaults.

        An explicit layer choice, size, sigma, temperature or seed wins over the recorded one (``--feature-layers 24``
        on a file recorded with 6 12 18 24 uses layer 24 only): they say how the prompts are used, not what they
        are. An explicit prompt shape (:data:`PROMPT_SHAPE_SETTINGS`) that differs from the recorded one is refused:
        no network with it could hold the file's tensors.

        Raises:
            InputError: an explicit prompt shape setting against the recorded one, naming both values.
        """
        recorded = dict(recorded or {})
        clashes = [f"{k}: the prompt file records {recorded[k]!r}, the network is asked for {explicit[k]!r}"
                   for k in PROMPT_SHAPE_SETTINGS if k in recorded and k in explicit and recorded[k] != explicit[k]]
        if clashes:
            raise InputError(f"The prompt file was trained with other prompt settings ({'; '.join(clashes)}): leave "
                             "them unset to take the file's, or use a prompt file trained with them.")
        return cls.from_dict({**recorded, **explicit})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnomalyCLIPConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown AnomalyCLIPConfig field(s) {unknown}; known fields: {sorted(known)}.")
        return cls(**d)
