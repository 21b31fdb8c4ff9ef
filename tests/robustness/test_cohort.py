"""
Issue 10 items 1, 5 and 9 on the cohort path: ``evaluate`` over a UTF-16 manifest (no case_id column, a file named
``Müller 1``) whose masks are cut short, lying, garbled or of another scan; manifests that cannot be read; and
cohort runs killed with SIGKILL that resume to the same results.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from faults import (AFFINE, PROMPTS, TINY, error_lines, good_volume, kill_when, nifti_header_declaring, png_bytes,
                    run_cli, save_nifti)

# case -> (mask fault, expected error after the mask's path); None: the case must succeed
MASK_FAULTS = {
    "good": None,
    "Müller_1": None,
    "half_mask": ("half", "' is truncated or damaged: its gzip stream decompresses to "),
    "elsewhere_mask": ("elsewhere", "' has no physical overlap with its scan's voxel grid"),
    "partial_mask": ("partial", "' covers only 75.0% of its scan's voxel grid"),
    "garbled_mask": ("garbled", "' is named .nii but holds unrecognised binary data"),
    "empty_mask": ("empty", "' is named .nii.gz but holds an empty file"),
    "lying_mask": ("lying", "' is truncated or damaged: its header declares 30000x30000x1 voxels"),
    "png_mask": ("png", "' is named .nii.gz but holds a PNG image"),
}


def _shifted(affine: np.ndarray, voxels: float) -> np.ndarray:
    out = affine.copy()
    out[:3, 3] += affine[:3, 0] * voxels
    return out


def make_cohort(root: Path) -> tuple[Path, dict[str, int]]:
    """Scans, masks and a UTF-16 (BOM) manifest without case_id; returns it and the good masks' lesion sizes."""
    root.mkdir(parents=True, exist_ok=True)
    vol = good_volume(4)
    lesion = (vol > 60).astype(np.uint8)
    rows, lesions = [], {}
    for case, fault in MASK_FAULTS.items():
        image = save_nifti(vol, AFFINE, root / f"{case.replace('_', ' ') if case == 'Müller_1' else case}.nii.gz")
        mask = None
        kind = fault[0] if fault else None
        if case == "good":
            mask = save_nifti(lesion, AFFINE, root / "good_lesion.nii.gz")
            lesions[case] = int(lesion.sum())
        elif kind == "half":
            whole = save_nifti(lesion, AFFINE, root / "whole_lesion.nii.gz").read_bytes()
            mask = root / "half_lesion.nii.gz"
            mask.write_bytes(whole[: len(whole) // 2])
        elif kind in ("elsewhere", "partial"):
            shift = 500.0 / 0.8 if kind == "elsewhere" else 5  # 5 of 20 voxels: 75% of the scan covered
            mask = save_nifti(lesion, _shifted(AFFINE, shift), root / f"{kind}_lesion.nii.gz")
        elif kind == "garbled":
            mask = root / "garbled_lesion.nii"
            mask.write_bytes(b"\x07" + np.random.default_rng(5).integers(0, 256, 4000, np.uint8).tobytes())
        elif kind == "empty":
            mask = root / "empty_lesion.nii.gz"
            mask.write_bytes(b"")
        elif kind == "lying":
            mask = nifti_header_declaring(root / "lying_lesion.nii", (30000, 30000, 1), np.float32, gz=False)
        elif kind == "png":
            mask = root / "png_lesion.nii.gz"
            mask.write_bytes(png_bytes(20, 20))
        rows.append((image.name, "" if mask is None else mask.name))
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([("image", "mask"), *rows])
    manifest = root / "manifest.csv"
    manifest.write_bytes(text.getvalue().encode("utf-16"))  # Python's utf-16 codec writes the BOM
    return manifest, lesions


def cases_table(out: Path) -> dict[str, dict]:
    with open(out / "cohort_cases.csv", newline="", encoding="utf-8") as f:
        return {r["case_id"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    manifest, lesions = make_cohort(root / "data")
    out = root / "out"
    proc = run_cli("evaluate", "--dataset", "manifest", manifest, "--out", out, *TINY, *PROMPTS)
    return proc, manifest, lesions, out


def test_the_utf16_manifest_with_derived_case_ids_is_read(cohort):
    proc, _, _, out = cohort
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert set(cases_table(out)) == set(MASK_FAULTS)  # 'Müller 1.nii.gz' became case Müller_1


def test_good_cases_get_their_exact_lesion(cohort):
    _, _, lesions, out = cohort
    table = cases_table(out)
    assert table["good"]["status"] == "ok" and int(table["good"]["lesion_voxels"]) == lesions["good"]
    assert table["Müller_1"]["status"] == "ok" and table["Müller_1"]["lesion_voxels"] == ""


@pytest.mark.parametrize("case", [c for c, f in MASK_FAULTS.items() if f])
def test_a_bad_mask_fails_its_case_naming_the_mask(cohort, case):
    _, manifest, _, out = cohort
    row = cases_table(out)[case]
    kind, message = MASK_FAULTS[case]
    assert row["status"] == "failed" and row["lesion_voxels"] == ""
    assert f"{row['mask']}{message}" in row["error"], row["error"]


def _manifest_run(tmp_path: Path, name: str, data: bytes) -> subprocess.CompletedProcess:
    save_nifti(good_volume(), AFFINE, tmp_path / "scan.nii.gz")
    (tmp_path / name).write_bytes(data)
    return run_cli("evaluate", "--dataset", "manifest", tmp_path / name, "--out", tmp_path / "out", *TINY, *PROMPTS)


def test_a_latin1_manifest_is_one_error_naming_the_line(tmp_path):
    text = "image,label\nscan.nii.gz,0\n# Patient Müller\nscan.nii.gz,1\n"
    proc = _manifest_run(tmp_path, "latin1.csv", text.encode("latin-1"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert error_lines(proc.stderr) == [
        f"error: Manifest '{tmp_path / 'latin1.csv'}' line 3, column 12: byte(s) fc are not UTF-8 (invalid start "
        "byte). Save the manifest as UTF-8 (or UTF-16 with a byte-order mark)."]


def test_a_path_traversing_case_id_is_refused(tmp_path):
    case_id = "../../escaped"  # more unsafe IDs are read in test_inputs.py
    proc = _manifest_run(tmp_path, "m.csv", f"image,case_id\nscan.nii.gz,{case_id}\n".encode())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(error_lines(proc.stderr)) == 1 and f"case_id {case_id!r} must be letters" in proc.stderr
    assert not list(tmp_path.parent.rglob("escaped")) and not (tmp_path / "out" / "cases").exists()


def test_killed_cohort_runs_resume_to_identical_results(cohort, tmp_path):
    _, manifest, _, reference = cohort
    data = tmp_path / "data"
    shutil.copytree(manifest.parent, data)
    out = tmp_path / "out"
    args = ["evaluate", "--dataset", "manifest", data / manifest.name, "--out", out, *TINY, *PROMPTS]
    kill_when(args, lambda: any(out.rglob("metrics.json")))  # right after the first case finished
    kill_when(args, lambda: len(list(out.rglob("*_scores.json"))) >= 4)  # in the middle of the cohort
    proc = run_cli("evaluate", "--dataset", "manifest", data / manifest.name, "--out", out, *TINY, *PROMPTS)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    resumed, first = cases_table(out), cases_table(reference)
    assert set(resumed) == set(first)
    for case, row in first.items():
        for key in ("status", "scan_score", "lesion_voxels", "voxel_auroc", "dice", "n_slices"):
            assert resumed[case][key] == row[key], (case, key)
        assert resumed[case]["error"].replace(str(data), "") == row["error"].replace(str(manifest.parent), "")
    for case in ("good", "Müller_1"):
        maps = [nib.load(d / table[case]["map"]).get_fdata() for d, table in ((out, resumed), (reference, first))]
        np.testing.assert_array_equal(*maps)
