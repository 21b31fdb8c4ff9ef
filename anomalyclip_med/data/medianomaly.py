"""
MedIAnomaly (Cai et al., "MedIAnomaly: A comparative study of anomaly detection in medical images", 2024): seven
pre-processed sets in three layouts - an ``images/`` folder indexed by ``data.json`` (RSNA, VinCXR, BrainTumor,
LAG), ``train/good`` + ``test/{good,Ungood}`` folders (Camelyon16), and BraTS2021 slices with ``test/annotation``
masks; ISIC2018 Task 3 keeps the challenge's CSV ground truth (NV = normal).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from anomalyclip_med.data.samples import Sample, image_files, layout_error, require_dir

__all__ = ["SETS", "TREES", "SPLITS", "read"]

SPLITS = ("train", "test")
_JSON_TREE = (
    "ROOT/   (MedIAnomaly {what})\n"
    "  images/*.png                every image\n"
    "  data.json                   {{\"train\": {{\"0\": [names]}}, \"test\": {{\"0\": [normal names], \"1\": [anomalous "
    "names]}}}}\n"
    "                              (train is normal only: what 'calibrate' uses)"
)
# dataset name -> (layout, class name, description)
SETS: dict[str, tuple[str, str, str]] = {
    "medianomaly-rsna": ("json", "chest", "RSNA chest X-ray"),
    "medianomaly-vincxr": ("json", "chest", "VinDr-CXR chest X-ray"),
    "medianomaly-braintumor": ("json", "brain", "Brain Tumor MRI (2D, Kaggle)"),
    "medianomaly-lag": ("json", "fundus", "LAG glaucoma fundus"),
    "medianomaly-isic2018": ("isic", "skin", "ISIC2018 Task 3 dermoscopy"),
    "medianomaly-camelyon16": ("folders", "histopathology", "Camelyon16 patches"),
    "medianomaly-brats2021": ("brats", "brain", "BraTS2021 FLAIR slices"),
}
_TREES = {
    "json": _JSON_TREE,
    "isic": (
        "ROOT/   (MedIAnomaly {what})\n"
        "  ISIC2018_Task3_Training_Input/*.jpg\n"
        "  ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv   image,MEL,NV,...: NV = 1 normal\n"
        "  ISIC2018_Task3_Test_Input/*.jpg\n"
        "  ISIC2018_Task3_Test_GroundTruth/ISIC2018_Task3_Test_GroundTruth.csv           (train: the NV images only)"
    ),
    "folders": (
        "ROOT/   (MedIAnomaly {what})\n"
        "  train/good/*.png            normal images only (what 'calibrate' uses)\n"
        "  test/good/*.png             normal (label 0)\n"
        "  test/Ungood/*.png           anomalous (label 1)"
    ),
    "brats": (
        "ROOT/   (MedIAnomaly {what}; not AnomalyCLIP's Kaggle BrainMRI)\n"
        "  train/*.png                 normal slices only (what 'calibrate' uses)\n"
        "  test/normal/*.png           normal (label 0)\n"
        "  test/tumor/*flair*.png      anomalous (label 1)\n"
        "  test/annotation/*seg*.png   their masks: the image's name with 'flair' -> 'seg'"
    ),
}
TREES = {name: _TREES[layout].format(what=what) for name, (layout, _, what) in SETS.items()}


def _read_json(dataset: str, root: Path, split: str, tree: str, cls_name: str) -> list[Sample]:
    index = root / "data.json"
    if not index.is_file():
        raise layout_error(dataset, root, tree, "'data.json' is missing")
    try:
        groups = json.loads(index.read_text(encoding="utf-8-sig"))[split]
        lists = [(label, list(groups[str(label)])) for label in ((0,) if split == "train" else (0, 1))]
    except (ValueError, KeyError, TypeError) as err:
        raise layout_error(dataset, root, tree, f"'{index}' has no '{split}' lists ({type(err).__name__}: {err})") \
            from None
    images = require_dir(root / "images", dataset, root, tree)
    return [Sample(images / name, None, label, cls_name, dataset, "normal" if label == 0 else "abnormal")
            for label, names in lists for name in names]


def _read_isic(dataset: str, root: Path, split: str, tree: str, cls_name: str) -> list[Sample]:
    part = "Training" if split == "train" else "Test"
    images = require_dir(root / f"ISIC2018_Task3_{part}_Input", dataset, root, tree)
    table = root / f"ISIC2018_Task3_{part}_GroundTruth" / f"ISIC2018_Task3_{part}_GroundTruth.csv"
    if not table.is_file():
        raise layout_error(dataset, root, tree, f"'{table.relative_to(root)}' is missing")
    samples = []
    with open(table, newline="", encoding="utf-8-sig") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                normal = float(row["NV"]) == 1.0
                name = row["image"].strip()
            except (KeyError, ValueError, AttributeError):
                raise layout_error(dataset, root, tree, f"'{table}' line {line} has no image / numeric NV column") \
                    from None
            if split == "train" and not normal:
                continue
            samples.append(Sample(images / f"{name}.jpg", None, int(not normal), cls_name, dataset,
                                  "NV" if normal else "other"))
    return samples


def _read_folders(dataset: str, root: Path, split: str, tree: str, cls_name: str) -> list[Sample]:
    groups = (("good", 0),) if split == "train" else (("good", 0), ("Ungood", 1))
    split_dir = require_dir(root / split, dataset, root, tree)
    return [Sample(image, None, label, cls_name, dataset, folder) for folder, label in groups
            for image in image_files(require_dir(split_dir / folder, dataset, root, tree), dataset, root, tree)]


def _read_brats(dataset: str, root: Path, split: str, tree: str, cls_name: str) -> list[Sample]:
    if split == "train":
        folder = require_dir(root / "train", dataset, root, tree)
        return [Sample(p, None, 0, cls_name, dataset, "normal") for p in image_files(folder, dataset, root, tree)]
    test = require_dir(root / "test", dataset, root, tree)
    normal = image_files(require_dir(test / "normal", dataset, root, tree), dataset, root, tree)
    tumour = image_files(require_dir(test / "tumor", dataset, root, tree), dataset, root, tree)
    annotation = require_dir(test / "annotation", dataset, root, tree)
    samples = [Sample(p, None, 0, cls_name, dataset, "normal") for p in normal]
    for image in tumour:
        mask = annotation / image.name.replace("flair", "seg")
        if not mask.is_file():
            raise layout_error(dataset, root, tree, f"no mask '{mask.name}' for '{image}' in '{annotation}'",
                               found=annotation)
        samples.append(Sample(image, mask, 1, cls_name, dataset, "tumor"))
    return samples


_READERS = {"json": _read_json, "isic": _read_isic, "folders": _read_folders, "brats": _read_brats}


def read(dataset: str, root: Path, split: str) -> list[Sample]:
    """``split``'s normal then anomalous images (train: normal only) in MedIAnomaly's layout of ``dataset``."""
    layout, cls_name, _ = SETS[dataset]
    return _READERS[layout](dataset, root, split, TREES[dataset], cls_name)
