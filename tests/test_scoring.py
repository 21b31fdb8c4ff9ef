"""Scoring pieces checked against independent implementations (scipy) and the model API's contracts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from anomalyclip_med.errors import InputError
from anomalyclip_med.inference.images2d import preprocess_images
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
    # anomalib-style: by default only the image score and the map
    assert {k for k, v in vars(out).items() if v is not None} == {"image_score", "anomaly_map"}
    assert out.image_score.shape == (3,) and out.anomaly_map.shape == (3, 56, 56)
    assert out.anomaly_map.dtype == torch.float32
    assert 0 <= out.image_score.min() and out.image_score.max() <= 1
    assert 0 <= out.anomaly_map.min() and out.anomaly_map.max() <= 1
    detailed = tiny.predict(batch, layer_maps=True, features=True)
    assert detailed.layer_maps.shape == (4, 3, 56, 56)
    assert detailed.image_features.shape[0] == 3 and len(detailed.patch_features) == 4
    assert torch.equal(detailed.image_score, out.image_score) and torch.equal(detailed.anomaly_map, out.anomaly_map)
    want = gaussian_smooth(detailed.layer_maps.sum(0), tiny.config.sigma) / 4
    assert torch.allclose(out.anomaly_map, want.clamp(0, 1), atol=1e-6)
    unsmoothed = tiny.predict(batch, smooth=False, layer_maps=True)
    assert torch.allclose(unsmoothed.anomaly_map, (unsmoothed.layer_maps.sum(0) / 4).clamp(0, 1))
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


def test_images_are_read_by_the_2d_path_and_predict_takes_tensors(tiny, tmp_path):
    rng = np.random.default_rng(0)
    pil = [Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)) for _ in range(2)]
    pil[0].save(tmp_path / "a.png")
    batch = preprocess_images(tiny, pil)
    assert batch.shape == (2, 3, 56, 56)
    assert torch.equal(preprocess_images(tiny, tmp_path / "a.png"), batch[:1])  # a path reads the same image
    with pytest.raises(InputError, match="preprocess_images"):
        tiny.predict(pil)
    wide = tiny.predict(torch.randn(1, 3, 56, 84))
    assert wide.anomaly_map.shape == (1, 56, 84)


def test_gradients_reach_only_the_prompts(tiny):
    tiny.train()
    fwd = tiny(torch.randn(2, 3, 56, 56))
    (fwd.image_logits.sum() + sum(m[:, 1].mean() for m in fwd.similarity_maps)).backward()
    assert tiny.prompt_learner.ctx_pos.grad is not None and tiny.prompt_learner.ctx_pos.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.clip.parameters())
