"""The network reproduces the original authors' outputs stored in ../shared/fixtures/A."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from anomalyclip_med import AnomalyCLIP, AnomalyCLIPConfig
from anomalyclip_med.inference.images2d import preprocess_images
from anomalyclip_med.network.visual import resize_positional_embedding
from conftest import FIXTURE_A, needs_fixture_a

pytestmark = needs_fixture_a


def _load(name):
    return torch.load(FIXTURE_A / name, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def expected():
    return _load("expected.pt")


@pytest.fixture(scope="module")
def inputs():
    return _load("inputs.pt")


def _model(precision="fp32", **kw):
    return AnomalyCLIP.from_pretrained(
        backbone_weights=FIXTURE_A / "backbone.pt", prompts=FIXTURE_A / "prompt_learner.pth", precision=precision, **kw
    )


@pytest.fixture(scope="module")
def fp32_out(inputs):
    model = _model()
    return model, model.predict(inputs["images"], layer_maps=True, features=True)


def test_positional_embedding_resized_to_518(expected):
    model = _model()
    pos = resize_positional_embedding(model.clip.visual.positional_embedding, (37, 37))
    assert pos.shape == expected["positional_embedding_518"].shape
    assert torch.allclose(pos, expected["positional_embedding_518"], atol=1e-6, rtol=0)


def test_fp32_reproduces_every_stored_output(fp32_out, expected):
    model, out = fp32_out
    assert model.feature_layers == (6, 12, 18, 24) and model.dpam_layers == 19
    assert (model.text_features() - expected["text_features"]).abs().max() <= 1e-4
    image_features = out.image_features / out.image_features.norm(dim=-1, keepdim=True)
    assert (image_features - expected["image_features"]).abs().max() <= 1e-4
    probs = torch.stack([1 - out.image_score, out.image_score], dim=-1)  # [normal, abnormal]
    assert (probs - expected["image_probs"]).abs().max() <= 1e-4
    assert (out.image_score - expected["image_score"]).abs().max() <= 1e-4
    for got, want in zip(out.patch_features, expected["patch_features"]):
        assert (got - want).abs().max() <= 1e-4
    for got, want in zip(out.layer_maps, expected["layer_maps"]):
        assert (got - want).abs().max() <= 1e-4
    assert (out.layer_maps.sum(0) - expected["combined_map"]).abs().max() <= 1e-4
    assert (out.anomaly_map * 4 - expected["final_map"]).abs().max() <= 1e-4
    # the [0, 1] map is the reference's final map over the number of layers
    assert (out.anomaly_map - expected["final_map"] / 4).abs().max() <= 1e-4
    assert out.anomaly_map.min() >= 0 and out.anomaly_map.max() <= 1


def test_from_pngs_through_preprocess(expected, inputs):
    model = _model()
    paths = [FIXTURE_A / f"image_{i}.png" for i in range(3)]
    batch = preprocess_images(model, paths)
    assert (batch - inputs["images"]).abs().max() <= 1e-3
    out = model.predict(batch)
    assert (out.image_score - expected["image_score"]).abs().max() <= 1e-3
    assert (out.anomaly_map * 4 - expected["final_map"]).abs().max() <= 1e-3


def test_last_layer_only_variant(expected, inputs):
    model = _model(config=AnomalyCLIPConfig(map_layers=(-1,)))
    out = model.predict(inputs["images"], layer_maps=True)
    want = np.stack([gaussian_filter(m, sigma=4) for m in expected["layer_maps"][3].numpy()])
    assert out.layer_maps.shape[0] == 1
    assert np.abs(out.anomaly_map.numpy() - want).max() <= 1e-4  # one layer: the map is the smoothed layer map


@pytest.mark.parametrize(
    "precision, score_tol, layer_tol, final_tol",
    # measured on this fixture (docs/network.md): bf16 7.3e-3 / 4.7e-2 / 1.1e-1, fp16 1.5e-4 / 5.3e-3 / 7.2e-3
    [("bf16", 0.02, 0.1, 0.25), ("fp16", 1e-3, 0.01, 0.02)],
)
def test_reduced_precision_stays_close(precision, score_tol, layer_tol, final_tol, expected, inputs):
    out = _model(precision).predict(inputs["images"], layer_maps=True)
    assert (out.image_score - expected["image_score"]).abs().max() <= score_tol
    assert torch.equal(out.image_score.argsort(), expected["image_score"].argsort())
    for got, want in zip(out.layer_maps, expected["layer_maps"]):
        assert (got - want).abs().max() <= layer_tol
    assert (out.anomaly_map * 4 - expected["final_map"]).abs().max() <= final_tol
