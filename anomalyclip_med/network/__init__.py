"""The AnomalyCLIP network: open_clip backbone, DPAM image path, learned prompts, scoring, checkpoints."""

from anomalyclip_med.network.backbone import BackboneInfo, load_backbone
from anomalyclip_med.network.config import AnomalyCLIPConfig
from anomalyclip_med.network.model import AnomalyCLIP, AnomalyCLIPForward, AnomalyCLIPOutput, scores_from_forward
from anomalyclip_med.network.net import OUTPUT_CHANNELS, AnomalyCLIPNet

__all__ = [
    "AnomalyCLIP",
    "AnomalyCLIPConfig",
    "AnomalyCLIPForward",
    "AnomalyCLIPNet",
    "AnomalyCLIPOutput",
    "BackboneInfo",
    "OUTPUT_CHANNELS",
    "load_backbone",
    "scores_from_forward",
]
