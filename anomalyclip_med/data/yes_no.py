"""
Brain MRI sets published as two folders, ``yes/`` (tumour) and ``no/`` (normal): BrainMRI (Kaggle
"brain-mri-images-for-brain-tumor-detection") and Br35H. Image-level labels only; other folders (Br35H's
unlabelled ``pred/``) are not read.
"""

from __future__ import annotations

from pathlib import Path

from anomalyclip_med.data.samples import Sample, image_files, require_dir

__all__ = ["TREES", "SPLITS", "read"]

SPLITS = ("test",)
_TREE = (
    "ROOT/\n"
    "  yes/*.jpg    images with a tumour (label 1)\n"
    "  no/*.jpg     normal images (label 0)\n"
    "               (any of png/jpg/jpeg/tif/bmp, any case; {other})"
)
TREES = {
    "brainmri": _TREE.format(other="Kaggle's download puts both in brain_tumor_dataset/: pass that folder"),
    "br35h": _TREE.format(other="Br35H's unlabelled pred/ folder is ignored"),
}


def read(dataset: str, root: Path, split: str) -> list[Sample]:
    """Every image of ``yes/`` and ``no/`` (the whole set is the test set, as in the paper)."""
    tree = TREES[dataset]
    samples = []
    for folder, label in (("yes", 1), ("no", 0)):
        for image in image_files(require_dir(root / folder, dataset, root, tree), dataset, root, tree):
            samples.append(Sample(image, None, label, "brain", dataset, folder))
    return samples
