"""``relatent bench ipratio``: the BD-rate of each ratio against ratio 1 is computed from the
rate points (a curve of fewer bytes at the same PSNR comes out negative and best), a bad
ratio is refused before any encode, and a run on a tiny clip under a shared clip's name
writes the result files with ratio 1 at exactly 0%."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from jobs.bench import ipratio
from jobs.bench.gop import CLIPS
from jobs.bench.lib import bd_rate
from jobs.bench.pipeline import synthetic_clip
from pipeline.errors import ConfigError
from pipeline.models import load_cards


def _rec(ratio: float, q: int, nbytes: int, psnr: float) -> dict:
    return {"clip": "carphone", "quality": q, "ratio": ratio, "bytes": nbytes,
            "intra_bytes": nbytes // 2, "bpp": nbytes / 1e4, "psnr": psnr, "seconds": 1.0}  # fmt: skip


def test_summarize_measures_each_ratio_against_ratio_1() -> None:
    raw = []
    for q, (b, p) in enumerate([(1000, 28.0), (1500, 30.0), (2200, 32.0)], 1):
        raw += [_rec(1.0, q, b, p), _rec(1.4, q, round(b * 0.9), p), _rec(1.7, q, b, p - 0.5)]
    res = ipratio.summarize(raw, [1.0, 1.4, 1.7])
    clip = res["per_clip"]["carphone"]
    assert clip["1"]["bd_rate"] == 0.0
    assert clip["1.4"]["bd_rate"] == pytest.approx(-10.0, abs=0.2)  # 10% fewer bytes
    assert clip["1.7"]["bd_rate"] > 5.0  # 0.5 dB less for the same bytes
    assert [c["bytes_pct"] for c in clip["1.4"]["changes"]] == pytest.approx([-10.0] * 3, abs=0.1)
    assert res["best"] == "1.4" and res["mean_bd_rate"]["1.4"] == clip["1.4"]["bd_rate"]


def test_bench_ipratio_on_a_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = tmp_path / "video"
    video.mkdir()
    synthetic_clip(video / CLIPS[0][1], 3, 64, 48, gop=3)
    with pytest.raises(ConfigError, match="--ip-ratio"):
        ipratio.run(video, tmp_path / "bad", frames=2, ratios=[5.0], jobs=1, log=lambda _: None)
    assert not (tmp_path / "bad").exists()
    if not load_cards()["models"]:
        pytest.skip("no shipped weights in this checkout")
    import jobs.bench.target as target

    cheap = dataclasses.replace(target.base_config(), iters=3, gop=2)
    monkeypatch.setattr(target, "base_config", lambda: cheap)
    res = ipratio.run(
        video, tmp_path / "out", frames=2, long_side=None, ratios=[1.4], jobs=1, log=lambda _: None
    )
    saved = json.loads((tmp_path / "out" / "ipratio.json").read_text())
    assert saved["ratios"] == [1.0, 1.4] and saved["gop"] == 2
    entry = saved["per_clip"]["carphone"]
    qualities = sorted(c["quality"] for c in load_cards()["models"])
    for key in ("1", "1.4"):
        assert [p["quality"] for p in entry[key]["points"]] == qualities
        assert all(0 < p["intra_bytes"] <= p["bytes"] for p in entry[key]["points"])
    assert entry["1.4"]["bd_rate"] == bd_rate(entry["1"]["points"], entry["1.4"]["points"])
    assert res["mean_bd_rate"]["1.4"] == entry["1.4"]["bd_rate"]  # one clip
    md = (tmp_path / "out" / "ipratio.md").read_text()
    assert "| carphone |" in md and (tmp_path / "out" / "ipratio.png").stat().st_size > 0
