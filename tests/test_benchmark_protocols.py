"""BMAD and MedIAnomaly: their trees read by the readers, scored, and reported in their own metric sets."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import synthetic_trees as trees
from anomalyclip_med.data import DATASETS, DatasetLayoutError, load_samples
from anomalyclip_med.data.bmad import SETS as BMAD_SETS
from anomalyclip_med.data.medianomaly import SETS as MEDIANOMALY_SETS
from anomalyclip_med.evaluation.benchmark import dataset_metrics, evaluate_samples, write_dataset_report
from anomalyclip_med.evaluation.protocols import METRIC_SETS, default_metric_set
from anomalyclip_med.metrics import PixelMetricAccumulator
from conftest import tiny_model
from evaluate_cli import read_csv, read_json


@pytest.mark.parametrize("dataset", sorted(BMAD_SETS))
def test_bmad_trees(tmp_path, dataset):
    pixel = BMAD_SETS[dataset][2]
    root = trees.bmad(tmp_path / dataset, pixel)
    train = load_samples(dataset, root, split="train")
    assert [s.label for s in train] == [0, 0, 0] and all(s.mask is None for s in train)
    assert all(s.image.parent.name == ("img" if pixel else "good") for s in train)
    valid = load_samples(dataset, root, split="valid")
    assert [s.label for s in valid] == [0, 1]
    test = load_samples(dataset, root)
    assert [(s.specie, s.label) for s in test] == [("good", 0), ("good", 0), ("Ungood", 1), ("Ungood", 1)]
    anomalous = test[2]
    if pixel:
        assert anomalous.mask == root / "test" / "Ungood" / "label" / anomalous.image.name
    else:
        assert anomalous.mask is None
    assert default_metric_set(dataset) == "bmad"


def test_bmad_layout_errors(tmp_path):
    root = trees.bmad(tmp_path / "brain", pixel=True)
    (root / "test" / "Ungood" / "label" / "00000_60.png").unlink()
    with pytest.raises(DatasetLayoutError, match="no mask for image .*00000_60.png"):
        load_samples("bmad-brain", root)
    with pytest.raises(DatasetLayoutError, match="folder 'test/good/img' is missing"):
        load_samples("bmad-liver", trees.bmad(tmp_path / "flat", pixel=False))  # an image-level tree is not Liver's
    assert "BraTS2021" in DATASETS["bmad-brain"] and "not AnomalyCLIP's Kaggle BrainMRI" in DATASETS["bmad-brain"]


@pytest.mark.parametrize("dataset", sorted(MEDIANOMALY_SETS))
def test_medianomaly_trees(tmp_path, dataset):
    layout = MEDIANOMALY_SETS[dataset][0]
    root = trees.medianomaly(tmp_path / dataset, layout)
    train = load_samples(dataset, root, split="train")
    assert train and not any(s.label for s in train)
    test = load_samples(dataset, root)
    assert [s.label for s in test] == [0, 0, 1, 1] if layout != "isic" else [0, 1]
    if layout == "brats":
        assert [s.mask.name for s in test if s.label] == ["00020_seg_0.png", "00021_seg_1.png"]
    else:
        assert all(s.mask is None for s in test)
    if layout == "isic":
        assert [s.image.name for s in train] == ["ISIC_1.jpg", "ISIC_3.jpg"]  # NV = 1 only
    assert default_metric_set(dataset) == "medianomaly"


def _exact_best_dice(masks: np.ndarray, maps: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(maps):
        pred = maps >= t
        best = max(best, 2 * (pred & masks).sum() / (pred.sum() + masks.sum()))
    return best


def test_best_dice_matches_exhaustive_search():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 5:10, 5:12] = masks[2, 1:4, 1:4] = True
    maps = np.clip(rng.normal(0.3, 0.1, masks.shape) + 0.3 * masks, 0, 1).astype(np.float32)
    acc = PixelMetricAccumulator()
    acc.update(masks, maps)
    assert acc.best_dice() == pytest.approx(_exact_best_dice(masks, maps), abs=2e-3)
    assert np.isnan(PixelMetricAccumulator().best_dice())


def test_medianomaly_and_bmad_metric_sets_in_reports(tmp_path):
    model = tiny_model(56).eval()
    root = trees.medianomaly(tmp_path / "brats", "brats")
    samples = load_samples("medianomaly-brats2021", root)
    images, pixels = evaluate_samples(model, samples, batch_size=4)
    per_class, mean = dataset_metrics(images, pixels)
    assert per_class["brain"]["image_auroc"] == pytest.approx(
        roc_auc_score([r["label"] for r in images], [r["image_score"] for r in images]))
    for dataset, metric_set in (("medianomaly-brats2021", "medianomaly"), ("bmad-brain", "bmad")):
        paths = write_dataset_report(images, per_class, mean, tmp_path / dataset, dataset, {}, None)
        header = read_csv(paths["metrics_csv"])[0].keys()
        assert list(header) == ["name", *[k for k in METRIC_SETS["anomalyclip"] + ("best_dice",)
                                          if k in METRIC_SETS[metric_set]]]
        md = paths["metrics_md"].read_text()
        assert f"({metric_set} metrics)" in md and "not comparable with AnomalyCLIP's 'BrainMRI'" in md
        assert read_json(paths["metrics_json"])["metric_set"] == metric_set
    assert "pixel best Dice" in (tmp_path / "medianomaly-brats2021" / "medianomaly-brats2021_metrics.md").read_text()
