"""
Parse-then-dispatch for the weights a model is built from: ``prompts`` (a registry name, ``untrained``, or a
file) and the backbone (the registry's CLIP file for the default ``openai`` tag, else whatever open_clip takes).

Everything that must come from the registry is gathered first and fetched in one go, so an offline machine gets
one error naming every missing file instead of failing on them one at a time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from anomalyclip_med.errors import MissingWeightsError
from anomalyclip_med.weights.fetch import ensure_weights
from anomalyclip_med.weights.registry import (
    UNTRAINED,
    NamedWeights,
    default_backbone_entry,
    prompt_names,
    registry,
)

__all__ = ["PromptSource", "ResolvedWeights", "missing_prompt_file", "parse_prompts", "resolve_weights"]


@dataclass(frozen=True)
class PromptSource:
    """What ``prompts`` asks for: ``kind`` is ``"named"`` (``value`` a registry name), ``"file"`` (a path) or
    ``"untrained"`` (fresh, seeded initialisation)."""

    kind: str
    value: str | None = None


def parse_prompts(value: str | os.PathLike | None) -> PromptSource:
    """
    Read a ``prompts`` value: a registry name (``mvtec-trained``, ``visa-trained``), ``untrained`` (API: also
    ``None``), or a prompt checkpoint file.

    Raises:
        MissingWeightsError: a bare word that is neither a name nor an existing file (a typo of a name).
    """
    if value is None or str(value).strip().lower() == UNTRAINED:
        return PromptSource("untrained")
    text = str(value)
    if not isinstance(value, os.PathLike) and text in prompt_names():
        return PromptSource("named", text)
    path = Path(text)
    if not path.exists() and os.sep not in text and "/" not in text and not path.suffix:
        raise MissingWeightsError(
            f"Unknown prompts '{text}': pass {', '.join(prompt_names())}, {UNTRAINED}, or a prompt checkpoint file."
        )
    return PromptSource("file", text)


def missing_prompt_file(path: str | os.PathLike) -> MissingWeightsError:
    """The error for a prompt file that does not exist, naming it and the choices."""
    return MissingWeightsError(
        f"Prompt checkpoint '{path}' does not exist. Pass --prompts mvtec-trained or visa-trained (the authors' "
        "released prompts, fetched on first use), a prompt file (e.g. one written by 'anomalyclip-med train'), or "
        f"--prompts {UNTRAINED} for freshly initialised prompts."
    )


def _refuse_missing_files(backbone_weights: str | os.PathLike | None, source: PromptSource) -> None:
    """A named file that does not exist is the user's error to hear first, before any download is tried."""
    if source.kind == "file" and not Path(source.value).is_file():
        raise missing_prompt_file(source.value)
    text = None if backbone_weights is None else str(backbone_weights)
    if text and not Path(text).is_file() and (isinstance(backbone_weights, os.PathLike) or "/" in text
                                              or os.sep in text or Path(text).suffix):
        raise MissingWeightsError(
            f"Backbone weights file '{text}' does not exist. Pass an existing CLIP weights file with "
            "--backbone-weights (API: backbone_weights=PATH), or leave it at 'openai' for the verified download."
        )


@dataclass(frozen=True)
class ResolvedWeights:
    """Local files for a model: arguments for ``load_backbone`` and the prompt file (``None``: untrained)."""

    backbone: str | dict | os.PathLike | None
    backbone_weights: str | os.PathLike | None
    prompts: Path | None
    prompt_source: PromptSource
    prompts_entry: NamedWeights | None = None
    backbone_entry: NamedWeights | None = None


def resolve_weights(
    backbone: str | dict | os.PathLike | None,
    backbone_weights: str | os.PathLike | None,
    prompts: str | os.PathLike | None,
    weights_dir: str | os.PathLike | None = None,
    flags: dict[str, str] | None = None,
    progress: bool = True,
) -> ResolvedWeights:
    """
    Dispatch ``prompts`` and the backbone to local files, fetching registry files not found in the weights
    folders or the cache.

    Args:
        backbone, backbone_weights: as ``load_backbone`` takes them; ``backbone_weights="openai"`` on the default
            architecture is served from the registry (weights folder, cache, download) instead of open_clip.
        prompts: a registry name, ``"untrained"``/``None``, or a file.
        weights_dir: a folder of files written by ``anomalyclip-med fetch-weights`` (searched first).
        flags: the caller's option names, for the offline error (see ``WeightsUnavailableError.describe``).
        progress: download progress bars.
    """
    source = parse_prompts(prompts)
    _refuse_missing_files(backbone_weights, source)
    table = registry()
    prompts_entry = table[source.value] if source.kind == "named" else None
    weights_str = None if backbone_weights is None or isinstance(backbone_weights, os.PathLike) else backbone_weights
    backbone_entry = default_backbone_entry(backbone if not isinstance(backbone, dict) else "", weights_str)
    needed = [e for e in (backbone_entry, prompts_entry) if e is not None]
    paths = ensure_weights(needed, weights_dir, progress=progress, flags=flags) if needed else {}
    if backbone_entry is not None:
        backbone, backbone_weights = backbone_entry.architecture, paths[backbone_entry.name]
    if prompts_entry is not None:
        prompt_file = paths[prompts_entry.name]
    else:
        prompt_file = Path(source.value) if source.kind == "file" else None
    return ResolvedWeights(backbone, backbone_weights, prompt_file, source, prompts_entry, backbone_entry)
