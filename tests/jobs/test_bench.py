"""The benchmark code on tiny inputs (no timing here): BD-rate against analytic values, the
JPEG and PyAV codec wrappers, and the result files of ``bench rd`` / ``bench speed``.

Everything runs on synthetic 64x64 images and a small random model, so nothing here
needs ../shared/data or the shipped weights' quality."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs import bench_all, bench_rd, bench_speed
from jobs import benchlib as bl
from pipeline.errors import ConfigError
from pipeline.models import load_cards, random_model


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Metrics in one thread: far faster than two on a shared, loaded 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def smooth_image(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """Natural-ish content: smooth gradients, a few edges and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([
        128 + 90 * np.sin(x / 9.0 + seed) * np.cos(y / 13.0),
        128 + 80 * np.cos((x + y) / 17.0),
        60 + 120 * (x > w / 2) + 30 * np.sin(y / 5.0),
    ], -1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def curve(rates, psnrs):
    return [{"bpp": r, "psnr": p, "psnr_y": p + 1.0, "ms_ssim": 1 - 10 ** (-(p - 10) / 10)} for r, p in zip(rates, psnrs, strict=True)]


# --------------------------------------------------------------------------- BD-rate


def log_linear(r: float) -> float:
    """A quality curve linear in log-rate: pchip reproduces it exactly."""
    return 40.0 + 6.0 * math.log2(r)


@pytest.mark.parametrize("factor", [0.9, 0.75, 1.25])
def test_bd_rate_of_a_curve_scaled_in_rate_is_the_scale(factor: float) -> None:
    # test curve: the anchor's quality at rate r is reached at factor * r, so BD-rate is
    # exactly (factor - 1) * 100 %, also with sample points that do not match the anchor's
    anchor = curve([0.1, 0.2, 0.4, 0.8, 1.6], [log_linear(r) for r in (0.1, 0.2, 0.4, 0.8, 1.6)])
    test_r = [0.15, 0.3, 0.5, 0.9, 1.3]
    test = curve([factor * r for r in test_r], [log_linear(r) for r in test_r])
    for key in ("psnr", "psnr_y", "ms_ssim"):
        assert bl.bd_rate(anchor, test, key) == pytest.approx(100 * (factor - 1), abs=1e-6)


def test_bd_rate_edge_cases() -> None:
    a = curve([0.1, 0.2, 0.4], [30, 33, 36])
    assert bl.bd_rate(a, a) == pytest.approx(0.0, abs=1e-9)
    assert bl.bd_rate(a, a[:1]) is None  # one point: undefined
    assert bl.bd_rate(a[:1], a) is None
    # same shape, 1 dB better everywhere: fewer bits, i.e. negative
    assert bl.bd_rate(a, curve([0.1, 0.2, 0.4], [31, 34, 37])) < 0


def test_rate_change_at_equal_quality() -> None:
    anchor = curve([0.1, 0.2, 0.4, 0.8], [log_linear(r) for r in (0.1, 0.2, 0.4, 0.8)])
    pt = curve([0.3 * 0.8], [log_linear(0.3)])[0]  # anchor quality at 0.3 bpp, 20% fewer bits
    assert bl.rate_change_at_quality(anchor, pt) == pytest.approx(-20.0, abs=1e-6)
    assert bl.rate_change_at_quality(anchor, curve([1.0], [60.0])[0]) is None  # out of range


# --------------------------------------------------------------------------- codec wrappers


def test_colour_round_trip() -> None:
    img = smooth_image()
    assert bl.metrics.psnr_rgb(img, bl.planes_to_rgb(bl.rgb_to_planes(img, "yuv444p"), "yuv444p")) > 45
    assert bl.metrics.psnr_rgb(img, bl.planes_to_rgb(bl.rgb_to_planes(img, "yuv420p"), "yuv420p")) > 28
    flat = np.full((8, 8, 3), (200, 30, 90), np.uint8)  # chroma subsampling is exact on flat colour
    assert np.abs(bl.planes_to_rgb(bl.rgb_to_planes(flat, "yuv420p"), "yuv420p").astype(int) - flat).max() <= 1


def test_jpeg_wrapper_is_sane_and_monotone() -> None:
    img = smooth_image()
    pts = [bl.jpeg_point(img, q) for q in (10, 50, 90)]
    for p in pts:
        assert set(p) == set(bl.METRIC_KEYS)
        assert 0.05 < p["bpp"] < 24 and 15 < p["psnr"] < 60 and 0 < p["ms_ssim"] <= 1
    assert pts[0]["bpp"] < pts[1]["bpp"] < pts[2]["bpp"]
    assert pts[0]["psnr"] < pts[1]["psnr"] < pts[2]["psnr"]


@pytest.mark.parametrize("label", ["x265-intra-420", "x265-intra-444", "x264-intra-420"])
def test_intra_wrappers_are_sane_and_monotone(label: str) -> None:
    frames = [smooth_image(seed=1)]
    runs = [bl.av_sequence(frames, label, crf) for crf in (18, 32, 46)]
    means = [bl.mean_point(r["frames"]) for r in runs]
    for r, m in zip(runs, means, strict=True):
        assert len(r["frames"]) == 1
        assert 0.01 < m["bpp"] < 24 and 15 < m["psnr"] < 60
        # per-frame bytes add up to the stream minus the informational SEI
        total = sum(f["bpp"] for f in r["frames"]) * 64 * 64 / 8
        assert total == pytest.approx(r["total_bytes"] - r["sei_bytes"], abs=1e-6)
    assert means[0]["bpp"] > means[1]["bpp"] > means[2]["bpp"]
    assert means[0]["psnr"] > means[1]["psnr"] > means[2]["psnr"]
    if label.startswith("x264"):
        assert runs[0]["sei_bytes"] > 100  # x264's option-string SEI is excluded from bpp


def test_gop_mode_and_svtav1() -> None:
    frames = [smooth_image(seed=0)] * 3  # a static scene: inter frames are nearly free
    gop = bl.av_sequence(frames, "x265-gop-420", 32)
    intra = bl.av_sequence(frames, "x265-intra-420", 32)
    assert gop["total_bytes"] < intra["total_bytes"]
    assert len({f["bpp"] for f in gop["frames"]}) == 1  # stream average per frame
    av1 = bl.av_sequence(frames[:1], "svtav1-intra-420", 40)
    assert 20 < av1["frames"][0]["psnr"] < 60 and av1["sei_bytes"] == 0


def test_sei_parser() -> None:
    sei = b"\x00\x00\x00\x01\x06" + b"x" * 50
    slice_ = b"\x00\x00\x01\x65" + b"y" * 20
    assert bl.sei_bytes(sei + slice_, "libx264") == len(sei)
    assert bl.sei_bytes(slice_, "libx264") == 0
    hevc_sei = b"\x00\x00\x01" + bytes([39 << 1, 1]) + b"z" * 10
    assert bl.sei_bytes(hevc_sei + slice_, "libx265") == len(hevc_sei)


def test_frame_selection_helpers() -> None:
    assert bl.even_indices(120, 8) == [7, 22, 37, 52, 67, 82, 97, 112]
    assert bl.even_indices(3, 8) == [0, 1, 2]
    assert bl.even_size(272, 640, 256) == (108, 256)
    assert bl.even_size(144, 176, 256) == (144, 176)  # never upscaled
    assert bl.centre_crop(np.zeros((512, 768, 3), np.uint8), 256).shape == (256, 256, 3)


# --------------------------------------------------------------------------- result files


@pytest.fixture
def tiny_kodak(tmp_path: Path) -> Path:
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
        monkeypatch.setitem(bench_rd._MODELS, (c["arch"], int(c["quality"])), m)
    return m


def test_rd_result_files(tmp_path: Path, tiny_kodak: Path, random_models, monkeypatch) -> None:
    monkeypatch.setattr(bench_rd, "JPEG_QUALITIES", (10, 40, 70, 95))  # short sweeps: format, not results
    monkeypatch.setitem(bench_rd.CRF_SWEEPS, "libx265", (20, 30, 40, 50))
    proto = bench_rd.Protocol(crop=64, subset=["kodim01.png"], budgets=[2], clip_budgets=[], codecs=["jpeg", "x265-intra-420"], jobs=1,
                              methods=[])
    out = tmp_path / "out"
    res = bench_rd.run(tiny_kodak, None, out, proto, log=lambda *_: None)
    data = json.loads((out / "rd.json").read_text())
    for key in ("provenance", "protocol", "datasets", "sets", "records", "curves", "bd", "budget_curve", "gains", "equal_quality", "seconds"):
        assert key in data, key
    prov = data["provenance"]
    assert len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)
    assert prov["models"] and all(len(m["sha256"]) == 64 for m in prov["models"])
    assert {"torch", "compressai", "av", "bjontegaard"} <= set(prov["libraries"]) and prov["machine"]["cores"]
    assert data["sets"]["kodak-refine-subset"] == ["kodim01.png"]
    labels = set(data["curves"]["kodak"])
    assert {"jpeg-420", "x265-intra-420"} <= labels and any(lab.endswith("unrefined") for lab in labels)
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


