"""
The record every dataset reader returns, the layout error, and the file-finding helpers the readers share.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.names import IMAGE_SUFFIXES

__all__ = [
    "Sample",
    "DatasetLayoutError",
    "MASK_SUFFIXES",
    "describe_folder",
    "layout_error",
    "require_dir",
    "image_files",
    "MaskIndex",
]

# Stem endings tying a mask file to its image: "000.png" -> "000_mask.png", "ISIC_1.jpg" -> "ISIC_1_Segmentation.png".
MASK_SUFFIXES = ("", "_mask", "_segmentation")


@dataclass(frozen=True)
class Sample:
    """
    One image of a dataset.

    Attributes:
        image: image file.
        mask: anomaly mask file, ``None`` when the dataset has no pixel annotation for this image (normal images,
            image-level-only datasets).
        label: 1 anomalous, 0 normal.
        cls_name: object / organ class (the unit of the per-class tables).
        dataset: dataset name (a key of ``DATASETS``).
        specie: defect type when known (MVTec-style folder name, "yes"/"no", ...), else "".
    """

    image: Path
    mask: Path | None
    label: int
    cls_name: str
    dataset: str
    specie: str = ""


class DatasetLayoutError(InputError):
    """A dataset root that does not have the expected layout; the message shows the expected tree and what was found."""


def describe_folder(path: Path, limit: int = 12) -> str:
    """A short listing of ``path`` for error messages: what is actually there."""
    if not path.exists():
        return f"'{path}' does not exist"
    if not path.is_dir():
        return f"'{path}' is a file, not a folder"
    entries = sorted(path.iterdir(), key=lambda p: p.name)
    if not entries:
        return f"'{path}' is empty"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:limit]]
    more = f", ... ({len(entries)} entries)" if len(entries) > limit else ""
    return f"'{path}' contains: {', '.join(names)}{more}"


def layout_error(dataset: str, root: Path, tree: str, problem: str, found: Path | None = None) -> DatasetLayoutError:
    """Build the error for a root that does not match ``tree``: the problem, the expected tree, what was found."""
    return DatasetLayoutError(
        f"'{root}' is not a '{dataset}' dataset root: {problem}.\nExpected layout:\n{tree}\n"
        f"Found: {describe_folder(found if found is not None else root)}."
    )


def require_dir(path: Path, dataset: str, root: Path, tree: str) -> Path:
    """``path`` itself, or a layout error when it is not a folder."""
    if not path.is_dir():
        rel = path.relative_to(root) if path != root and root in path.parents else path
        raise layout_error(dataset, root, tree, f"folder '{rel}' is missing", found=path.parent)
    return path


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path, dataset: str, root: Path, tree: str, recursive: bool = False) -> list[Path]:
    """
    Image files of ``folder`` sorted by name (hidden files skipped).

    Raises:
        DatasetLayoutError: the folder holds no images ("empty class folder").
    """
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted((p for p in found if _is_image(p)), key=lambda p: str(p.relative_to(folder)))
    if not files:
        raise layout_error(
            dataset, root, tree,
            f"folder '{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)}); remove the empty class folder or "
            "fill it", found=folder,
        )
    return files


class MaskIndex:
    """
    The masks of one folder, looked up by their image: same stem, optionally followed by one of
    :data:`MASK_SUFFIXES` (any case, any image extension).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._by_stem: dict[str, Path] = {}
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if _is_image(p):
                    self._by_stem.setdefault(p.stem.lower(), p)

    def find(self, image: Path) -> Path | None:
        stem = image.stem.lower()
        for suffix in MASK_SUFFIXES:
            if stem + suffix in self._by_stem:
                return self._by_stem[stem + suffix]
        return None

    def get(self, image: Path, dataset: str, root: Path, tree: str) -> Path:
        """The mask of ``image``; a layout error naming the image and the folder searched when there is none."""
        mask = self.find(image)
        if mask is None:
            tried = ", ".join(f"{image.stem}{s}.*" for s in MASK_SUFFIXES)
            raise layout_error(
                dataset, root, tree, f"no mask for image '{image}' in '{self.folder}' (looked for {tried})",
                found=self.folder,
            )
        return mask
