"""
Named weights: what ``--prompts mvtec-trained`` / ``visa-trained`` and the default CLIP backbone stand for.

Like open_clip's pretrained table, each name maps to one file with where it comes from, how to verify it and
under which terms it is published. The authors' prompt files are pinned to one commit of their repository and
verified by their git blob id (the SHA-1 git computes for the file, readable from the repository without any
other published hash); the OpenAI CLIP file by the SHA-256 that OpenAI puts in its URL.

Two environment variables point the table elsewhere without touching the code: ``ANOMALYCLIP_MED_URL_BASE``
(a mirror serving every file under its ``filename``, e.g. a hospital's artefact server) and
``ANOMALYCLIP_MED_REGISTRY`` (a JSON file ``{name: {field: value}}`` that adds entries or replaces fields of
the built-in ones, e.g. to register a site's own trained prompts).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from anomalyclip_med.errors import AnomalyCLIPMedError

__all__ = [
    "AUTHORS_COMMIT",
    "DEFAULT_BACKBONE",
    "DEFAULT_WEIGHTS",
    "BACKBONE_WEIGHTS_NAME",
    "DEFAULT_PROMPTS",
    "UNTRAINED",
    "URL_BASE_ENV",
    "REGISTRY_ENV",
    "NamedWeights",
    "registry",
    "prompt_names",
    "default_backbone_entry",
]

# The default backbone: open_clip's name and pretrained tag of OpenAI's CLIP ViT-L/14@336px. Here, below the network
# and without torch/open_clip, so that every layer (and the command line's `--help`) reads them from one place.
DEFAULT_BACKBONE = "ViT-L-14-336"
DEFAULT_WEIGHTS = "openai"
AUTHORS_COMMIT = "45ed4dd35c05797d854294b5e8d585c545920089"
_AUTHORS_RAW = f"https://raw.githubusercontent.com/zqhang/AnomalyCLIP/{AUTHORS_COMMIT}/"
_AUTHORS_LICENCE = "MIT (Copyright (c) 2024 Qihang Zhou; THIRD_PARTY_NOTICES)"
# the prompts shipped by default: trained on MVTec AD, the authors' choice for every medical dataset
DEFAULT_PROMPTS = "mvtec-trained"
# the explicit request for freshly initialised prompts (the only case that warns about untrained prompts)
UNTRAINED = "untrained"
# registry name of the CLIP file behind backbone_weights="openai" on the default architecture
BACKBONE_WEIGHTS_NAME = "clip-vit-l-14-336"
URL_BASE_ENV = "ANOMALYCLIP_MED_URL_BASE"
REGISTRY_ENV = "ANOMALYCLIP_MED_REGISTRY"
HASH_TYPES = ("git-blob-sha1", "sha256")


@dataclass(frozen=True)
class NamedWeights:
    """
    One named weights file.

    Attributes:
        name: the name users pass (``mvtec-trained``).
        kind: ``"prompts"`` or ``"backbone"``.
        filename: its name in the cache, in a weights folder and on a mirror.
        url: where it is downloaded from.
        hash_type: ``"git-blob-sha1"`` (SHA-1 of ``b"blob <size>\\0" + content``) or ``"sha256"``.
        hash_val: the expected digest (hex).
        licence: the terms it is published under.
        trained_on: the data it was trained on.
        source: where it comes from, for people (repository, commit, path).
        architecture: backbone files only: the open_clip model name or config it needs; ``None`` reads the
            architecture from the (OpenAI-format) file.
    """

    name: str
    kind: str
    filename: str
    url: str
    hash_type: str
    hash_val: str
    licence: str
    trained_on: str
    source: str
    architecture: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("prompts", "backbone"):
            raise AnomalyCLIPMedError(f"Named weights '{self.name}': kind must be 'prompts' or 'backbone'.")
        if self.hash_type not in HASH_TYPES:
            raise AnomalyCLIPMedError(f"Named weights '{self.name}': hash_type must be one of {HASH_TYPES}.")
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", self.hash_val):
            raise AnomalyCLIPMedError(f"Named weights '{self.name}': hash_val '{self.hash_val}' is not a hex digest.")
        if Path(self.filename).name != self.filename:
            raise AnomalyCLIPMedError(f"Named weights '{self.name}': filename must be a bare file name.")

    @property
    def download_url(self) -> str:
        """``url``, or the file on the mirror named by ``$ANOMALYCLIP_MED_URL_BASE``."""
        base = os.environ.get(URL_BASE_ENV)
        return f"{base.rstrip('/')}/{self.filename}" if base else self.url

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _authors_prompts(name: str, path: str, blob: str, trained_on: str, use: str) -> NamedWeights:
    return NamedWeights(
        name=name, kind="prompts", filename=f"anomalyclip_{name}.pth", url=_AUTHORS_RAW + path,
        hash_type="git-blob-sha1", hash_val=blob, licence=_AUTHORS_LICENCE, trained_on=trained_on,
        source=f"zqhang/AnomalyCLIP@{AUTHORS_COMMIT[:7]} {path} ({use})",
    )


_PROMPTS = (
    # the directory names are the authors': "_visa" is the run that trained on MVTec AD to be tested on VisA
    _authors_prompts("mvtec-trained", "checkpoints/9_12_4_multiscale_visa/epoch_15.pth",
                     "72adc786e031b49ea288ba5f815f0d38cf158708", "MVTec AD test split (CC BY-NC-SA 4.0)",
                     "the authors' prompts for VisA and every medical dataset"),
    _authors_prompts("visa-trained", "checkpoints/9_12_4_multiscale/epoch_15.pth",
                     "c90f1d9d92d158b436a8fc193f984d4cec8b1fc8", "VisA (CC BY 4.0)",
                     "the authors' prompts for MVTec AD"),
)


def _openai_backbone() -> NamedWeights:
    # The URL comes from open_clip's pretrained table (the file its 'openai' tag stands for); OpenAI puts the
    # file's SHA-256 in the URL path, which is how open_clip verifies it too.
    import open_clip

    url = open_clip.get_pretrained_url(DEFAULT_BACKBONE, DEFAULT_WEIGHTS)
    digest = url.rstrip("/").split("/")[-2] if url else ""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise AnomalyCLIPMedError(
            f"open_clip {open_clip.__version__} lists no OpenAI download URL with a SHA-256 for "
            f"{DEFAULT_BACKBONE}/{DEFAULT_WEIGHTS}; pass the CLIP weights file with --backbone-weights PATH."
        )
    return NamedWeights(
        name=BACKBONE_WEIGHTS_NAME, kind="backbone", filename=url.rstrip("/").split("/")[-1], url=url,
        hash_type="sha256", hash_val=digest, licence="MIT (OpenAI CLIP, Copyright (c) 2021 OpenAI)",
        trained_on="OpenAI's 400M image-text pairs (WIT)",
        source=f"OpenAI CLIP ViT-L/14@336px, open_clip {DEFAULT_BACKBONE} / {DEFAULT_WEIGHTS}",
    )


def _overrides() -> dict[str, dict[str, Any]]:
    path = os.environ.get(REGISTRY_ENV)
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AnomalyCLIPMedError(f"Cannot read the weights registry ${REGISTRY_ENV}='{path}': {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise AnomalyCLIPMedError(f"${REGISTRY_ENV}='{path}' must hold a JSON object {{name: {{field: value}}}}.")
    return data


def registry() -> dict[str, NamedWeights]:
    """Every named weights file: the built-in ones with ``$ANOMALYCLIP_MED_REGISTRY`` applied."""
    table = {w.name: w for w in (*_PROMPTS, _openai_backbone())}
    known = {f.name for f in fields(NamedWeights)}
    for name, values in _overrides().items():
        unknown = sorted(set(values) - known)
        if unknown:
            raise AnomalyCLIPMedError(f"${REGISTRY_ENV}: entry '{name}' has unknown field(s) {unknown}; known: "
                                      f"{sorted(known)}.")
        try:
            table[name] = replace(table[name], **values) if name in table else NamedWeights(name=name, **values)
        except TypeError as err:
            raise AnomalyCLIPMedError(f"${REGISTRY_ENV}: entry '{name}': {err}") from None
    return table


def prompt_names() -> list[str]:
    """Names ``--prompts`` accepts besides a file and ``untrained``."""
    return sorted(name for name, w in registry().items() if w.kind == "prompts")


def default_backbone_entry(backbone: str | None, weights: str | None) -> NamedWeights | None:
    """The registry's CLIP file when ``(backbone, weights)`` ask for the default backbone by its open_clip tag."""
    if weights != DEFAULT_WEIGHTS or backbone not in (None, DEFAULT_BACKBONE):
        return None
    return registry()[BACKBONE_WEIGHTS_NAME]