def test_speed_result_files(tmp_path: Path, tiny_kodak: Path) -> None:
    m = random_model("bmshj2018-factorized", N=16, M=24)
    proto = bench_speed.SpeedProtocol(budgets=[0, 2, 5000], sizes=[32, 64], batches=[1, 2], batch_iters=2, repeats=2,
                                      max_seconds=0.5, decode_frames=2, decode_budget=2, crop=64, devices=["cpu"])
    out = tmp_path / "out"
    bench_speed.run(tiny_kodak, out, proto, log=lambda *_: None, model=m)
    data = json.loads((out / "speed.json").read_text())
    for key in ("provenance", "protocol", "model", "devices", "flops_per_iter_per_mp", "projection", "seconds"):
        assert key in data, key
    cpu = data["devices"]["cpu"]
    pts = {(p["size"], p["budget"]): p for p in cpu["encode"]["points"]}
    assert set(pts) == {(s, b) for s in (32, 64) for b in (0, 2, 5000)}
    assert pts[(64, 5000)]["measured"] is False  # over --max-seconds: projected, flagged
    assert pts[(32, 0)]["measured"] and pts[(32, 0)]["fps"] > 0 and pts[(32, 0)]["peak_rss_mb"] > 0
    assert [b["batch"] for b in cpu["batches"]] == [1, 2] and cpu["batches"][0]["ratio_vs_batch1"] == 1.0
    dec = cpu["decode"]
    assert dec["unrefined"]["fps"] > 0 and dec["refined"]["fps"] > 0 and dec["ratio_refined_over_unrefined"] > 0
    assert data["flops_per_iter_per_mp"] > 0
    assert data["projection"]["rows"] and "A100" in data["projection"]["rows"][0]["gpus"]
    md = (out / "speed.md").read_text()
    assert "| size | iterations | frames/s" in md and "Decode time ratio refined / unrefined" in md
    scale = (out / "scale.md").read_text()
    assert "## Assumptions" in scale and "GPU-h per video-h" in scale and "datasheet" in scale
    assert (out / "speed.png").stat().st_size > 1000


