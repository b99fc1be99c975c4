"""Fixtures of the benchmark tests: one torch thread, a tiny Kodak folder, and a small
random model serving every shipped rate point."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from jobs.bench import rd_encode
from pipeline.models import load_cards, random_model
from tests.jobs.bench.helpers import smooth_image


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Metrics in one thread: far faster than two on a shared, loaded 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_kodak(tmp_path: Path) -> Path:
    """A folder of two 96x64 PNGs named like Kodak images."""
    d = tmp_path / "kodak"
    d.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(64, 96, seed=i)).save(d / f"kodim{i + 1:02d}.png")
    return d


@pytest.fixture
def random_models(monkeypatch):
    """Every shipped rate point is served by one small random model (mechanics only)."""
    cards = load_cards()["models"]
    if not cards:
        pytest.skip("no shipped model cards")
    m = random_model("bmshj2018-factorized", N=16, M=24)
    for c in cards:
        monkeypatch.setitem(rd_encode.MODEL_CACHE, (c["arch"], int(c["quality"])), m)
    return m
