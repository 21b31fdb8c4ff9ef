"""Datasets in their native layouts: readers returning :class:`Sample` records, and the torch dataset over them."""

from anomalyclip_med.data.registry import DATASETS, PIXEL_LEVEL, load_samples
from anomalyclip_med.data.samples import DatasetLayoutError, Sample

__all__ = ["DATASETS", "PIXEL_LEVEL", "DatasetLayoutError", "Sample", "load_samples"]
