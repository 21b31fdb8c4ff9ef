"""anomalyclip_med: AnomalyCLIP zero-shot anomaly detection for medical scans and images, on MONAI and open_clip."""

__version__ = "0.1.0"

from anomalyclip_med.network.config import AnomalyCLIPConfig  # noqa: E402
from anomalyclip_med.network.model import AnomalyCLIP, AnomalyCLIPOutput  # noqa: E402

__all__ = ["__version__", "AnomalyCLIP", "AnomalyCLIPConfig", "AnomalyCLIPOutput"]