def test_parsers_and_protocols() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    for mod in (bench_rd, bench_speed, bench_all):
        mod.add_parser(sub)
    a = p.parse_args(["rd", "--jobs", "1"])
    proto = bench_rd.protocol_from_args(a)
    assert proto.crop == 256 and proto.budgets == [25, 100, 400] and proto.lr == 5e-3
    assert len(proto.subset) >= 8 and proto.frames == 8 and proto.long_side == 256
    full = bench_rd.protocol_from_args(p.parse_args(["rd", "--full"]))
    assert full.crop is None and full.long_side is None and max(full.budgets) >= 1000 and full.subset == []
    a = p.parse_args(["all", "--limit", "2", "--repeats", "1"])
    assert a.func is bench_all._cmd and bench_speed.protocol_from_args(a).repeats == 1
    s = bench_speed.protocol_from_args(p.parse_args(["speed"]))
    assert s.batches == [1, 4, 8]


def test_analysis_bd_rate_against_budget() -> None:
    """Synthetic records: 3 rate points; refinement at 10 iterations reaches the unrefined
    quality with 10% fewer bits, at 20 iterations with 20% fewer: BD-rate -10% / -20%."""
    recs = []
    for frame in ("a.png", "b.png"):
        for q, r in ((1, 0.2), (2, 0.4), (3, 0.8)):
            for budget, factor in ((0, 1.0), (10, 0.9), (20, 0.8)):
                p = curve([r * factor], [log_linear(r)])[0]
                recs.append({"dataset": "kodak", "frame": frame, "codec": "relatent-arch", "setting": q, "budget": budget,
                             "method": "campos", **p, "rd_before": 1.0, "rd_after": 1.0 - 0.01 * budget, "refined": budget > 0})
    res = bench_rd.analyse(recs, {"kodak-refine-subset": ["a.png", "b.png"]}, {"kodak-refine-subset": [10, 20]}, "arch")
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
    from jobs.bench_pipeline import synthetic_clip

    video = tmp_path / "video"
    video.mkdir()
    synthetic_clip(video / "moving.mp4", 12, 96, 64, gop=6, seed=1)
    qualities = sorted(int(c["quality"]) for c in load_cards()["models"])[:2]
    proto = bench_rd.Protocol(crop=64, subset=[], budgets=[], clip_budgets=[], codecs=[], jobs=1, frames=2, long_side=64,
                              methods=["campos", "sga", "campos+warm", "campos+es", "sga+warm+budget"], method_budgets=[2, 4],
                              anchor_budget=6, seq_clips=["moving"], seq_frames=3, grid=2, warm_threshold=1e9, qualities=qualities)
    out = tmp_path / "out"
    bench_rd.run(tiny_kodak, video, out, proto, log=lambda *_: None)
    data = json.loads((out / "rd.json").read_text())
    assert set(data["method_curve"]) == {"methods-kodak", "methods-moving", "methods-all"}
    assert data["sets"]["methods-moving"] == ["seq:moving#4", "seq:moving#5", "seq:moving#6"]  # consecutive, mid-clip
    mc = data["method_curve"]["methods-moving"]
    pts = {(p["method"], p["budget"]): p for p in mc["points"]}
    assert set(pts) == {(m, b) for m in proto.methods for b in (2, 4)} | {("campos", 6)}
    for (m, b), p in pts.items():
        if m in ("campos", "sga", "campos+warm"):
            assert p["iters_per_frame"] == b  # tol 0: the exact budget, realised
        else:
            assert p["iters_per_frame"] <= (b if m == "campos+es" else 4 * b)
        assert p["frames"] == 3 * len(qualities) and math.isfinite(p["mean_rd_gain_pct"])
    assert pts[("campos+warm", 2)]["warm_frames_pct"] > 0 and pts[("campos", 2)]["warm_frames_pct"] == 0
    # the budget recipe averages its budget per grid group ([0,1] and [2]; tol 0)
    assert pts[("sga+warm+budget", 4)]["iters_per_frame"] == 4
    # one random model serves every rate point: no BD-rate, the front falls back to the mean J change
    key = mc["pareto_metric"]
    assert key == ("bd_rate_psnr" if all(p["bd_rate_psnr"] is not None for p in pts.values()) else "mean_rd_gain_pct")
    # Pareto front: increasing iterations, strictly decreasing metric, made of measured points
    fr = mc["pareto"]
    assert fr and all(a["iters_per_frame"] <= b["iters_per_frame"] and a[key] > b[key] for a, b in itertools.pairwise(fr))
    assert all(pts[(f["method"], f["budget"])][key] == f[key] for f in fr)
    assert fr[0][key] == min(p[key] for p in pts.values() if p["iters_per_frame"] <= fr[0]["iters_per_frame"])
    assert set(mc["targets"]) == {"gain_share_at_40", "sga_vs_campos", "best_at_400"}
    if key == "mean_rd_gain_pct":  # targets are on BD-rate: not measurable here
        assert all(t["met"] is None for t in mc["targets"].values())
    else:
        assert set(mc["targets"]["sga_vs_campos"]["points"]) == {"2", "4"}
    # method records stay out of the per-budget gain tables
    assert all(not g["frame"].startswith("seq:") for g in data["gains"])
    rec = [r for r in data["records"] if r.get("sweep") == "methods"]
    assert rec and all(r["bpp"] == pytest.approx(8 * r["bytes"] / (r["size"][0] * r["size"][1]), rel=1e-4) for r in rec)
    md = (out / "rd.md").read_text()
    assert "## Methods against compute (issue 7)" in md and "| recipe | budget | iterations/frame |" in md
    assert (out / "rd_methods.png").stat().st_size > 1000


