"""``relatent bench target``: the analysis on synthetic records (targets, windows, BD-rate,
search cost; no encoding), the GOP items' merge and cache keys, and a run on a tiny
synthetic clip under a shared clip's name (2 frames, 2 iterations) that resumes from its
checkpoint cache."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs.bench import target
from jobs.bench import target_report as tr
from jobs.bench.gop import CLIPS
from jobs.bench.pipeline import synthetic_clip
from jobs.bench.target_kbps import kbps_of, kbps_targets, markdown_kbps
from pipeline.config import RefineConfig
from pipeline.models import load_cards
from tests.jobs.bench.helpers import log_linear

#: Fixed rate points' bpp on a curve linear in log-rate (pchip reproduces it exactly).
RATES = {1: 0.1, 2: 0.2, 3: 0.4, 4: 0.8, 5: 1.6}
GOP = 2


def frames(bpp: float, psnr: float, q: int, iters: int, n: int = 4) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "gop": i // GOP,
            "bytes": 100,
            "bpp": bpp,
            "psnr": psnr,
            "frame_type": "I" if i % GOP == 0 else "P",
            "iters": iters,
            "rate_point": q,
            "lmbda": None,
        }
        for i in range(n)
    ]


def outcome(first: int, q: int, score: float, trials: int, iters: int) -> dict[str, Any]:
    return {
        "first": first,
        "frames": GOP,
        "rate_point": q,
        "lmbda": 0.005,
        "score": score,
        "bytes": 200,
        "trials": trials,
        "met": True,
        "iters": iters,
    }


def raw_clip(errors: list[tuple[float, float]], qs: list[tuple[int, int]]) -> dict[str, Any]:
    """One clip: the fixed curve (10 s, 8 s of CPU, 50 iterations a frame) and three
    targets coded 5% below the curve 0.2 dB above their target (25 s, 24 s of CPU, 500
    iterations), with the GOPs' errors ``errors`` and rate points ``qs`` (one pair per
    target)."""
    fixed = {
        q: {
            "quality": q,
            "seconds": 10.0,
            "cpu_seconds": 8.0,
            "frames": frames(r, log_linear(r), q, 50),
        }
        for q, r in RATES.items()
    }
    tgt = {}
    for k, (lo, hi) in enumerate(target.PAIRS):
        t = round((log_linear(RATES[lo]) + log_linear(RATES[hi])) / 2, 1)
        r = 2 ** ((t + 0.2 - 40.0) / 6.0)
        tgt[f"{t:.1f}"] = {
            "target": t,
            "pair": [lo, hi],
            "seconds": 25.0,
            "cpu_seconds": 24.0,
            "frames": frames(0.95 * r, t + 0.2, qs[k][0], 125),
            "outcomes": [
                outcome(0, qs[k][0], t + errors[k][0], 2, 250),
                outcome(GOP, qs[k][1], t + errors[k][1], 3, 250),
            ],
        }
    return {"fixed": fixed, "target": tgt}


def test_targets_are_the_rounded_midpoints_of_the_rate_points_present() -> None:
    got = target.targets_from_fixed({1: 27.04, 2: 28.71, 3: 29.8, 4: 31.0, 5: 31.9})
    assert got == [
        {"target": 27.9, "pair": [1, 2]},
        {"target": 29.3, "pair": [2, 3]},
        {"target": 30.4, "pair": [3, 4]},
    ]
    assert target.targets_from_fixed({1: 27.0, 3: 30.0}) == []
    # the default: a quarter of the way up, between q and its midpoint rate point q + 0.5
    quarter = target.targets_from_fixed({1: 27.0, 2: 28.6, 3: 29.8}, at=target.DEFAULT_AT)
    assert target.DEFAULT_AT == 0.25 and [t["target"] for t in quarter] == [27.4, 28.9]


def test_gop_items_merge_into_one_encode_and_have_distinct_keys() -> None:
    a = {"clip": "c", "start": 16, "seconds": 2.0, "frames": [{"index": 16}], "outcomes": [2]}
    b = {"clip": "c", "start": 0, "seconds": 3.0, "frames": [{"index": 0}], "outcomes": [1]}
    m = target.merge([a, b])
    assert m["seconds"] == 5.0 and m["gop_seconds"] == [3.0, 2.0]
    assert [f["index"] for f in m["frames"]] == [0, 16] and m["outcomes"] == [1, 2]
    img = np.zeros((8, 12, 3), np.uint8)
    base = {"clip": "c", "kind": "fixed", "quality": 3, "config": RefineConfig(), "start": 0}
    k0 = target.item_key(base | {"frames": [img] * 16})
    assert k0 == target.item_key(base | {"frames": [img.copy()] * 16})
    assert k0 != target.item_key(base | {"frames": [img] * 16, "start": 16})
    assert k0 != target.item_key(base | {"frames": [img] * 4})
    assert k0 != target.item_key(base | {"frames": [img] * 16, "quality": 4})
    t = base | {"kind": "target", "target": 29.3, "frames": [img] * 16}
    assert "t29.3" in target.item_key(t) and k0 != target.item_key(t)
    # targets and bitrates are keyed by the rate-control code (a changed search is rerun)
    stamp = target.rate_control_stamp()
    assert stamp.startswith("rc") and stamp in target.item_key(t) and stamp not in k0
    kb = base | {"kind": "kbps", "kbps": 104.0, "fps": 30.0, "frames": [img] * 16}
    assert "k104.0" in target.item_key(kb) and stamp in target.item_key(kb)
    # every module of the search is in the stamp, and exists
    import pipeline

    assert {"ratecontrol.py", "ratesearch.py", "bitrate.py"} <= set(target.RATE_CONTROL_SOURCES)
    assert all((Path(pipeline.__file__).parent / n).is_file() for n in target.RATE_CONTROL_SOURCES)


def test_analysis_counts_windows_bd_rate_and_search_cost() -> None:
    # per target: the two GOPs' errors (dB) and rate points
    errors = [(0.1, 0.25), (0.4, -0.05), (0.2, 0.6)]
    raw = {
        "a": raw_clip(errors, [(2, 2), (3, 2), (3, 4)]),
        "b": raw_clip([(0.0, 0.5)] * 3, [(2, 3), (3, 3), (4, 4)]),
    }
    res = tr.analyse(raw, GOP)
    a = res["per_clip"]["a"]
    assert list(a["fixed"]) == [1, 2, 3, 4, 5]
    f3 = a["fixed"][3]
    assert f3["bpp"] == pytest.approx(0.4) and f3["iters"] == 200 and f3["p_frames"] == 2
    assert [g["gop"] for g in f3["gops"]] == [0, 1] and f3["gops"][0]["frames"] == GOP
    assert [t["target"] for t in a["targets"]] == [23.1, 29.1, 35.1]
    # windows: a has 4 of 6 GOPs in [T, T+0.5] (not -0.05 and 0.6), 3 in [T, T+0.3];
    # b's errors 0.0 and 0.5 are both in [T, T+0.5] (the edges count), only 0.0 in T+0.3
    assert (a["windows"]["in_window"], a["windows"]["in_tight"]) == (4, 3)
    assert a["windows"]["met"] == 6  # the outcomes' own flag
    w = res["windows"]
    assert (w["gops"], w["in_window"], w["in_tight"]) == (12, 10, 6)
    assert w["share_window"] == pytest.approx(10 / 12) and not w["goal_met"]
    assert w["trials"] == {2: 6, 3: 6} and w["trials_mean"] == 2.5
    assert w["error_db_max_abs"] == pytest.approx(0.6)
    gops = a["targets"][2]["gops"]
    assert [g["in_window"] for g in gops] == [True, False] and gops[1]["error_db"] == pytest.approx(
        0.6
    )
    # the rate point of most frames (ties: the lowest), and the cost against its fixed encode
    assert [t["main_rate_point"] for t in a["targets"]] == [2, 2, 3]
    assert [t["rate_points"] for t in a["targets"]] == [[2], [2, 3], [3, 4]]
    t0 = a["targets"][0]
    assert t0["time_ratio"] == pytest.approx(2.5) and t0["iters_ratio"] == pytest.approx(2.5)
    assert t0["trials_mean"] == 2.5 and t0["iters"] == 500 and t0["cpu_ratio"] == 3.0
    sc = res["search_cost"]
    assert sc["time_ratio_geomean"] == pytest.approx(2.5)
    assert sc["cpu_ratio_geomean"] == pytest.approx(3.0) and sc["cpu_ratio_per_clip"][
        "b"
    ] == pytest.approx(3.0)
    assert sc["iters_ratio_geomean"] == pytest.approx(2.5) and sc["trials_per_gop_mean"] == 2.5
    # 5% fewer bits at equal PSNR on a curve linear in log-rate: exactly -5%
    assert t0["rate_change_pct"] == pytest.approx(-5.0, abs=1e-6)
    assert a["bd_rate_pct"] == pytest.approx(-5.0, abs=1e-3)
    assert res["bd_rate"]["mean_over_clips"] == pytest.approx(-5.0, abs=1e-3)
    assert res["bd_rate"]["pooled"] == pytest.approx(-5.0, abs=1e-3)
    assert [p["quality"] for p in res["pooled"]["fixed"]] == [1, 2, 3, 4, 5]
    assert len(res["pooled"]["target"]) == 3


def kbps_records(errors_pct: list[float], qs: list[tuple[int, int]]) -> dict[str, Any]:
    """A clip's three bitrate encodes (4 frames at 25 fps, so kb/s = 0.2 x bytes per frame):
    targets 100, 200 and 300 kb/s coded ``errors_pct`` off, 5% below the fixed curve of
    :func:`raw_clip` at the quality targets' PSNRs, GOPs at the rate points ``qs`` (2 and 3
    trials), 30 s of wall time and 16 s of CPU time."""
    out = {}
    for k, (lo, hi) in enumerate(target.PAIRS):
        t = round((log_linear(RATES[lo]) + log_linear(RATES[hi])) / 2, 1)
        r = 2 ** ((t + 0.2 - 40.0) / 6.0)
        goal = 100.0 * (k + 1)
        fr = frames(0.95 * r, t + 0.2, qs[k][0], 125)
        for f in fr:
            f["bytes"] = round(5 * goal * (1 + errors_pct[k] / 100))
        out[f"{goal:.1f}"] = {
            "kbps": goal,
            "pair": [lo, hi],
            "fps": 25.0,
            "seconds": 30.0,
            "cpu_seconds": 16.0,
            "first_pass_seconds": 1.5,
            "budgets": [1000 * (k + 1)] * 2,
            "frames": fr,
            "outcomes": [
                outcome(0, qs[k][0], t + 0.2, 2, 250),
                outcome(GOP, qs[k][1], t + 0.2, 3, 250),
            ],
        }
    return out


def test_kbps_targets_errors_and_bd_rate() -> None:
    assert kbps_of(1000, 25, 25.0) == 8.0  # 1000 bytes in one second
    assert kbps_targets({1: 10.0, 2: 20.04, 3: 30.0, 4: 41.0, 5: 50.0}, target.PAIRS) == [
        {"kbps": 15.0, "pair": [1, 2]},
        {"kbps": 25.0, "pair": [2, 3]},
        {"kbps": 35.5, "pair": [3, 4]},
    ]
    assert kbps_targets({1: 10.0, 3: 30.0}, target.PAIRS) == []
    assert kbps_targets({1: 10.0, 2: 20.0}, target.PAIRS, 0.25) == [{"kbps": 12.5, "pair": [1, 2]}]
    raw = {"a": raw_clip([(0.1, 0.2)] * 3, [(2, 2), (3, 3), (4, 4)])}
    raw["a"]["kbps"] = kbps_records([-2.0, -6.0, 1.0], [(2, 2), (2, 3), (4, 3)])
    raw["b"] = raw_clip([(0.1, 0.2)] * 3, [(2, 2), (3, 3), (4, 4)])
    raw["b"]["kbps"] = kbps_records([0.0, -5.0, -4.0], [(2, 2), (3, 3), (3, 4)])
    raw["c"] = raw_clip([(0.1, 0.2)] * 3, [(2, 2), (3, 3), (4, 4)])  # no bitrate encodes
    k = tr.analyse(raw, GOP)["kbps"]
    assert list(k["per_clip"]) == ["a", "b"] and k["streams"] == 6
    a = k["per_clip"]["a"]["streams"]
    assert [s["kbps"] for s in a] == [100.0, 200.0, 300.0]
    assert [s["achieved_kbps"] for s in a] == pytest.approx([98.0, 188.0, 303.0])
    assert [s["error_pct"] for s in a] == pytest.approx([-2.0, -6.0, 1.0])
    assert [s["within"] for s in a] == [True, False, True]
    assert [s["in_design"] for s in a] == [True, False, True]
    # the edges count: -5% is within, -4% in the search's window
    b = k["per_clip"]["b"]["streams"]
    assert all(s["within"] for s in b)
    assert [s["in_design"] for s in b] == [True, False, True]
    assert (k["within"], k["in_design"], k["goal_met"]) == (5, 4, False)
    assert k["error_pct_max_abs"] == pytest.approx(6.0)
    assert k["error_pct_mean"] == pytest.approx((-2 - 6 + 1 + 0 - 5 - 4) / 6)
    # rate points, trials, the first pass, CPU time over the fixed encode of the main one
    assert [s["rate_points"] for s in a] == [[2], [2, 3], [3, 4]]
    assert [s["main_rate_point"] for s in a] == [2, 2, 3]
    assert a[0]["trials"] == [2, 3] and a[0]["trials_mean"] == 2.5 and a[0]["iters"] == 500
    assert a[0]["cpu_ratio"] == 2.0 and a[0]["first_pass_seconds"] == 1.5
    assert a[0]["budget_bytes"] == 2000 and k["trials_per_gop_mean"] == 2.5
    assert k["cpu_ratio_geomean"] == pytest.approx(2.0)
    # 5% fewer bits at equal PSNR on a curve linear in log-rate: exactly -5%
    assert a[0]["rate_change_pct"] == pytest.approx(-5.0, abs=1e-6)
    assert k["per_clip"]["a"]["bd_rate_pct"] == pytest.approx(-5.0, abs=1e-3)
    assert k["bd_rate"]["mean_over_clips"] == pytest.approx(-5.0, abs=1e-3)
    assert k["bd_rate"]["pooled"] == pytest.approx(-5.0, abs=1e-3)
    assert len(k["pooled"]["kbps"]) == 3 and len(k["pooled"]["fixed"]) == 5
    # the fixed encodes' kb/s: 4 frames of 100 bytes at 25 fps
    assert k["per_clip"]["a"]["fixed_kbps"] == pytest.approx({q: 20.0 for q in RATES})
    # the report: the headline and a row per stream
    res = {"kbps": k, "pairs": [list(p) for p in target.PAIRS]}
    head, lines = markdown_kbps(res)
    assert "streams within ±5%: **5 of 6**" in head[0] and "-6.0%" in head[0]
    assert sum(line.startswith("| a |") for line in lines) == 3 + 1  # streams + BD row
    assert markdown_kbps({"kbps": tr.analyse({"c": raw["c"]}, GOP)["kbps"]}) == ([], [])


def test_shares_and_geomeans_of_nothing() -> None:
    assert tr.window_shares([])["gops"] == 0 and tr.geomean([]) is None
    assert tr.geomean([2.0, 8.0, None]) == pytest.approx(4.0)  # type: ignore[list-item]
    assert (
        tr.main_rate_point([{"rate_point": 4, "frames": 16}, {"rate_point": 2, "frames": 8}]) == 4
    )
    assert math.isclose(tr.WINDOW_DB, 0.5) and tr.GOAL_SHARE == 0.9


def test_bench_target_on_a_clip_resumes_from_its_cache(tmp_path: Path) -> None:
    if not load_cards()["models"]:
        pytest.skip("no shipped weights in this checkout")
    video = tmp_path / "video"
    video.mkdir()
    synthetic_clip(video / CLIPS[0][1], 3, 64, 48, gop=3)
    out, cache = tmp_path / "out", tmp_path / "cache.json"
    kw: dict[str, Any] = {"frames": 2, "long_side": None, "jobs": 1, "iters": 2, "cache": cache}
    res = target.run(video, out, log=lambda _: None, **kw)
    assert res is not None
    saved = json.loads((out / "target.json").read_text())
    c = saved["per_clip"]["carphone"]
    assert list(c["fixed"]) == ["1", "2", "3", "4", "5"] and len(c["targets"]) == 3
    assert saved["clips"]["carphone"]["size"] == [48, 64] and saved["config"]["iters"] == 2
    for t in c["targets"]:
        (g,) = t["gops"]
        assert g["rate_point"] == t["main_rate_point"] in (1, 1.5, 2, 2.5, 3, 3.5, 4, 5)
        assert g["frames"] == 2 and 1 <= g["trials"] <= 5 and g["score"] == pytest.approx(t["psnr"])
        # the traced trials: as many as the outcome counts, the chosen one among them
        assert len(g["search"]) == g["trials"] and g["search"][0]["trial"] == 0
        assert any(
            x["lmbda"] == pytest.approx(g["lmbda"]) and x["rate_point"] == g["rate_point"]
            for x in g["search"]
        )
        assert t["time_ratio"] > 0 and t["iters_ratio"] > 0 and t["cpu_ratio"] > 0
    assert saved["windows"]["gops"] == 3 and saved["items"] == 5 + 3 + 3
    assert saved["cached_items"] == 0
    # the bitrates: a quarter of the way between the fixed encodes' kb/s, each one encode
    k = saved["kbps"]["per_clip"]["carphone"]
    fps = saved["clips"]["carphone"]["fps"]
    rates = {int(q): kbps_of(f["bytes"], 2, fps) for q, f in c["fixed"].items()}
    assert [s["kbps"] for s in k["streams"]] == [
        t["kbps"] for t in kbps_targets(rates, target.PAIRS, target.DEFAULT_AT)
    ]
    for s in k["streams"]:
        assert s["achieved_kbps"] == pytest.approx(kbps_of(s["bytes"], 2, fps))
        assert len(s["gops"]) == 1 and s["seconds"] >= s["first_pass_seconds"] > 0
    assert saved["kbps"]["streams"] == 3
    md = (out / "target.md").read_text()
    assert "relatent bench target --frames 2" in md and "streams within ±5%" in md
    assert (out / "target.png").stat().st_size > 0
    # the report alone, from the encodes stored in target.json: the same numbers
    tr.rerender(out)
    rewritten = json.loads((out / "target.json").read_text())
    assert rewritten["windows"] == saved["windows"] and rewritten["bd_rate"] == saved["bd_rate"]
    assert rewritten["per_clip"] == saved["per_clip"]
    # a rerun takes every item from the cache: the same numbers
    again = target.run(video, tmp_path / "again", log=lambda _: None, **kw)
    assert again is not None and again["cached_items"] == again["items"] == 11
    assert again["kbps"]["per_clip"] == res["kbps"]["per_clip"]
    assert again["per_clip"]["carphone"]["targets"] == res["per_clip"]["carphone"]["targets"]
    assert target.run(tmp_path / "none", out, log=lambda _: None, **kw) is None


@pytest.mark.parametrize("at", [0.0, 1.0, -0.25])
def test_bench_target_refuses_targets_outside_their_pair(tmp_path: Path, at: float) -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"--at {at} is not between 0 and 1"):
        target.run(tmp_path, tmp_path / "out", at=at, log=lambda _: None)
    assert not (tmp_path / "out").exists()
