"""``anomalyclip-med train`` on dataset trees: one run as a user would (a subprocess), the refusals in-process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import synthetic_trees as trees
from anomalyclip_med import AnomalyCLIP
from anomalyclip_med.cli.main import main
from conftest import SHARED_DATA, TESTS, TINY_CLIP_JSON, needs_shared_data

REPO = TESTS.parent
TINY = ["--backbone", str(TINY_CLIP_JSON), "--backbone-weights", "none", "--image-size", "56"]


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "anomalyclip_med", "train", *map(str, args), *TINY], env=env,
                          capture_output=True, text=True, timeout=300)


def _main(capsys, *args) -> tuple[int, str, str]:
    code = main(["train", *map(str, args), *TINY])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_then_resume(tmp_path, capsys):
    root = trees.mvtec(tmp_path / "mvtec")
    out = tmp_path / "out"
    # the authors' train.sh protocol: patch features (and pixel losses) of the last layer only
    proc = _run("--data", root, "--format", "mvtec", "--out", out, "--epochs", "2", "--batch-size", "4", "--csv-log",
                "--feature-layers", "4")
    assert proc.returncode == 0, proc.stderr
    assert "training on 10 images (6 anomalous)" in proc.stdout and "pixel and image losses" in proc.stdout
    assert "RANDOM" in proc.stdout
    assert "epoch [1/2]" in proc.stderr and "epoch [2/2]" in proc.stderr  # per-epoch loss log
    assert sorted(p.name for p in out.iterdir()) == ["epoch_1.pth", "epoch_2.pth", "train_log.csv"]

    code, _, err = _main(capsys, "--data", root, "--format", "mvtec", "--out", out, "--epochs", "3", "--batch-size",
                         "4", "--csv-log", "--resume")  # resuming with other layers is refused
    assert code == 2 and "feature layers [4]" in err and "--feature-layers" in err
    proc = _run("--data", root, "--format", "mvtec", "--out", out, "--epochs", "3", "--batch-size", "4", "--csv-log",
                "--resume", "--feature-layers", "4")
    assert proc.returncode == 0, proc.stderr
    assert "Resuming after epoch 2" in proc.stderr and f"prompts: {out / 'epoch_3.pth'}" in proc.stdout
    rows = list(csv.DictReader((out / "train_log.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    ckpt = torch.load(out / "epoch_3.pth", weights_only=True)
    assert ckpt["training"]["run"] == {"format": "mvtec", "root": str(root), "split": "test"}
    assert ckpt["config"]["feature_layers"] == [4] and ckpt["config"]["map_layers"] == [4]  # recorded, and used:
    assert AnomalyCLIP.from_pretrained(backbone=str(TINY_CLIP_JSON), backbone_weights=None, image_size=56,
                                       prompts=out / "epoch_3.pth").feature_layers == (4,)


def test_refuses_to_overwrite_a_run(tmp_path, capsys):
    root = trees.headct(tmp_path / "h")
    out = tmp_path / "out"
    assert _main(capsys, "--data", root, "--format", "headct", "--out", out, "--epochs", "1")[0] == 0
    stamp = (out / "epoch_1.pth").stat().st_mtime_ns
    code, _, err = _main(capsys, "--data", root, "--format", "headct", "--out", out, "--epochs", "1")
    assert code == 2 and "already holds checkpoints (epoch_1.pth); pass --resume" in err
    assert (out / "epoch_1.pth").stat().st_mtime_ns == stamp


def test_wrong_layout_fails_clearly_and_writes_nothing(tmp_path, capsys):
    root = trees.yes_no(tmp_path / "brain")
    out = tmp_path / "out"
    code, _, err = _main(capsys, "--data", root, "--format", "visa", "--out", out)
    assert code == 2
    assert "is not a 'visa' dataset root" in err and "split_csv/1cls.csv" in err
    assert "contains: no/, pred/, yes/" in err and "Traceback" not in err
    assert not out.exists()


def test_bad_masks_fail_clearly_and_write_nothing(tmp_path, capsys):
    root = trees.paired(tmp_path / "kvasir", "images", "masks", names=("1", "2", "3"))
    trees.mask(root / "masks" / "2.png", size=(20, 20))
    ramp = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (32, 1))
    Image.fromarray(ramp).save(root / "masks" / "3.png")
    out = tmp_path / "out"
    code, _, err = _main(capsys, "--data", root, "--format", "kvasir", "--out", out)
    assert code == 2
    assert "2 of 3 dataset files cannot be used" in err
    assert "2.png' is 20x20 pixels but its image is 40x32" in err and "3.png' is not binary" in err
    assert not out.exists()


@needs_shared_data
def test_real_headct_trains_the_image_loss_only(tmp_path, capsys, single_thread):
    out = tmp_path / "out"
    code, stdout, err = _main(capsys, "--data", SHARED_DATA / "HeadCT" / "Dataset", "--format", "headct", "--out", out,
                              "--epochs", "1", "--batch-size", "16", "--csv-log")
    assert code == 0, err
    assert "training on 200 images (100 anomalous)" in stdout and "image loss only" in stdout
    (row,) = csv.DictReader((out / "train_log.csv").read_text().splitlines())
    assert float(row["focal"]) == 0 and float(row["dice"]) == 0 and float(row["image"]) > 0
    assert float(row["total"]) == pytest.approx(float(row["image"]))
