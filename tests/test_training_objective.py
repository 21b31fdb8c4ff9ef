"""The training objective and optimiser: the reference's numbers on fixture A, and the loss definitions."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from anomalyclip_med import AnomalyCLIP
from anomalyclip_med.errors import InputError
from anomalyclip_med.training import compute_losses, make_optimizer
from anomalyclip_med.training.losses import FocalLoss, dice_loss
from conftest import FIXTURE_A, needs_fixture_a, tiny_model

pytestmark = pytest.mark.usefixtures("single_thread")


@needs_fixture_a
def test_two_steps_reproduce_the_reference():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnomalyCLIP.from_pretrained(
            backbone_weights=FIXTURE_A / "backbone.pt", prompts=FIXTURE_A / "prompt_learner.pth", image_size=518
        )
    inputs = torch.load(FIXTURE_A / "inputs.pt")
    ref = torch.load(FIXTURE_A / "train_step.pt")
    model.train()
    optimizer = make_optimizer(model)
    for expected in (ref, ref["step2"]):
        losses = compute_losses(model, inputs["images"], inputs["masks"], inputs["labels"])
        for key in ("focal", "dice", "image"):
            assert abs(losses[key].item() - expected[key].item()) <= 1e-5, key
        if "total" in expected:
            assert abs(losses["total"].item() - expected["total"].item()) <= 1e-5 * 4
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
    state = model.prompt_learner.state_dict()
    after = ref["prompt_learner_after_step"]
    compared = [k for k in state if k in after]
    assert len(compared) == len(state)  # every tensor of the prompt learner
    for key in compared:
        assert (state[key].float() - after[key].float()).abs().max().item() <= 1e-4, key


def test_focal_loss_by_hand():
    # pixels: (normal 0.8, abnormal 0.2) and (0.3, 0.7); targets normal and abnormal
    probs = torch.tensor([[[[0.8, 0.3]], [[0.2, 0.7]]]])
    target = torch.tensor([[[0, 1]]])
    s = 1e-5

    def term(p_true, p_other):
        pt = p_true * (1 - s) + p_other * s + s
        return -((1 - pt) ** 2) * math.log(pt)

    expected = (term(0.8, 0.2) + term(0.7, 0.3)) / 2
    assert FocalLoss()(probs, target).item() == pytest.approx(expected, rel=1e-6)


def test_dice_loss_by_hand():
    dice = dice_loss()
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert dice(mask.clone(), mask).item() == pytest.approx(0.0)
    # intersection 0.5, sums 2 and 1: 1 - (2 * 0.5 + 1) / (2 + 1 + 1)
    assert dice(torch.full((1, 1, 2, 2), 0.5), mask).item() == pytest.approx(0.5)
    # per-image mean over the batch
    two = dice(torch.stack([mask[0], torch.full((1, 2, 2), 0.5)]), torch.cat([mask, mask]))
    assert two.item() == pytest.approx(0.25)


def test_monai_dice_equals_the_references_formula():
    """MONAI's DiceLoss(smooth_nr=1, smooth_dr=1) gives the reference's BinaryDiceLoss values (formula written out)."""
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(4, 1, 37, 29, generator=g, dtype=torch.float64)
    target = (torch.rand(4, 1, 37, 29, generator=g, dtype=torch.float64) > 0.7).double()
    target[2] = 0  # an image without anomaly

    def reference(x, y):  # the reference's: 1 - sum over images of (2|X.Y| + 1) / (|X| + |Y| + 1), / N
        n = y.shape[0]
        x, y = x.reshape(n, -1), y.reshape(n, -1)
        return 1 - ((2 * (x * y).sum(1) + 1) / (x.sum(1) + y.sum(1) + 1)).sum() / n

    for x, y in ((probs, target), (1 - probs, 1 - target)):
        assert dice_loss()(x, y).item() == pytest.approx(reference(x, y).item(), rel=1e-12, abs=1e-12)


@pytest.fixture
def batch():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 56, 56)
    masks = torch.zeros(2, 1, 56, 56)
    masks[0, :, 10:30, 10:30] = 1
    return images, masks, torch.tensor([1, 0])


def test_terms_and_total(tiny, batch):
    losses = compute_losses(tiny, *batch)
    assert set(losses) == {"focal", "dice", "image", "total"}
    assert all(v.ndim == 0 and v.dtype == torch.float32 for v in losses.values())
    assert losses["focal"] > 0 and losses["dice"] > 0
    total = 4 * (losses["focal"] + losses["dice"]) + losses["image"]
    assert losses["total"].item() == pytest.approx(total.item(), rel=1e-6)


def test_image_loss_is_cross_entropy_of_the_predicted_probabilities(tiny, batch):
    images, _, labels = batch
    score = tiny.predict(images).image_score  # the inference path, computed independently
    probs = torch.stack([1 - score, score], dim=-1)
    expected = -(probs[0, 1].log() + probs[1, 0].log()) / 2
    losses = compute_losses(tiny, images, None, labels)
    assert losses["image"].item() == pytest.approx(expected.item(), rel=1e-5)
    # image-level-only data: the pixel terms are off
    assert losses["focal"].item() == 0 and losses["dice"].item() == 0
    assert losses["total"].item() == losses["image"].item()


def test_only_the_prompts_get_gradients(tiny, batch):
    tiny.eval()  # compute_losses recomputes the text features with gradients even in eval mode
    compute_losses(tiny, *batch)["total"].backward()
    assert all(p.grad is None for p in tiny.clip.parameters())
    grads = {name: p.grad for name, p in tiny.prompt_learner.named_parameters()}
    # the tiny text tower has 4 layers: deep prompts for layers 2..4 are used, deeper ones cannot be
    for name in ("ctx_pos", "ctx_neg", "compound_prompts_text.0", "compound_prompts_text.2"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name


def test_optimizer_is_the_references(tiny):
    optimizer = make_optimizer(tiny)
    assert isinstance(optimizer, torch.optim.Adam)
    (group,) = optimizer.param_groups
    assert group["lr"] == 1e-3 and group["betas"] == (0.5, 0.999) and group["weight_decay"] == 0
    assert {id(p) for p in group["params"]} == {id(p) for p in tiny.prompt_learner.parameters()}


def test_bf16_image_tower_keeps_fp32_losses(batch):
    fp32 = compute_losses(tiny_model(), *batch)
    bf16 = compute_losses(tiny_model(precision="bf16"), *batch)
    for key in fp32:
        assert bf16[key].dtype == torch.float32
        assert bf16[key].item() == pytest.approx(fp32[key].item(), rel=0.05, abs=0.02)


def test_bad_batches(tiny, batch):
    images, masks, labels = batch
    with pytest.raises(InputError, match="do not match"):
        compute_losses(tiny, images, masks[..., :28, :28], labels)
    with pytest.raises(InputError, match="B labels"):
        compute_losses(tiny, images, masks, torch.tensor([1, 0, 1]))


def test_batch_of_one(tiny, batch):
    images, masks, labels = batch
    one = compute_losses(tiny, images[:1], masks[:1], labels[:1])  # label 1
    assert one["image"].ndim == 0 and one["focal"] > 0 and one["dice"] > 0
    expected = -tiny.predict(images[:1]).image_score[0].log()
    assert one["image"].item() == pytest.approx(expected.item(), rel=1e-5)
