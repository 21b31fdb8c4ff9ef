"""Scoring pieces checked against independent implementations (scipy) and the model API's contracts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from anomalyclip_med.network.scoring import gaussian_smooth
from conftest import tiny_model


@pytest.mark.parametrize("shape, sigma", [((3, 40, 52), 4.0), ((2, 9, 7), 4.0), ((1, 30, 30), 1.5)])
def test_gaussian_smooth_equals_scipy(shape, sigma):
    maps = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    want = np.stack([gaussian_filter(m, sigma=sigma) for m in maps.numpy().astype(np.float64)])
    assert np.abs(gaussian_smooth(maps, sigma).numpy() - want).max() <= 1e-6


def test_predict_outputs_contract(tiny):
    batch = torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    out = tiny.predict(batch)
    assert out.image_score.shape == (3,) and out.anomaly_map.shape == (3, 56, 56)
    assert out.layer_maps.shape == (4, 3, 56, 56)
    assert out.anomaly_map.dtype == torch.float32
    assert 0 <= out.image_score.min() and out.image_score.max() <= 1
    assert 0 <= out.anomaly_map.min() and out.anomaly_map.max() <= 1
    assert torch.allclose(out.image_probs.sum(-1), torch.ones(3))
    assert torch.allclose(out.combined_map, out.layer_maps.sum(0))
    unsmoothed = tiny.predict(batch, smooth=False)
    assert torch.allclose(unsmoothed.smoothed_map, out.combined_map)
    # each image is scored on its own: batch composition does not change a result
    single = tiny.predict(batch[1:2])
    assert torch.allclose(single.anomaly_map[0], out.anomaly_map[1], atol=1e-5)


def test_text_features_cached_until_prompts_change(tiny, tmp_path):
    batch = torch.randn(1, 3, 56, 56)
    tiny.predict(batch)
    cached = tiny._text_features
    assert cached is not None
    tiny.predict(batch)
    assert tiny._text_features is cached  # not recomputed per image
    other = tiny_model()
    with torch.no_grad():
        other.prompt_learner.ctx_neg.add_(1.0)
    tiny.load_prompts(other.save_prompts(tmp_path / "p.pt"))
    assert tiny._text_features is None
    assert not torch.allclose(tiny.text_features(), cached)
    tiny.train()
    assert tiny._text_features is None and not tiny.clip.training


def test_predict_accepts_pil_and_non_square(tiny):
    rng = np.random.default_rng(0)
    pil = [Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)) for _ in range(2)]
    assert torch.allclose(tiny.predict(pil).image_score, tiny.predict(tiny.preprocess(pil)).image_score)
    wide = tiny.predict(torch.randn(1, 3, 56, 84))
    assert wide.anomaly_map.shape == (1, 56, 84)


def test_gradients_reach_only_the_prompts(tiny):
    tiny.train()
    fwd = tiny(torch.randn(2, 3, 56, 56))
    (fwd.image_logits.sum() + sum(m[:, 1].mean() for m in fwd.similarity_maps)).backward()
    assert tiny.prompt_learner.ctx_pos.grad is not None and tiny.prompt_learner.ctx_pos.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.clip.parameters())
