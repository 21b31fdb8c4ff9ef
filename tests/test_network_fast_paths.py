"""The fast network paths compute what the plain ones do: fused attention, the meta-device build, compilation."""

from __future__ import annotations

import json

import open_clip
import torch
from open_clip.model import CLIP, build_model_from_openai_state_dict

from anomalyclip_med import AnomalyCLIP
from anomalyclip_med.network.backbone import load_backbone, read_state_dict
from anomalyclip_med.network.visual import dpam_forward, patch_grid, resize_positional_embedding
from conftest import FIXTURE_A, TINY_CLIP_JSON, needs_fixture_a, tiny_model


def _explicit_attention(attn, x, vv: bool):
    """softmax(q kᵀ s) v written out, every token, with the module's own projections."""
    b, n, d = x.shape
    h = attn.num_heads
    qkv = x @ attn.in_proj_weight.t() + attn.in_proj_bias
    q, k, v = qkv.reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    scale = (d // h) ** -0.5

    def att(a, c, e):
        weights = (a @ c.transpose(-1, -2) * scale).softmax(dim=-1)
        return attn.out_proj((weights @ e).transpose(1, 2).reshape(b, n, d))

    return att(q, k, v), att(v, v, v) if vv else None


def _explicit_dpam(visual, images, feature_layers, dpam_layers):
    """The DPAM forward with explicit attention and every token of every block computed (no shortcuts)."""
    grid = patch_grid(visual, images.shape[-2], images.shape[-1])
    blocks = visual.transformer.resblocks
    start = len(blocks) - dpam_layers + 1
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
    x = visual.ln_pre(x + resize_positional_embedding(visual.positional_embedding, grid))
    vv, features = None, []
    for index, block in enumerate(blocks, start=1):
        ori, v_out = _explicit_attention(block.attn, block.ln_1(x), index >= start)
        if index >= start:
            vv = (x if vv is None else vv) + v_out
        x = x + ori
        x = x + block.mlp(block.ln_2(x))
        if index in feature_layers:
            features.append(vv if vv is not None else x)
    return x[:, 0] @ visual.proj, [visual.ln_post(t) @ visual.proj for t in features]


def test_fused_attention_equals_explicit_attention_on_every_layer_setting(single_thread):
    model = tiny_model()
    visual = model.clip.visual
    images = torch.randn(2, 3, 56, 70)  # non-square grid too
    # DPAM from the 2nd layer; the last block as a feature layer of the original path (no DPAM); DPAM ending
    # before the last block; the default
    for feature_layers, dpam_layers in [((1, 2, 3, 4), 3), ((2, 4), 0), ((1, 2), 3), (model.feature_layers, model.dpam_layers)]:
        with torch.no_grad():
            want_global, want_patch = _explicit_dpam(visual, images, feature_layers, dpam_layers)
            got_global, got_patch = dpam_forward(visual, images, feature_layers, dpam_layers)
        assert torch.allclose(got_global, want_global, atol=1e-5, rtol=0)
        assert len(got_patch) == len(feature_layers)
        for got, want in zip(got_patch, want_patch):
            assert got.shape == want.shape
            assert torch.allclose(got, want, atol=1e-5, rtol=0)


def _openai_like(tmp_path):
    # OpenAI's layout implies 64-wide attention heads
    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 56, "layers": 3, "width": 64, "patch_size": 14},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}
    path = tmp_path / "openai_sd.pt"
    torch.manual_seed(3)
    torch.save(CLIP(**cfg).state_dict(), path)
    return path


def _same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    ta = dict(a.named_parameters()) | dict(a.named_buffers())
    tb = dict(b.named_parameters()) | dict(b.named_buffers())
    assert ta.keys() == tb.keys()
    for key in ta:
        assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), key


def test_weights_file_builds_without_random_init_and_equals_open_clips_build(tmp_path):
    path = _openai_like(tmp_path)
    # open_clip's own way: random initialisation, then the file copied in
    reference = build_model_from_openai_state_dict(read_state_dict(path)[0], cast_dtype=torch.float32).float()
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    clip, _ = load_backbone(None, path)
    assert torch.equal(torch.get_rng_state(), rng)  # no random numbers were drawn: nothing was initialised
    _same_tensors(clip, reference)  # parameters and the text attention mask, values and dtypes

    # config + open_clip state dict, and a registered name + state dict
    source = CLIP(**json.loads(TINY_CLIP_JSON.read_text())).eval()
    tiny_path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), tiny_path)
    rng = torch.get_rng_state()
    from_config, _ = load_backbone(str(TINY_CLIP_JSON), tiny_path)
    open_clip.add_model_config(TINY_CLIP_JSON)
    from_name, _ = load_backbone("tiny_clip", tiny_path)
    assert torch.equal(torch.get_rng_state(), rng)
    _same_tensors(from_config, source)
    _same_tensors(from_name, source)


@needs_fixture_a
def test_meta_built_model_scores_exactly_as_the_initialised_one(single_thread):
    sd, _ = read_state_dict(FIXTURE_A / "backbone.pt")
    images = torch.randn(1, 3, 224, 224)
    fast = AnomalyCLIP.from_pretrained(backbone_weights=FIXTURE_A / "backbone.pt",
                                       prompts=FIXTURE_A / "prompt_learner.pth", image_size=224)
    slow = AnomalyCLIP(build_model_from_openai_state_dict(sd, cast_dtype=torch.float32).float(), fast.backbone_info,
                       fast.config)
    slow.load_prompts(FIXTURE_A / "prompt_learner.pth")
    a, b = fast.predict(images), slow.predict(images)
    assert torch.equal(a.image_score, b.image_score) and torch.equal(a.anomaly_map, b.anomaly_map)


def test_compiled_image_tower_scores_as_the_eager_one(single_thread):
    eager, compiled = tiny_model(), tiny_model(compile_network=True)
    images = torch.randn(2, 3, 56, 56)
    a, b = eager.predict(images), compiled.predict(images)
    assert compiled.compile_network and not eager.compile_network
    assert torch.allclose(a.image_score, b.image_score, atol=1e-5, rtol=0)
    assert torch.allclose(a.anomaly_map, b.anomaly_map, atol=1e-5, rtol=0)
