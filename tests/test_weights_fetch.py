"""
Named weights fetched on first use, verified and cached, as a user meets them: subprocess runs of the command
line and the bundle against a local HTTP server (127.0.0.1, standard library) that serves tiny stand-ins for the
CLIP file and the authors' prompts. The test registry (``$ANOMALYCLIP_MED_REGISTRY``) only swaps in the digests
of those stand-ins, which the test computes itself; the URL base points at the server.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from anomalyclip_med import AnomalyCLIP
from anomalyclip_med.weights import registry
from conftest import TESTS, TINY_CLIP_JSON, offline_env

REPO = TESTS.parent
BUNDLE = REPO / "bundles" / "anomalyclip_zeroshot"
CLIP_FILE, MVTEC_FILE, VISA_FILE = "ViT-L-14-336px.pt", "anomalyclip_mvtec-trained.pth", "anomalyclip_visa-trained.pth"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        server = self.server
        server.requests.append(self.path)
        name = self.path.lstrip("/")
        if name not in server.files:
            self.send_error(404)
            return
        data = server.files[name]
        mode = server.modes.get(name)
        if mode == "corrupt":
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        # "cut": the connection drops half-way through the announced length
        self.wfile.write(data[: len(data) // 2] if mode == "cut" else data)

    def log_message(self, *args):
        pass


class WeightsServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.modes, self.requests = files, {}, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Tiny files standing in for the real ones (tiny CLIP state dict, prompts in both formats) and a registry
    JSON holding the digests the test computes for them."""
    root = tmp_path_factory.mktemp("weights")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(1)
        model = AnomalyCLIP.from_pretrained(backbone=str(TINY_CLIP_JSON), backbone_weights=None, image_size=56,
                                            prompts="untrained")
    torch.save(model.clip.state_dict(), root / CLIP_FILE)
    with torch.no_grad():
        for p in model.prompt_learner.parameters():
            p.add_(0.1 * torch.randn_like(p))  # "trained": unlike the seeded initialisation
    torch.save({"prompt_learner": model.prompt_learner.state_dict()}, root / MVTEC_FILE)  # the authors' format
    model.save_prompts(root / VISA_FILE)
    files = {name: (root / name).read_bytes() for name in (CLIP_FILE, MVTEC_FILE, VISA_FILE)}
    table = {
        "clip-vit-l-14-336": {"hash_val": hashlib.sha256(files[CLIP_FILE]).hexdigest(),
                              "architecture": str(TINY_CLIP_JSON)},
        "mvtec-trained": {"hash_val": git_blob_id(files[MVTEC_FILE])},
        "visa-trained": {"hash_val": git_blob_id(files[VISA_FILE])},
    }
    (root / "registry.json").write_text(json.dumps(table))
    return root, files


@pytest.fixture(scope="module")
def server(stand_ins):
    srv = WeightsServer(stand_ins[1])
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    data = np.full((32, 32, 4), -1000.0, np.float32)
    data[4:28, 4:28] = 40 + 5 * rng.standard_normal((24, 24, 4))
    nib.save(nib.Nifti1Image(data, np.eye(4)), folder / "head.nii.gz")
    return folder / "head.nii.gz"


def _env(stand_ins, tmp_path, url, **extra):
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ANOMALYCLIP_MED_URL_BASE=url,
                ANOMALYCLIP_MED_REGISTRY=str(stand_ins[0] / "registry.json"),
                ANOMALYCLIP_MED_CACHE=str(tmp_path / "cache"), **extra)


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "anomalyclip_med", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)


def _score(env, scan, out, *extra):
    return _cli(env, "score", scan, "--out", out, "--image-size", "56", "--no-progress", "--device", "cpu", *extra)


def _no_model_warning(proc):
    text = proc.stdout + proc.stderr
    return "not meaningful" not in text and "UNTRAINED" not in text and "RANDOM" not in text


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_real_registry_keeps_the_published_digests(monkeypatch):
    monkeypatch.delenv("ANOMALYCLIP_MED_REGISTRY", raising=False)
    monkeypatch.delenv("ANOMALYCLIP_MED_URL_BASE", raising=False)
    table = registry()
    raw = "https://raw.githubusercontent.com/zqhang/AnomalyCLIP/45ed4dd35c05797d854294b5e8d585c545920089/checkpoints/"
    assert table["mvtec-trained"].url == raw + "9_12_4_multiscale_visa/epoch_15.pth"
    assert table["mvtec-trained"].hash_val == "72adc786e031b49ea288ba5f815f0d38cf158708"
    assert table["visa-trained"].url == raw + "9_12_4_multiscale/epoch_15.pth"
    assert table["visa-trained"].hash_val == "c90f1d9d92d158b436a8fc193f984d4cec8b1fc8"
    clip = table["clip-vit-l-14-336"]
    assert clip.hash_type == "sha256" and clip.hash_val in clip.url and clip.url.endswith("/ViT-L-14-336px.pt")


