"""
The outputs of a scored volume as MONAI transforms (array and dictionary forms): the inferer's anomaly map turned
into the float32 map and the uint8 labelmap, both in the input's geometry. These are the ``postprocessing`` of the
bundle's volume-level contract (MONAI Deploy, MONAI Label); nothing is written here (a case's files are written
whole by the batch runner).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import MetaKeys, ensure_tuple_rep

if TYPE_CHECKING:  # duck-typed at run time: transforms/ sits below calibration/
    from anomalyclip_med.calibration.calibration import Decision

__all__ = ["AnomalyOutputs", "AnomalyOutputsd"]


class AnomalyOutputs(Transform):
    """
    An anomaly map (float in [0, 1], channel-first, e.g. the output of
    :class:`anomalyclip_med.inference.VolumeAnomalyInferer`) -> ``(map, labelmap)`` by the run's ``decision``
    (:class:`anomalyclip_med.calibration.Decision`, the one place a map becomes a labelmap):

    - ``map``: float32, the map as it is, or its calibrated voxel p-values when a calibrated decision asks for them
      (``map_output="calibrated"``);
    - ``labelmap``: uint8, 1 where the map is at least the decision's threshold (the fixed
      ``ScoringOptions.threshold``, or a calibration's voxel threshold), compared in float32 as ``score`` does.

    Both are ``MetaTensor`` copies of the input's metadata and affine (``ref``'s affine when given, which must have
    the same spatial shape). With a calibrated decision and the scores the inferer records in the map's metadata
    (``slice_scores``, ``scored_slices``, ``scan_score``), the per-slice and scan p-values and flags are added to
    both outputs' metadata.

    Args:
        decision: the run's decision (``CalibrationOptions.decision``).
    """

    def __init__(self, decision: Decision) -> None:
        self.decision = decision

    def __call__(self, anomaly_map: torch.Tensor | np.ndarray, ref: torch.Tensor | None = None
                 ) -> tuple[MetaTensor, MetaTensor]:
        source = anomaly_map if isinstance(anomaly_map, MetaTensor) else MetaTensor(torch.as_tensor(anomaly_map))
        values = source.as_tensor().detach().to(device="cpu", dtype=torch.float32).numpy()
        meta = dict(source.meta)
        affine = source.affine
        if ref is not None:
            if tuple(ref.shape[-3:]) != tuple(values.shape[-3:]):
                raise ValueError(f"The anomaly map's spatial shape {tuple(values.shape[-3:])} is not the reference "
                                 f"image's {tuple(ref.shape[-3:])}.")
            if isinstance(ref, MetaTensor):
                affine = ref.affine
        meta.update(self._decision_fields(meta))
        labelmap = torch.from_numpy(self.decision.labelmap(values))
        values = torch.from_numpy(np.asarray(self.decision.output_map(values), dtype=np.float32))
        affine = torch.as_tensor(affine, dtype=torch.float64).detach().cpu()
        return (MetaTensor(values.contiguous(), meta={**meta, MetaKeys.AFFINE: affine.clone()}),
                MetaTensor(labelmap.contiguous(), meta={**meta, MetaKeys.AFFINE: affine.clone()}))

    def _decision_fields(self, meta: Mapping[Hashable, Any]) -> dict[str, Any]:
        if not all(k in meta for k in ("slice_scores", "scored_slices", "scan_score")):
            return {}
        return self.decision.scan_fields(np.asarray(meta["slice_scores"]), np.asarray(meta["scored_slices"]),
                                         float(meta["scan_score"]))


class AnomalyOutputsd(MapTransform):
    """
    Dictionary-based wrapper of :class:`AnomalyOutputs`: each key's anomaly map is replaced by its uint8 labelmap
    (as a MONAI segmentation's ``pred`` ends as its labels, which MONAI Deploy and MONAI Label hand on) and the
    float32 map is stored under the matching ``map_keys`` entry.

    Args:
        keys: keys holding anomaly maps (the inferer's output, ``pred``).
        decision: see :class:`AnomalyOutputs`.
        map_keys: where each key's float map goes [``anomaly_map``]; one name per key.
        ref_keys: keys of the images whose geometry the outputs take (checked: same spatial shape), skipped where
            absent [``image``]; None: the map's own.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        decision: Decision,
        map_keys: KeysCollection = "anomaly_map",
        ref_keys: KeysCollection | None = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = AnomalyOutputs(decision)
        self.map_keys = ensure_tuple_rep(map_keys, len(self.keys))
        self.ref_keys = ensure_tuple_rep(ref_keys, len(self.keys))
        if len(set(self.map_keys)) != len(self.map_keys) or set(self.map_keys) & set(self.keys):
            raise ValueError(f"map_keys {self.map_keys} must be distinct and differ from keys {self.keys}.")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, map_key, ref_key in self.key_iterator(d, self.map_keys, self.ref_keys):
            ref = d.get(ref_key) if ref_key is not None else None
            d[map_key], d[key] = self.transform(d[key], ref if isinstance(ref, torch.Tensor) else None)
        return d
