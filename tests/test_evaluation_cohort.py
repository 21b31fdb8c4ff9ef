"""Cohort evaluation on scans the tests make: manifests, per-case metrics, reports, failures, resume, torchrun."""

from __future__ import annotations

import json
import subprocess
import time

import nibabel as nib
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from anomalyclip_med.errors import InputError
from anomalyclip_med.evaluation.case_metrics import scan_voxel_metrics
from anomalyclip_med.evaluation.manifest import CohortCase, read_manifest
from evaluate_cli import assert_cohort_report_consistent, child_env, evaluate_command, read_json, run_evaluate
from scan_data import oblique_affine, save_nifti, synthetic_head_ct

AFFINE = oblique_affine()


def _lesion_case(folder, name, seed):
    vol = synthetic_head_ct(seed=seed)
    mask = (vol > 60).astype(np.uint8)  # the synthetic lesion is 75 HU in 40 HU tissue (noise sd 5)
    return save_nifti(vol, AFFINE, folder / f"{name}.nii.gz"), save_nifti(mask, AFFINE, folder / f"{name}_mask.nii.gz")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three lesion scans with masks (labels from the masks), two normal scans (label 0) and a corrupt file."""
    root = tmp_path_factory.mktemp("cohort")
    scans = root / "scans"
    scans.mkdir()
    rows = ["case_id,image,mask,label"]
    for i in range(3):
        _lesion_case(scans, f"lesion{i}", seed=i)
        rows.append(f"lesion{i},scans/lesion{i}.nii.gz,scans/lesion{i}_mask.nii.gz,")
    for i in range(2):
        vol = synthetic_head_ct(seed=10 + i)
        vol[vol > 60] = 40.0
        save_nifti(vol, AFFINE, scans / f"normal{i}.nii.gz")
        rows.append(f"normal{i},scans/normal{i}.nii.gz,,0")
    (scans / "broken.nii.gz").write_bytes(b"\x1f\x8b not really a gzip NIfTI")
    rows.append("broken,scans/broken.nii.gz,,1")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def single_run(cohort):
    out = cohort / "out1"
    proc = run_evaluate("--dataset", "manifest", cohort / "manifest.csv", "--out", out)
    assert proc.returncode == 2, proc.stderr  # the corrupt case failed alone
    return out


def test_manifest_csv_and_datalist_agree(cohort):
    cases = read_manifest(cohort / "manifest.csv")
    assert [c.case_id for c in cases] == ["lesion0", "lesion1", "lesion2", "normal0", "normal1", "broken"]
    assert cases[0] == CohortCase("lesion0", cohort / "scans/lesion0.nii.gz", cohort / "scans/lesion0_mask.nii.gz")
    assert cases[3].label == 0 and cases[3].mask is None and cases[5].label == 1
    # the same cohort as a MONAI datalist: "label" is the lesion mask, "scan_label" the scan label
    items = [{"image": str(c.image.relative_to(cohort)), "case_id": c.case_id}
             | ({"label": str(c.mask.relative_to(cohort))} if c.mask else {})
             | ({"scan_label": c.label} if c.label is not None else {}) for c in cases]
    (cohort / "datalist.json").write_text(json.dumps({"testing": items}))
    assert read_manifest(cohort / "datalist.json") == cases
    # without case_id the scan's name is used
    (cohort / "noid.csv").write_text("image\nscans/lesion0.nii.gz\n")
    assert read_manifest(cohort / "noid.csv")[0].case_id == "lesion0"


@pytest.mark.parametrize(
    "text, message",
    [
        ("case_id,image\na,x.nii.gz\na,y.nii.gz\n", "unique case_id"),
        ("image,label\nx.nii.gz,maybe\n", "not 0/1"),
        ("scan,mask\nx.nii.gz,\n", "no 'image' column"),
        ("case_id,image\n../up,x.nii.gz\n", "must be letters"),
        ("image\n", "lists no cases"),
    ],
)
def test_bad_manifests_are_rejected(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(InputError, match=message):
        read_manifest(tmp_path / "m.csv")


def test_voxel_metrics_resample_a_mask_stored_in_another_geometry(tmp_path):
    vol = synthetic_head_ct(seed=3)
    mask = (vol > 60).astype(np.uint8)
    amap = np.clip((vol - 40) / 40, 0, 1).astype(np.float32)  # the lesion (75 HU) maps near 0.9, tissue near 0
    map_path = save_nifti(amap, AFFINE, tmp_path / "map.nii.gz")
    same = scan_voxel_metrics(map_path, save_nifti(mask, AFFINE, tmp_path / "m1.nii.gz"), 0.5)
    # the same mask with its first axis reversed and the affine saying so: same physical voxels
    flip = AFFINE @ np.array([[-1, 0, 0, mask.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    flipped = scan_voxel_metrics(map_path, save_nifti(mask[::-1].copy(), flip, tmp_path / "m2.nii.gz"), 0.5)
    assert same["lesion_voxels"] == int(mask.sum()) == flipped["lesion_voxels"]
    for key in ("voxel_auroc", "dice", "iou", "predicted_voxels", "key_slice"):
        assert flipped[key] == pytest.approx(same[key])
    assert same["voxel_auroc"] == pytest.approx(roc_auc_score(mask.ravel(), amap.ravel()))
    # a mask shifted by 6 of the 48 voxels covers 7/8 of the scan: refused, not counted as normal where it is absent
    shifted = nib.Nifti1Image(mask, AFFINE @ np.array([[1, 0, 0, 6], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    nib.save(shifted, tmp_path / "m3.nii.gz")
    with pytest.raises(InputError, match=r"m3.nii.gz' covers only 87.5% of its scan's voxel grid"):
        scan_voxel_metrics(map_path, tmp_path / "m3.nii.gz", 0.5)


def test_report_files_and_their_consistency(single_run):
    summary, rows = assert_cohort_report_consistent(single_run)
    assert [r["case_id"] for r in rows] == ["lesion0", "lesion1", "lesion2", "normal0", "normal1", "broken"]
    # the corrupt scan is reported with its error; the others went on
    assert summary["n_failed"] == 1 and "broken.nii.gz" in summary["failed"][0]["error"]
    assert rows[-1]["status"] == "failed" and rows[-1]["error"]
    # labels: from the masks for lesion scans, from the manifest for normal ones
    assert [(r["label"], r["label_source"]) for r in rows[:5]] == [("1", "mask")] * 3 + [("0", "manifest")] * 2
    assert summary["scan_level"]["n_labelled"] == 5 and summary["voxel_level"]["n_with_lesion"] == 3
    assert "broken" in (single_run / "cohort_report.md").read_text()


def test_interrupted_run_resumes_without_recomputing_finished_cases(cohort):
    out = cohort / "out_resume"
    proc = subprocess.Popen(evaluate_command("--dataset", "manifest", cohort / "manifest.csv", "--out", out,
                                             "--batch-size", "1"), env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "cases" / "lesion0"
    deadline = time.time() + 240
    while not (first / "metrics.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert (first / "metrics.json").exists(), "the first case did not finish before the kill"
    assert not (out / "cohort_summary.json").exists(), "the run finished before it could be interrupted"
    finished = [d for d in (out / "cases").iterdir() if (d / "metrics.json").exists()]
    before = {p: p.stat().st_mtime_ns for d in finished for p in d.iterdir() if not p.name.startswith(".")}
    proc = run_evaluate("--dataset", "manifest", cohort / "manifest.csv", "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before  # finished cases untouched
    run = read_json(out / "run.json")
    assert run["cases"]["reused"] == len(finished) and run["cases"]["failed"] == 1
    assert run["cases"]["reused"] + run["cases"]["scored"] + run["cases"]["rescored"] == 5
    assert read_json(out / "cohort_summary.json")["n_ok"] == 5


def test_two_torchrun_processes_give_the_single_process_report(cohort, single_run):
    out = cohort / "out2"
    proc = run_evaluate("--dataset", "manifest", cohort / "manifest.csv", "--out", out, nproc=2)
    assert proc.returncode != 0, proc.stderr  # a rank exits 2 for the failed case; torchrun reports it as 1
    assert read_json(out / "run.json")["world_size"] == 2
    for name in ("cohort_summary.json", "cohort_summary.csv", "cohort_cases.csv", "cohort_report.md"):
        assert (out / name).read_text() == (single_run / name).read_text(), name
    for case in ("lesion0", "lesion1", "normal1"):  # both ranks' cases
        assert (out / "cases" / case / "metrics.json").read_text() == (
            single_run / "cases" / case / "metrics.json").read_text()
