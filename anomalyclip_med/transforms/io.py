"""
Loading and saving as MONAI transforms (array and dictionary forms, as MONAI's ``LoadImage``/``SaveImage``): scans
through :func:`anomalyclip_med.io.scans.load_volume`, and the JSON scores report that
:class:`anomalyclip_med.inference.inferer.SliceAnomalyInferer` attaches to a predicted map. The file formats
themselves are read and written in :mod:`anomalyclip_med.io`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.data import FolderLayout, MetaTensor
from monai.transforms import MapTransform, Transform

from anomalyclip_med.io.scans import load_volume
from anomalyclip_med.io.writers import write_json, write_volume
from anomalyclip_med.utils.atomic import atomic_path

__all__ = ["REPORT_KEY", "LoadScan", "LoadScand", "SaveScanReportd", "SaveVolumed"]


class LoadScan(Transform):
    """
    Load one scan as a channel-first float32 ``MetaTensor`` (1, X, Y, Z): the transform face of
    :func:`load_volume` (see it for the checks, the geometry kept and the metadata added).

    Args:
        series_uid: SeriesInstanceUID to load from a folder holding several series.
        volume_index: which volume of a 4D file to load (0-based); required when the file holds more than one.

    Raises:
        InputError: see :func:`load_volume`.
    """

    def __init__(self, series_uid: str | None = None, volume_index: int | None = None) -> None:
        self.series_uid = series_uid
        self.volume_index = volume_index

    def __call__(self, source: str | os.PathLike) -> MetaTensor:
        return load_volume(source, self.series_uid, self.volume_index)


class LoadScand(MapTransform):
    """
    Dictionary-based wrapper of :class:`LoadScan`: replaces each key's path by the loaded scan.

    Args:
        keys: keys holding scan paths.
        series_uid: see :class:`LoadScan`.
        volume_index: see :class:`LoadScan`.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        series_uid: str | None = None,
        volume_index: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadScan(series_uid, volume_index)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


# meta-data key under which SliceAnomalyInferer attaches each map's JSON scores report
REPORT_KEY = "anomaly_report"


class SaveScanReportd(MapTransform):
    """
    Write the JSON scores report attached by :class:`anomalyclip_med.inference.inferer.SliceAnomalyInferer` to a
    predicted map, next to the map that ``SaveImaged`` writes with the same ``output_dir`` / ``data_root_dir``
    (``<case>_scores.json``; MONAI's ``FolderLayout`` names both), atomically.

    Args:
        keys: keys of the predicted maps.
        output_dir: output folder.
        output_postfix: appended to the case name ["scores"].
        data_root_dir: as ``SaveImaged``'s: keep the input's folders below this root in the output.
        overwrite: replace an existing report [True, as ``SaveImaged`` does].
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        output_postfix: str = "scores",
        data_root_dir: str = "",
        overwrite: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.layout = FolderLayout(output_dir, postfix=output_postfix, extension=".json", parent=False,
                                   makedirs=True, data_root_dir=data_root_dir)
        self.overwrite = overwrite

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = d[key].meta
            path = self.layout.filename(subject=str(meta["filename_or_obj"]).rstrip("/"))
            write_json(json.loads(meta[REPORT_KEY]), path, overwrite=self.overwrite)
        return d


class SaveVolumed(MapTransform):
    """
    Write predicted volumes as :func:`write_volume` does for ``anomalyclip-med score`` (NIfTI in the scan's geometry,
    the input's qform/sform codes, a labelmap with the NIfTI ``label`` intent), atomically, named by MONAI's
    ``FolderLayout`` as ``SaveImaged`` names them (``<case>_<postfix>.nii.gz``, input folders kept below
    ``data_root_dir``).

    Args:
        keys: keys of (1, X, Y, Z) predictions whose meta data is the loaded scan's.
        output_dir: output folder.
        output_postfix: appended to the case name.
        label: write a uint8 labelmap instead of a float32 map.
        data_root_dir: keep the input's folders below this root in the output.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        output_postfix: str,
        label: bool = False,
        data_root_dir: str = "",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.layout = FolderLayout(output_dir, postfix=output_postfix, extension=".nii.gz", parent=False,
                                   makedirs=True, data_root_dir=data_root_dir)
        self.label = label

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = d[key].meta
            path = self.layout.filename(subject=str(meta["filename_or_obj"]).rstrip("/"))
            with atomic_path(path) as tmp:
                write_volume(d[key].detach().cpu().numpy()[0], meta, tmp, label=self.label)
        return d
