"""anomalyclip_med: AnomalyCLIP zero-shot anomaly detection for medical scans and images, on MONAI and open_clip."""

from anomalyclip_med._exports import lazy_exports

__version__ = "0.1.0"

# imported on first use, so that `anomalyclip-med --help` and the option dataclasses do not wait for torch
_exports, __getattr__ = lazy_exports(
    __name__, {"network.config": ("AnomalyCLIPConfig",), "network.model": ("AnomalyCLIP", "AnomalyCLIPOutput")}
)
__all__ = ["__version__", *_exports]
