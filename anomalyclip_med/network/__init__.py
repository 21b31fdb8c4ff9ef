"""
The AnomalyCLIP network: open_clip backbone, DPAM image path, learned prompts, scoring, checkpoints, and the
model factory (:class:`ModelOptions`, :func:`create_model`).

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "backbone": (
            "BackboneInfo", "BackboneSource", "SourceKind", "parse_backbone_source", "check_image_tower",
            "load_backbone", "read_state_dict"
        ),
        "checkpoint": (
            "PROMPT_FORMAT", "PROMPT_FORMAT_VERSION", "NETWORK_PREFIX", "read_prompt_checkpoint", "load_prompt_state",
            "save_prompt_checkpoint", "load_failure", "prompt_state_from"
        ),
        "config": ("REFERENCE_SEED", "PRECISION_NAMES", "PROMPT_SHAPE_SETTINGS", "AnomalyCLIPConfig"),
        "factory": (
            "RANDOM_WEIGHTS", "PRECISION_CHOICES", "AUTO_PRECISION", "AUTO_PRECISION_TOLERANCE", "ModelOptions",
            "resolve_device", "resolve_precision", "create_model"
        ),
        "materialize": ("build_on_meta", "load_into_meta"),
        "model": ("PRECISIONS", "AnomalyCLIPForward", "AnomalyCLIPOutput", "AnomalyCLIP", "scores_from_forward"),
        "net": ("OUTPUT_CHANNELS", "AnomalyCLIPNet", "as_anomalyclip", "network_state", "save_network_state"),
        "prompt_learner": ("PROMPT_TEMPLATES", "PromptLearner", "encode_text_with_prompts"),
        "scoring": ("similarity_probs", "similarity_maps", "layer_anomaly_maps", "gaussian_smooth"),
        "visual": ("resize_positional_embedding", "patch_grid", "dpam_forward"),
    },
)
