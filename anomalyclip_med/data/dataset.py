"""
The torch dataset of training and evaluation: samples -> preprocessed image, mask and label, with every file
checked before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import monai.data
from monai.transforms import Compose, Lambdad
from tqdm import tqdm

from anomalyclip_med.data.samples import Sample
from anomalyclip_med.errors import AnomalyCLIPMedError, InputError
from anomalyclip_med.io.masks import image_size_of, read_mask
from anomalyclip_med.transforms.image2d import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, image_transform, mask_transform
from anomalyclip_med.transforms.load2d import LoadImage2Dd, LoadMask2Dd

__all__ = ["AnomalyDataset", "verify_samples"]

_SHOWN_PROBLEMS = 10


def verify_samples(samples: Sequence[Sample], progress: bool = False) -> None:
    """
    Check every sample before use: its image can be opened and its mask is readable, binary and of the
    image's size. Checking first means a bad file stops a run before it writes or trains anything.

    Raises:
        InputError: listing the problems found (the first few, and how many there are).
    """
    problems = []
    for sample in tqdm(samples, desc="checking files", disable=not progress, leave=False):
        try:
            size = image_size_of(sample.image)
            if sample.mask is not None:
                read_mask(sample.mask, expected_size=size)
        except InputError as err:
            problems.append(str(err))
    if problems:
        shown = "\n  ".join(problems[:_SHOWN_PROBLEMS])
        more = f"\n  ... and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
        raise InputError(f"{len(problems)} of {len(samples)} dataset files cannot be used:\n  {shown}{more}")


class AnomalyDataset(monai.data.Dataset):
    """
    Samples as network inputs: each item is a dict with ``image`` (3, S, S) normalised as the reference,
    ``mask`` (1, S, S) of {0, 1} (zeros where the sample has no mask), ``label`` (int), ``path`` and
    ``cls_name``.

    Args:
        samples: from :func:`anomalyclip_med.data.load_samples`.
        image_size: network input side S.
        mean, std: image normalisation (the model's; CLIP's by default).
        verify: run :func:`verify_samples` now, so that bad files fail at construction, not mid-epoch.
        progress: show a progress bar while verifying.

    Raises:
        InputError: a sample's files cannot be used (at construction with ``verify``, else when loaded).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        image_size: int,
        mean: Sequence[float] = OPENAI_DATASET_MEAN,
        std: Sequence[float] = OPENAI_DATASET_STD,
        verify: bool = True,
        progress: bool = False,
    ) -> None:
        if not samples:
            raise InputError("The dataset has no samples.")
        if verify:
            verify_samples(samples, progress)
        self.samples = list(samples)
        data = [
            {"image": str(s.image), "mask": None if s.mask is None else str(s.mask), "label": int(s.label),
             "path": str(s.image), "cls_name": s.cls_name}
            for s in self.samples
        ]
        transform = Compose(
            [
                LoadImage2Dd("image"),
                LoadMask2Dd("mask", image_key="image"),
                Lambdad("image", image_transform(image_size, tuple(mean), tuple(std)), track_meta=False),
                Lambdad("mask", mask_transform(image_size), track_meta=False),
            ]
        )
        super().__init__(data, transform)

    @property
    def has_masks(self) -> bool:
        """Whether every anomalous sample has a mask, so that the pixel losses can be trained."""
        return all(s.mask is not None for s in self.samples if s.label)

    def _transform(self, index: int):
        try:
            return super()._transform(index)
        except RuntimeError as err:  # MONAI wraps transform errors; surface ours as they were raised
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, AnomalyCLIPMedError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None
