"""Prompt checkpoints: the authors' format, the package format, and all-or-nothing loading with clear errors."""

from __future__ import annotations

import pytest
import torch

from anomalyclip_med import AnomalyCLIP, AnomalyCLIPConfig
from anomalyclip_med.errors import CheckpointError, MissingWeightsError
from anomalyclip_med.network.checkpoint import PROMPT_FORMAT, PROMPT_FORMAT_VERSION
from conftest import FIXTURE_A, TINY_CLIP_JSON, needs_fixture_a, tiny_model


def _perturbed(model: AnomalyCLIP) -> AnomalyCLIP:
    with torch.no_grad():
        for p in model.prompt_learner.parameters():
            p.add_(torch.randn_like(p))
    return model


def test_package_format_round_trip_with_metadata(tmp_path):
    source = _perturbed(tiny_model(config=AnomalyCLIPConfig(n_ctx=8, depth=3, t_n_ctx=2, image_size=56)))
    path = source.save_prompts(tmp_path / "prompts.pt", extra={"epoch": 3})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == PROMPT_FORMAT and raw["version"] == PROMPT_FORMAT_VERSION and raw["epoch"] == 3
    assert raw["config"]["n_ctx"] == 8 and raw["backbone"]["text_width"] == 32
    assert "package_version" in raw
    # the stored prompt settings are used when none are given
    loaded = tiny_model(prompts=path)
    assert loaded.prompt_learner.ctx_pos.shape[2] == 8 and len(loaded.prompt_learner.compound_prompts_text) == 2
    assert torch.equal(loaded.text_features(), source.text_features())
    assert loaded.prompt_source["trained"] and loaded.prompt_source["format"] == "package"
    assert loaded.untrained_warning is not None and "RANDOM" in loaded.untrained_warning


@needs_fixture_a
def test_authors_format_loads_unused_projections_ignored():
    model = AnomalyCLIP.from_pretrained(backbone_weights=FIXTURE_A / "backbone.pt",
                                        prompts=FIXTURE_A / "prompt_learner.pth")
    authors = torch.load(FIXTURE_A / "prompt_learner.pth", weights_only=True)["prompt_learner"]
    assert any(k.startswith("compound_prompt_projections") for k in authors)
    state = model.prompt_learner.state_dict()
    for key, value in state.items():
        assert torch.equal(value, authors[key].to(value.dtype)), key
    assert model.untrained_warning is None and model.prompt_source["format"] == "authors"


@needs_fixture_a
def test_width_mismatch_names_tensor_and_leaves_model_untouched():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.prompt_learner.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"tensor 'ctx_pos' has shape \(1, 1, 12, 64\).*\(1, 1, 12, 32\).*text width"):
        model.load_prompts(FIXTURE_A / "prompt_learner.pth")
    after = model.prompt_learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _authors_file(path):
    """Prompts in the authors' format, which records no settings: only the tensors' shapes tell them."""
    torch.save({"prompt_learner": tiny_model().prompt_learner.state_dict()}, path)
    return path


def test_n_ctx_mismatch_names_tensor(tmp_path):
    path = _authors_file(tmp_path / "p12.pt")
    with pytest.raises(CheckpointError, match=r"'ctx_pos'.*n_ctx"):
        tiny_model(prompts=path, config=AnomalyCLIPConfig(n_ctx=8, image_size=56))


def test_depth_mismatch_names_tensor(tmp_path):
    path = _authors_file(tmp_path / "depth9.pt")
    with pytest.raises(CheckpointError, match=r"compound_prompts_text\.\d"):
        tiny_model(prompts=path, config=AnomalyCLIPConfig(depth=4, image_size=56))


def test_newer_format_version_is_refused(tmp_path):
    path = tiny_model().save_prompts(tmp_path / "p.pt")
    raw = torch.load(path, weights_only=True)
    raw["version"] = PROMPT_FORMAT_VERSION + 1
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="Upgrade"):
        tiny_model(prompts=path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="is not a prompt checkpoint"):
        tiny_model(prompts=path)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="Cannot read prompt checkpoint"):
        tiny_model(prompts=path)


def test_missing_prompt_file(tmp_path):
    with pytest.raises(MissingWeightsError, match="--prompts"):
        AnomalyCLIP.from_pretrained(backbone=str(TINY_CLIP_JSON), backbone_weights=None,
                                    prompts=tmp_path / "epoch_15.pth")


def test_fresh_prompts_are_seeded_and_announced():
    with pytest.warns(UserWarning, match="UNTRAINED"):
        a = AnomalyCLIP.from_pretrained(backbone=str(TINY_CLIP_JSON), backbone_weights=None, image_size=56,
                                        prompts="untrained")
    b = tiny_model()
    c = tiny_model(config=AnomalyCLIPConfig(seed=5, image_size=56))
    assert torch.equal(a.prompt_learner.ctx_pos, b.prompt_learner.ctx_pos)
    assert not torch.equal(a.prompt_learner.ctx_pos, c.prompt_learner.ctx_pos)
    assert "UNTRAINED" in b.untrained_warning
