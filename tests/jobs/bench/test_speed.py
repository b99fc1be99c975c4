"""``bench speed`` on tiny inputs and a small random model: the result files (no timing
assertions)."""

from __future__ import annotations

import json
from pathlib import Path

from jobs.bench import speed
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
