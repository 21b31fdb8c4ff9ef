"""
BMAD (Bao et al., "BMAD: Benchmarks for Medical Anomaly Detection", CVPRW 2024): six medical sets reorganised into
one tree each, ``train/good`` (normal only), ``valid`` and ``test`` with ``good`` and ``Ungood`` images; the three
sets with pixel labels keep images in ``img/`` and masks in ``label/``.

BMAD's "Brain MRI" is slices of BraTS2021 (FLAIR) - not the 2D Kaggle "BrainMRI" set AnomalyCLIP's paper reports
(``brainmri``); numbers on one are not comparable with numbers on the other.
"""

from __future__ import annotations

from pathlib import Path

from anomalyclip_med.data.samples import MaskIndex, Sample, image_files, layout_error, require_dir

__all__ = ["SETS", "PIXEL_SETS", "TREES", "SPLITS", "read"]

SPLITS = ("train", "valid", "test")
# dataset name -> (class name, what it is, pixel labels)
SETS: dict[str, tuple[str, str, bool]] = {
    "bmad-brain": ("brain", "Brain MRI: BraTS2021 FLAIR slices (not AnomalyCLIP's Kaggle BrainMRI)", True),
    "bmad-liver": ("liver", "Liver CT: BTCV (normal) + LiTS (tumour) slices", True),
    "bmad-resc": ("retina_resc", "Retinal OCT: RESC", True),
    "bmad-oct2017": ("retina_oct2017", "Retinal OCT: OCT2017", False),
    "bmad-rsna": ("chest", "Chest X-ray: RSNA pneumonia", False),
    "bmad-camelyon16": ("histopathology", "Histopathology: Camelyon16 patches", False),
}
PIXEL_SETS = tuple(name for name, (_, _, pixel) in SETS.items() if pixel)
NORMAL, ANOMALOUS = "good", "Ungood"


def _tree(dataset: str) -> str:
    _, what, pixel = SETS[dataset]
    if pixel:
        lines = [
            ("  train/good/img/*.png", "normal images only (what 'calibrate' uses)"),
            ("  valid/good/img/*.png", "normal (label 0)"),
            ("  valid/Ungood/img/*.png", "anomalous (label 1)"),
            ("  valid/Ungood/label/*.png", "their masks, same file name"),
            ("  test/...", "as valid/"),
        ]
    else:
        lines = [
            ("  train/good/*.png", "normal images only (what 'calibrate' uses)"),
            ("  valid/good/*.png", "normal (label 0)"),
            ("  valid/Ungood/*.png", "anomalous (label 1); image-level labels only"),
            ("  test/...", "as valid/"),
        ]
    return f"ROOT/   (BMAD {what})\n" + "\n".join(f"{left:<30}{right}" for left, right in lines)


TREES = {name: _tree(name) for name in SETS}


def read(dataset: str, root: Path, split: str) -> list[Sample]:
    """``split``'s normal (``good``) then anomalous (``Ungood``, absent from ``train``) images, with masks for the
    pixel-level sets."""
    tree = TREES[dataset]
    cls_name, _, pixel = SETS[dataset]
    split_dir = require_dir(root / split, dataset, root, tree)
    samples = []
    for folder, label in ((NORMAL, 0), (ANOMALOUS, 1)):
        group = split_dir / folder
        if label and split == "train" and not group.exists():
            continue  # the training split is normal only
        images = require_dir(group / "img", dataset, root, tree) if pixel else require_dir(group, dataset, root, tree)
        masks = MaskIndex(require_dir(group / "label", dataset, root, tree)) if pixel and label else None
        for image in image_files(images, dataset, root, tree):
            mask = masks.get(image, dataset, root, tree) if masks is not None else None
            samples.append(Sample(image, mask, label, cls_name, dataset, folder))
    if split == "train" and any(s.label for s in samples):
        raise layout_error(dataset, root, tree, "'train/' holds anomalous images; BMAD's training split is normal only")
    return samples
