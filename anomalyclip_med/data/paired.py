"""
Medical segmentation sets published as an image folder and a mask folder, every image anomalous with its mask
(ISIC 2016, CVC-ClinicDB, CVC-ColonDB, Kvasir-SEG, EndoTect, TN3K). Masks are tied to images by name
(same stem, or stem + "_Segmentation" / "_mask"), not by listing order.
"""

from __future__ import annotations

from pathlib import Path

from anomalyclip_med.data.samples import MaskIndex, Sample, image_files, layout_error

__all__ = ["FOLDERS", "CLASS_NAME", "TREES", "SPLITS", "read"]

# dataset -> split -> accepted (image folder, mask folder) pairs, first found wins
FOLDERS: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "isic": {
        "test": (("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"),),
        "train": (("ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth"),),
    },
    "clinicdb": {"test": (("images", "masks"), ("Original", "Ground Truth"), ("PNG/Original", "PNG/Ground Truth"))},
    "colondb": {"test": (("images", "masks"),)},
    "kvasir": {"test": (("images", "masks"),)},
    "endo": {"test": (("images", "masks"),)},
    "tn3k": {"test": (("test-image", "test-mask"),), "train": (("trainval-image", "trainval-mask"),)},
}
CLASS_NAME = {"isic": "skin", "clinicdb": "colon", "colondb": "colon", "kvasir": "colon", "endo": "colon",
              "tn3k": "thyroid"}
SPLITS = {name: tuple(splits) for name, splits in FOLDERS.items()}
_NOTES = {
    "isic": "ISIC_0000003.jpg -> ISIC_0000003_Segmentation.png",
    "clinicdb": "PraNet's test split layout; the official download's Original/ + 'Ground Truth/' (TIFF) also works",
    "colondb": "PraNet's test split layout",
    "kvasir": "Kvasir-SEG as published (JPEG masks); also PraNet's Kvasir test split",
    "endo": "EndoTect 2020 segmentation test set",
    "tn3k": "TN3K as published; split 'train' reads trainval-image/ + trainval-mask/",
}


def _tree(dataset: str) -> str:
    images, masks = FOLDERS[dataset]["test"][0]
    width = max(len(images), len(masks)) + 6
    return (
        f"ROOT/\n"
        f"{'  ' + images + '/*':<{width}}images, all anomalous (label 1)\n"
        f"{'  ' + masks + '/*':<{width}}one mask per image: same name, or name + '_Segmentation' / '_mask'\n"
        f"  ({_NOTES[dataset]})"
    )


TREES = {name: _tree(name) for name in FOLDERS}


def read(dataset: str, root: Path, split: str) -> list[Sample]:
    """Every image of the split's image folder with its mask."""
    tree = TREES[dataset]
    pairs = FOLDERS[dataset][split]
    found = next(((root / i, root / m) for i, m in pairs if (root / i).is_dir() and (root / m).is_dir()), None)
    if found is None:
        wanted = " or ".join(f"'{i}/' + '{m}/'" for i, m in pairs)
        raise layout_error(dataset, root, tree, f"the folders {wanted} are missing")
    images, masks = found[0], MaskIndex(found[1])
    return [
        Sample(image, masks.get(image, dataset, root, tree), 1, CLASS_NAME[dataset], dataset)
        for image in image_files(images, dataset, root, tree)
    ]