def _bundle_run(env, *overrides):
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", BUNDLE / "configs" / "inference.json",
         "--bundle_root", BUNDLE, *map(str, overrides)], env=env, capture_output=True, text=True, timeout=300,
    )


def test_readme_main_job_fetches_on_first_run_then_uses_the_cache(stand_ins, server, scan, tmp_path):
    """The README's main job as written (plus where to write, and the tiny backbone's input size) with a reachable
    server: both files downloaded with progress, verified and cached, no weight flag, no warning; a later run
    (here the score command) makes no request at all."""
    env = _env(stand_ins, tmp_path, server.url)
    before = len(server.requests)
    proc = _bundle_run(env, "--output_dir", tmp_path / "out", "--image_size", "56")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(server.requests[before:]) == [f"/{CLIP_FILE}", f"/{MVTEC_FILE}"]
    assert "100%" in proc.stderr and f"downloading mvtec-trained ({MVTEC_FILE})" in proc.stderr  # progress bars
    assert _no_model_warning(proc)
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir()) == [CLIP_FILE, MVTEC_FILE]  # no temporaries left
    assert git_blob_id((cache / MVTEC_FILE).read_bytes()) == git_blob_id(stand_ins[1][MVTEC_FILE])
    reports = sorted((tmp_path / "out").glob("*_scores.json"))
    assert [r.name for r in reports] == ["phantom_lesion_scores.json", "phantom_normal_scores.json"]
    for report in map(json.loads, (r.read_text() for r in reports)):
        assert report["model"]["prompts"]["name"] == "mvtec-trained" and report["model"]["prompts"]["trained"]
        assert report["model"]["warning"] is None

    requests = len(server.requests)
    again = _score(env, scan, tmp_path / "b")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(server.requests) == requests and "downloading" not in again.stderr  # the cache, no request
    report = json.loads((tmp_path / "b" / "head_scores.json").read_text())
    assert report["model"]["prompts"]["source"] == str(cache / MVTEC_FILE) and report["model"]["warning"] is None


def test_corrupted_download_is_refused_and_nothing_cached(stand_ins, server, scan, tmp_path):
    server.modes[VISA_FILE] = "corrupt"
    try:
        proc = _score(_env(stand_ins, tmp_path, server.url), scan, tmp_path / "out", "--prompts", "visa-trained")
    finally:
        server.modes.clear()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    # what was expected and what arrived
    expected, size = git_blob_id(stand_ins[1][VISA_FILE]), len(stand_ins[1][VISA_FILE])
    assert "refused" in line and expected in line and f"arrived ({size} bytes) has " in line and VISA_FILE in line
    # the CLIP file arrived whole and verified and stays; nothing of the prompts, not even a temporary
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [CLIP_FILE]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_fetch_weights_then_weights_dir_on_a_machine_without_server(stand_ins, server, scan, tmp_path):
    dest, env = tmp_path / "carried", _env(stand_ins, tmp_path, server.url)
    server.modes[CLIP_FILE] = "cut"  # the connection drops mid-file: that file fails alone, nothing of it kept
    try:
        cut = _cli(env, "fetch-weights", "--dest", dest, "--no-progress")
    finally:
        server.modes.clear()
    assert cut.returncode == 2 and "Traceback" not in cut.stderr
    (line,) = _error_lines(cut.stderr)
    assert CLIP_FILE in line and "broke off" in line
    assert sorted(p.name for p in dest.iterdir()) == [MVTEC_FILE, VISA_FILE]

    before = len(server.requests)
    fetched = _cli(env, "fetch-weights", "--dest", dest)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    assert server.requests[before:] == [f"/{CLIP_FILE}"]  # the others were verified where they lie
    assert fetched.stdout.count("verified, already there") == 2 and "MIT" in fetched.stdout
    assert sorted(p.name for p in dest.iterdir()) == [CLIP_FILE, MVTEC_FILE, VISA_FILE]
    assert not (tmp_path / "cache").exists()  # the folder, not the cache

    # the "hospital": no server, an empty cache of its own, the folder carried in by hand: the environment
    # variable for a command, the override for the bundle
    offline = _env(stand_ins, tmp_path / "hospital", offline_env(tmp_path)["ANOMALYCLIP_MED_URL_BASE"])
    by_env = _score(dict(offline, ANOMALYCLIP_MED_WEIGHTS_DIR=str(dest)), scan, tmp_path / "a",
                    "--prompts", "visa-trained")
    assert by_env.returncode == 0, by_env.stderr[-3000:]
    report = json.loads((tmp_path / "a" / "head_scores.json").read_text())
    assert report["model"]["prompts"]["name"] == "visa-trained" and report["model"]["warning"] is None
    assert report["model"]["prompts"]["source"] == str(dest / VISA_FILE)

    by_flag = _bundle_run(offline, "--dataset_dir", scan.parent, "--output_dir", tmp_path / "b", "--image_size", "56",
                          "--weights_dir", dest)
    assert by_flag.returncode == 0, by_flag.stderr[-3000:]
    assert _no_model_warning(by_flag)
    assert json.loads((tmp_path / "b" / "head_scores.json").read_text())["model"]["prompts"]["source"] == str(
        dest / MVTEC_FILE)
    assert not (tmp_path / "hospital" / "cache").exists()  # nothing was downloaded


