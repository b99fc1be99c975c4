"""``relatent bench defaults``: recipes parse (the CLI default is always measured and
marked), and a run on a tiny synthetic clip under a shared clip's name writes the result
files with the baseline at exactly 0% change."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from jobs.bench import defaults
from jobs.bench.gop import CLIPS
from jobs.bench.pipeline import synthetic_clip
from pipeline.config import DEFAULT_GOP, DEFAULT_ITERS, DEFAULT_LR, DEFAULT_METHOD
from pipeline.errors import ConfigError
from pipeline.models import load_cards


def test_recipes_parse_and_mark_the_cli_default() -> None:
    base = defaults.cli_default()
    assert (base.method, base.iters, base.lr, base.gop) == (
        DEFAULT_METHOD,
        DEFAULT_ITERS,
        DEFAULT_LR[DEFAULT_METHOD],
        DEFAULT_GOP,
    )
    r = defaults.parse_recipe("sga:0.02:25:warm", base)
    assert r.label == "sga:2e-2:25:warm" and r.config.warm_start and r.config.iters == 25
    assert r.config.tol == base.tol == 0.0 and r.config.gop == base.gop
    rs = defaults.recipes_with_default(["campos:1e-3:50", "campos:0.001:50"], base)
    assert rs[1].config.tol == 1e-3  # each method's command-line --tol (DEFAULT_TOL)
    assert [x.label for x in rs][:2] == ["none", "campos:1e-3:50"] and len(rs) == 3
    assert [x.default for x in rs] == [False, False, True] and rs[2].config == base
    for bad in ("sga:2e-2", "sga:x:50", "sga:2e-2:50:cold", "foo:1e-3:5", "sga:-1:5"):
        with pytest.raises(ConfigError, match="--recipes"):
            defaults.parse_recipe(bad, base)


def test_bench_defaults_on_a_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not load_cards()["models"]:
        pytest.skip("no shipped weights in this checkout")
    # a cheap CLI default (3 iterations), so that the listed sga recipe is the one marked
    cheap = dataclasses.replace(defaults.cli_default(), iters=3)
    monkeypatch.setattr(defaults, "cli_default", lambda: cheap)
    video = tmp_path / "video"
    video.mkdir()
    synthetic_clip(video / CLIPS[0][1], 3, 64, 48, gop=3)
    res = defaults.run(
        video,
        tmp_path / "out",
        frames=2,
        long_side=None,
        recipes=["none", "sga:2e-2:3"],
        jobs=1,
        log=lambda _: None,
    )
    saved = json.loads((tmp_path / "out" / "defaults.json").read_text())
    assert saved["clips"]["carphone"]["size"] == [48, 64]
    none = saved["per_clip"]["carphone"]["none"]
    assert none["rd_change_pct"] == 0.0 and none["bytes_change_pct"] == 0.0
    assert none["psnr_change_db"] == 0.0 and none["time_ratio"] == 1.0 and none["iters"] == 0
    sga = saved["per_clip"]["carphone"]["sga:2e-2:3"]
    assert sga["frames"] == 2 and 0 < sga["iters"] <= 3 and sga["p_frames"] <= 1
    assert sga["rd_change_pct"] == pytest.approx(100 * (sga["rd"] / none["rd"] - 1))
    assert sga["time_ratio"] == pytest.approx(sga["seconds"] / none["seconds"])
    assert sga["seconds_per_frame"] > 0
    assert saved["recipes"] == ["none", "sga:2e-2:3"] and res["default"] == "sga:2e-2:3"
    d = saved["default"]
    assert saved["summary"][d]["default"] and not saved["summary"]["none"]["default"]
    assert saved["summary"]["none"]["rd_change_pct_geomean"] == pytest.approx(0.0, abs=1e-12)
    assert saved["standing"]["of"] == len(saved["recipes"])
    md = (tmp_path / "out" / "defaults.md").read_text()
    assert f"**The CLI default is `{d}`**" in md and "sga:2e-2:3" in md
    assert (tmp_path / "out" / "defaults.png").stat().st_size > 0