def test_method_analysis_pareto_and_targets() -> None:
    """Synthetic records, 3 rate points: each (recipe, budget) saves a known share of the
    bits at equal quality, so its BD-rate is known exactly."""
    saving = {("campos", 10): 0.05, ("campos", 40): 0.10, ("campos", 400): 0.16, ("sga", 10): 0.08, ("sga", 40): 0.13,
              ("campos+budget", 40): 0.14}
    iters = {("campos+budget", 40): 36}
    recs = []
    for frame in ("s:a", "s:b"):
        for q, r in ((1, 0.2), (2, 0.4), (3, 0.8)):
            base = curve([r], [log_linear(r)])[0]
            recs.append({"dataset": "seq:s", "frame": frame, "sweep": "methods", "arch": "arch", "codec": "relatent-arch", "setting": q,
                         "budget": 0, "method": "none", **base, "rd_before": 1.0, "rd_after": 1.0, "iters": 0, "refine_seconds": 0.0})
            for (m, b), f in saving.items():
                p = curve([r * (1 - f)], [log_linear(r)])[0]
                recs.append({"dataset": "seq:s", "frame": frame, "sweep": "methods", "arch": "arch", "codec": "relatent-arch",
                             "setting": q, "budget": b, "method": m, **p, "rd_before": 1.0, "rd_after": 1.0 - f,
                             "iters": iters.get((m, b), b), "refine_seconds": 0.1, "warm": False})
    sets = {"methods-s": ["s:a", "s:b"]}
    res = bench_rd.analyse(recs, sets, {}, "arch")
    res["sets"] = sets
    mc = bench_rd.method_analysis(recs, res, ["methods-s"], "arch")["methods-s"]
    pts = {(p["method"], p["budget"]): p for p in mc["points"]}
    for k, f in saving.items():
        assert pts[k]["bd_rate_psnr"] == pytest.approx(-100 * f, abs=1e-6)
        assert pts[k]["mean_rd_gain_pct"] == pytest.approx(-100 * f)
    assert pts[("campos+budget", 40)]["iters_per_frame"] == 36
    assert [(p["method"], p["budget"]) for p in mc["pareto"]] == [("sga", 10), ("campos+budget", 40), ("campos", 400)]
    t = mc["targets"]
    assert t["gain_share_at_40"]["met"] and t["gain_share_at_40"]["share"] == pytest.approx(14 / 16)
    assert t["gain_share_at_40"]["best"] == "campos+budget 40"
    assert t["sga_vs_campos"]["met"] and t["sga_vs_campos"]["points"] == {"10": pytest.approx(-3.0), "40": pytest.approx(-3.0)}
    assert t["best_at_400"]["met"] and t["best_at_400"]["bd_rate"] == pytest.approx(-16.0)
    # campos at 400 at -30%: 14% is under 80% of it, and -15% is reached
    pts2 = [dict(p, bd_rate_psnr=-30.0) if (p["method"], p["budget"]) == ("campos", 400) else p for p in mc["points"]]
    t2 = bench_rd.method_targets(pts2)
    assert not t2["gain_share_at_40"]["met"] and t2["best_at_400"]["bd_rate"] == -30.0


