"""Small dataset trees in each published layout, written by the tests themselves (no ../shared needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (40, 32)  # width, height


def image(path: Path, size: tuple[int, int] = SIZE, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def mask(path: Path, size: tuple[int, int] = SIZE, value: int = 255, box=(5, 5, 15, 12)) -> Path:
    """A mask with one anomalous rectangle (x0, y0, x1, y1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size[1], size[0]), np.uint8)
    a[box[1]:box[3], box[0]:box[2]] = value
    Image.fromarray(a).save(path)
    return path


def mvtec(root: Path, normal: str = "good", mask_suffix: str = "_mask", ext: str = ".png") -> Path:
    """Two classes; class 'b' has two defect types; train split with normal images only."""
    for cls, defects in (("a", ("crack",)), ("b", ("hole", "scratch"))):
        image(root / cls / "train" / normal / f"000{ext}")
        image(root / cls / "test" / normal / f"000{ext}")
        image(root / cls / "test" / normal / f"001{ext}")
        for d in defects:
            for name in ("000", "001"):
                image(root / cls / "test" / d / f"{name}{ext}")
                mask(root / cls / "ground_truth" / d / f"{name}{mask_suffix}.png")
    (root / "license.txt").write_text("not a class")
    return root


def visa(root: Path) -> Path:
    rows = ["object,split,label,image,mask"]
    for cls in ("candle", "pcb1"):
        for i in range(2):
            rows.append(f"{cls},train,normal,{cls}/Data/Images/Normal/{i:04d}.JPG,")
            image(root / cls / "Data" / "Images" / "Normal" / f"{i:04d}.JPG")
        rows.append(f"{cls},test,normal,{cls}/Data/Images/Normal/0100.JPG,")
        image(root / cls / "Data" / "Images" / "Normal" / "0100.JPG")
        rows.append(f"{cls},test,anomaly,{cls}/Data/Images/Anomaly/000.JPG,{cls}/Data/Masks/Anomaly/000.png")
        image(root / cls / "Data" / "Images" / "Anomaly" / "000.JPG")
        mask(root / cls / "Data" / "Masks" / "Anomaly" / "000.png", value=3)  # VisA masks hold defect ids
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def meta(root: Path) -> Path:
    image(root / "bottle" / "test" / "good" / "000.png")
    image(root / "bottle" / "test" / "broken" / "000.png")
    mask(root / "bottle" / "ground_truth" / "broken" / "000_mask.png")
    image(root / "brain" / "test" / "yes" / "Y1.jpg")
    (root / "brain" / "ground_truth").mkdir(parents=True)
    entry = {"cls_name": "bottle", "specie_name": "good", "anomaly": 0, "mask_path": "",
             "img_path": "bottle/test/good/000.png"}
    meta_json = {
        "train": {},
        "test": {
            "bottle": [entry, {**entry, "specie_name": "broken", "anomaly": 1, "img_path": "bottle/test/broken/000.png",
                               "mask_path": "bottle/ground_truth/broken/000_mask.png"}],
            # the authors' image-level sets: "" or a folder as mask path, absolute image paths
            "brain": [{"cls_name": "brain", "specie_name": "yes", "anomaly": 1, "mask_path": "brain/ground_truth",
                       "img_path": str(root / "brain" / "test" / "yes" / "Y1.jpg")}],
        },
    }
    (root / "meta.json").write_text(json.dumps(meta_json))
    return root


def headct(root: Path, nested: bool = False) -> Path:
    folder = root / "head_ct" / "head_ct" if nested else root / "head_ct"
    for i in range(4):
        image(folder / f"{i:03d}.png", seed=i)
    (root / "labels.csv").write_text("id, hemorrhage\n0,1\n1,1\n2,0\n3,0\n")
    return root


