"""Metrics: the reference's values on stored maps, scikit-learn agreement, hand-derived cases, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from anomalyclip_med.metrics import (
    PixelMetricAccumulator,
    aupro,
    dice,
    image_ap,
    image_auroc,
    image_max_f1,
    iou,
    pixel_ap,
    pixel_auroc,
    volume_auroc,
    volume_dice,
)
from conftest import FIXTURE_A, needs_fixture_a


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURE_A / "metrics.pt", weights_only=False)


@needs_fixture_a
def test_reproduces_reference_metric_values(reference):
    r = reference
    assert image_auroc(r["labels"], r["scores"]) == pytest.approx(r["image_auroc"], abs=1e-6)
    assert image_ap(r["labels"], r["scores"]) == pytest.approx(r["image_ap"], abs=1e-6)
    assert pixel_auroc(r["masks"], r["maps"]) == pytest.approx(r["pixel_auroc"], abs=1e-6)
    assert aupro(r["masks"], r["maps"]) == pytest.approx(r["aupro"], abs=1e-6)  # tighter than the 1e-4 asked
    # numpy input gives the same as tensors
    assert aupro(r["masks"].numpy(), r["maps"].numpy()) == pytest.approx(r["aupro"], abs=1e-6)


@needs_fixture_a
def test_streaming_accumulator_reproduces_reference(reference):
    acc = PixelMetricAccumulator()
    for i in range(0, 8, 3):
        acc.update(reference["masks"][i : i + 3], reference["maps"][i : i + 3])
    assert acc.auroc() == pytest.approx(reference["pixel_auroc"], abs=max(acc.auroc_error_bound(), 1e-7))
    assert acc.auroc_error_bound() < 1e-5
    assert acc.aupro() == pytest.approx(reference["aupro"], abs=1e-4)


def _labels_scores(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return labels, rng.normal(size=n) + labels  # overlapping classes, continuous scores


def test_image_metrics_agree_with_sklearn():
    labels, scores = _labels_scores()
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert image_ap(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    best = max(f1_score(labels, scores >= t) for t in np.unique(scores))  # brute force over all thresholds
    assert image_max_f1(labels, scores) == pytest.approx(best, abs=1e-12)
    # tensors (any dtype) are accepted
    assert image_auroc(torch.tensor(labels), torch.tensor(scores, dtype=torch.float16)) == pytest.approx(
        roc_auc_score(labels, torch.tensor(scores, dtype=torch.float16).float().numpy()), abs=1e-12
    )


def test_pixel_metrics_agree_with_sklearn():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 16, 16)) > 0.8
    maps = rng.random((3, 16, 16)) + 0.5 * masks
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert pixel_ap(masks, maps) == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_hand_derived_image_metrics():
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert image_auroc(labels, scores) == pytest.approx(0.75)  # 3 of 4 (normal, anomalous) pairs ordered
    assert image_ap(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # precision 1 at recall .5, 2/3 at 1
    assert image_max_f1(labels, scores) == pytest.approx(0.8)  # threshold 0.35: P 2/3, R 1
    for metric in (image_auroc, image_ap, image_max_f1):  # one class: undefined, not an exception
        assert np.isnan(metric([1, 1], [0.2, 0.3])) and np.isnan(metric([0, 0], [0.2, 0.3]))


def test_hand_derived_pixel_auroc_and_masks_0_255():
    mask = np.array([[[255, 0], [0, 0]]], dtype=np.uint8)
    amap = np.array([[[0.9, 0.1], [0.5, 0.95]]])
    assert pixel_auroc(mask, amap) == pytest.approx(2 / 3)  # 0.9 beats 0.1 and 0.5, not 0.95


def _pro_case(detected_region_scores):
    """Region A (1 pixel) and region B (3 pixels) on a 10x10 map; normals spread uniformly in (0, 1)."""
    mask = np.zeros((1, 10, 10), dtype=np.uint8)
    mask[0, 0, 0] = 1
    mask[0, 5, 5:8] = 1
    amap = np.linspace(0.01, 0.99, 100).reshape(1, 10, 10).copy()
    amap[0, 0, 0], amap[0, 5, 5:8] = detected_region_scores
    return mask, amap


def test_hand_derived_aupro():
    # both regions above every threshold: PRO = 1 at every FPR -> area 1
    assert aupro(*_pro_case((1.0, 1.0))) == pytest.approx(1.0)
    # region A always detected, B never (at the minimum): PRO = mean over REGIONS = 0.5 (pixels would say 0.25)
    assert aupro(*_pro_case((1.0, 0.0))) == pytest.approx(0.5)
    # no anomalous region: undefined
    assert np.isnan(aupro(np.zeros((1, 4, 4)), np.random.default_rng(0).random((1, 4, 4))))


def test_aupro_regions_are_8_connected():
    # two diagonal pixels form ONE region; with one of them detected its PRO is 0.5. As two regions it would be
    # 0.5 too, so add a detected third pixel elsewhere: one region -> (0.5 + 1) / 2, two regions -> (1 + 0 + 1) / 3
    mask = np.zeros((1, 10, 10), dtype=np.uint8)
    mask[0, 0, 0] = mask[0, 1, 1] = mask[0, 8, 8] = 1
    amap = np.linspace(0.01, 0.99, 100).reshape(1, 10, 10).copy()
    amap[0, 0, 0], amap[0, 1, 1], amap[0, 8, 8] = 1.0, 0.0, 1.0
    assert aupro(mask, amap) == pytest.approx(0.75)


def test_dice_iou_hand_derived():
    truth = np.zeros((4, 4))
    truth[:2, :2] = 1  # 4 pixels
    scores = np.zeros((4, 4))
    scores[:2, :3] = 0.5  # 6 predicted at threshold 0.5 (at-or-above counts), 4 of them true
    assert dice(truth, scores) == pytest.approx(2 * 4 / (4 + 6))
    assert iou(truth, scores) == pytest.approx(4 / 6)
    assert dice(truth, scores, threshold=0.6) == pytest.approx(0.0)
    assert dice(np.zeros(5), np.zeros(5)) == 1.0 and iou(np.zeros(5), np.zeros(5)) == 1.0


def test_volume_metrics():
    truth = np.zeros((3, 4, 4), dtype=bool)
    truth[1, 1:3, 1:3] = True
    scores = np.where(truth, 0.8, 0.2)
    scores[0, 0, 0] = 0.9  # one false positive above every lesion voxel
    assert volume_auroc(truth, scores) == pytest.approx(1 - 1 / 44)  # 4 x 44 pairs, 4 misordered
    assert volume_dice(truth, scores) == pytest.approx(2 * 4 / (4 + 5))
    assert np.isnan(volume_auroc(np.zeros((2, 2, 2)), np.ones((2, 2, 2))))
    with pytest.raises(ValueError, match="3-dimensional"):
        volume_auroc(truth[0], scores[0])
    with pytest.raises(ValueError, match="differ"):
        volume_dice(truth, scores[:2])


def _smooth_maps(n=12, size=64, seed=0):
    """Maps like a detector's: smooth noise in [0, 1], brighter on random discs that are the masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [rng.integers(2, 8)]
            masks[i] |= ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
    maps = gaussian_filter(rng.random((n, size, size)), (0, 3, 3)) + 0.3 * gaussian_filter(masks * 1.0, (0, 2, 2))
    maps = (maps - maps.min()) / (maps.max() - maps.min())
    return masks, maps.astype(np.float32)


