"""
The original authors' ``meta.json`` index (written by their ``generate_dataset_json`` scripts):
``{"train": {class: [entry, ...]}, "test": {...}}``, each entry with ``img_path``, ``mask_path`` ("" when
none), ``cls_name``, ``specie_name`` and ``anomaly`` (0/1); paths relative to the root, or absolute.
"""

from __future__ import annotations

import json
from pathlib import Path

from anomalyclip_med.data.samples import Sample, layout_error

__all__ = ["TREES", "SPLITS", "read"]

SPLITS = ("train", "test")
_KEYS = ("img_path", "mask_path", "cls_name", "anomaly")
TREES = {
    "meta": (
        "ROOT/\n"
        "  meta.json     {\"train\": {...}, \"test\": {\"<class>\": [{\"img_path\": \"<class>/test/crack/000.png\",\n"
        "                 \"mask_path\": \"<class>/ground_truth/crack/000_mask.png\" (or \"\"),\n"
        "                 \"cls_name\": \"<class>\", \"specie_name\": \"crack\", \"anomaly\": 1}, ...]}}\n"
        "  ...           the images and masks it names (relative to ROOT, or absolute)"
    )
}


def read(dataset: str, root: Path, split: str) -> list[Sample]:
    """Samples of ``split`` listed in ``ROOT/meta.json``."""
    tree = TREES[dataset]
    path = root / "meta.json"
    if not path.is_file():
        raise layout_error(dataset, root, tree, "'meta.json' is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise layout_error(dataset, root, tree, f"'{path}' is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get(split), dict):
        keys = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise layout_error(dataset, root, tree, f"'{path}' has no '{split}' section (top-level keys: {keys})")
    samples = []
    for cls_name, entries in meta[split].items():
        for i, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            if not isinstance(entry, dict) or any(k not in entry for k in _KEYS):
                raise layout_error(
                    dataset, root, tree, f"'{path}' {split}/{cls_name}[{i}] lacks one of the keys {list(_KEYS)}"
                )
            label = int(entry["anomaly"])
            mask_path = str(entry["mask_path"] or "")
            # the authors point image-level-only anomalies at a folder or at "": no pixel annotation
            mask = root / mask_path if label and mask_path and not (root / mask_path).is_dir() else None
            samples.append(
                Sample(root / entry["img_path"], mask, label, str(entry["cls_name"]), dataset,
                       str(entry.get("specie_name", "")))
            )
    if not samples:
        raise layout_error(dataset, root, tree, f"'{path}' lists no '{split}' images")
    return samples
