"""Every real backbone loading path, on tiny models built from open_clip configs and on fixture A's file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import open_clip
import pytest
import torch
from open_clip.model import CLIP

from anomalyclip_med import AnomalyCLIP
from anomalyclip_med.errors import BackboneError, MissingWeightsError
from anomalyclip_med.network.backbone import SourceKind, load_backbone, parse_backbone_source
from conftest import FIXTURE_A, TESTS, TINY_CLIP_JSON, needs_fixture_a, offline_env

REPO = TESTS.parent
TINY_CFG = json.loads(TINY_CLIP_JSON.read_text())
open_clip.add_model_config(TINY_CLIP_JSON)  # registers the name "tiny_clip", as a user's own config would be


def _state_dict_close(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def test_random_from_config_warns_and_is_flagged():
    with pytest.warns(UserWarning, match="RANDOM"):
        clip, info = load_backbone(TINY_CFG, None)
    assert info.random_weights and info.weights == "random"
    assert info.vision_layers == 4 and info.patch_size == 14 and info.text_width == 32
    assert not any(p.requires_grad for p in clip.parameters())


def test_open_clip_state_dict_for_named_architecture(tmp_path):
    source = open_clip.create_model("tiny_clip")
    path = tmp_path / "tiny_open_clip.pt"
    torch.save(source.state_dict(), path)
    clip, info = load_backbone("tiny_clip", path)
    assert not info.random_weights and info.weights == str(path.resolve())
    assert _state_dict_close(clip, source)


def test_config_plus_weights_file(tmp_path):
    source = CLIP(**TINY_CFG)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": source.state_dict()}, path)  # open_clip training checkpoints wrap the dict
    clip, _ = load_backbone(str(TINY_CLIP_JSON), path)
    assert _state_dict_close(clip, source)


def test_openai_torchscript_archive_equals_state_dict(tmp_path):
    # OpenAI's layout implies 64-wide attention heads, so this tiny model uses widths of 64
    openai_like = {"embed_dim": 32, "quick_gelu": True,
                   "vision_cfg": {"image_size": 56, "layers": 2, "width": 64, "patch_size": 14},
                   "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}
    source = CLIP(**openai_like).eval()
    sd_path, ts_path = tmp_path / "openai_sd.pt", tmp_path / "openai_jit.pt"
    torch.save(source.state_dict(), sd_path)
    traced = torch.jit.trace_module(
        source,
        {"encode_image": (torch.ones(1, 3, 56, 56),), "encode_text": (torch.zeros(1, 77, dtype=torch.long),)},
        check_trace=False,
    )
    torch.jit.save(traced, ts_path)
    assert parse_backbone_source(None, sd_path).kind is SourceKind.OPENAI_STATE_DICT
    assert parse_backbone_source(None, ts_path).kind is SourceKind.OPENAI_TORCHSCRIPT
    from_sd, info_sd = load_backbone(None, sd_path)
    from_ts, info_ts = load_backbone(None, ts_path)
    assert "read from the file" in info_sd.name and "read from the file" in info_ts.name
    assert _state_dict_close(from_sd, from_ts)
    # OpenAI files are read as OpenAI stores them: float16-rounded tensors
    assert torch.equal(from_sd.visual.proj, source.visual.proj.half().float())


def test_the_source_is_parsed_before_anything_is_built(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(CLIP(**TINY_CFG).state_dict(), path)
    assert parse_backbone_source(TINY_CFG, None).kind is SourceKind.RANDOM
    assert parse_backbone_source(None, None).model_name == "ViT-L-14-336"
    tag = parse_backbone_source("tiny_clip", "openai")
    assert tag.kind is SourceKind.TAG and tag.weights == "openai" and tag.state_dict is None
    named = parse_backbone_source("tiny_clip", path)
    assert named.kind is SourceKind.OPEN_CLIP_STATE_DICT and named.weights == str(path.resolve())
    assert set(named.state_dict) == set(CLIP(**TINY_CFG).state_dict())
    assert parse_backbone_source(str(TINY_CLIP_JSON), path).kind is SourceKind.CONFIG_STATE_DICT
    with pytest.raises(BackboneError, match="model name, not a model config"):
        parse_backbone_source(TINY_CFG, "openai")


def test_a_backbone_whose_blocks_dpam_cannot_run_is_refused(tmp_path):
    """open_clip's custom blocks (qk-norm, scaled cosine attention...) are not what dpam_forward runs: one error."""
    custom = dict(TINY_CFG, vision_cfg=dict(TINY_CFG["vision_cfg"], block_type="custom"))
    with pytest.warns(UserWarning, match="RANDOM"), pytest.raises(BackboneError) as err:
        load_backbone(custom, None)
    assert "CustomResidualAttentionBlock" in str(err.value) and "MultiheadAttention" in str(err.value)
    config, weights = tmp_path / "custom.json", tmp_path / "custom.pt"
    config.write_text(json.dumps(custom))
    torch.save(CLIP(**custom).state_dict(), weights)
    with pytest.raises(BackboneError, match="visual blocks of type CustomResidualAttentionBlock"):
        load_backbone(str(config), weights)
    proc = subprocess.run(
        [sys.executable, "-m", "anomalyclip_med", "predict", str(TESTS.parent / "examples" / "images"), "--out",
         str(tmp_path / "out"), "--backbone", str(config), "--backbone-weights", str(weights), "--prompts", "untrained",
         "--image-size", "56"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO, timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and "CustomResidualAttentionBlock" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out" / "scores.csv").exists()


def test_openai_layout_with_unreadable_architecture(tmp_path):
    path = tmp_path / "narrow.pt"
    torch.save(CLIP(**TINY_CFG).state_dict(), path)  # 32-wide text: not OpenAI's 64-wide heads
    with pytest.raises(BackboneError, match="--backbone"):
        load_backbone(None, path)


@needs_fixture_a
def test_named_backbone_that_disagrees_with_file_is_an_error():
    with pytest.raises(BackboneError, match=r"tensor '[\w.]+' has shape"):
        load_backbone("tiny_clip", FIXTURE_A / "backbone.pt")


def test_named_architecture_mismatch_names_the_tensor(tmp_path):
    wider = dict(TINY_CFG, vision_cfg=dict(TINY_CFG["vision_cfg"], width=96))
    path = tmp_path / "wider.pt"
    torch.save(CLIP(**wider).state_dict(), path)
    with pytest.raises(BackboneError, match=r"tensor 'visual\.[\w.]+' has shape \(96"):
        load_backbone("tiny_clip", path)


def test_uninferable_file_without_name_asks_for_backbone(tmp_path):
    sd = {k: v for k, v in CLIP(**TINY_CFG).state_dict().items() if not k.startswith("visual.")}
    path = tmp_path / "text_only.pt"
    torch.save(sd, path)
    with pytest.raises(BackboneError, match="--backbone"):
        load_backbone(None, path)


def test_garbage_file_is_named(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(BackboneError, match="broken.pt"):
        load_backbone(None, path)


def test_missing_weights_file_names_file_and_flag(tmp_path):
    missing = tmp_path / "nowhere" / "ViT-L-14-336px.pt"
    with pytest.raises(MissingWeightsError, match="--backbone-weights") as err:
        load_backbone(None, missing)
    assert str(missing) in str(err.value)


def test_unknown_tag_lists_known_tags():
    with pytest.raises(MissingWeightsError, match="known tags"):
        load_backbone("ViT-L-14-336", "no_such_tag")


def test_unknown_architecture_name():
    with pytest.raises(BackboneError, match="Unknown backbone architecture"):
        load_backbone("ViT-Nope-99", None)


def test_image_size_must_be_multiple_of_patch():
    from anomalyclip_med.errors import InputError

    with pytest.raises(InputError, match="multiple of the backbone's patch size 14"):
        AnomalyCLIP.from_pretrained(backbone=str(TINY_CLIP_JSON), backbone_weights=None, image_size=50,
                                    prompts="untrained")


def test_default_weights_offline_stop_at_once_with_the_fix(tmp_path):
    """The main job on a fresh offline machine: a clear message naming the file and the flag, nothing written."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **offline_env(tmp_path))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "anomalyclip_med", "predict", str(REPO / "examples" / "images"), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    for needed in ("ViT-L-14-336px.pt", "anomalyclip_mvtec-trained.pth", "--backbone-weights", "--prompts",
                   "--weights-dir"):
        assert needed in line
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())
