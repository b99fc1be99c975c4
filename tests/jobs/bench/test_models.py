"""``bench models`` on a tiny Kodak folder and a tiny training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from jobs.bench import lib as bl
from pipeline.models import load_cards
from tests.jobs.bench.helpers import smooth_image


def test_models_result_files_and_training_curve(tmp_path: Path, tiny_kodak: Path) -> None:
    """`bench models` measures every shipped card, the JPEG anchor, and each training
    snapshot's single-point standing against JPEG (what more steps buy)."""
    from jobs.bench import models as bench_models
    from pipeline.training import TrainConfig, train

    if not load_cards()["models"]:
        pytest.skip("no shipped model cards")
    imgs = tmp_path / "train"
    imgs.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(64, 96, seed=10 + i)).save(imgs / f"t{i}.png")
    run_dir = tmp_path / "run"
    train(
        TrainConfig(
            N=16,
            M=24,
            data=(str(imgs),),
            crop=64,
            batch=2,
            warmup_steps=1,
            total_steps=4,
            snapshot_every=2,
            log_every=2,
        ),
        run_dir,
        progress=False,
    )
    out = tmp_path / "out"
    res = bench_models.run(tiny_kodak, out, [run_dir], None, update_cards=False)
    data = json.loads((out / "models.json").read_text())
    assert data["images"] == ["kodim01.png", "kodim02.png"]
    pts = data["models"]["bmshj2018-factorized"]
    assert len(pts) == len(load_cards()["models"]) and all(
        p["bpp"] > 0 and p["psnr"] > 10 for p in pts
    )
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
    assert (out / "models_rd.png").stat().st_size > 0 and (
        out / "models_training.png"
    ).stat().st_size > 0
