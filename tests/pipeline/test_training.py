"""Training: resuming continues the same run exactly; shipping writes weights + a card that
load_model verifies; a tampered shipped file is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import models
from pipeline.errors import ConfigError, WeightsMismatchError
from pipeline.training import TrainConfig, lr_at, rd_loss, ship_run, train


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:120]
    for i in range(4):
        img = np.stack([np.sin(xx / (5 + i)), np.cos(yy / (7 + i)), np.sin((xx + yy) / 11)], -1)
        img = (127 + 100 * img + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"im{i}.png")
    (d / "readme.txt").write_text("ignored")
    return d


def tiny(image_dir: Path, **kw) -> TrainConfig:
    base = dict(
        arch="bmshj2018-factorized",
        N=16,
        M=24,
        lmbda=0.01,
        data=(str(image_dir),),
        crop=64,
        batch=2,
        lr=1e-3,
        warmup_steps=2,
        total_steps=6,
        log_every=2,
        checkpoint_every=2,
        snapshot_every=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]


def test_resume_continues_the_same_run(tmp_path: Path, image_dir: Path) -> None:
    cfg = tiny(image_dir)
    straight = tmp_path / "straight"
    train(cfg, straight, progress=False)
    split = tmp_path / "split"
    s1 = train(cfg, split, max_steps=3, progress=False)
    assert s1.step == 3
    s2 = train(cfg, split, progress=False)  # resumes at step 3
    assert s2.step == 6
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the run actually trained: weights moved from the initialisation
    torch.manual_seed(cfg.seed)
    init = models.get_architecture(cfg.arch).model_class()(N=16, M=24).state_dict()
    assert not torch.equal(init["g_a.0.weight"], a["g_a.0.weight"])
    log = [json.loads(x) for x in (split / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6]
    assert all(np.isfinite(r["loss"]) and r["bpp"] > 0 for r in log)
    assert sorted(p.name for p in (split / "snapshots").iterdir()) == [
        "step-0000003.pth",
        "step-0000006.pth",
    ]


def test_resume_with_other_settings_is_refused(tmp_path: Path, image_dir: Path) -> None:
    train(tiny(image_dir), tmp_path, max_steps=2, progress=False)
    with pytest.raises(ConfigError, match=r"different \['lmbda'\]"):
        train(tiny(image_dir, lmbda=0.02), tmp_path, progress=False)


def test_lr_schedule() -> None:
    cfg = TrainConfig(
        lr=1e-3, warmup_steps=10, total_steps=110, lr_schedule="cosine", lr_min_ratio=0.1
    )
    assert lr_at(cfg, 0) == pytest.approx(1e-4)
    assert lr_at(cfg, 10) == pytest.approx(1e-3)
    assert lr_at(cfg, 60) == pytest.approx(0.55e-3)
    assert lr_at(cfg, 110) == pytest.approx(1e-4)


def test_ship_then_load_and_tamper(tmp_path: Path, image_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(models, "CARDS_FILE", tmp_path / "weights" / "cards.json")
    run = tmp_path / "run"
    train(tiny(image_dir), run, progress=False)
    card = ship_run(run, 4, data_description="synthetic", default=True)
    assert card["steps"] == 6 and card["N"] == 16 and card["M"] == 24 and card["lambda"] == 0.01
    m = models.load_model()  # the default
    assert m.identity.quality == 4 and m.identity.weights_sha256 == card["sha256"]
    assert m.identity.lmbda == 0.01
    with pytest.raises(
        models.UnknownModelError, match=r"shipped qualities for bmshj2018-factorized: \[4\]"
    ):
        models.load_model("bmshj2018-factorized", 2)
    path = tmp_path / "weights" / card["file"]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsMismatchError, match="model card"):
        models.load_model()


@pytest.mark.parametrize("arch", ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"])
def test_mixed_quantisation_decodes_the_coded_latent(arch: str) -> None:
    """With --quant mixed the decoder sees the latent exactly as coding rounds it (so the
    training distortion is the one decode gives), while gradients still reach g_a."""
    from pipeline.training import mixed_forward

    a = models.get_architecture(arch)
    torch.manual_seed(0)
    net = a.model_class()(N=16, M=24)
    with torch.no_grad():  # move the medians off zero so the offset matters
        net.entropy_bottleneck.quantiles[:, :, 1] += 0.3
    net.update(force=True)
    x = torch.rand(1, 3, 64, 64)
    net.eval()
    with torch.no_grad():
        coded = net.decompress(**net.compress(x))["x_hat"]
        mixed = mixed_forward(net, x, a.kind)["x_hat"].clamp(0, 1)
        noise_free = net(x)["x_hat"].clamp(0, 1)
    assert torch.allclose(mixed, coded, atol=1e-5)
    if a.kind == "factorized":  # CompressAI's own eval forward rounds the same way
        assert torch.allclose(noise_free, coded, atol=1e-5)
    net.train()
    out = rd_loss(net, x, 0.01, quant="mixed", kind=a.kind)
    out["loss"].backward()
    grad = net.g_a[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_mixed_training_runs_and_resume_refuses_another_quant(
    tmp_path: Path, image_dir: Path
) -> None:
    train(tiny(image_dir, quant="mixed"), tmp_path, max_steps=2, progress=False)
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log and np.isfinite(log[0]["loss"])
    with pytest.raises(ConfigError, match=r"different \['quant'\]"):
        train(tiny(image_dir), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="unknown quantisation"):
        tiny(image_dir, quant="round").validate()


def test_warm_start_lineage_counts_every_earlier_step(
    tmp_path: Path, image_dir: Path, monkeypatch
) -> None:
    """init.json records the steps a warm start's weights embody, through chains of runs and
    shipped files, and the shipped card counts them even after the source is gone."""
    from pipeline.training import export_weights

    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(models, "CARDS_FILE", tmp_path / "weights" / "cards.json")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train(tiny(image_dir, total_steps=4), a, progress=False)
    export_weights(a, a / "export.pth")
    train(tiny(image_dir, total_steps=3, init_from=str(a / "export.pth")), b, progress=False)
    assert json.loads((b / "init.json").read_text())["steps"] == 4
    export_weights(b, b / "export.pth")
    train(tiny(image_dir, total_steps=2, init_from=str(b / "export.pth")), c, progress=False)
    lineage = json.loads((c / "init.json").read_text())
    assert lineage["steps"] == 7 and [x["run"] for x in lineage["lineage"]] == ["b", "a"]
    card = ship_run(c, 2, data_description="synthetic")
    assert (card["steps"], card["init_steps"]) == (2, 7)
    # a run warm-started from that shipped file counts the card's 9 steps
    shipped = tmp_path / "weights" / card["file"]
    shutil.rmtree(a)  # the lineage no longer needs the source runs
    d = tmp_path / "d"
    train(tiny(image_dir, total_steps=1, init_from=str(shipped)), d, progress=False)
    assert json.loads((d / "init.json").read_text())["steps"] == 9
