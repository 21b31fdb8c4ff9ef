"""Errors raised for bad user input: each message names the file or value at fault and how to fix it."""

from __future__ import annotations

__all__ = ["AnomalyCLIPMedError", "MissingWeightsError", "BackboneError", "CheckpointError", "InputError", "OutputExistsError",
           "OutputLockedError"]


class AnomalyCLIPMedError(Exception):
    """Base class of the package's user-facing errors; the CLI prints them without a traceback."""


class MissingWeightsError(AnomalyCLIPMedError, FileNotFoundError):
    """Backbone or prompt weights are not available (file missing, or a download failed offline)."""


class BackboneError(AnomalyCLIPMedError, ValueError):
    """Backbone weights that cannot be read or do not fit the requested architecture."""


class CheckpointError(AnomalyCLIPMedError, ValueError):
    """A prompt checkpoint that cannot be read or does not fit the backbone."""


class InputError(AnomalyCLIPMedError, ValueError):
    """An input image or volume that cannot be used."""


class OutputExistsError(AnomalyCLIPMedError, FileExistsError):
    """An output file exists and overwriting was not asked for."""


class OutputLockedError(AnomalyCLIPMedError, BlockingIOError):
    """Another live run is writing into the same output folder."""
