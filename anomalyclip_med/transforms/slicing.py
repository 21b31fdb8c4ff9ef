"""
Slicing scans for the 2D network: which axis to slice, how each slice is shown (radiological orientation, physical
aspect ratio, padded to a square) and which slices hold a body at all.

Array transforms here; their dictionary variants are in :mod:`anomalyclip_med.transforms.dictionary`.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Transform
from scipy.ndimage import binary_fill_holes
from skimage.filters import threshold_isodata

from anomalyclip_med.transforms.image2d import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

__all__ = [
    "PLANES",
    "SliceGeometry",
    "resolve_axis",
    "slice_geometry",
    "SliceToNetworkInput",
    "SliceForeground",
    "BodyMask",
]

PLANES = ("axial", "coronal", "sagittal")
_PLANE_OF_CODE = {"L": "sagittal", "R": "sagittal", "A": "coronal", "P": "coronal", "S": "axial", "I": "axial"}
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}
# Display orientation per plane: the world direction in which the row index and the column index grow. This is the
# radiological view the network's medical training images show: patient's right on the image's left, anterior at
# the top of axial slices, superior at the top of coronal and sagittal ones, anterior on the left of sagittal ones.
_DISPLAY = {"axial": ("P", "L"), "coronal": ("I", "L"), "sagittal": ("I", "P")}
_SAMPLE_VOXELS = 2_000_000
# the foreground threshold's histogram holds the values within the 1st..99th percentile range widened by this many
# times its width on each side: a whole scan (air, tissue, bone, metal) fits, a few stray extreme voxels are left out
_ROBUST_PERCENTILES, _ROBUST_REACH = (1.0, 99.0), 3.0


def _affine_of(img: NdarrayOrTensor) -> np.ndarray:
    if isinstance(img, MetaTensor):
        return np.asarray(img.affine, dtype=float)
    return np.eye(4)


def _axcodes(affine: np.ndarray) -> tuple[str, str, str]:
    codes = nib.aff2axcodes(affine)
    return codes if None not in codes else ("R", "A", "S")  # degenerate affine: take the voxel order as RAS


def resolve_axis(affine: np.ndarray, axis: str | int | None = None) -> tuple[int, str]:
    """
    The spatial axis (0..2) to slice and its anatomical plane.

    Args:
        affine: voxel-to-RAS affine of the scan.
        axis: ``None`` or ``"axial"`` (the axis closest to the body's superior-inferior direction, whatever the
            scan's orientation), ``"coronal"``, ``"sagittal"``, or an array axis index (0, 1, 2, or negative).

    Raises:
        ValueError: an unknown plane name or an axis out of range.
    """
    codes = _axcodes(affine)
    if axis is None or isinstance(axis, str):
        plane = axis or "axial"
        if plane not in PLANES:
            raise ValueError(f"Unknown slicing axis {axis!r}: use one of {', '.join(PLANES)} or an index 0..2.")
        return next(i for i, c in enumerate(codes) if _PLANE_OF_CODE[c] == plane), plane
    if not -3 <= int(axis) <= 2:
        raise ValueError(f"Slicing axis {axis} out of range for a 3D scan (0..2 or -3..-1).")
    index = int(axis) % 3
    return index, _PLANE_OF_CODE[codes[index]]


@dataclass(frozen=True)
class SliceGeometry:
    """
    How the slices of a scan along one axis map to display-oriented, square images, and back.

    A slice as stored is ``volume.movedim(axis, 0)[k]``: shape ``slice_shape``, its two axes the scan's remaining
    spatial axes in order. Display orientation transposes and flips it (no resampling) into the plane's
    radiological view; :meth:`to_square` then resamples it to square pixels of the physical aspect ratio and pads
    it, centred, to a square (pad, don't stretch). :meth:`from_square` undoes both exactly in layout.

    Attributes:
        axis: spatial axis that is sliced (0..2).
        plane: anatomical plane of the slices.
        n_slices: number of slices along ``axis``.
        slice_shape: shape of a slice as stored.
        transpose: whether display rows come from the slice's second axis.
        flip_rows: whether display rows run opposite to the stored order.
        flip_cols: whether display columns run opposite to the stored order.
        row_spacing: mm between display rows.
        col_spacing: mm between display columns.
    """

    axis: int
    plane: str
    n_slices: int
    slice_shape: tuple[int, int]
    transpose: bool
    flip_rows: bool
    flip_cols: bool
    row_spacing: float
    col_spacing: float

    @property
    def display_shape(self) -> tuple[int, int]:
        a, b = self.slice_shape
        return (b, a) if self.transpose else (a, b)

    def _flips(self) -> list[int]:
        return [d for d, f in ((1, self.flip_rows), (2, self.flip_cols)) if f]

    def to_display(self, slices: torch.Tensor) -> torch.Tensor:
        """(N, *slice_shape) stored slices -> (N, *display_shape) in the plane's radiological view."""
        out = slices.transpose(1, 2) if self.transpose else slices
        return out.flip(self._flips()) if self._flips() else out

    def from_display(self, slices: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_display`."""
        out = slices.flip(self._flips()) if self._flips() else slices
        return out.transpose(1, 2) if self.transpose else out

    def square_layout(self, size: int) -> tuple[int, int, int, int]:
        """(height, width, top, left) of the slice's image inside a ``size`` x ``size`` square."""
        rows, cols = self.display_shape
        height_mm, width_mm = rows * self.row_spacing, cols * self.col_spacing
        scale = size / max(height_mm, width_mm)
        h = min(size, max(1, round(height_mm * scale)))
        w = min(size, max(1, round(width_mm * scale)))
        return h, w, (size - h) // 2, (size - w) // 2

    def to_square(self, slices: torch.Tensor, size: int, fill: float = 0.0) -> torch.Tensor:
        """(N, *slice_shape) stored slices -> (N, size, size): display view, square pixels, padded with ``fill``."""
        h, w, top, left = self.square_layout(size)
        shown = self.to_display(slices).float()[:, None]
        resized = F.interpolate(shown, size=(h, w), mode="bilinear", antialias=True, align_corners=False)[:, 0]
        out = torch.full((slices.shape[0], size, size), fill, dtype=resized.dtype, device=resized.device)
        out[:, top : top + h, left : left + w] = resized
        return out

    def from_square(self, squares: torch.Tensor) -> torch.Tensor:
        """(N, size, size) images on the square grid (e.g. anomaly maps) -> (N, *slice_shape) on the slice grid."""
        h, w, top, left = self.square_layout(squares.shape[-1])
        crop = squares[:, None, top : top + h, left : left + w].float()
        back = F.interpolate(crop, size=self.display_shape, mode="bilinear", antialias=True, align_corners=False)
        return self.from_display(back[:, 0])


def slice_geometry(affine: np.ndarray, spatial_shape: tuple[int, ...], axis: str | int | None = None) -> SliceGeometry:
    """
    The :class:`SliceGeometry` of a scan with voxel-to-RAS ``affine`` and ``spatial_shape`` sliced along ``axis``
    (see :func:`resolve_axis`).
    """
    affine = np.asarray(affine, dtype=float)
    index, plane = resolve_axis(affine, axis)
    codes = _axcodes(affine)
    first, second = (i for i in range(3) if i != index)
    row_code, col_code = _DISPLAY[plane]
    row_axis, col_axis = (first, second) if codes[first] in (row_code, _OPPOSITE[row_code]) else (second, first)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return SliceGeometry(
        axis=index,
        plane=plane,
        n_slices=int(spatial_shape[index]),
        slice_shape=(int(spatial_shape[first]), int(spatial_shape[second])),
        transpose=row_axis == second,
        flip_rows=codes[row_axis] != row_code,
        flip_cols=codes[col_axis] != col_code,
        row_spacing=float(spacing[row_axis]),
        col_spacing=float(spacing[col_axis]),
    )


class SliceToNetworkInput(Transform):
    """
    Slices of a scan (channel-first ``(1, X, Y, Z)``, intensities already in [0, 1]) -> network inputs
    ``(N, 3, S, S)``: each slice in its plane's radiological view, resampled to square pixels keeping the
    physical aspect ratio, padded (not stretched) to ``S`` x ``S`` with 0, repeated to 3 channels and normalised
    with the CLIP mean/std. The geometry comes from ``img.affine`` (identity for plain tensors).

    Args:
        image_size: network input side ``S``.
        axis: slicing axis, see :func:`resolve_axis` (default: axial).
        mean: per-channel mean of the network's normalisation.
        std: per-channel std of the network's normalisation.
    """

    def __init__(
        self,
        image_size: int,
        axis: str | int | None = None,
        mean: tuple[float, ...] = OPENAI_DATASET_MEAN,
        std: tuple[float, ...] = OPENAI_DATASET_STD,
    ) -> None:
        resolve_axis(np.eye(4), axis)  # validates the axis now
        self.image_size, self.axis = int(image_size), axis
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def geometry(self, img: NdarrayOrTensor) -> SliceGeometry:
        """The slice geometry of channel-first scan ``img``."""
        return slice_geometry(_affine_of(img), tuple(img.shape[1:]), self.axis)

    def from_slices(self, slices: torch.Tensor, geometry: SliceGeometry) -> torch.Tensor:
        """(N, *geometry.slice_shape) stored slices in [0, 1] -> (N, 3, S, S) network inputs."""
        squares = geometry.to_square(torch.as_tensor(slices), self.image_size)
        mean, std = self.mean.to(squares.device), self.std.to(squares.device)
        return (squares[:, None].expand(-1, 3, -1, -1) - mean) / std

    def __call__(self, img: NdarrayOrTensor, indices: list[int] | None = None) -> torch.Tensor:
        """
        Args:
            img: channel-first scan ``(1, X, Y, Z)`` in [0, 1].
            indices: slices to convert (default: all, which holds every input in memory at once; the scan
                scorer streams batches of indices instead).
        """
        geometry = self.geometry(img)
        volume = torch.as_tensor(img)[0].movedim(geometry.axis, 0)
        chosen = volume if indices is None else volume[list(indices)]
        return self.from_slices(chosen, geometry)


class SliceForeground(Transform):
    """
    Which slices along an axis hold a body: those where at least ``min_fraction`` of the voxels are above the
    scan's ISODATA threshold: the intensity halfway between the mean of the voxels below and the mean of those
    above it, i.e. between air and tissue, computed on the whole scan so it suits CT in HU and MRI alike. (Otsu's
    threshold lands at the edge of the air peak when air and tissue are fully separated, so noise in the air
    would count as body.) The histogram is robust: values farther than 3 times the 1st..99th percentile spread
    outside that range are left out of it, so a few extreme voxels (a hot pixel, a stray 1e6 in the background)
    can neither stretch it until air and body share one bin nor form a cluster of their own, while every value a
    real scan holds (air, tissue, bone, metal in HU) stays in; the threshold of such a scan is unchanged. Run it
    on the scan's raw intensities, before an intensity preset.
    A constant scan (e.g. all zero) has no foreground.

    Args:
        axis: slicing axis, see :func:`resolve_axis` (default: axial).
        min_fraction: fraction of a slice's voxels that must be foreground (default 1%).
        threshold: a fixed intensity threshold instead of the ISODATA one.

    Returns:
        ``(N,)`` bool tensor, one flag per slice along the axis.
    """

    def __init__(self, axis: str | int | None = None, min_fraction: float = 0.01, threshold: float | None = None):
        if not 0 <= min_fraction <= 1:
            raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}.")
        resolve_axis(np.eye(4), axis)
        self.axis, self.min_fraction, self.threshold = axis, float(min_fraction), threshold

    def threshold_of(self, img: NdarrayOrTensor) -> float | None:
        """The foreground threshold of ``img`` (``None`` for a constant scan, which has no foreground)."""
        if self.threshold is not None:
            return float(self.threshold)
        values = torch.as_tensor(img).detach().reshape(-1)
        values = values[:: max(1, values.numel() // _SAMPLE_VOXELS)].float().cpu().numpy()
        values = values[np.isfinite(values)]
        if values.size == 0 or values.min() == values.max():
            return None
        lo, hi = np.percentile(values, _ROBUST_PERCENTILES)
        reach = _ROBUST_REACH * (hi - lo)
        kept = values[(values >= lo - reach) & (values <= hi + reach)]
        if kept.min() == kept.max():  # all but a stray few voxels equal: that value is the background
            return float(kept.min())
        return float(threshold_isodata(kept))

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        index, _ = resolve_axis(_affine_of(img), self.axis)
        volume = torch.as_tensor(img)[0]
        threshold = self.threshold_of(volume)
        if threshold is None:
            return torch.zeros(volume.shape[index], dtype=torch.bool)
        counts = (volume > threshold).sum(dim=[d for d in range(3) if d != index])  # no float copy of the scan
        return counts >= self.min_fraction * (volume.numel() // volume.shape[index])


class BodyMask(Transform):
    """
    Which voxels of a scan are body: those above the scan's foreground threshold (the ISODATA threshold of
    :class:`SliceForeground`, so slice skipping and the mask agree on what is body), with the holes of each slice
    along the slicing axis filled. Filling matters: tissue darker than the threshold inside the body (lungs in CT,
    CSF and ventricles in FLAIR) is still body, and an anomaly there must stay visible; filling per slice rather
    than in 3D also closes cavities that open through the top or bottom of the scan. Air around the body, the
    padding of skull-stripped MRI and the background of the field of view are not body. A constant scan has no
    body. Run it on the raw intensities, before an intensity preset.

    Args:
        axis: slicing axis whose slices are hole-filled, see :func:`resolve_axis` (default: axial).
        threshold: a fixed intensity threshold instead of the ISODATA one.

    Returns:
        bool tensor of the scan's spatial shape.
    """

    def __init__(self, axis: str | int | None = None, threshold: float | None = None) -> None:
        self.foreground = SliceForeground(axis, 0.0, threshold)
        self.axis = axis

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        index, _ = resolve_axis(_affine_of(img), self.axis)
        volume = torch.as_tensor(img)[0]
        threshold = self.foreground.threshold_of(volume)
        if threshold is None:
            return torch.zeros(volume.shape, dtype=torch.bool)
        body = np.moveaxis((volume > threshold).cpu().numpy(), index, 0)
        for k in range(body.shape[0]):  # a view: filling its slices fills the mask
            body[k] = binary_fill_holes(body[k])
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(body, 0, index)))
