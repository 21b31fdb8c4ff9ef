"""
A generic layout for one's own data: an ``images/`` folder with a ``masks/`` folder beside it, or a
``labels.csv`` listing images, labels and (optionally) masks and classes.
"""

from __future__ import annotations

import csv
from pathlib import Path

from anomalyclip_med.data.samples import MaskIndex, Sample, image_files, layout_error
from anomalyclip_med.io.masks import read_mask

__all__ = ["LABELS_CSV", "TREES", "SPLITS", "read"]

LABELS_CSV = "labels.csv"
SPLITS = ("test",)
_LABELS = {"0": 0, "1": 1, "normal": 0, "anomaly": 1, "anomalous": 1}
TREES = {
    "folder": (
        "ROOT/\n"
        "  images/**/*.png       every image; a first-level subfolder names its class (images/liver/001.png)\n"
        "  masks/**/*.png        anomaly masks, same relative folder and name as their image (or name + '_mask');\n"
        "                        an image with a non-empty mask is anomalous, without one (or empty) normal\n"
        "or\n"
        "ROOT/\n"
        "  labels.csv            columns image,label[,mask][,class]: label 0|1 (or normal|anomaly), paths relative\n"
        "                        to ROOT; without a mask column (or with empty masks for anomalies) image-level only\n"
        "  ...                   the files it names"
    )
}


def _read_csv(dataset: str, root: Path, tree: str) -> list[Sample]:
    table = root / LABELS_CSV
    with open(table, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [c.strip().lower() for c in reader.fieldnames or []]
        if "image" not in header or "label" not in header:
            raise layout_error(
                dataset, root, tree, f"'{table}' needs the columns 'image' and 'label' (header: {header})"
            )
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    samples = []
    for line, row in enumerate(rows, start=2):
        label = _LABELS.get(row["label"].lower())
        if label is None:
            raise layout_error(
                dataset, root, tree, f"'{table}' line {line}: label {row['label']!r} is not one of {sorted(_LABELS)}"
            )
        mask = root / row["mask"] if row.get("mask") else None
        samples.append(Sample(root / row["image"], mask, label, row.get("class") or root.name, dataset))
    if not samples:
        raise layout_error(dataset, root, tree, f"'{table}' lists no images")
    return samples


def _read_folders(dataset: str, root: Path, tree: str) -> list[Sample]:
    images_dir, masks_dir = root / "images", root / "masks"
    indexes: dict[Path, MaskIndex] = {}
    samples = []
    for image in image_files(images_dir, dataset, root, tree, recursive=True):
        rel = image.parent.relative_to(images_dir)
        index = indexes.setdefault(rel, MaskIndex(masks_dir / rel))
        mask = index.find(image)
        label = int(bool(mask is not None and read_mask(mask).any()))
        cls_name = rel.parts[0] if rel.parts else root.name
        samples.append(Sample(image, mask, label, cls_name, dataset))
    return samples


def read(dataset: str, root: Path, split: str) -> list[Sample]:
    """Samples from ``labels.csv`` when present, else from ``images/`` + ``masks/``."""
    tree = TREES[dataset]
    if (root / LABELS_CSV).is_file():
        return _read_csv(dataset, root, tree)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return _read_folders(dataset, root, tree)
    raise layout_error(dataset, root, tree, f"neither '{LABELS_CSV}' nor the folders 'images/' + 'masks/' are there")
