"""The built wheel carries the shipped weights and their cards, so `pip install` + `relatent
encode` works offline with no model argument."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline.models import WEIGHTS_DIR, load_cards
from tests.conftest import REPO_ROOT


def test_cards_match_the_weight_files() -> None:
    cards = load_cards()
    if not cards["models"]:
        pytest.skip("no shipped weights in this checkout")
    assert cards["default_arch"] and cards["default_quality"]
    total = 0
    for card in cards["models"]:
        path = WEIGHTS_DIR / card["file"]
        data = path.read_bytes()
        total += len(data)
        assert hashlib.sha256(data).hexdigest() == card["sha256"], card["file"]
        for key in ("arch", "quality", "lambda", "N", "M", "steps", "training"):
            assert key in card, (card["file"], key)
    assert total <= 40 * 2**20, f"shipped weights are {total / 2**20:.1f} MB, over the 40 MB budget"


def test_wheel_contains_weights_and_cards(tmp_path: Path) -> None:
    cards = load_cards()
    if not cards["models"]:
        pytest.skip("no shipped weights in this checkout")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO_ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("relatent-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "pipeline/weights/cards.json" in names
        assert json.loads(z.read("pipeline/weights/cards.json")) == cards
        for card in cards["models"]:
            assert f"pipeline/weights/{card['file']}" in names
        assert any(
            n.endswith("entry_points.txt") and b"relatent = jobs.cli:main" in z.read(n)
            for n in names
        )
