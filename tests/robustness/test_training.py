"""
Issue 10 item 9 (training side) and what already held: a resume checkpoint without its training settings, or cut
short, is one named error (NaN prompts in one go through the prompt reader probed in test_inputs.py); training
killed with SIGKILL at several moments resumes to the bit-identical result of a run never stopped.
"""

from __future__ import annotations

import time

import pytest
import torch

import synthetic_trees as trees
from faults import PROMPTS, TINY, error_lines, kill_when, run_cli

EPOCHS = ["--epochs", "2", "--batch-size", "4", "--no-progress"]


def _train(data, out, *extra):
    return run_cli("train", "--data", data, "--format", "mvtec", "--out", out, *EPOCHS, *TINY, *PROMPTS, *extra)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    data = trees.mvtec(root / "mvtec")
    proc = _train(data, root / "ref")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, root / "ref"


def _damage(kind: str, src, dst) -> str:
    """Write a damaged copy of the checkpoint ``src`` to ``dst``; returns the expected error fragment."""
    if kind == "cut":
        data = src.read_bytes()
        dst.write_bytes(data[: len(data) // 2])
        return "to resume from: OSError: [Errno 22] Invalid argument. The file is truncated or damaged"
    ckpt = torch.load(src, weights_only=True)
    del ckpt["training"]["settings"]
    torch.save(ckpt, dst)
    return "is damaged: its training state lacks the settings or data description"


@pytest.mark.parametrize("kind", ["no_settings", "cut"])
def test_a_damaged_resume_checkpoint_is_one_named_error(reference, tmp_path, kind):
    data, ref = reference
    out = tmp_path / "out"
    out.mkdir()
    message = _damage(kind, ref / "epoch_1.pth", out / "epoch_1.pth")
    before = (out / "epoch_1.pth").read_bytes()
    proc = _train(data, out, "--resume")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and f"'{out / 'epoch_1.pth'}'" in lines[0] and message in lines[0], lines
    assert sorted(p.name for p in out.iterdir()) == ["epoch_1.pth"]  # nothing trained or written
    assert (out / "epoch_1.pth").read_bytes() == before  # an input is never written to


def test_training_killed_at_several_moments_resumes_bit_identically(reference, tmp_path):
    data, ref = reference
    out = tmp_path / "out"
    args = ["train", "--data", data, "--format", "mvtec", "--out", out, *EPOCHS, *TINY, *PROMPTS]
    kill_when(args, lambda: (out / "epoch_1.pth").exists())  # just after the first checkpoint
    started = time.time()  # somewhere in epoch 2 (or just after it, if this machine is fast)
    kill_when([*args, "--resume"], lambda: time.time() - started > 4.0, must_run=False)
    proc = _train(data, out, "--resume")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["epoch_1.pth", "epoch_2.pth"]
    got, want = (torch.load(d / "epoch_2.pth", weights_only=True) for d in (out, ref))
    assert got["state_dict"].keys() == want["state_dict"].keys()
    for key, tensor in want["state_dict"].items():
        assert torch.equal(got["state_dict"][key], tensor), key
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in got["losses"]] == [
        {k: v for k, v in row.items() if k != "seconds"} for row in want["losses"]]
