"""The AnomalyCLIP network: open_clip backbone, DPAM image path, learned prompts, scoring, checkpoints."""

from anomalyclip_med.network.backbone import BackboneInfo, load_backbone
from anomalyclip_med.network.config import REFERENCE_SEED, AnomalyCLIPConfig
from anomalyclip_med.network.factory import ModelOptions, create_model, resolve_device
from anomalyclip_med.network.model import AnomalyCLIP, AnomalyCLIPForward, AnomalyCLIPOutput, scores_from_forward
from anomalyclip_med.network.net import OUTPUT_CHANNELS, AnomalyCLIPNet

__all__ = [
    "AnomalyCLIP",
    "AnomalyCLIPConfig",
    "AnomalyCLIPForward",
    "AnomalyCLIPNet",
    "AnomalyCLIPOutput",
    "BackboneInfo",
    "ModelOptions",
    "OUTPUT_CHANNELS",
    "REFERENCE_SEED",
    "create_model",
    "load_backbone",
    "resolve_device",
    "scores_from_forward",
]
