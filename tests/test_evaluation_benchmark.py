"""Benchmark evaluation on an MVTec AD-style tree the tests make: wiring, tables, sub-sampling, torchrun."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anomalyclip_med.data import load_samples
from anomalyclip_med.evaluation.benchmark import dataset_metrics, evaluate_samples, subsample
from anomalyclip_med.evaluation.tables import write_metric_tables
from anomalyclip_med.inference.images2d import preprocess_images
from anomalyclip_med.metrics import aupro, pixel_auroc
from anomalyclip_med.transforms.image2d import mask_transform
from conftest import tiny_model
from evaluate_cli import assert_dataset_report_consistent, read_csv, read_json, run_evaluate


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    """Two classes, each 3 good and 3 'crack' images (64 x 80, a bright disc on texture) with masks."""
    root = tmp_path_factory.mktemp("mvtec")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :80]
    for cls in ("bottle", "grid"):
        for specie in ("good", "crack"):
            (root / cls / "test" / specie).mkdir(parents=True)
            for i in range(3):
                img = (rng.random((64, 80, 3)) * 120).astype(np.uint8)
                if specie == "crack":
                    disc = (yy - 20 - 8 * i) ** 2 + (xx - 30 - 10 * i) ** 2 <= (6 + 2 * i) ** 2
                    img[disc] = (230, 60, 40)
                    (root / cls / "ground_truth" / specie).mkdir(parents=True, exist_ok=True)
                    Image.fromarray((disc * 255).astype(np.uint8)).save(
                        root / cls / "ground_truth" / specie / f"{i:03d}_mask.png")
                Image.fromarray(img).save(root / cls / "test" / specie / f"{i:03d}.png")
    return root


def test_evaluation_matches_the_model_run_by_hand(mvtec):
    model = tiny_model()
    samples = load_samples("mvtec", mvtec)
    images, pixels = evaluate_samples(model, samples, batch_size=4)
    assert [r["path"] for r in images] == [str(s.image) for s in samples]
    masks_t = mask_transform(56)
    for cls in ("bottle", "grid"):
        mine = [s for s in samples if s.cls_name == cls]
        with torch.inference_mode():
            out = model.predict(preprocess_images(model, [s.image for s in mine]))
        masks = torch.stack([masks_t(Image.open(s.mask).convert("L"))[0] if s.mask else torch.zeros(56, 56)
                             for s in mine])
        scores = [r["image_score"] for r in images if r["cls_name"] == cls]
        assert scores == pytest.approx(out.image_score.tolist(), abs=1e-5)
        acc = pixels[cls]
        assert acc.auroc() == pytest.approx(pixel_auroc(masks, out.anomaly_map), abs=acc.auroc_error_bound() + 1e-6)
        assert acc.aupro() == pytest.approx(aupro(masks, out.anomaly_map), abs=1e-3)
        assert acc.n_regions == 3  # one disc per anomalous image
    per_class, mean = dataset_metrics(images, pixels)
    assert per_class["grid"]["n_images"] == 6 and per_class["grid"]["n_anomalous"] == 3
    assert mean["aupro"] == pytest.approx((per_class["bottle"]["aupro"] + per_class["grid"]["aupro"]) / 2)


def test_subsample_keeps_both_labels_of_every_class(mvtec):
    samples = load_samples("mvtec", mvtec)
    kept = subsample(samples, 2)
    assert len(kept) == 4
    for cls in ("bottle", "grid"):
        assert sorted(s.label for s in kept if s.cls_name == cls) == [0, 1]
    assert subsample(samples, None) == samples


def test_tables_in_the_paper_layout(tmp_path):
    per_class = {"brain": {"image_auroc": 0.75, "image_ap": 0.8333333, "image_max_f1": 0.8,
                           "pixel_auroc": float("nan")}}
    paths = write_metric_tables(per_class, {"image_auroc": 0.75, "image_ap": 0.8333333, "image_max_f1": 0.8},
                                tmp_path / "x_metrics", "x")
    md = paths["md"].read_text()
    assert "| class | image AUROC | image AP | image max-F1 |" in md  # no pixel columns: none defined
    assert "| brain | 75.0 | 83.3 | 80.0 |" in md and "| **mean** | 75.0 | 83.3 | 80.0 |" in md
    assert read_json(paths["json"])["classes"]["brain"]["pixel_auroc"] is None
    assert read_csv(paths["csv"])[0]["image_ap"] == "0.8333333"


def test_cli_report_and_torchrun_agree(mvtec, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    proc = run_evaluate("--dataset", "mvtec", mvtec, "--out", one, "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    table = assert_dataset_report_consistent(one, "mvtec")
    assert set(table["classes"]) == {"bottle", "grid"} and table["mean"]["aupro"] is not None
    assert "| **mean** |" in (one / "mvtec_metrics.md").read_text()
    proc = run_evaluate("--dataset", "mvtec", mvtec, "--out", two, "--batch-size", "4", nproc=2)
    assert proc.returncode == 0, proc.stderr
    for name in ("mvtec_metrics.md", "mvtec_metrics.csv", "mvtec_metrics.json", "mvtec_images.csv"):
        assert (two / name).read_text() == (one / name).read_text(), name
