"""
MONAI ``Inferer`` classes of scan scoring:

- :class:`VolumeAnomalyInferer`: one volume in, its anomaly map out, as MONAI Deploy's bundle operator and MONAI
  Label's bundle tasks call the ``inferer`` of a bundle's ``inference.json``; its :meth:`~VolumeAnomalyInferer.prepare`
  (host) and :meth:`~VolumeAnomalyInferer.compute` (device) halves are the steps a batch engine overlaps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import MetaKeys

from anomalyclip_med.inference.options import ScoringOptions
from anomalyclip_med.inference.scan import ScoredScan, compute_scan, plan_scan
from anomalyclip_med.inference.slices import SlicePlan
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.network.net import as_anomalyclip
from anomalyclip_med.transforms.image2d import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from anomalyclip_med.transforms.intensity import PRESET_META_KEY

__all__ = ["VolumeAnomalyInferer"]


@dataclass(frozen=True)
class _InputSize:
    image_size: int


class _ExportedNetwork:
    """
    A network given as a plain module (e.g. the traced TorchScript export ``models/model.ts`` that MONAI Deploy
    loads) that maps ``(B, 3, S, S)`` slices to the ``(B, 2, S, S)`` output of ``AnomalyCLIPNet`` (channel 0 the
    map, channel 1 the image score at every pixel), with what :func:`plan_slices` and :func:`score_planned` read
    of an ``AnomalyCLIP``.
    """

    def __init__(self, network: torch.nn.Module, image_size: int, mean: Sequence[float], std: Sequence[float]
                 ) -> None:
        self.network = network
        self.config = _InputSize(int(image_size))
        self.mean, self.std = tuple(mean), tuple(std)
        tensor = next(iter(network.parameters()), None)
        if tensor is None:
            tensor = next(iter(network.buffers()), None)
        self.device = tensor.device if tensor is not None else torch.device("cpu")

    def predict(self, batch: torch.Tensor) -> SimpleNamespace:
        out = self.network(batch)
        if out.ndim != 4 or out.shape[1] != 2:
            raise ValueError("A network that is not an AnomalyCLIP must map (B, 3, S, S) slices to the (B, 2, S, S) "
                             f"output of AnomalyCLIPNet; got shape {tuple(out.shape)}.")
        return SimpleNamespace(anomaly_map=out[:, 0], image_score=out[:, 1, 0, 0])


@contextlib.contextmanager
def _evaluating(network: torch.nn.Module) -> Iterator[None]:
    """``network`` in eval mode and no gradients inside; its mode as it was after."""
    training = network.training
    if training:
        network.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if training:
            network.train()


class VolumeAnomalyInferer(Inferer):
    """
    AnomalyCLIP over one CT/MRI volume, slice by slice, as a MONAI inferer: ``inferer(inputs, network)`` returns the
    volume's anomaly map on the volume's own grid, the same as ``anomalyclip-med score`` computes it (the same
    slicing plan, network batches, z smoothing, body mask and scan-score aggregation; see
    :func:`anomalyclip_med.inference.slices.score_slices`).

    The two halves of the call are public for engines that overlap them across scans: :meth:`prepare` (the host
    side: the slicing plan from the whole scan) and :meth:`compute` (the device side: the planned slices through
    the network, the map post-processing on its device, one copy of the results back).

    The network is the bundle's ``network_def`` (``AnomalyCLIPNet``) or an ``AnomalyCLIP``, whose input size and
    normalisation the slices are made for. Any other module is taken as the network's export (the traced
    ``models/model.ts`` that MONAI Deploy loads): ``(B, 3, S, S)`` slices in, ``AnomalyCLIPNet``'s ``(B, 2, S, S)``
    output out, its input side ``image_size`` and normalisation ``mean``/``std`` given here (a traced network
    matches the eager one to about 1e-4).

    Args:
        scoring: how a scan is scored [``ScoringOptions()``] (the labelmap is the decision's, in ``postprocessing``).
        progress: show a progress bar over each scan's slices.
        image_size: the input side of an exported network (the traced size); not used with an AnomalyCLIP network.
        mean, std: the input normalisation of an exported network [OpenAI CLIP's]; not used with an AnomalyCLIP
            network.
    """

    def __init__(
        self,
        scoring: ScoringOptions | None = None,
        progress: bool = False,
        image_size: int | None = None,
        mean: Sequence[float] = OPENAI_DATASET_MEAN,
        std: Sequence[float] = OPENAI_DATASET_STD,
    ) -> None:
        super().__init__()
        self.scoring = scoring if scoring is not None else ScoringOptions()
        self.progress = progress
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)

    def _model(self, network: torch.nn.Module) -> AnomalyCLIP | _ExportedNetwork:
        model = as_anomalyclip(network)
        if isinstance(model, AnomalyCLIP):
            return model
        if self.image_size is None:
            raise ValueError(f"{type(network).__name__} is not an AnomalyCLIP network: give VolumeAnomalyInferer the "
                             "input side it was exported for (image_size).")
        return _ExportedNetwork(model, self.image_size, self.mean, self.std)

    def prepare(self, image: MetaTensor, network: torch.nn.Module) -> SlicePlan:
        """
        The slicing plan of a scan (intensity preset, slicing axis and geometry, slices to score, body mask),
        made on the host from the whole scan.

        Args:
            image: the scan, channel-first ``(1, X, Y, Z)`` with raw intensities, as loaded
                (:class:`anomalyclip_med.transforms.LoadScan`); on the host or on a device.
            network: the ``AnomalyCLIPNet`` (or ``AnomalyCLIP``, or an export: see the class) whose input size and
                normalisation the plan uses.
        """
        model = self._model(network)
        host = image if image.device.type == "cpu" else image.cpu()
        return plan_scan(host, self.scoring, model.config.image_size, model.mean, model.std)

    def compute(self, image: MetaTensor, plan: SlicePlan, network: torch.nn.Module) -> ScoredScan:
        """
        The planned slices of ``image`` through ``network`` on its device, the map post-processing there and the
        scan score (:func:`anomalyclip_med.inference.slices.score_planned`,
        :func:`anomalyclip_med.inference.scan.aggregate_scores`).

        Args:
            image: the scan :meth:`prepare` planned.
            plan: its plan.
            network: the network :meth:`prepare` was given, in eval mode.
        """
        source = image.meta.get("filename_or_obj") if isinstance(image, MetaTensor) else None
        desc = Path(str(source)).name if source else None
        # no labelmap here: the decision makes it in ``postprocessing`` (AnomalyOutputsd)
        return compute_scan(self._model(network), image, plan, self.scoring, None, self.progress, desc)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> MetaTensor:
        """
        Args:
            inputs: one preprocessed volume (``preprocessing`` of the bundle: raw intensities, a ``MetaTensor``
                carrying the volume's affine), channel-first ``(1, X, Y, Z)``, or with a batch dimension of one
                ``(1, 1, X, Y, Z)`` as MONAI Deploy and MONAI Label pass it.
            network: the bundle's ``network_def`` (``AnomalyCLIPNet``), an ``AnomalyCLIP`` or an export (see the
                class); run in eval mode without gradients (its mode is restored after).

        Returns:
            the float32 anomaly map in [0, 1] on the host, the shape of ``inputs`` (batch dimension kept when
            given), on the volume's grid with its metadata and affine, plus ``scan_score`` (float), ``slice_scores``
            (float64, one per slice along ``slice_axis``, 0 where not scored), ``scored_slices`` (bool),
            ``slice_axis`` (the array axis sliced, 0..2) and the intensity preset used
            (``meta["intensity_preset"]``).

        Raises:
            ValueError: ``inputs`` is not one channel-first single-channel volume.
        """
        batched = inputs.ndim == 5
        volume = inputs[0] if batched else inputs
        if volume.ndim != 4 or volume.shape[0] != 1 or (batched and inputs.shape[0] != 1):
            raise ValueError("VolumeAnomalyInferer takes one single-channel volume, (1, X, Y, Z) or (1, 1, X, Y, Z); "
                             f"got shape {tuple(inputs.shape)}.")
        if not isinstance(volume, MetaTensor):
            volume = MetaTensor(volume)
        with _evaluating(network):
            scored = self.compute(volume, self.prepare(volume, network), network)
        result = scored.result
        meta = dict(volume.meta)
        meta.update({
            MetaKeys.AFFINE: torch.as_tensor(volume.affine, dtype=torch.float64).detach().cpu().clone(),
            "scan_score": float(scored.scan_score),
            "slice_scores": np.asarray(result.slice_scores, dtype=np.float64),
            "scored_slices": np.asarray(result.scored, dtype=bool),
            "slice_axis": int(result.geometry.axis),
            PRESET_META_KEY: result.preset.to_dict(),
        })
        values = torch.from_numpy(np.ascontiguousarray(result.anomaly_map, dtype=np.float32))[None]
        anomaly_map = MetaTensor(values, meta=meta)
        return anomaly_map[None] if batched else anomaly_map
