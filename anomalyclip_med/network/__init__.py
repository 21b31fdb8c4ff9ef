"""The AnomalyCLIP network: open_clip backbone, DPAM image path, learned prompts, scoring, checkpoints."""

from anomalyclip_med.network.backbone import BackboneInfo, load_backbone
from anomalyclip_med.network.config import AnomalyCLIPConfig
from anomalyclip_med.network.model import AnomalyCLIP, AnomalyCLIPForward, AnomalyCLIPOutput

__all__ = ["AnomalyCLIP", "AnomalyCLIPConfig", "AnomalyCLIPForward", "AnomalyCLIPOutput", "BackboneInfo", "load_backbone"]
