"""The training loop: checkpoints, exact resumption after an interruption, logs, refusals."""

from __future__ import annotations

import csv
import warnings

import pytest
import torch

import synthetic_trees as trees
from anomalyclip_med import AnomalyCLIP
from anomalyclip_med.data import Sample, load_samples
from anomalyclip_med.data.dataset import AnomalyDataset
from anomalyclip_med.errors import CheckpointError, InputError
from anomalyclip_med.training import TrainSettings, find_checkpoints, train
from conftest import TINY_CLIP_JSON, tiny_model

pytestmark = pytest.mark.usefixtures("single_thread")

SETTINGS = dict(epochs=3, batch_size=4, progress=False)


class InterruptedDataset(AnomalyDataset):
    """Raises KeyboardInterrupt (as Ctrl-C would) when item number ``stop`` is requested."""

    def __init__(self, *args, stop: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.stop = 0, stop

    def __getitem__(self, index):
        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        return super().__getitem__(index)


@pytest.fixture
def samples(tmp_path):
    return load_samples("mvtec", trees.mvtec(tmp_path / "mvtec"))  # 10 images, 6 with masks


def _losses(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_resume_after_interruption_equals_an_uninterrupted_run(samples, tmp_path):
    whole = tiny_model()
    full = train(whole, AnomalyDataset(samples, 56), tmp_path / "full", TrainSettings(**SETTINGS))
    assert sorted(find_checkpoints(tmp_path / "full")) == [1, 2, 3]

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the middle of epoch 2 (items 11..20)
        train(tiny_model(), InterruptedDataset(samples, 56, stop=15), out, TrainSettings(**SETTINGS))
    assert sorted(find_checkpoints(out)) == [1]

    resumed_model = tiny_model()  # a new process would start from scratch like this
    resumed = train(resumed_model, AnomalyDataset(samples, 56), out, TrainSettings(**SETTINGS), resume=True)
    assert resumed.resumed_from == 1 and sorted(find_checkpoints(out)) == [1, 2, 3]
    resumed_state = resumed_model.prompt_learner.state_dict()
    for name, tensor in whole.prompt_learner.state_dict().items():
        assert torch.equal(tensor, resumed_state[name]), name  # bit-identical
    assert _losses(resumed.history) == _losses(full.history)
    initial = tiny_model().prompt_learner.ctx_pos
    assert not torch.equal(initial, resumed_model.prompt_learner.ctx_pos)  # it did train


def test_checkpoint_is_a_loadable_prompt_file(samples, tmp_path):
    model = tiny_model()
    result = train(model, AnomalyDataset(samples, 56), tmp_path / "o", TrainSettings(epochs=1, batch_size=4,
                                                                                    progress=False))
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ckpt["format"] == "anomalyclip_med.prompts" and ckpt["epoch"] == 1
    assert {"optimizer", "rng_state", "losses", "training"} <= set(ckpt)
    assert ckpt["losses"][0]["total"] == pytest.approx(result.history[0]["total"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = AnomalyCLIP.from_pretrained(backbone=str(TINY_CLIP_JSON), backbone_weights=None,
                                             prompts=result.checkpoint, image_size=56)
    for a, b in zip(model.prompt_learner.state_dict().values(), loaded.prompt_learner.state_dict().values()):
        assert torch.equal(a, b)
    assert "UNTRAINED" not in (loaded.untrained_warning or "")


def test_csv_and_tensorboard_logs(samples, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "o"
    settings = TrainSettings(epochs=2, batch_size=4, progress=False, csv_log=True, tensorboard=True)
    result = train(tiny_model(), AnomalyDataset(samples, 56), out, settings)
    rows = list(csv.DictReader((out / "train_log.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, hist in zip(rows, result.history):
        for key in ("focal", "dice", "image", "total"):
            assert float(row[key]) == pytest.approx(hist[key])
        pixel = 4 * (float(row["focal"]) + float(row["dice"]))
        assert float(row["total"]) == pytest.approx(pixel + float(row["image"]))
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    totals = [(e.step, e.value) for e in events.Scalars("loss/total")]
    assert [s for s, _ in totals] == [1, 2]
    assert [v for _, v in totals] == pytest.approx([h["total"] for h in result.history], rel=1e-6)


def test_image_level_data_trains_only_the_image_loss(tmp_path):
    samples = load_samples("headct", trees.headct(tmp_path / "h"))
    model = tiny_model()
    before = model.prompt_learner.ctx_neg.detach().clone()
    result = train(model, AnomalyDataset(samples, 56), tmp_path / "o", TrainSettings(epochs=1, batch_size=2,
                                                                                    progress=False))
    row = result.history[0]
    assert row["focal"] == 0 and row["dice"] == 0 and row["image"] > 0 and row["total"] == row["image"]
    assert not torch.equal(before, model.prompt_learner.ctx_neg)


def test_existing_checkpoints_are_not_overwritten(samples, tmp_path):
    out = tmp_path / "o"
    one = TrainSettings(epochs=1, batch_size=4, progress=False)
    train(tiny_model(), AnomalyDataset(samples, 56), out, one)
    stamp = (out / "epoch_1.pth").stat().st_mtime_ns
    with pytest.raises(InputError, match="already holds checkpoints.*--resume"):
        train(tiny_model(), AnomalyDataset(samples, 56), out, one)
    assert (out / "epoch_1.pth").stat().st_mtime_ns == stamp
    # resuming a finished run does nothing
    assert train(tiny_model(), AnomalyDataset(samples, 56), out, one, resume=True).resumed_from == 1
    assert (out / "epoch_1.pth").stat().st_mtime_ns == stamp


def test_resume_refuses_other_settings_or_data(samples, tmp_path):
    out = tmp_path / "o"
    train(tiny_model(), AnomalyDataset(samples, 56), out, TrainSettings(epochs=1, batch_size=4, progress=False))
    with pytest.raises(CheckpointError, match="batch_size=4, this run has batch_size=2"):
        train(tiny_model(), AnomalyDataset(samples, 56), out, TrainSettings(epochs=2, batch_size=2, progress=False),
              resume=True)
    with pytest.raises(CheckpointError, match="other data"):
        train(tiny_model(), AnomalyDataset(samples[:-1], 56), out,
              TrainSettings(epochs=2, batch_size=4, progress=False), resume=True)
    assert sorted(find_checkpoints(out)) == [1]


def test_unreadable_image_mid_run_writes_nothing(tmp_path):
    good = [trees.image(tmp_path / "in" / f"{i}.png", seed=i) for i in range(3)]
    bad = trees.image(tmp_path / "in" / "bad.png", size=(64, 64))
    bad.write_bytes(bad.read_bytes()[:200])  # header passes the upfront check; decoding fails
    samples = [Sample(p, None, i % 2, "x", "folder") for i, p in enumerate([*good, bad])]
    out = tmp_path / "o"
    with pytest.raises(InputError, match="Cannot read image '.*bad.png'"):
        train(tiny_model(), AnomalyDataset(samples, 56), out, TrainSettings(epochs=1, batch_size=2, progress=False))
    assert not out.exists()


def test_settings_are_checked():
    with pytest.raises(InputError, match="epochs must be a positive integer"):
        TrainSettings(epochs=0)
    with pytest.raises(InputError, match="learning rate must be positive"):
        TrainSettings(lr=0)
