"""
Datasets in their native layouts: readers returning :class:`Sample` records, and the torch dataset over them.

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "registry": ("DATASETS", "PIXEL_LEVEL", "load_samples"),
        "samples": (
            "Sample", "DatasetLayoutError", "MASK_SUFFIXES", "describe_folder", "layout_error", "require_dir",
            "image_files", "MaskIndex"
        ),
        "dataset": ("AnomalyDataset", "verify_samples"),
    },
)