def test_method_recipes() -> None:
    proto = bench_rd.Protocol(grid=8, warm_threshold=50.0, tol=1e-3)
    assert bench_rd.recipe("campos", 40, proto)["tol"] == 0.0
    kw = bench_rd.recipe("sga+warm+es+budget+bf16", 40, proto)
    assert kw["method"] == "sga" and kw["warm_start"] and kw["grid"] == 8 and kw["warm_threshold"] == 50.0
    assert kw["tol"] == 1e-3 and kw["budget"] == 40 and kw["iters"] == 160 and kw["probe"] == 8 and kw["autocast"] == "bf16"
    for bad in ("adam", "campos+turbo", "campos+warm+warm"):
        with pytest.raises(ConfigError):
            bench_rd.recipe(bad, 10, proto)
    p = argparse.ArgumentParser()
    bench_rd.add_parser(p.add_subparsers())
    with pytest.raises(ConfigError):  # an impossible budget fails before any work
        bench_rd.protocol_from_args(p.parse_args(["rd", "--methods", "campos+budget", "--method-budgets", "1"]))
    a = bench_rd.protocol_from_args(p.parse_args(["rd", "--methods", "--qualities", "3"]))
    assert a.methods == [] and a.qualities == [3]


def test_models_result_files_and_training_curve(tmp_path: Path, tiny_kodak: Path) -> None:
    """`bench models` measures every shipped card, the JPEG anchor, and each training
    snapshot's single-point standing against JPEG (what more steps buy)."""
    from jobs import bench_models
    from pipeline.training import TrainConfig, train

    if not load_cards()["models"]:
        pytest.skip("no shipped model cards")
    imgs = tmp_path / "train"
    imgs.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(64, 96, seed=10 + i)).save(imgs / f"t{i}.png")
    run_dir = tmp_path / "run"
    train(TrainConfig(N=16, M=24, data=(str(imgs),), crop=64, batch=2, warmup_steps=1, total_steps=4,
                      snapshot_every=2, log_every=2), run_dir, progress=False)
    out = tmp_path / "out"
    res = bench_models.run(tiny_kodak, out, [run_dir], None, update_cards=False)
    data = json.loads((out / "models.json").read_text())
    assert data["images"] == ["kodim01.png", "kodim02.png"]
    pts = data["models"]["bmshj2018-factorized"]
    assert len(pts) == len(load_cards()["models"]) and all(p["bpp"] > 0 and p["psnr"] > 10 for p in pts)
    assert [p["quality"] for p in data["jpeg"]] == list(bench_models.JPEG_QUALITIES)
    assert set(data["bd_rate_published_vs_jpeg"]) == {"bmshj2018-factorized"}
    segs = data["bd_rate_segments_vs_jpeg"]["bmshj2018-factorized"]
    assert len(segs) == len(pts) - 1 and all(len(s["qualities"]) == 2 for s in segs)
    assert [(t["run"], t["step"]) for t in data["training"]] == [("run", 2), ("run", 4)]
    for t in data["training"]:  # the single-point measures agree with their definitions
        if t["rate_vs_jpeg"] is not None:
            assert t["rate_vs_jpeg"] == pytest.approx(bl.rate_change_at_quality(data["jpeg"], t))
    assert res["seconds"] > 0
    md = (out / "models.md").read_text()
    assert [t["total_steps"] for t in data["training"]] == [2, 4]  # no warm start
    assert "rate vs JPEG" in md and "| run | 4 | 4 |" in md
    assert (out / "models_rd.png").stat().st_size > 0 and (out / "models_training.png").stat().st_size > 0
