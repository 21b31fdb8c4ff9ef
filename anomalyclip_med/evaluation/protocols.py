"""
Metric sets of the published protocols, so that tables line up with the papers one compares against.

- ``anomalyclip``: AnomalyCLIP's tables (image AUROC/AP, pixel AUROC/AUPRO, plus max-F1 and pixel AP).
- ``bmad``: BMAD (Bao et al. 2024): image AUROC, pixel AUROC and PRO (AUPRO) - MVFA, AA-CLIP and UniVAD report
  on its trees.
- ``medianomaly``: MedIAnomaly (Cai et al. 2024): image AUROC and AP; pixel AUROC, AP and best Dice.
"""

from __future__ import annotations

from anomalyclip_med.data import bmad, medianomaly

__all__ = ["METRIC_SETS", "default_metric_set", "dataset_note"]

METRIC_SETS: dict[str, tuple[str, ...]] = {
    "anomalyclip": ("image_auroc", "image_ap", "pixel_auroc", "aupro", "image_max_f1", "pixel_ap"),
    "bmad": ("image_auroc", "pixel_auroc", "aupro"),
    "medianomaly": ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "best_dice"),
}

# The same words name different data: reports say which one was used
_NOTES = {
    "brainmri": "AnomalyCLIP's 'BrainMRI' is the 2D Kaggle brain-tumour set; not comparable with BMAD's Brain MRI "
                "(BraTS2021 slices).",
    "bmad-brain": "BMAD's Brain MRI is BraTS2021 FLAIR slices; not comparable with AnomalyCLIP's 'BrainMRI' (2D "
                  "Kaggle set).",
    "medianomaly-brats2021": "MedIAnomaly's BraTS2021 slices; not comparable with AnomalyCLIP's 'BrainMRI' (2D Kaggle "
                             "set).",
}


def default_metric_set(dataset: str) -> str:
    """The metric set of the protocol a dataset layout comes from."""
    if dataset in bmad.SETS:
        return "bmad"
    if dataset in medianomaly.SETS:
        return "medianomaly"
    return "anomalyclip"


def dataset_note(dataset: str) -> str | None:
    """A caution printed with a dataset's table where its name is shared by another set, else None."""
    return _NOTES.get(dataset)