def _large_files(path):
    import yaml

    return yaml.safe_load(path.read_text())["large_files"]


def test_large_files_yml_lists_the_registry(monkeypatch):
    monkeypatch.delenv("ANOMALYCLIP_MED_REGISTRY", raising=False)
    monkeypatch.delenv("ANOMALYCLIP_MED_URL_BASE", raising=False)
    items = {item["path"]: item for item in _large_files(BUNDLE / "large_files.yml")}
    assert len(items) == len(registry())
    for entry in registry().values():
        item = items[f"models/{entry.filename}"]  # the bundle's models/ folder is its default weights_dir
        assert item["url"] == entry.url
        if entry.hash_type == "sha256":
            assert (item["hash_type"], item["hash_val"]) == ("sha256", entry.hash_val)
        else:  # MONAI cannot check a git blob id: left empty for MONAI, stated for anomalyclip_med
            assert (item["hash_type"], item["hash_val"], item["git_blob_id"]) == ("", "", entry.hash_val)


def test_monai_download_large_files_fills_the_bundle_weights_folder(stand_ins, server, tmp_path, monkeypatch):
    """MONAI's own tool reads large_files.yml; what it puts into models/ is what the bundle then finds."""
    from monai.bundle import download_large_files

    from anomalyclip_med.bundle import default_weights_dir
    from anomalyclip_med.weights import locate, resolve_weights, verify

    monkeypatch.setenv("ANOMALYCLIP_MED_REGISTRY", str(stand_ins[0] / "registry.json"))
    monkeypatch.setenv("ANOMALYCLIP_MED_CACHE", str(tmp_path / "cache"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    items = _large_files(BUNDLE / "large_files.yml")
    for item in items:  # the same file, served by the local server
        item["url"] = f"{server.url}/{Path(item['path']).name}"
        if item["hash_type"] == "sha256":
            item["hash_val"] = hashlib.sha256(stand_ins[1][Path(item["path"]).name]).hexdigest()
    (bundle / "large_files.json").write_text(json.dumps({"large_files": items}))
    download_large_files(bundle_path=str(bundle))
    weights_dir = default_weights_dir(bundle)
    assert weights_dir == str(bundle / "models")
    for entry in registry().values():
        path = locate(entry, weights_dir)
        assert path == bundle / "models" / entry.filename
        verify(entry, path)
    # the prompt file a --prompts value stands for
    assert resolve_weights(None, None, "visa-trained", weights_dir).prompts == bundle / "models" / VISA_FILE
    assert resolve_weights(None, None, "untrained", weights_dir).prompts is None
    assert not (tmp_path / "cache").exists()


def test_third_party_notices_travel_with_the_bundle():
    """(The wheel: tests/test_packaging.py.)"""
    notices = (REPO / "THIRD_PARTY_NOTICES").read_text()
    assert "Copyright (c) 2024 Qihang Zhou" in notices and "Copyright (c) 2021 OpenAI" in notices
    assert "MIT License" in notices and "CC BY-NC-SA 4.0" in notices and "CC BY 4.0" in notices
    assert (BUNDLE / "THIRD_PARTY_NOTICES").read_text() == notices
