"""Feature and map layers: the authors' two protocols (layer 24 only; 6 12 18 24) on a tiny backbone."""

from __future__ import annotations

import pytest
import torch

from anomalyclip_med import AnomalyCLIP
from anomalyclip_med.errors import InputError
from conftest import TINY_CLIP_JSON, tiny_model


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))


def test_last_layer_only_equals_the_last_of_all_layers(images):
    every = tiny_model()  # the tiny tower has 4 layers: the paper's quarters are 1 2 3 4
    assert every.feature_layers == (1, 2, 3, 4) and every.map_layers == (1, 2, 3, 4)
    maps = every.predict(images, layer_maps=True).layer_maps
    for kwargs in ({"feature_layers": (4,)}, {"map_layers": (4,)}, {"map_layers": (-1,)},
                   {"feature_layers": (2, 4), "map_layers": (4,)}):
        model = tiny_model(**kwargs)
        assert model.map_layers == (4,), kwargs
        out = model.predict(images, layer_maps=True, features=True)
        assert out.layer_maps.shape[0] == 1
        torch.testing.assert_close(out.layer_maps[0], maps[3], rtol=0, atol=1e-6)
        assert len(out.patch_features) == len(model.feature_layers)
    two = tiny_model(map_layers=(2, 4)).predict(images, smooth=False)
    torch.testing.assert_close(two.anomaly_map, ((maps[1] + maps[3]) / 2).clamp(0, 1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs, says", [({"feature_layers": (5,)}, "layers 1..4"),
                                          ({"feature_layers": (2, 4), "map_layers": (3,)}, "not among")])
def test_layers_that_do_not_exist_are_refused(kwargs, says):
    with pytest.raises(InputError, match=says):
        tiny_model(**kwargs)


def test_prompt_file_records_its_layers_and_loading_uses_them(tmp_path):
    path = tiny_model(feature_layers=(2, 4), map_layers=(4,)).save_prompts(tmp_path / "p.pt")
    kwargs = {"backbone": str(TINY_CLIP_JSON), "backbone_weights": None, "image_size": 56, "prompts": path}
    loaded = AnomalyCLIP.from_pretrained(**kwargs)
    assert (loaded.feature_layers, loaded.map_layers) == ((2, 4), (4,))
    chosen = AnomalyCLIP.from_pretrained(**kwargs, feature_layers=(1, 2, 3, 4), map_layers=None)
    assert chosen.feature_layers == (1, 2, 3, 4) and chosen.map_layers == (4,)  # the file's map layers stay
