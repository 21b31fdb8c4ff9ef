"""
HeadCT as published on Kaggle ("head-ct-hemorrhage"): numbered PNG slices and ``labels.csv`` (``id, hemorrhage``).
Image-level labels only.
"""

from __future__ import annotations

import csv
from pathlib import Path

from anomalyclip_med.data.samples import Sample, image_files, layout_error

__all__ = ["TREES", "SPLITS", "read"]

SPLITS = ("test",)
TREES = {
    "headct": (
        "ROOT/\n"
        "  labels.csv           id, hemorrhage   (0..199; 1 = hemorrhage, 0 = normal)\n"
        "  head_ct/000.png ...  one slice per id, named by the zero-padded id (Kaggle's download nests it in\n"
        "                       head_ct/head_ct/, also accepted)"
    )
}


def read(dataset: str, root: Path, split: str) -> list[Sample]:
    """Every slice listed in ``labels.csv`` (the whole set is the test set, as in the paper)."""
    tree = TREES[dataset]
    table = root / "labels.csv"
    if not table.is_file():
        raise layout_error(dataset, root, tree, "'labels.csv' is missing")
    by_id: dict[int, Path] = {}
    for image in image_files(root, dataset, root, tree, recursive=True):
        if image.stem.isdigit():
            index = int(image.stem)
            if index in by_id:
                raise layout_error(dataset, root, tree, f"two slices for id {index}: '{by_id[index]}' and '{image}'")
            by_id[index] = image
    with open(table, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [c.strip().lower() for c in next(reader, [])]
        if header[:2] != ["id", "hemorrhage"]:
            raise layout_error(dataset, root, tree, f"'{table}' header is {header}, expected ['id', 'hemorrhage']")
        rows = [[c.strip() for c in row] for row in reader if any(c.strip() for c in row)]
    samples = []
    for line, row in enumerate(rows, start=2):
        try:
            index, label = int(row[0]), int(row[1])
        except (ValueError, IndexError):
            raise layout_error(dataset, root, tree, f"'{table}' line {line} is {row}, expected two integers") from None
        if index not in by_id:
            raise layout_error(dataset, root, tree, f"no image for id {index} ('{index:03d}.png') listed in '{table}'")
        if label not in (0, 1):
            raise layout_error(dataset, root, tree, f"'{table}' line {line}: hemorrhage must be 0 or 1, got {label}")
        samples.append(
            Sample(by_id[index], None, label, "brain", dataset, "hemorrhage" if label else "normal")
        )
    if not samples:
        raise layout_error(dataset, root, tree, f"'{table}' lists no slices")
    return samples
