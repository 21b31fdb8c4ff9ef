"""
Issue 11 for the bundle's ``inference.json``: outputs always under ``--output_dir``, mirroring the inputs' folders
below ``--dataset_dir`` (or the datalist's folder), absolute datalist paths placed by their name, the case-naming
rule and ``--case_name``, and never a file written into an input folder. One ``python -m monai.bundle run`` per
input kind: a folder (nested folders, a DICOM series folder, a folder of series), a datalist JSON with relative
paths, one with absolute paths, and a DICOM series folder as ``--dataset_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anomalyclip_med.io.case_outputs import read_finished_case
from conftest import TESTS, TINY_CLIP_JSON
from scan_data import save_nifti, synthetic_head_ct, write_dicom_series

REPO = TESTS.parent
CONFIG = REPO / "bundles" / "anomalyclip_zeroshot" / "configs" / "inference.json"
TINY = ["--backbone", str(TINY_CLIP_JSON), "--backbone_weights", "none", "--image_size", "56", "--prompts", "untrained",
        "--progress", "false"]
AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])
SUFFIXES = ("_anomaly_map.nii.gz", "_anomaly_seg.nii.gz", "_scores.json", "_overlay.png")


def _bundle(dataset_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIG), "--bundle_root",
                           str(CONFIG.parent.parent), "--dataset_dir", str(dataset_dir), "--output_dir", str(out),
                           *TINY, *extra], env=env, capture_output=True, text=True, timeout=600)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _written(out: Path) -> set[str]:
    """The files under ``out`` (relative, POSIX), the lock file left out."""
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}


def _cases(*names: str) -> set[str]:
    return {f"{name}{suffix}" for name in names for suffix in SUFFIXES}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A hospital export: BraTS-style folders with same-named files, a scan at the top, a DICOM series folder and
    a folder of series; the datalists sit beside them (relative paths) and elsewhere (absolute paths)."""
    root = tmp_path_factory.mktemp("placement")
    data = root / "data"
    for k in range(2):
        (data / f"case_{k}").mkdir(parents=True)
        save_nifti(synthetic_head_ct((20, 20, 10), seed=k), AFFINE, data / f"case_{k}" / "FLAIR.nii.gz")
    save_nifti(synthetic_head_ct((20, 20, 10), seed=2), AFFINE, data / "top.nii.gz")
    write_dicom_series(synthetic_head_ct((20, 20, 10), seed=3), AFFINE, data / "series_top")
    for k in range(2):
        write_dicom_series(synthetic_head_ct((20, 20, 10), seed=4 + k), AFFINE, data / "series" / f"s{k}")
    lists = root / "lists"
    lists.mkdir()
    relative = data / "datalist.json"
    relative.write_text(json.dumps({"testing": [{"image": "case_0/FLAIR.nii.gz"}, {"image": "series/s1"}]}))
    absolute = lists / "absolute.json"
    absolute.write_text(json.dumps({"testing": [{"image": str(data / f"case_{k}" / "FLAIR.nii.gz")} for k in range(2)]}))
    return root, data, relative, absolute


def _check(proc: subprocess.CompletedProcess, out: Path, expected: set[str], inputs_before: dict, data: Path) -> None:
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert _written(out) == expected
    for scores in (p for p in expected if p.endswith("_scores.json")):
        stem = out / scores[: -len("_scores.json")]
        paths = {k: Path(f"{stem}{s}") for k, s in zip(("map", "seg", "scores", "montage"), SUFFIXES)}
        assert read_finished_case(paths) is not None, scores  # whole: sizes and hashes as recorded
    assert _snapshot(data) == inputs_before, "an input folder was written to"


def test_folder_of_nested_files_series_and_folder_of_series_mirrored_under_output_dir(inputs, tmp_path):
    root, data, _, _ = inputs
    before = _snapshot(data)
    out = tmp_path / "out"
    proc = _bundle(data, out)
    # same-named FLAIRs take their parent folder; series are named after their folders; folders mirrored
    _check(proc, out, _cases("case_0/case_0_FLAIR", "case_1/case_1_FLAIR", "top", "series_top", "series/s0",
                             "series/s1"), before, data)
    lines = [line for line in proc.stdout.splitlines() if re.match(r"[\w/]+: scan score", line)]
    assert len(lines) == 6 and any(line.startswith("case_0_FLAIR: scan score") and str(out / "case_0") in line
                                   for line in lines), proc.stdout
    assert f"6 scored, 0 reused, 0 failed of 6 case(s) in {out}" in proc.stdout


def test_datalist_with_relative_paths_mirrors_them_and_takes_case_name(inputs, tmp_path):
    root, data, relative, _ = inputs
    before = _snapshot(data)
    out = tmp_path / "out"
    _check(_bundle(relative, out, "--case_name", "relpath"), out,
           _cases("case_0/case_0_FLAIR", "series/series_s1"), before, data)


def test_datalist_with_absolute_paths_places_cases_by_name_at_the_top(inputs, tmp_path):
    root, data, _, absolute = inputs
    before = _snapshot(data)
    out = tmp_path / "out"
    _check(_bundle(absolute, out), out, _cases("case_0_FLAIR", "case_1_FLAIR"), before, data)
    assert _snapshot(root / "lists") == {"absolute.json": hashlib.sha256(absolute.read_bytes()).hexdigest()}


def test_dicom_series_folder_as_dataset_dir(inputs, tmp_path):
    root, data, _, _ = inputs
    before = _snapshot(data)
    out = tmp_path / "out"
    _check(_bundle(data / "series_top", out), out, _cases("series_top"), before, data)
