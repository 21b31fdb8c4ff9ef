"""
MONAI transforms of the package: loading and saving (scans, 2D images, scores reports), intensity
presets, slicing, a scored volume's map and labelmap, and the 2D preprocessing; array transforms and their
dictionary (``...d``) forms, as MONAI's.

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "image2d": ("OPENAI_DATASET_MEAN", "OPENAI_DATASET_STD", "image_transform", "mask_transform"),
        "windows": ("CT_WINDOWS", "PRESETS"),
        "intensity": ("PRESET_META_KEY", "CTWindow", "PercentileNormalize", "PresetChoice", "IntensityPreset"),
        "slicing": (
            "PLANES", "SliceGeometry", "resolve_axis", "slice_geometry", "SliceToNetworkInput", "SliceForeground",
            "BodyMask"
        ),
        "load2d": ("LoadImage2D", "LoadMask2D", "LoadImage2Dd", "LoadMask2Dd"),
        "io": ("LoadScan", "LoadScand"),
        "outputs": ("AnomalyOutputs", "AnomalyOutputsd"),
        "dictionary": (
            "CTWindowd", "PercentileNormalized", "IntensityPresetd", "SliceForegroundd", "SliceToNetworkInputd"
        ),
    },
)
