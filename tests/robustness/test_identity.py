"""
Issue 19, paths and kinds 2-3: every output lands under ``--out`` whatever the working directory does (relative
paths, ITK's lazy loader changing it while it loads); a result is reused only for the same content (an input
replaced while it is scored is never recorded under its new fingerprint; a scores JSON edited by hand is not
trusted); a finished case is never replaced by another input's result under ``--continue``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from faults import AFFINE, PROMPTS, REPO, TINY, error_lines, good_volume, run_cli, save_nifti

ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
SCORE = [*TINY, *PROMPTS, "--no-progress"]
TINY_CONFIG = TINY[1]
TAMPER = Path(__file__).with_name("tamper.py")


def _itk_file(volume: np.ndarray, path: Path) -> Path:
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(volume, (2, 1, 0))))
    image.SetSpacing((0.8, 0.8, 2.0))
    sitk.WriteImage(image, str(path))
    return path


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_relative_out_and_mixed_formats_write_only_under_out(tmp_path):
    """A relative --out and inputs given relative to the working directory, NIfTI mixed with NRRD and MetaImage,
    through the real reader/writer threads: every new file lies under out/, nothing is written anywhere else
    (not into the package's or the venv's folders, where ITK's lazy loader moves the working directory)."""
    scans = tmp_path / "in"
    scans.mkdir()
    save_nifti(good_volume(1), AFFINE, scans / "a.nii.gz")
    _itk_file(good_volume(2), scans / "b.nrrd")
    save_nifti(good_volume(3), AFFINE, scans / "c.nii.gz")
    _itk_file(good_volume(4), scans / "d.mha")
    save_nifti(good_volume(5), AFFINE, scans / "e.nii.gz")
    before = _files(tmp_path)
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "anomalyclip_med", "score", "in", "--out", "out", *SCORE],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = _files(tmp_path) - before
    assert new and all((tmp_path / "out") in p.parents for p in new), sorted(map(str, new))
    assert {p.name for p in new if p.name.endswith("_scores.json")} == {f"{c}_scores.json" for c in "abcde"}
    site = Path(__import__("itk").__file__).resolve().parents[1]
    for root in (REPO / "anomalyclip_med", site / "itk"):
        written = [p for p in root.rglob("*") if p.is_file() and p.stat().st_mtime > started]
        assert not written, written


def test_an_input_replaced_while_it_is_scored_is_never_recorded_as_its_new_content(tmp_path):
    """The scan is replaced by another right after it was read, before its outputs are written: the result of the
    old content must not be recorded under the new file's fingerprint; --continue then scores the new content."""
    scan = save_nifti(good_volume(1), AFFINE, tmp_path / "scan.nii.gz")
    other = save_nifti(good_volume(7), AFFINE, tmp_path / "other.nii.gz")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(TAMPER), str(scan), str(other), "anomalyclip_med", "score", str(scan),
                           "--out", str(out), *SCORE], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    (line,) = error_lines(proc.stderr)
    assert "changed while" in line and str(scan) in line, line
    again = run_cli("score", scan, "--out", out, *SCORE, "--continue")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(reused)" not in again.stdout, again.stdout
    fresh = run_cli("score", scan, "--out", tmp_path / "fresh", *SCORE)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    record = json.loads((out / "scan_scores.json").read_text())
    expected = json.loads((tmp_path / "fresh" / "scan_scores.json").read_text())
    assert record["slice_scores"] == expected["slice_scores"]
    # a scores JSON whose numbers were edited is not trusted: --continue scores the case again
    record["scan_score"] = 0.123456
    (out / "scan_scores.json").write_text(json.dumps(record, indent=2))
    edited = run_cli("score", scan, "--out", out, *SCORE, "--continue")
    assert edited.returncode == 0 and "(reused)" not in edited.stdout, edited.stdout + edited.stderr[-2000:]
    assert json.loads((out / "scan_scores.json").read_text())["scan_score"] == expected["scan_score"]


def test_continue_never_replaces_a_case_finished_from_another_input(tmp_path):
    """Two different scans named alike (a/FLAIR.nii.gz, later b/FLAIR.nii.gz) scored into one folder in two runs:
    the second run is refused with one error line naming both inputs; the first case is kept byte for byte."""
    for k in ("a", "b"):
        (tmp_path / k).mkdir()
        save_nifti(good_volume(1 if k == "a" else 2), AFFINE, tmp_path / k / "FLAIR.nii.gz")
    out = tmp_path / "out"
    first = run_cli("score", tmp_path / "a" / "FLAIR.nii.gz", "--out", out, *SCORE)
    assert first.returncode == 0, first.stderr[-3000:]
    kept = {p: p.read_bytes() for p in _files(out)}
    second = run_cli("score", tmp_path / "b" / "FLAIR.nii.gz", "--out", out, *SCORE, "--continue")
    assert second.returncode == 2, second.stdout + second.stderr[-3000:]
    (line,) = error_lines(second.stderr)
    assert str(tmp_path / "a" / "FLAIR.nii.gz") in line and str(tmp_path / "b" / "FLAIR.nii.gz") in line, line
    assert {p: p.read_bytes() for p in _files(out) if p.name != ".anomalyclip_med.lock"} == \
        {p: b for p, b in kept.items() if p.name != ".anomalyclip_med.lock"}


def test_weights_are_known_by_their_content(tmp_path):
    """A backbone weights file rewritten at the same path is another model: --continue scores again. A file named
    like the registry's trained prompts in --weights-dir that is not theirs is refused, naming it."""
    import torch

    from anomalyclip_med.network.backbone import load_backbone

    clip, _ = load_backbone(TINY_CONFIG, None)
    weights = tmp_path / "backbone.pt"
    torch.save(clip.state_dict(), weights)
    scan = save_nifti(good_volume(1), AFFINE, tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    args = ["score", scan, "--out", out, "--backbone", TINY_CONFIG, "--backbone-weights", weights, "--image-size", "56",
            *PROMPTS, "--no-progress"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    state = clip.state_dict()
    state["visual.proj"] = state["visual.proj"] * 0.5
    torch.save(state, weights)
    again = run_cli(*args, "--continue")
    assert again.returncode == 0 and "1 scored, 0 reused" in again.stdout, again.stdout + again.stderr[-3000:]
    fake = tmp_path / "weights"
    fake.mkdir()
    (fake / "anomalyclip_mvtec-trained.pth").write_bytes(b"not the authors' prompts")
    named = run_cli("score", scan, "--out", tmp_path / "named", *TINY, "--prompts", "mvtec-trained",
                    "--weights-dir", fake, "--no-progress")
    assert named.returncode == 2, named.stdout + named.stderr[-3000:]
    (line,) = error_lines(named.stderr)
    assert "is not mvtec-trained" in line and str(fake / "anomalyclip_mvtec-trained.pth") in line, line
