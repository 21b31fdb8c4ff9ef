"""What a run prints: third-party notices that say nothing about the user's data are kept off the console."""

from __future__ import annotations

import logging
import warnings

__all__ = ["NOISY_LOGGERS", "NOISY_WARNINGS", "quiet_third_party"]

# Loggers and warnings seen in normal score / evaluate / bundle runs on a machine without GPU image decoding;
# each repeats for every scan and none is about the scan. `--verbose` shows them.
NOISY_LOGGERS = (
    "monai.data.nvimgcodec_pydicom_plugin",  # "nvImageCodec is not available; skipping pydicom decoder plugin ..."
)
NOISY_WARNINGS = (
    r"NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register",  # MONAI's LoadImage, per scan
)


def quiet_third_party(verbose: bool = False) -> None:
    """
    Filter the third-party notices of :data:`NOISY_LOGGERS` and :data:`NOISY_WARNINGS`; with ``verbose``, show
    every warning instead (``DeprecationWarning`` included) and leave all loggers as they are. This package's
    own warnings (random weights, untrained prompts) are shown either way.
    """
    if verbose:
        warnings.simplefilter("default")
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