def test_streaming_matches_exact_within_stated_tolerance():
    masks, maps = _smooth_maps()
    acc = PixelMetricAccumulator()
    for i in range(0, len(maps), 5):
        acc.update(torch.from_numpy(masks[i : i + 5]), torch.from_numpy(maps[i : i + 5]))
    exact_auroc = pixel_auroc(masks, maps)
    assert abs(acc.auroc() - exact_auroc) <= acc.auroc_error_bound() + 1e-12
    assert acc.auroc_error_bound() < 1e-4
    assert acc.ap() == pytest.approx(pixel_ap(masks, maps), abs=1e-3)
    assert acc.aupro() == pytest.approx(aupro(masks, maps), abs=1e-3)
    # coarse bins really are coarser: the bound reflects it and still holds
    coarse = PixelMetricAccumulator(bins=16)
    coarse.update(masks, maps)
    assert coarse.auroc_error_bound() > acc.auroc_error_bound()
    assert abs(coarse.auroc() - exact_auroc) <= coarse.auroc_error_bound() + 1e-12


def test_streaming_state_is_constant_size_and_shards_merge_exactly():
    masks, maps = _smooth_maps(n=10, seed=3)
    whole = PixelMetricAccumulator()
    for i in range(10):
        whole.update(masks[i], maps[i])
    size = sum(t.numel() for t in (whole.normal, whole.anomalous, whole.region_weight))
    assert size == 3 * 2**16  # no maps kept, whatever their number
    # shards in another order and grouping merge to the identical state and identical metrics
    a, b = PixelMetricAccumulator(), PixelMetricAccumulator()
    a.update(masks[1::2], maps[1::2])
    b.update(masks[0::2], maps[0::2])
    merged = a.merge(b)
    for name in ("normal", "anomalous", "region_weight"):
        assert torch.equal(getattr(merged, name), getattr(whole, name))
    assert merged.compute() == whole.compute()


def test_streaming_rejects_bad_input():
    acc = PixelMetricAccumulator()
    with pytest.raises(ValueError, match="value_range"):
        acc.update(np.zeros((4, 4)), np.full((4, 4), 1.5))
    with pytest.raises(ValueError, match="value_range"):
        acc.update(np.zeros((4, 4)), np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="shape"):
        acc.update(np.zeros((4, 4)), np.zeros((4, 5)))
    assert np.isnan(acc.auroc()) and np.isnan(acc.aupro())  # nothing added
