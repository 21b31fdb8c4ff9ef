"""
Package ``__init__`` exports that import on first use (PEP 562), so that ``from anomalyclip_med.inference import
ScoringOptions`` works as in MONAI while importing one light module (an options dataclass for ``--help``) does not
import its heavy siblings (torch, MONAI, open_clip).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[list[str], Callable[[str], Any]]:
    """
    ``(__all__, __getattr__)`` for a package exporting ``exports`` (``{submodule: (names...)}``).

    Raises:
        ValueError: a name exported by two submodules.
    """
    origin = {}
    for module, names in exports.items():
        for name in names:
            if name in origin:
                raise ValueError(f"{package}: {name!r} is exported by both {origin[name]} and {module}.")
            origin[name] = module

    def __getattr__(name: str) -> Any:
        if name not in origin:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{origin[name]}"), name)

    return sorted(origin, key=str.lower), __getattr__
