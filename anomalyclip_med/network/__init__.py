"""The AnomalyCLIP network: open_clip backbone, DPAM image path, learned prompts, scoring, checkpoints."""

from anomalyclip_med.network.backbone import BackboneInfo, load_backbone
from anomalyclip_med.network.config import REFERENCE_SEED, AnomalyCLIPConfig
from anomalyclip_med.network.factory import ModelOptions, create_model, resolve_device
from anomalyclip_med.network.model import AnomalyCLIP, AnomalyCLIPForward, AnomalyCLIPOutput

__all__ = [
    "AnomalyCLIP",
    "AnomalyCLIPConfig",
    "AnomalyCLIPForward",
    "AnomalyCLIPOutput",
    "BackboneInfo",
    "ModelOptions",
    "REFERENCE_SEED",
    "create_model",
    "load_backbone",
    "resolve_device",
]
