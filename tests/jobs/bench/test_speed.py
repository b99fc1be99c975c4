"""``bench speed`` on tiny inputs and a small random model: the result files of the Kodak
and the inter sections, their merging and options (no timing assertions)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from jobs.bench import gop, speed, speed_inter
from jobs.bench.pipeline import synthetic_clip
from pipeline.config import DEFAULT_GOP
from pipeline.errors import InputError
from pipeline.models import random_model


def test_speed_result_files(tmp_path: Path, tiny_kodak: Path) -> None:
    m = random_model("bmshj2018-factorized", N=16, M=24)
    proto = speed.SpeedProtocol(
        budgets=[0, 2, 5000],
        sizes=[32, 64],
        batches=[1, 2],
        batch_iters=2,
        repeats=2,
        max_seconds=0.5,
        decode_frames=2,
        decode_budget=2,
        crop=64,
        devices=["cpu"],
        sections=["kodak"],
    )
    out = tmp_path / "out"
    speed.run(tiny_kodak, out, proto, log=lambda *_: None, model=m)
    data = json.loads((out / "speed.json").read_text())
    for key in (
        "provenance",
        "protocol",
        "model",
        "devices",
        "flops_per_iter_per_mp",
        "projection",
        "seconds",
    ):
        assert key in data, key
    cpu = data["devices"]["cpu"]
    pts = {(p["size"], p["budget"]): p for p in cpu["encode"]["points"]}
    assert set(pts) == {(s, b) for s in (32, 64) for b in (0, 2, 5000)}
    assert pts[(64, 5000)]["measured"] is False  # over --max-seconds: projected, flagged
    assert pts[(32, 0)]["measured"] and pts[(32, 0)]["fps"] > 0 and pts[(32, 0)]["peak_rss_mb"] > 0
    assert [b["batch"] for b in cpu["batches"]] == [1, 2] and cpu["batches"][0][
        "ratio_vs_batch1"
    ] == 1.0
    dec = cpu["decode"]
    assert (
        dec["unrefined"]["fps"] > 0
        and dec["refined"]["fps"] > 0
        and dec["ratio_refined_over_unrefined"] > 0
    )
    assert data["flops_per_iter_per_mp"] > 0
    assert data["projection"]["rows"] and "A100" in data["projection"]["rows"][0]["gpus"]
    md = (out / "speed.md").read_text()
    assert "| size | iterations | frames/s" in md and "Decode time ratio refined / unrefined" in md
    scale = (out / "scale.md").read_text()
    assert "## Assumptions" in scale and "GPU-h per video-h" in scale and "datasheet" in scale
    assert (out / "speed.png").stat().st_size > 1000


def test_random_access_span_starts_at_a_gops_last_frame() -> None:
    assert speed_inter.random_access_span(32, 16, 4) == (15, 19)
    assert speed_inter.random_access_span(10, 16, 4) == (9, 10)  # shorter than a GOP
    assert speed_inter.random_access_span(5, 2, 2) == (1, 3)


def test_inter_options_build_the_protocol() -> None:
    p = argparse.ArgumentParser()
    speed.add_parser(p.add_subparsers())
    args = "speed --only inter --inter-clips bikes carphone bikes --inter-long-side 0"
    a = p.parse_args([*args.split(), "--inter-frames", "12", "--decode-threads", "2"])
    proto = speed.protocol_from_args(a)
    assert proto.sections == ["inter"] and proto.inter.clips == ["bikes", "carphone"]
    assert proto.inter.long_side is None and proto.inter.frames == 12 and proto.inter.threads == 2
    assert proto.inter.gop == DEFAULT_GOP
    assert speed.protocol_from_args(p.parse_args(["speed"])).sections == ["kodak", "inter"]
    with pytest.raises(InputError, match="--inter-span 0"):
        speed.protocol_from_args(p.parse_args(["speed", "--inter-span", "0"]))


def test_inter_section_is_merged_into_speed_json(tmp_path: Path, tiny_kodak: Path) -> None:
    """The Kodak section first, then ``--only inter`` on a real (synthetic) clip named as
    carphone, bikes absent: the inter fields are written and the Kodak numbers are kept."""
    m = random_model("bmshj2018-factorized", N=16, M=24)
    out = tmp_path / "out"
    kodak_only = speed.SpeedProtocol(
        budgets=[0], sizes=[32], batches=[1], batch_iters=1, repeats=1, decode_frames=1,
        decode_budget=1, crop=32, devices=["cpu"], sections=["kodak"],
    )  # fmt: skip
    speed.run(tiny_kodak, out, kodak_only, log=lambda *_: None, model=m)
    before = json.loads((out / "speed.json").read_text())
    assert "inter" not in before
    video = tmp_path / "video"
    video.mkdir()
    synthetic_clip(video / gop.CLIPS[0][1], 6, 64, 48, gop=6)
    inter_proto = speed_inter.InterProtocol(
        clips=["carphone", "bikes"], frames=5, long_side=None, gop=2, span=2, repeats=2, batch=2
    )
    proto = speed.SpeedProtocol(devices=["cpu"], sections=["inter"], inter=inter_proto)
    speed.run(None, out, proto, log=lambda *_: None, model=m, video=video)
    data = json.loads((out / "speed.json").read_text())
    assert data["devices"] == before["devices"] and data["provenance"] == before["provenance"]
    inter = data["inter"]
    assert inter["protocol"]["gop"] == 2 and inter["model"]["M"] == 24
    d = inter["devices"]["cpu"]
    assert d["skipped"] == ["bikes"] and list(d["clips"]) == ["carphone"]
    c = d["clips"]["carphone"]
    assert c["frames"] == 5 and c["size"] == [48, 64] and c["same_pictures"] is True
    assert 0 < c["bytes"]["inter"] <= c["bytes"]["intra"] < c["file_bytes"]["intra"]
    assert c["bytes_ratio"] == c["bytes"]["inter"] / c["bytes"]["intra"]
    for part in ("encode", "decode", "latents"):
        for k in ("intra", "inter"):
            assert len(c[part][k]["seconds_all"]) == 2 and c[part][k]["fps"] > 0
        assert c[part]["ratio"] > 0
    assert c["decode"]["within_target"] == (c["decode"]["ratio"] <= speed_inter.DECODE_TARGET)
    assert d["decode_ratio_max"] == c["decode"]["ratio"]
    ra = c["random_access"]
    assert (ra["start"], ra["end"], ra["skipped_frames"]) == (1, 3, 1)
    assert min(ra["inter_seconds"], ra["intra_seconds"], ra["from_gop_start_seconds"]) > 0
    assert len(ra["seconds_all"]["from_gop_start"]) == 2 and ra["ratio_vs_intra"] > 0
    md = (out / "speed.md").read_text()
    assert "| size | iterations | frames/s" in md  # the Kodak section is kept
    assert "Inter against intra" in md and "| carphone | 64x48 | 5 |" in md
    assert "Absent clips, skipped: bikes." in md
    assert (out / "speed.png").stat().st_size > 1000
