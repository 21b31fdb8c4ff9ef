"""
Which inputs a batch holds, what each case is called, and where its outputs go (:class:`OutputLayout`).

One rule for ``score``, ``predict``, ``calibrate``, ``evaluate --dataset manifest`` and the bundle, for scans and
2D images alike: a case is named after its file stem (a
DICOM series after its folder); where names collide, after enough of its parent folders to be unique
(``case_0/FLAIR.nii.gz`` and ``case_1/FLAIR.nii.gz`` become ``case_0_FLAIR`` and ``case_1_FLAIR``). Outputs mirror
the inputs' folders below the folder they were found in (a folder given on the command line, the bundle's
``dataset_dir``, a datalist's folder) and are never placed above the output folder: a scan outside that root
(an absolute datalist path, ``../x.nii.gz``, a file given on the command line) is placed by its name at the top.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.dicom import has_dicom_files
from anomalyclip_med.io.names import IMAGE_SUFFIXES, VOLUME_SUFFIXES, image_suffix, safe_case_id, volume_suffix

__all__ = [
    "CASE_NAMING", "CASE_KINDS", "ScanCase", "OutputLayout", "find_cases", "datalist_cases", "name_cases",
    "input_fingerprint",
]

# how batch cases are named: see name_cases
CASE_NAMING = ("stem", "parent", "relpath")
# what a case is: a scan (a volume file or a DICOM series folder) or a 2D image file
CASE_KINDS = ("scans", "images")


@dataclass(frozen=True)
class ScanCase:
    """
    One scan of a batch.

    Attributes:
        name: the case name used in logs, reports and output file names (``<name>_anomaly_map.nii.gz``).
        source: a volume file or a DICOM series folder.
        subdir: the output sub-folder (POSIX, relative to the output folder; ``""`` for the top) mirroring the
            scan's folder below its root.
        walked: the input folder the scan was found in by walking it (outputs must never go there), or None.
    """

    name: str
    source: Path
    subdir: str = ""
    walked: Path | None = None

    def output_dir(self, out_dir: str | os.PathLike) -> Path:
        return Path(out_dir) / self.subdir if self.subdir else Path(out_dir)


@dataclass(frozen=True)
class OutputLayout:
    """
    Where a job's cases write (as MONAI's ``FolderLayout``, for whole cases): the output folder, each case's
    sub-folder mirroring its input's (:attr:`ScanCase.subdir`), and the file name of each output key.

    Attributes:
        out_dir: the output folder (absolute).
        names: output key -> file name template, ``{case}`` standing for the case name
            (``{"map": "{case}_anomaly_map.nii.gz", "metrics": "metrics.json"}``).
    """

    out_dir: Path
    names: dict[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(os.path.abspath(self.out_dir)))

    def folder(self, case: ScanCase) -> Path:
        return case.output_dir(self.out_dir)

    def paths(self, case: ScanCase, keys: Sequence[str] | None = None) -> dict[str, Path]:
        """The case's output paths (of ``keys``, in that order [all])."""
        folder = self.folder(case)
        return {k: folder / self.names[k].format(case=case.name) for k in (keys or self.names)}


def _case_suffix(path: Path) -> str | None:
    return volume_suffix(path) or image_suffix(path)


def _stem_parts(source: Path) -> list[str]:
    """The input's absolute path as name parts, its volume or image suffix dropped: ``/d/case_0/FLAIR.nii.gz`` ->
    ``[..., "d", "case_0", "FLAIR"]``."""
    path = Path(os.path.abspath(source))
    suffix = None if path.is_dir() else _case_suffix(path)
    name = path.name[: -len(suffix)] if suffix else path.name
    return [p for p in path.parent.parts if p not in ("/", "")] + [name]


def _relative_parts(source: Path, root: Path | None) -> list[str] | None:
    """The name parts of ``source`` below ``root`` (None when it is not below it)."""
    if root is None:
        return None
    try:
        rel = Path(os.path.abspath(source)).relative_to(os.path.abspath(root))
    except ValueError:
        return None
    if not rel.parts:
        return None
    return _stem_parts(source)[-len(rel.parts):]


def name_cases(sources: Sequence[Path], roots: Sequence[Path | None], naming: str = "stem") -> list[str]:
    """
    Unique case names for ``sources`` under the naming rule (``stem``, ``parent`` or ``relpath``; see the module
    docstring): each name starts as the stem (``parent``: the parent folder and the stem; ``relpath``: the path
    below its root), and names that collide take one more parent folder at a time until all are unique. Names
    are made safe as file names (:func:`anomalyclip_med.io.scans.safe_case_id`: ``Müller 1`` -> ``Müller_1``).

    Raises:
        InputError: an unknown rule, or two inputs that are the same input.
    """
    if naming not in CASE_NAMING:
        raise InputError(f"Unknown case naming {naming!r}; choose one of {', '.join(CASE_NAMING)}.")
    parts = [_stem_parts(s) for s in sources]
    start = {"stem": lambda i: 1, "parent": lambda i: 2,
             "relpath": lambda i: len(_relative_parts(sources[i], roots[i]) or [None])}[naming]
    depth = [min(start(i), len(p)) for i, p in enumerate(parts)]
    while True:
        names = [safe_case_id("_".join(p[-d:])) for p, d in zip(parts, depth)]
        counts = Counter(names)
        clashing = [i for i, n in enumerate(names) if counts[n] > 1]
        if not clashing:
            return names
        grown = False
        for i in clashing:
            if depth[i] < len(parts[i]):
                depth[i] += 1
                grown = True
        if not grown:
            first = names[clashing[0]]
            same = [str(sources[i]) for i in clashing if names[i] == first]
            raise InputError(f"Inputs {', '.join(same)} are the same input (case name {first!r}); give each once.")


