"""
MVTec AD-style trees: MVTec AD, MPDD, BTAD and DTD-Synthetic share them.

``<class>/<split>/<defect type>/<image>`` with the normal images in one defect-type folder ("good", BTAD: "ok"),
and the masks of each defect type in ``<class>/ground_truth/<defect type>/``, tied to their image by name
(``000.png`` -> ``000_mask.png`` or ``000.png``), not by listing order.
"""

from __future__ import annotations

from pathlib import Path

from anomalyclip_med.data.samples import MaskIndex, Sample, image_files, layout_error, require_dir

__all__ = ["NORMAL_FOLDER", "TREES", "SPLITS", "read"]

NORMAL_FOLDER = {"mvtec": "good", "mpdd": "good", "btad": "ok", "dtd": "good"}
_EXAMPLES = {
    "mvtec": ("bottle, cable, ..., zipper", "broken_large/000.png", "000_mask.png"),
    "mpdd": ("bracket_black, ..., tubes", "hole/000.png", "000_mask.png"),
    "btad": ("01, 02, 03", "ko/0000.bmp", "0000.png"),
    "dtd": ("Woven_001, ..., Matted_069", "bad/000.png", "000_mask.png"),
}
SPLITS = ("train", "test")


def _tree(dataset: str) -> str:
    classes, defect, mask = _EXAMPLES[dataset]
    good = NORMAL_FOLDER[dataset]
    lines = [
        ("  <class>/", f"({classes})"),
        (f"    train/{good}/*.png", "normal training images"),
        (f"    test/{good}/*.png", "normal test images (label 0)"),
        ("    test/<defect>/*.png", f"anomalous test images (label 1), e.g. {defect}"),
        ("    ground_truth/<defect>/*", f"their masks: the image's name, or name + '_mask', e.g. {mask}"),
    ]
    return "ROOT/\n" + "\n".join(f"{left:<30}{right}" for left, right in lines)


TREES = {name: _tree(name) for name in NORMAL_FOLDER}


def read(dataset: str, root: Path, split: str) -> list[Sample]:
    """Samples of ``split`` in every class folder of an MVTec AD-style ``root``."""
    tree = TREES[dataset]
    normal = NORMAL_FOLDER[dataset]
    classes = sorted((d for d in root.iterdir() if d.is_dir() and (d / split).is_dir()), key=lambda d: d.name)
    if not classes:
        raise layout_error(dataset, root, tree, f"no class folder with a '{split}/' subfolder")
    samples = []
    for cls_dir in classes:
        split_dir = cls_dir / split
        species = sorted((d for d in split_dir.iterdir() if d.is_dir()), key=lambda d: d.name)
        if not species:
            raise layout_error(dataset, root, tree, f"'{split_dir}' has no defect-type folders", found=split_dir)
        for specie_dir in species:
            anomalous = specie_dir.name != normal
            masks = None
            if anomalous:
                masks = MaskIndex(require_dir(cls_dir / "ground_truth" / specie_dir.name, dataset, root, tree))
            for image in image_files(specie_dir, dataset, root, tree):
                mask = masks.get(image, dataset, root, tree) if masks is not None else None
                samples.append(Sample(image, mask, int(anomalous), cls_dir.name, dataset, specie_dir.name))
    return samples
