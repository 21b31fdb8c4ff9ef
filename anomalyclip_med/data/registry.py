"""Every supported dataset name, its expected tree, and :func:`load_samples` dispatching to its layout's reader."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from anomalyclip_med.data import bmad, folder, headct, medianomaly, meta, mvtec, paired, visa, yes_no
from anomalyclip_med.data.samples import DatasetLayoutError, Sample, layout_error

__all__ = ["DATASETS", "PIXEL_LEVEL", "load_samples"]

logger = logging.getLogger(__name__)

_Reader = Callable[[str, Path, str], list[Sample]]
# name -> (reader, accepted splits)
_READERS: dict[str, tuple[_Reader, tuple[str, ...]]] = {
    **{name: (mvtec.read, mvtec.SPLITS) for name in mvtec.TREES},
    "visa": (visa.read, visa.SPLITS),
    "meta": (meta.read, meta.SPLITS),
    "folder": (folder.read, folder.SPLITS),
    "headct": (headct.read, headct.SPLITS),
    **{name: (yes_no.read, yes_no.SPLITS) for name in yes_no.TREES},
    **{name: (paired.read, paired.SPLITS[name]) for name in paired.TREES},
    **{name: (bmad.read, bmad.SPLITS) for name in bmad.TREES},
    **{name: (medianomaly.read, medianomaly.SPLITS) for name in medianomaly.TREES},
}

DATASETS: dict[str, str] = {
    **mvtec.TREES, **visa.TREES, **meta.TREES, **folder.TREES, **headct.TREES, **yes_no.TREES, **paired.TREES,
    **bmad.TREES, **medianomaly.TREES,
}
"""Every supported dataset name -> the expected tree under its root (shown in errors and docs/datasets.md)."""

# Medical sets evaluated at pixel level only: every image is anomalous and has a mask.
PIXEL_LEVEL = tuple(paired.TREES)


def _check_files(dataset: str, root: Path, samples: list[Sample]) -> None:
    missing = [p for s in samples for p in (s.image, s.mask) if p is not None and not p.is_file()]
    if missing:
        shown = ", ".join(f"'{p}'" for p in missing[:5])
        raise layout_error(
            dataset, root, DATASETS[dataset],
            f"{len(missing)} listed file(s) do not exist, e.g. {shown}",
        )


def load_samples(dataset: str, root: str | os.PathLike, split: str = "test") -> list[Sample]:
    """
    List the images of a dataset in its native layout.

    Args:
        dataset: a key of :data:`DATASETS` (``mvtec``, ``visa``, ``meta``, ``folder``, ``headct``, ...).
        root: the dataset's root folder (see ``DATASETS[dataset]`` for the tree expected under it).
        split: ``"test"`` (the images the paper evaluates on, and trains on as auxiliary data) or ``"train"``
            where the dataset has one.

    Returns:
        the samples, in a fixed order (class, defect type, file name).

    Raises:
        DatasetLayoutError: ``root`` does not have the layout (the message shows the expected tree and what is
            there), a listed file is missing, an anomalous image has no mask where the layout requires one, or
            a class folder is empty.
        InputError: unknown dataset name or split.
    """
    if dataset not in _READERS:
        raise DatasetLayoutError(f"Unknown dataset format {dataset!r}; supported: {', '.join(DATASETS)}.")
    reader, splits = _READERS[dataset]
    if split not in splits:
        raise DatasetLayoutError(
            f"Dataset format '{dataset}' has no split {split!r}; it has {', '.join(repr(s) for s in splits)}"
            + (" (the whole set is its test set, as in the paper)." if splits == ("test",) else ".")
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise layout_error(dataset, root, DATASETS[dataset], "the root folder does not exist or is not a folder")
    samples = reader(dataset, root, split)
    _check_files(dataset, root, samples)
    n_anomalous = sum(s.label for s in samples)
    logger.debug("%s '%s' (%s): %d images, %d anomalous", dataset, root, split, len(samples), n_anomalous)
    return samples
