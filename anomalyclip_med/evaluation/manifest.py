"""
Cohort manifests: which scans to score, their optional lesion masks and optional scan-level labels.

Two formats:
- CSV with a header: ``image`` (required), ``case_id``, ``mask``, ``label`` (scan-level 0/1) optional; empty cells
  mean "not given".
- MONAI datalist JSON (the layout ``monai.data.load_decathlon_datalist`` reads): a list under ``datalist_key`` (default
  ``"testing"``) of ``{"image": ..., "label": <lesion mask path>, "scan_label": 0|1, "case_id": ...}``, where
  ``label`` is the segmentation as in every MONAI datalist.
Relative paths are taken from the manifest's folder. Manifests are UTF-8 (with or without BOM) or UTF-16 with a BOM;
any other byte is an error naming its line. Without a ``case_id`` the case ID is derived from the image's file name
with :func:`anomalyclip_med.io.scans.safe_case_id` (``Müller 1.nii.gz`` -> ``Müller_1``).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.cases import name_cases

__all__ = ["CohortCase", "read_manifest"]

# letters (any script), digits, '.', '_', '-', not starting with a dot: a folder name that cannot leave cases/
_SAFE_ID = re.compile(r"^[^\W_][\w.-]*$")
_TRUE, _FALSE = ("1", "true", "yes", "anomalous", "abnormal"), ("0", "false", "no", "normal")


@dataclass(frozen=True)
class CohortCase:
    """
    One scan of a cohort.

    Attributes:
        case_id: unique name; its outputs go to ``<out>/cases/<case_id>/``.
        image: the scan (NIfTI, NRRD, MHA, DICOM folder ... anything the scan scoring reads).
        mask: lesion mask in the scan's physical space, or None.
        label: scan-level label (1 anomalous, 0 normal), or None when the manifest gives none.
    """

    case_id: str
    image: Path
    mask: Path | None = None
    label: int | None = None


def _label(value, where: str) -> int | None:
    text = str(value).strip().lower() if value is not None else ""
    if text in ("", "none", "nan"):
        return None
    if text in _TRUE or text == "1.0":
        return 1
    if text in _FALSE or text == "0.0":
        return 0
    raise InputError(f"{where}: scan label {value!r} is not 0/1 (or normal/anomalous); fix or leave it empty.")


def _path(value, base: Path) -> Path | None:
    text = str(value).strip() if value is not None else ""
    return None if not text else Path(os.path.abspath(base / text))  # absolute: read later in the pipeline threads


def _text(path: Path) -> str:
    """
    The manifest's text: UTF-8 with or without BOM, or UTF-16 with BOM; any other byte, or a NUL, is an error naming
    its line.
    """
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding, body = "utf-16", raw
    else:
        encoding, body = "utf-8", raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as err:
        good = body[: err.start].decode(encoding, errors="replace")
        line = good.count("\n") + 1
        column = len(good) - (good.rfind("\n") + 1) + 1
        raise InputError(
            f"Manifest '{path}' line {line}, column {column}: byte(s) {body[err.start:err.end].hex(' ')} are not "
            f"{encoding.upper()} ({err.reason}). Save the manifest as UTF-8 (or UTF-16 with a byte-order mark)."
        ) from None
    if "\0" in text:  # valid UTF-8, but no text file holds NUL: UTF-16 without its byte-order mark, or binary data
        line = text[: text.index("\0")].count("\n") + 1
        raise InputError(f"Manifest '{path}' line {line} holds NUL bytes: it is UTF-16 without a byte-order mark, "
                         "or not a text file. Save the manifest as UTF-8.")
    return text


def _rows_csv(path: Path) -> list[dict]:
    reader = csv.DictReader(io.StringIO(_text(path), newline=""))
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        if "image" not in columns:
            raise InputError(f"Manifest '{path}' has no 'image' column (columns: {columns}); the header must name "
                             "image and optionally case_id, mask, label.")
        rows = [{k.strip(): v for k, v in row.items() if k} for row in reader]
    except csv.Error as err:
        raise InputError(f"Manifest '{path}' line {reader.line_num} is not valid CSV: {err}.") from None
    base = path.parent
    return [
        {"case_id": r.get("case_id"), "image": _path(r.get("image"), base), "mask": _path(r.get("mask"), base),
         "label": _label(r.get("label"), f"'{path}' row {i + 2}")}
        for i, r in enumerate(rows)
    ]


def _rows_datalist(path: Path, key: str) -> list[dict]:
    # parsed here rather than by monai.data.load_decathlon_datalist, which reads the file in the locale's encoding
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"Cannot read MONAI datalist '{path}': line {err.lineno}: {err.msg}.") from None
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(it, dict) for it in items):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InputError(f"MONAI datalist '{path}' has no list of cases under key '{key}' (found: {found}); pick "
                         "the list with --datalist-key.")
    return [
        {"case_id": it.get("case_id"), "image": _path(it.get("image"), path.parent),
         "mask": _path(it.get("label"), path.parent), "label": _label(it.get("scan_label"), f"'{path}' item {i}")}
        for i, it in enumerate(items)
    ]


def read_manifest(path: str | os.PathLike, datalist_key: str = "testing", case_name: str = "stem") -> list[CohortCase]:
    """
    Read a cohort manifest (CSV, or MONAI datalist JSON).

    Args:
        path: the manifest file.
        datalist_key: the JSON list to read.
        case_name: how cases without a ``case_id`` are named (:func:`anomalyclip_med.io.cases.name_cases`, the
            rule of every batch command: file stem, parent folders added where stems collide).

    Returns:
        the cases in manifest order. Files are not opened here: a missing or corrupt scan fails only its case.

    Raises:
        InputError: unreadable manifest, no rows, a row without an image, a bad label, an unsafe or repeated
            case_id.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Manifest '{path}' does not exist.")
    rows = _rows_datalist(path, datalist_key) if path.suffix.lower() == ".json" else _rows_csv(path)
    if not rows:
        raise InputError(f"Manifest '{path}' lists no cases.")
    for i, row in enumerate(rows):
        if row["image"] is None:
            raise InputError(f"Manifest '{path}' case {i + 1} has no image.")
    unnamed = [i for i, row in enumerate(rows) if not row["case_id"]]
    derived = dict(zip(unnamed, name_cases([rows[i]["image"] for i in unnamed], [path.parent] * len(unnamed),
                                           case_name)))
    cases, seen = [], {}
    for i, row in enumerate(rows):
        given = str(row["case_id"]).strip() if row["case_id"] else ""
        cid = unicodedata.normalize("NFC", given) if given else derived[i]
        if not _SAFE_ID.match(cid):
            raise InputError(f"Manifest '{path}': case_id {cid!r} must be letters, digits, '.', '_' or '-', not "
                             "starting with '.', '_' or '-' (it names the case's output folder).")
        if cid in seen:
            raise InputError(f"Manifest '{path}': case_id '{cid}' is used by cases {seen[cid] + 1} and {i + 1}; "
                             "give every case a unique case_id.")
        seen[cid] = i
        cases.append(CohortCase(cid, row["image"], row["mask"], row["label"]))
    return cases
