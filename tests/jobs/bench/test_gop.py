"""``relatent bench gop`` on a synthetic clip under a shared clip's name: the sweep
reproduces the real encoder's bytes, the pictures are the same as all-intra, and the
result files are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.bench import gop
from jobs.bench.pipeline import synthetic_clip
from pipeline.models import load_cards


def test_sweep_bytes_follows_the_encoder_rule() -> None:
    intra, p = [100, 100, 100, 100], [None, 40, 120, 30]
    assert gop.sweep_bytes(intra, p, 1) == 400
    assert gop.sweep_bytes(intra, p, 2) == 100 + 40 + 100 + 30
    assert gop.sweep_bytes(intra, p, 4) == 100 + 40 + 100 + 30  # a larger P falls back to I


def test_bench_gop_on_a_clip(tmp_path: Path) -> None:
    if not load_cards()["models"]:
        pytest.skip("no shipped weights in this checkout")
    video = tmp_path / "video"
    video.mkdir()
    synthetic_clip(video / gop.CLIPS[0][1], 6, 96, 64, gop=6)
    res = gop.run(
        video,
        tmp_path / "out",
        frames=5,
        long_side=None,
        gop=2,
        sweep=[1, 2, 4],
        log=lambda _: None,
    )
    c = res["clips"]["carphone"]
    assert c["frames"] == 5 and c["same_pictures"] and c["sweep_matches_encoder"]
    assert c["psnr_intra"] == c["psnr_gop"] and c["gop_bytes"] <= c["intra_bytes"]
    assert c["sweep_ratio"][1] == 1.0 and c["sweep_ratio"][4] <= c["sweep_ratio"][2] + 1e-9
    saved = json.loads((tmp_path / "out" / "gop.json").read_text())
    assert saved["clips"]["carphone"]["gop_bytes"] == c["gop_bytes"]
    assert (tmp_path / "out" / "gop.png").stat().st_size > 0
    assert "GOP 2" in (tmp_path / "out" / "gop.md").read_text()