def yes_no(root: Path) -> Path:
    image(root / "yes" / "Y1.jpg")
    image(root / "yes" / "Y2.JPG")
    image(root / "no" / "N1.png")
    image(root / "pred" / "P1.jpg")  # Br35H's unlabelled folder
    return root


def paired(root: Path, images: str, masks: str, names=("1", "2"), mask_suffix: str = "", ext=".png") -> Path:
    for n in names:
        image(root / images / f"{n}{ext}")
        mask(root / masks / f"{n}{mask_suffix}.png")
    return root


def folder_masks(root: Path) -> Path:
    """images/ + masks/: one anomalous (mask), one with an empty mask, one without a mask; nested class."""
    image(root / "images" / "liver" / "a.png")
    mask(root / "masks" / "liver" / "a_mask.png")
    image(root / "images" / "liver" / "b.png")
    mask(root / "masks" / "liver" / "b.png", value=0)
    image(root / "images" / "c.png")
    return root


def folder_csv(root: Path, with_masks: bool = True) -> Path:
    image(root / "scans" / "p1.png")
    image(root / "scans" / "p2.png")
    rows = ["image,label,mask,class"]
    if with_masks:
        mask(root / "seg" / "p1.png")
    rows.append(f"scans/p1.png,1,{'seg/p1.png' if with_masks else ''},lung")
    rows.append("scans/p2.png,normal,,lung")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def bmad(root: Path, pixel: bool) -> Path:
    """BMAD's tree: train/good (normal only), valid and test with good/Ungood; pixel-level sets nest img/ and
    label/ (masks with the image's name)."""
    seed = 0
    for split, groups in (("train", (("good", 3),)), ("valid", (("good", 1), ("Ungood", 1))),
                          ("test", (("good", 2), ("Ungood", 2)))):
        for group, n in groups:
            for i in range(n):
                seed += 1
                name = f"{i:05d}_{60 + i}.png"
                image(root / split / group / ("img" if pixel else "") / name, seed=seed)
                if pixel and group == "Ungood":
                    mask(root / split / group / "label" / name)
    return root


def medianomaly(root: Path, layout: str) -> Path:
    """MedIAnomaly's layouts: 'json' (images/ + data.json), 'folders' (Camelyon16), 'brats' (BraTS2021),
    'isic' (ISIC2018 Task 3 CSVs)."""
    if layout == "json":
        names = [f"{i}.png" for i in range(6)]
        for i, n in enumerate(names):
            image(root / "images" / n, seed=i)
        (root / "data.json").write_text(json.dumps({"train": {"0": names[:2], "unlabeled": {}},
                                                    "test": {"0": names[2:4], "1": names[4:]}}))
    elif layout == "folders":
        for split, group, n in (("train", "good", 2), ("test", "good", 2), ("test", "Ungood", 2)):
            for i in range(n):
                image(root / split / group / f"{group}{i}.png", seed=i)
    elif layout == "brats":
        for i in range(2):
            image(root / "train" / f"{i:05d}_flair_{i}.png", seed=i)
            image(root / "test" / "normal" / f"{i + 10:05d}_flair_{i}.png", seed=i + 10)
            image(root / "test" / "tumor" / f"{i + 20:05d}_flair_{i}.png", seed=i + 20)
            mask(root / "test" / "annotation" / f"{i + 20:05d}_seg_{i}.png")
    else:
        for part, rows in (("Training", ("ISIC_1,0,1", "ISIC_2,1,0", "ISIC_3,0,1")),
                           ("Test", ("ISIC_4,0,1", "ISIC_5,1,0"))):
            for row in rows:
                image(root / f"ISIC2018_Task3_{part}_Input" / f"{row.split(',')[0]}.jpg")
            table = root / f"ISIC2018_Task3_{part}_GroundTruth" / f"ISIC2018_Task3_{part}_GroundTruth.csv"
            table.parent.mkdir(parents=True, exist_ok=True)
            table.write_text("image,MEL,NV\n" + "\n".join(rows) + "\n")
    return root
