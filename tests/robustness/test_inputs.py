"""
Issue 10 items 6 and 9 (inputs that must never crash the parser): 2D images declaring absurd sizes, prompt
checkpoints holding NaN/Inf, cut short or carrying a pickle exploit, manifests in other encodings or with
unsafe names. Most are read in one child process by ``probe.py`` through the public readers; the user-facing
runs (``predict`` on a decompression bomb, ``score`` with a NaN or malicious prompt file) are CLI subprocesses.
"""

from __future__ import annotations

import codecs
import json
import os
import pickle
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_model
from faults import AFFINE, PROMPTS, REPO, TINY, error_lines, good_volume, png_bytes, run_cli, save_nifti


class _Exploit:
    """A pickle that runs ``touch MARKER`` when unpickled without ``weights_only``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _prompt_files(root: Path) -> dict[str, tuple[Path, str]]:
    """Damaged prompt checkpoints made from a real one, with the expected error message fragment."""
    good = root / "good_prompts.pth"
    state = {k: v.clone() for k, v in tiny_model().prompt_learner.state_dict().items()}
    torch.save({"prompt_learner": state}, good)
    first = next(k for k, v in state.items() if v.is_floating_point())
    out: dict[str, tuple[Path, str]] = {}
    for name, value in (("prompts_nan", float("nan")), ("prompts_inf", float("inf")), ("prompts_neg_inf", -float("inf"))):
        bad = {k: v.clone() for k, v in state.items()}
        bad[first].view(-1)[3] = value
        torch.save({"prompt_learner": bad}, root / f"{name}.pth")
        out[name] = (root / f"{name}.pth", f"is damaged: tensor '{first}' holds 1 NaN/Inf value(s)")
    data = good.read_bytes()
    (root / "prompts_cut.pth").write_bytes(data[: len(data) // 2])
    out["prompts_cut"] = (root / "prompts_cut.pth", "Cannot read prompt checkpoint")
    with open(root / "prompts_exploit.pth", "wb") as f:
        pickle.dump({"prompt_learner": _Exploit(root / "PWNED")}, f)
    out["prompts_exploit"] = (root / "prompts_exploit.pth", "Cannot read prompt checkpoint")
    (root / "prompts_random.pth").write_bytes(np.random.default_rng(2).integers(0, 256, 3000, np.uint8).tobytes())
    out["prompts_random"] = (root / "prompts_random.pth", "Cannot read prompt checkpoint")
    (root / "prompts_empty.pth").write_bytes(b"")
    out["prompts_empty"] = (root / "prompts_empty.pth", "Cannot read prompt checkpoint")
    torch.save({"prompt_learner": {"ctx": "not a tensor"}}, root / "prompts_text.pth")
    out["prompts_text"] = (root / "prompts_text.pth", "is damaged: its state_dict is not a dict of tensors")
    torch.save({"weights": state}, root / "prompts_other_dict.pth")
    out["prompts_other_dict"] = (root / "prompts_other_dict.pth", "is not a prompt checkpoint")
    return out


def _image_files(root: Path) -> dict[str, tuple[str, Path, str]]:
    """Bad 2D images and masks: (reader, path, expected message fragment)."""
    good = root / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8)).save(good)
    files = {
        "png_bomb": ("image", png_bytes(100000, 100000, 2), "could be decompression bomb DOS attack"),
        "png_huge": ("image", png_bytes(10000, 10000, 0), "declares 10000 x 10000 pixels, outside 1 .. 89,478,485"),
        "png_zero_width": ("image", png_bytes(0, 64, 0), "Cannot read image"),
        "png_cut": ("image", good.read_bytes()[:300], "Cannot read image"),
        "png_text": ("image", b"not an image at all\n" * 10, "cannot identify image file"),
        "png_empty": ("image", b"", "cannot identify image file"),
        "mask_bomb": ("mask", png_bytes(100000, 100000, 0), "Cannot read mask"),
        "mask_huge": ("mask", png_bytes(12000, 8000, 0), "declares 12000 x 8000 pixels"),
    }
    out = {}
    for name, (kind, data, message) in files.items():
        (root / f"{name}.png").write_bytes(data)
        out[name] = (kind, root / f"{name}.png", message)
    return out


def _manifests(root: Path) -> dict[str, tuple[Path, object]]:
    """Manifests: (path, expected case IDs, or an error message fragment as a str)."""
    save_nifti(good_volume(), AFFINE, root / "scan.nii.gz")
    csv_text = "image,label\nscan.nii.gz,0\n"
    out: dict[str, tuple[Path, object]] = {}

    def put(name: str, data: bytes, expected) -> None:
        (root / name).write_bytes(data)
        out[name.rsplit(".", 1)[0]] = (root / name, expected)

    put("m_utf8_bom.csv", codecs.BOM_UTF8 + csv_text.encode(), ["scan"])
    put("m_utf16_le.csv", codecs.BOM_UTF16_LE + csv_text.encode("utf-16-le"), ["scan"])
    put("m_utf16_be.csv", codecs.BOM_UTF16_BE + csv_text.encode("utf-16-be"), ["scan"])
    put("m_utf16_no_bom.csv", csv_text.encode("utf-16-le"), "line 1 holds NUL bytes: it is UTF-16 without a byte-order mark")
    put("m_cp1252.json", '{"testing": [{"image": "scan.nii.gz", "note": "Patient \u201cX\u201d"}]}'.encode("cp1252"),
        "line 1, column 56: byte(s) 93 are not UTF-8")
    put("m_nul.csv", b"image,label\nscan.nii.gz\0,0\n", "line 2 holds NUL bytes")
    put("m_bad_json.json", b'{"testing": [{"image": "scan.nii.gz"},]}', "line 1: Expecting value")
    put("m_wrong_key.json", b'{"training": []}', "has no list of cases under key 'testing' (found: ['training'])")
    names = ["Müller 1.nii.gz", unicodedata.normalize("NFD", "Jürgen.nii.gz"), "../../up.nii.gz",
             "a;rm -rf ~.nii.gz", "  spaced  .nii.gz", "....nii.gz", "x" * 150 + ".nii.gz"]
    put("m_derived_ids.csv", ("image\n" + "\n".join(f'"{n}"' for n in names) + "\n").encode(),
        ["Müller_1", "Jürgen", "up", "a_rm_-rf", "spaced", "case", "x" * 100])
    for name, case_id in (("m_id_absolute", "/tmp/escaped"), ("m_id_hidden", ".hidden"), ("m_id_slash", "a/b"),
                          ("m_id_dotdot", "..")):
        put(f"{name}.csv", f"image,case_id\nscan.nii.gz,{case_id}\n".encode(), f"case_id {case_id!r} must be letters")
    # derived names that collide take their parent folders (issue 11's one naming rule), never an error
    put("m_derived_clash.csv", "image\na/Müller 1.nii.gz\nb/Müller_1.nii.gz\n".encode(), ["a_Müller_1", "b_Müller_1"])
    return out


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    prompts, images, manifests = _prompt_files(root), _image_files(root), _manifests(root)
    specs = ([f"prompts:{n}:{p}" for n, (p, _) in prompts.items()] + [f"{k}:{n}:{p}" for n, (k, p, _) in images.items()]
             + [f"manifest:{n}:{p}" for n, (p, _) in manifests.items()])
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("probe.py")), *specs], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert len(results) == len(specs)
    return root, prompts, images, manifests, results


PROMPT_FAULTS = ("prompts_nan", "prompts_inf", "prompts_neg_inf", "prompts_cut", "prompts_exploit", "prompts_random",
                 "prompts_empty", "prompts_text", "prompts_other_dict")
IMAGE_FAULTS = ("png_bomb", "png_huge", "png_zero_width", "png_cut", "png_text", "png_empty", "mask_bomb", "mask_huge")
MANIFESTS = ("m_utf8_bom", "m_utf16_le", "m_utf16_be", "m_utf16_no_bom", "m_cp1252", "m_nul", "m_bad_json",
             "m_wrong_key", "m_id_absolute", "m_id_hidden", "m_id_slash", "m_id_dotdot", "m_derived_ids",
             "m_derived_clash")


@pytest.mark.parametrize("name", PROMPT_FAULTS)
def test_a_bad_prompt_checkpoint_is_a_named_error(probed, name):
    root, prompts, _, _, results = probed
    path, message = prompts[name]
    assert results[name]["error"] == "CheckpointError"
    assert f"'{path}'" in results[name]["message"] and message in results[name]["message"], results[name]
    assert not (root / "PWNED").exists(), "unpickling ran code"


@pytest.mark.parametrize("name", IMAGE_FAULTS)
def test_a_bad_image_is_a_named_error(probed, name):
    _, _, images, _, results = probed
    _, path, message = images[name]
    assert results[name]["error"] == "InputError"
    assert f"'{path}'" in results[name]["message"] and message in results[name]["message"], results[name]


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_encodings_and_case_ids(probed, name):
    _, _, _, manifests, results = probed
    path, expected = manifests[name]
    if isinstance(expected, list):
        assert results[name] == {"name": name, "ok": expected}
    else:
        assert results[name]["error"] == "InputError" and f"'{path}'" in results[name]["message"]
        assert expected in results[name]["message"], results[name]


def test_predict_on_a_decompression_bomb_is_one_error_line(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "in" / "a_good.png")
    (tmp_path / "in" / "b_bomb.png").write_bytes(png_bytes(100000, 100000, 2))
    proc = run_cli("predict", tmp_path / "in", "--out", tmp_path / "out", *TINY, *PROMPTS)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(error_lines(proc.stderr)) == 1
    assert f"b_bomb.png'" in proc.stderr and "decompression bomb" in proc.stderr


@pytest.mark.parametrize("fault", ["prompts_nan", "prompts_exploit"])
def test_score_refuses_a_nan_or_malicious_prompt_file_before_scoring(probed, tmp_path, fault):
    root, prompts, *_ = probed
    scan = save_nifti(good_volume(), AFFINE, tmp_path / "scan.nii.gz")
    proc = run_cli("score", scan, "--out", tmp_path / "out", *TINY, "--prompts", prompts[fault][0], "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(error_lines(proc.stderr)) == 1 and prompts[fault][1] in proc.stderr
    assert not list(tmp_path.rglob("*_scores.json")) and not (root / "PWNED").exists()
