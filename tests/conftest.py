"""Shared test fixtures: a tiny random open_clip backbone and the paths of ../shared."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import pytest
import torch

from anomalyclip_med import AnomalyCLIP

TESTS = Path(__file__).resolve().parent
TINY_CLIP_JSON = TESTS / "data" / "tiny_clip.json"
SHARED = TESTS.parent.parent / "shared"
FIXTURE_A = SHARED / "fixtures" / "A"
SHARED_DATA = SHARED / "data"

needs_fixture_a = pytest.mark.skipif(
    not FIXTURE_A.is_dir(), reason="../shared/fixtures/A is absent (a plain clone); reference fixtures unavailable"
)
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="../shared/data is absent (a plain clone); real data unavailable"
)


def tiny_model(image_size: int = 56, **kwargs) -> AnomalyCLIP:
    """A tiny randomly initialised AnomalyCLIP (seeded), built from an open_clip model config."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs.setdefault("prompts", "untrained")
        return AnomalyCLIP.from_pretrained(
            backbone=str(TINY_CLIP_JSON), backbone_weights=None, image_size=image_size, **kwargs
        )


@pytest.fixture
def tiny() -> AnomalyCLIP:
    return tiny_model()


@pytest.fixture
def single_thread():
    """One torch thread: tiny-model steps are much faster that way when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def offline_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a machine without internet and with empty caches, deterministically: every download URL
    points at a local port nobody listens on (connections refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"ANOMALYCLIP_MED_URL_BASE": f"http://127.0.0.1:{port}", "ANOMALYCLIP_MED_CACHE": str(tmp_path / "cache"),
            "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
            "HF_ENDPOINT": "https://127.0.0.1"}
