"""
VisA in its published layout with the authors' split file ``split_csv/1cls.csv``
(columns ``object, split, label, image, mask``; paths relative to the root; label "normal" or "anomaly").
"""

from __future__ import annotations

import csv
from pathlib import Path

from anomalyclip_med.data.samples import Sample, layout_error

__all__ = ["SPLIT_CSV", "TREES", "SPLITS", "read"]

SPLIT_CSV = Path("split_csv") / "1cls.csv"
SPLITS = ("train", "test")
_COLUMNS = ("object", "split", "label", "image", "mask")
_LABELS = {"normal": 0, "anomaly": 1}
TREES = {
    "visa": (
        "ROOT/\n"
        "  split_csv/1cls.csv             object,split,label,image,mask (label normal|anomaly; paths from ROOT)\n"
        "  <class>/Data/Images/Normal/*.JPG       (candle, capsules, ..., pipe_fryum)\n"
        "  <class>/Data/Images/Anomaly/*.JPG\n"
        "  <class>/Data/Masks/Anomaly/*.png       masks (0 = normal, defect ids or 255 = anomalous)"
    )
}


def read(dataset: str, root: Path, split: str) -> list[Sample]:
    """Samples of ``split`` listed in ``ROOT/split_csv/1cls.csv``."""
    tree = TREES[dataset]
    table = root / SPLIT_CSV
    if not table.is_file():
        raise layout_error(dataset, root, tree, f"the split file '{SPLIT_CSV}' is missing")
    with open(table, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in _COLUMNS if c not in header]
        if missing:
            raise layout_error(dataset, root, tree, f"'{table}' lacks the column(s) {missing} (header: {header})")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    samples = []
    for line, row in enumerate(rows, start=2):
        if row["split"] != split:
            continue
        if row["label"] not in _LABELS:
            raise layout_error(
                dataset, root, tree, f"'{table}' line {line}: label {row['label']!r} is not 'normal' or 'anomaly'"
            )
        label = _LABELS[row["label"]]
        if label and not row["mask"]:
            raise layout_error(dataset, root, tree, f"'{table}' line {line}: an anomalous image without a mask path")
        mask = root / row["mask"] if label else None
        samples.append(Sample(root / row["image"], mask, label, row["object"], dataset))
    if not samples:
        raise layout_error(dataset, root, tree, f"'{table}' lists no '{split}' images")
    return samples