def _subdir(source: Path, root: Path | None) -> str:
    """The scan's folder below ``root`` (POSIX), or ``""`` when it is at the top or not below it."""
    if _relative_parts(source, root) is None:
        return ""
    rel = os.path.relpath(os.path.dirname(os.path.abspath(source)), os.path.abspath(root))
    return "" if rel == "." else Path(rel).as_posix()


def _walk(folder: Path, skip: Path | None, kind: str) -> list[Path]:
    """The cases below ``folder`` (sorted; hidden entries and ``skip`` left out): volume files and DICOM series
    folders (``kind="scans"``), or image files (``kind="images"``)."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or (skip is not None and entry.resolve() == skip):
            continue
        if entry.is_dir():
            found.extend([entry] if kind == "scans" and has_dicom_files(entry) else _walk(entry, skip, kind))
        elif entry.is_file() and (volume_suffix(entry) if kind == "scans" else image_suffix(entry)):
            found.append(entry)
    return found


def find_cases(
    inputs: Sequence[str | os.PathLike], naming: str = "stem", out_dir: str | os.PathLike | None = None,
    kind: str = "scans",
) -> list[ScanCase]:
    """
    The cases of command-line inputs: a file (a volume or an image) or a DICOM series folder is one case placed at
    the top of the output folder; any other folder is walked (nested folders too), each volume file and DICOM
    series folder (``kind="scans"``) or image file (``kind="images"``) below it a case whose outputs mirror its
    folder below the walked one.

    Args:
        inputs: files and folders as given.
        naming: the case naming rule (:data:`CASE_NAMING`).
        out_dir: the output folder, left out of the walk (it may lie inside an input folder's parent).
        kind: one of :data:`CASE_KINDS`.

    Raises:
        InputError: a path that does not exist, a folder holding no cases, clashing inputs.
    """
    if kind not in CASE_KINDS:
        raise InputError(f"Unknown case kind {kind!r}; one of {', '.join(CASE_KINDS)}.")
    skip = Path(out_dir).resolve() if out_dir is not None else None
    sources: list[Path] = []
    roots: list[Path | None] = []
    walked: list[Path | None] = []
    for p in map(Path, inputs):
        if not p.exists():
            raise InputError(f"Input '{p}' does not exist.")
        if p.is_dir() and not (kind == "scans" and has_dicom_files(p)):
            found = _walk(p, skip, kind)
            if not found:
                what = (f"neither DICOM series nor volume files ({', '.join(VOLUME_SUFFIXES)})" if kind == "scans"
                        else f"no images ({', '.join(IMAGE_SUFFIXES)})")
                raise InputError(f"Folder '{p}' holds {what}, also in its sub-folders.")
            sources += found
            roots += [p] * len(found)
            walked += [p] * len(found)
        else:
            sources.append(p)
            roots.append(None)
            walked.append(p if p.is_dir() else None)
    names = name_cases(sources, roots, naming)
    return [ScanCase(n, s, _subdir(s, r), w) for n, s, r, w in zip(names, sources, roots, walked)]


def datalist_cases(
    dataset_dir: str | os.PathLike, naming: str = "stem", key: str = "testing", out_dir: str | os.PathLike | None = None
) -> list[ScanCase]:
    """
    The cases of the bundle's ``dataset_dir``: a folder (as :func:`find_cases` walks it), a DICOM series folder,
    or a MONAI datalist JSON whose ``key`` list holds ``{"image": path}`` items, paths relative to the JSON's
    folder (outputs mirror them below it; absolute paths and paths outside it are placed by their name).

    Raises:
        InputError: a missing path, a datalist without ``key`` or with an item without ``image``.
    """
    path = Path(dataset_dir)
    if not (path.suffix.lower() == ".json" and path.is_file()):
        return find_cases([path], naming, out_dir)
    try:
        items = json.loads(path.read_text(encoding="utf-8-sig"))[key]
        images = [str(item["image"]) for item in items]
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"Datalist '{path}' has no '{key}' list of {{\"image\": ...}} items ({err}).") from None
    root = path.parent
    sources = [Path(i) if os.path.isabs(i) else root / i for i in images]
    missing = [str(s) for s in sources if not s.exists()]
    if missing:
        raise InputError(f"Datalist '{path}' names scans that do not exist: {', '.join(missing[:3])}.")
    roots: list[Path | None] = [root] * len(sources)
    names = name_cases(sources, roots, naming)
    return [ScanCase(n, s, _subdir(s, root), s if s.is_dir() else None) for n, s in zip(names, sources)]


def input_fingerprint(source: str | os.PathLike) -> dict:
    """
    What resume compares to know that an input is unchanged: size and modification time of a file; of a DICOM
    folder, the count and a hash over each file's name, size and modification time.
    """
    path = Path(source)
    if path.is_dir():
        h = hashlib.sha256()
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        for f in files:
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"path": str(path.resolve()), "files": len(files), "listing_sha256": h.hexdigest()}
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
