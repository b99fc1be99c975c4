"""``bench rd`` on tiny inputs and a small random model: the result files, the analysis
(BD-rate against budget, the methods comparison) and the recipes."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from jobs.bench import rd, rd_analysis, rd_encode
from jobs.bench.rd_protocol import Protocol, recipe
from pipeline.errors import ConfigError
from pipeline.models import load_cards
from tests.jobs.bench.helpers import curve, log_linear


def test_rd_result_files(tmp_path: Path, tiny_kodak: Path, random_models, monkeypatch) -> None:
    # short sweeps: format, not results
    monkeypatch.setattr(rd_encode, "JPEG_QUALITIES", (10, 40, 70, 95))
    monkeypatch.setitem(rd_encode.CRF_SWEEPS, "libx265", (20, 30, 40, 50))
    proto = Protocol(
        crop=64,
        subset=["kodim01.png"],
        budgets=[2],
        clip_budgets=[],
        codecs=["jpeg", "x265-intra-420"],
        jobs=1,
        methods=[],
    )
    out = tmp_path / "out"
    res = rd.run(tiny_kodak, None, out, proto, log=lambda *_: None)
    data = json.loads((out / "rd.json").read_text())
    for key in (
        "provenance",
        "protocol",
        "datasets",
        "sets",
        "records",
        "curves",
        "bd",
        "budget_curve",
        "gains",
        "equal_quality",
        "seconds",
    ):
        assert key in data, key
    prov = data["provenance"]
    assert len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)
    assert prov["models"] and all(len(m["sha256"]) == 64 for m in prov["models"])
    assert {"torch", "compressai", "av", "bjontegaard"} <= set(prov["libraries"]) and prov[
        "machine"
    ]["cores"]
    assert data["sets"]["kodak-refine-subset"] == ["kodim01.png"]
    labels = set(data["curves"]["kodak"])
    assert {"jpeg-420", "x265-intra-420"} <= labels and any(
        lab.endswith("unrefined") for lab in labels
    )
    assert any(" campos 2" in lab for lab in data["curves"]["kodak-refine-subset"])
    # every relatent record: bpp from the packet's bytes
    for r in data["records"]:
        if r["codec"].startswith("relatent-"):
            assert r["bpp"] == pytest.approx(8 * r["bytes"] / (64 * 64), rel=1e-4)
    assert data["gains"] and all(g["budget"] == 2 for g in data["gains"])
    md = (out / "rd.md").read_text()
    assert "| curve | points | bpp range | vs unrefined RGB" in md and "|---|" in md
    assert "## Gain against compute" in md and prov["git"]["commit"][:12] in md
    for png in ("rd_kodak.png", "rd_kodak-refine-subset.png", "rd_budget.png", "rd_gain.png"):
        assert (out / png).stat().st_size > 1000, png
    assert res["bd"]["kodak"]["jpeg-420"]["vs_x265_intra_psnr"] is not None
    with Image.open(out / "rd_kodak.png") as im:  # plots carry the provenance too
        assert im.text["Source"].startswith(f"git {prov['git']['commit']}")


def test_analysis_bd_rate_against_budget() -> None:
    """Synthetic records: 3 rate points; refinement at 10 iterations reaches the unrefined
    quality with 10% fewer bits, at 20 iterations with 20% fewer: BD-rate -10% / -20%."""
    recs = []
    for frame in ("a.png", "b.png"):
        for q, r in ((1, 0.2), (2, 0.4), (3, 0.8)):
            for budget, factor in ((0, 1.0), (10, 0.9), (20, 0.8)):
                p = curve([r * factor], [log_linear(r)])[0]
                recs.append(
                    {
                        "dataset": "kodak",
                        "frame": frame,
                        "codec": "relatent-arch",
                        "setting": q,
                        "budget": budget,
                        "method": "campos",
                        **p,
                        "rd_before": 1.0,
                        "rd_after": 1.0 - 0.01 * budget,
                        "refined": budget > 0,
                    }
                )
    res = rd_analysis.analyse(
        recs, {"kodak-refine-subset": ["a.png", "b.png"]}, {"kodak-refine-subset": [10, 20]}, "arch"
    )
    rows = {r["budget"]: r for r in res["budget_curve"]["kodak-refine-subset"]}
    assert rows[10]["bd_rate_psnr"] == pytest.approx(-10.0, abs=1e-6)
    assert rows[20]["bd_rate_psnr"] == pytest.approx(-20.0, abs=1e-6)
    assert rows[20]["mean_rd_gain_pct"] == pytest.approx(-20.0)
    bd = res["bd"]["kodak-refine-subset"]
    assert bd["arch campos 10"]["vs_unrefined_psnr"] == pytest.approx(-10.0, abs=1e-6)
    assert bd["arch unrefined"]["vs_unrefined_psnr"] is None  # the anchor itself
    assert {g["budget"] for g in res["gains"]} == {10, 20} and len(res["gains"]) == 12


def test_rd_methods_comparison_files(tmp_path: Path, tiny_kodak: Path, random_models) -> None:
    """The issue-7 comparison on tiny inputs: every recipe on a Kodak pseudo-sequence and a
    clip sequence, coded as streams are; realised iterations, BD-rate, Pareto front, targets."""
    from jobs.bench.pipeline import synthetic_clip

    video = tmp_path / "video"
    video.mkdir()
    synthetic_clip(video / "moving.mp4", 12, 96, 64, gop=6, seed=1)
    qualities = sorted(int(c["quality"]) for c in load_cards()["models"])[:2]
    proto = Protocol(
        crop=64,
        subset=[],
        budgets=[],
        clip_budgets=[],
        codecs=[],
        jobs=1,
        frames=2,
        long_side=64,
        methods=["campos", "sga", "campos+warm", "campos+es", "sga+warm+budget"],
        method_budgets=[2, 4],
        anchor_budget=6,
        seq_clips=["moving"],
        seq_frames=3,
        grid=2,
        warm_threshold=1e9,
        qualities=qualities,
    )
    out = tmp_path / "out"
    rd.run(tiny_kodak, video, out, proto, log=lambda *_: None)
    data = json.loads((out / "rd.json").read_text())
    assert set(data["method_curve"]) == {"methods-kodak", "methods-moving", "methods-all"}
    assert data["sets"]["methods-moving"] == [
        "seq:moving#4",
        "seq:moving#5",
        "seq:moving#6",
    ]  # consecutive, mid-clip
    mc = data["method_curve"]["methods-moving"]
    pts = {(p["method"], p["budget"]): p for p in mc["points"]}
    assert set(pts) == {(m, b) for m in proto.methods for b in (2, 4)} | {("campos", 6)}
    for (m, b), p in pts.items():
        if m in ("campos", "sga", "campos+warm"):
            assert p["iters_per_frame"] == b  # tol 0: the exact budget, realised
        else:
            assert p["iters_per_frame"] <= (b if m == "campos+es" else 4 * b)
        assert p["frames"] == 3 * len(qualities) and math.isfinite(p["mean_rd_gain_pct"])
    assert (
        pts[("campos+warm", 2)]["warm_frames_pct"] > 0
        and pts[("campos", 2)]["warm_frames_pct"] == 0
    )
    # the budget recipe averages its budget per grid group ([0,1] and [2]; tol 0)
    assert pts[("sga+warm+budget", 4)]["iters_per_frame"] == 4
    # one random model serves every rate point: no BD-rate, the front falls back to the mean J change
    key = mc["pareto_metric"]
    assert key == (
        "bd_rate_psnr"
        if all(p["bd_rate_psnr"] is not None for p in pts.values())
        else "mean_rd_gain_pct"
    )
    # Pareto front: increasing iterations, strictly decreasing metric, made of measured points
    fr = mc["pareto"]
    assert fr and all(
        a["iters_per_frame"] <= b["iters_per_frame"] and a[key] > b[key]
        for a, b in itertools.pairwise(fr)
    )
    assert all(pts[(f["method"], f["budget"])][key] == f[key] for f in fr)
    assert fr[0][key] == min(
        p[key] for p in pts.values() if p["iters_per_frame"] <= fr[0]["iters_per_frame"]
    )
    assert set(mc["targets"]) == {"gain_share_at_40", "sga_vs_campos", "best_at_400"}
    if key == "mean_rd_gain_pct":  # targets are on BD-rate: not measurable here
        assert all(t["met"] is None for t in mc["targets"].values())
    else:
        assert set(mc["targets"]["sga_vs_campos"]["points"]) == {"2", "4"}
    # method records stay out of the per-budget gain tables
    assert all(not g["frame"].startswith("seq:") for g in data["gains"])
    rec = [r for r in data["records"] if r.get("sweep") == "methods"]
    assert rec and all(
        r["bpp"] == pytest.approx(8 * r["bytes"] / (r["size"][0] * r["size"][1]), rel=1e-4)
        for r in rec
    )
    md = (out / "rd.md").read_text()
    assert (
        "## Methods against compute (issue 7)" in md
        and "| recipe | budget | iterations/frame |" in md
    )
    assert (out / "rd_methods.png").stat().st_size > 1000


def test_method_analysis_pareto_and_targets() -> None:
    """Synthetic records, 3 rate points: each (recipe, budget) saves a known share of the
    bits at equal quality, so its BD-rate is known exactly."""
    saving = {
        ("campos", 10): 0.05,
        ("campos", 40): 0.10,
        ("campos", 400): 0.16,
        ("sga", 10): 0.08,
        ("sga", 40): 0.13,
        ("campos+budget", 40): 0.14,
    }
    iters = {("campos+budget", 40): 36}
    recs = []
    for frame in ("s:a", "s:b"):
        for q, r in ((1, 0.2), (2, 0.4), (3, 0.8)):
            base = curve([r], [log_linear(r)])[0]
            recs.append(
                {
                    "dataset": "seq:s",
                    "frame": frame,
                    "sweep": "methods",
                    "arch": "arch",
                    "codec": "relatent-arch",
                    "setting": q,
                    "budget": 0,
                    "method": "none",
                    **base,
                    "rd_before": 1.0,
                    "rd_after": 1.0,
                    "iters": 0,
                    "refine_seconds": 0.0,
                }
            )
            for (m, b), f in saving.items():
                p = curve([r * (1 - f)], [log_linear(r)])[0]
                recs.append(
                    {
                        "dataset": "seq:s",
                        "frame": frame,
                        "sweep": "methods",
                        "arch": "arch",
                        "codec": "relatent-arch",
                        "setting": q,
                        "budget": b,
                        "method": m,
                        **p,
                        "rd_before": 1.0,
                        "rd_after": 1.0 - f,
                        "iters": iters.get((m, b), b),
                        "refine_seconds": 0.1,
                        "warm": False,
                    }
                )
    sets = {"methods-s": ["s:a", "s:b"]}
    res = rd_analysis.analyse(recs, sets, {}, "arch")
    res["sets"] = sets
    mc = rd_analysis.method_analysis(recs, res, ["methods-s"], "arch")["methods-s"]
    pts = {(p["method"], p["budget"]): p for p in mc["points"]}
    for k, f in saving.items():
        assert pts[k]["bd_rate_psnr"] == pytest.approx(-100 * f, abs=1e-6)
        assert pts[k]["mean_rd_gain_pct"] == pytest.approx(-100 * f)
    assert pts[("campos+budget", 40)]["iters_per_frame"] == 36
    assert [(p["method"], p["budget"]) for p in mc["pareto"]] == [
        ("sga", 10),
        ("campos+budget", 40),
        ("campos", 400),
    ]
    t = mc["targets"]
    assert t["gain_share_at_40"]["met"] and t["gain_share_at_40"]["share"] == pytest.approx(14 / 16)
    assert t["gain_share_at_40"]["best"] == "campos+budget 40"
    assert t["sga_vs_campos"]["met"] and t["sga_vs_campos"]["points"] == {
        "10": pytest.approx(-3.0),
        "40": pytest.approx(-3.0),
    }
    assert t["best_at_400"]["met"] and t["best_at_400"]["bd_rate"] == pytest.approx(-16.0)
    # campos at 400 at -30%: 14% is under 80% of it, and -15% is reached
    pts2 = [
        dict(p, bd_rate_psnr=-30.0) if (p["method"], p["budget"]) == ("campos", 400) else p
        for p in mc["points"]
    ]
    t2 = rd_analysis.method_targets(pts2)
    assert not t2["gain_share_at_40"]["met"] and t2["best_at_400"]["bd_rate"] == -30.0


def test_method_recipes() -> None:
    proto = Protocol(grid=8, warm_threshold=50.0, tol=1e-3)
    assert recipe("campos", 40, proto)["tol"] == 0.0
    kw = recipe("sga+warm+es+budget+bf16", 40, proto)
    assert (
        kw["method"] == "sga"
        and kw["warm_start"]
        and kw["grid"] == 8
        and kw["warm_threshold"] == 50.0
    )
    assert (
        kw["tol"] == 1e-3
        and kw["budget"] == 40
        and kw["iters"] == 160
        and kw["probe"] == 8
        and kw["autocast"] == "bf16"
    )
    for bad in ("adam", "campos+turbo", "campos+warm+warm"):
        with pytest.raises(ConfigError):
            recipe(bad, 10, proto)
    p = argparse.ArgumentParser()
    rd.add_parser(p.add_subparsers())
    with pytest.raises(ConfigError):  # an impossible budget fails before any work
        rd.protocol_from_args(
            p.parse_args(["rd", "--methods", "campos+budget", "--method-budgets", "1"])
        )
    a = rd.protocol_from_args(p.parse_args(["rd", "--methods", "--qualities", "3"]))
    assert a.methods == [] and a.qualities == [3]
