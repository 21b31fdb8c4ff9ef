"""End to end on the real data of ../shared/data: HeadCT and BrainMRI (image level), BraTS and pyradiomics volumes
with their lesion masks as a cohort (voxel and scan level). Tiny random backbone: the numbers test the plumbing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SHARED_DATA, needs_shared_data
from evaluate_cli import assert_cohort_report_consistent, assert_dataset_report_consistent, read_json, run_evaluate

pytestmark = needs_shared_data
VOLUMES = SHARED_DATA / "volumes"


@pytest.mark.parametrize("dataset, root", [("headct", "HeadCT/Dataset"), ("brainmri", "BrainMRI")])
def test_medical_image_level_sets(tmp_path, dataset, root):
    proc = run_evaluate("--dataset", dataset, SHARED_DATA / root, "--out", tmp_path, "--limit", "24")
    assert proc.returncode == 0, proc.stderr
    table = assert_dataset_report_consistent(tmp_path, dataset)
    (cls,) = table["classes"]
    m = table["classes"][cls]
    assert m["n_images"] == 24 and 0 < m["n_anomalous"] < 24  # both labels kept by --limit
    assert 0 <= m["image_auroc"] <= 1 and m.get("pixel_auroc") is None  # image-level only: no masks
    md = (tmp_path / f"{dataset}_metrics.md").read_text()
    assert "image AUROC" in md and "pixel AUROC" not in md
    assert read_json(tmp_path / "run.json")["model"]["warning"]  # random model: flagged in the run record


def test_brats_and_pyradiomics_cohort(tmp_path):
    # a lesion-free slab of a BraTS scan (slices 10..49; the tumour spans 55..131) is a real normal scan
    flair = nib.load(VOLUMES / "brats2018/case_0/FLAIR.nii.gz")
    nib.save(flair.slicer[:, :, 10:50], tmp_path / "brats0_normal.nii.gz")
    rows = ["case_id,image,mask,label",
            f"brats0,{VOLUMES}/brats2018/case_0/FLAIR.nii.gz,{VOLUMES}/brats2018/case_0/GT_W.nii.gz,",
            f"brats1,{VOLUMES}/brats2018/case_1/FLAIR.nii.gz,{VOLUMES}/brats2018/case_1/GT_W.nii.gz,1",
            "brats0_normal,brats0_normal.nii.gz,,0"]
    rows += [f"{n},{VOLUMES}/pyradiomics/{n}_image.nrrd,{VOLUMES}/pyradiomics/{n}_label.nrrd,"
             for n in ("brain1", "brain2", "breast1")]
    (tmp_path / "cohort.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    proc = run_evaluate("--dataset", "manifest", tmp_path / "cohort.csv", "--out", out, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary, cases = assert_cohort_report_consistent(out)
    assert summary["n_failed"] == 0 and summary["scan_level"]["n_normal"] == 1
    assert summary["scan_level"]["n_anomalous"] == 5 and summary["scan_level"]["auroc"] is not None
    by_id = {r["case_id"]: r for r in cases}
    # lesion voxel counts are those of the masks (the NRRD masks resampled onto the maps' grid, unchanged)
    gt = nib.load(VOLUMES / "brats2018/case_0/GT_W.nii.gz").get_fdata()
    assert int(by_id["brats0"]["lesion_voxels"]) == int((gt > 0).sum())
    for name in ("brain1", "brain2", "breast1"):
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(VOLUMES / f"pyradiomics/{name}_label.nrrd")))
        assert int(by_id[name]["lesion_voxels"]) == int((mask > 0).sum())
        assert 0 <= float(by_id[name]["voxel_auroc"]) <= 1
    assert by_id["brats0_normal"]["lesion_voxels"] == "" and by_id["brats0_normal"]["label_source"] == "manifest"
    assert np.isfinite(float(by_id["brats1"]["dice"]))


def test_kvasir_pixel_level(tmp_path):
    # every Kvasir image is a polyp: pixel AUROC / AUPRO are defined, image AUROC is not
    proc = run_evaluate("--dataset", "kvasir", SHARED_DATA / "Kvasir-SEG-sample/Kvasir-SEG", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = assert_dataset_report_consistent(tmp_path, "kvasir")
    (m,) = table["classes"].values()
    assert m["n_images"] == m["n_anomalous"] == 5 and m["image_auroc"] is None
    assert 0 <= m["pixel_auroc"] <= 1 and 0 <= m["aupro"] <= 1
    md = (tmp_path / "kvasir_metrics.md").read_text()
    assert "pixel AUROC | pixel AUPRO" in md and "image AUROC" not in md
