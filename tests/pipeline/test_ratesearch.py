"""The search's arithmetic (pipeline.ratesearch): the goal's windows and merit, the secant,
the expected trial between and beyond two trials. Pure Python: no models."""

from __future__ import annotations

import math

import pytest

from pipeline.ratesearch import (
    Goal,
    Trial,
    bytes_db,
    cap_in_reach,
    expected,
    quality_db,
    secant,
)

GOAL = Goal(30.0, 30.3, False, 0.5, 1.1)  # a PSNR target of 30 dB, aim 30.15


def trial(x: float, q: float, nbytes: int = 1000, slot: int = 0) -> Trial:
    return Trial(x, slot, q, q, nbytes, [])


def test_scales_are_decibels() -> None:
    assert quality_db("psnr", 31.5) == 31.5
    assert quality_db("msssim", 0.99) == pytest.approx(20.0)
    assert bytes_db(1000) == pytest.approx(30.0)
    assert bytes_db(0) == 0.0  # at least one byte


def test_the_goal_window_aim_and_merit() -> None:
    assert GOAL.aim == pytest.approx(30.15)
    assert GOAL.done(trial(0, 30.1)) and not GOAL.done(trial(0, 30.31))
    assert GOAL.at_aim(trial(0, 30.19)) and not GOAL.at_aim(trial(0, 30.25))
    assert GOAL.met(trial(0, 30.9)) and not GOAL.met(trial(0, 29.99))
    # at the aim along 1 dB per dB of bytes: 0.1 dB more quality is worth 0.1 dB of bytes
    a, b = trial(0, 30.15, 100_000), trial(0, 30.25, round(100_000 * 10**0.01))
    assert GOAL.merit(a) == pytest.approx(GOAL.merit(b), abs=1e-3)
    assert GOAL.merit(trial(0, 30.15, 90_000)) > GOAL.merit(a)


def test_the_secant_moves_lambda_toward_the_aim_within_the_bracket() -> None:
    lo, hi = -2.0, 1.0
    # one trial: the goal's slope
    x, beyond, pred = secant([trial(0.0, 29.6)], GOAL, lo, hi)
    assert x == pytest.approx(0.55 / 1.1) and not beyond and pred == pytest.approx(30.15)
    # two trials: their slope (1 dB per unit of ln lambda here)
    x, _, _ = secant([trial(0.0, 29.6), trial(-0.5, 29.1)], GOAL, lo, hi)
    assert x == pytest.approx(0.55)
    # past the range: its end, and the secant says so
    x, beyond, _ = secant([trial(0.0, 27.0)], GOAL, lo, hi)
    assert x == hi and beyond


def test_the_expected_trial_lies_on_the_line_through_the_two_nearest() -> None:
    a, b = trial(0.0, 30.0, 1000), trial(0.5, 30.5, 1100)
    assert expected([a], 0.25) is None  # one trial: no line
    assert expected([a, trial(0.0, 30.1)], 0.25) is None  # one lambda
    mid = expected([a, b], 0.25)
    assert mid is not None and mid.q == pytest.approx(30.25)
    assert bytes_db(mid.bytes) == pytest.approx((bytes_db(1000) + bytes_db(1100)) / 2, abs=1e-3)
    far = expected([a, b, trial(-2.0, 28.0, 700)], 1.0)  # beyond: extrapolated from a and b
    assert far is not None and far.q == pytest.approx(31.0)
    assert far.bytes == round(10 ** ((30 + 2 * (bytes_db(1100) - 30)) / 10))


def test_a_rate_point_over_the_byte_cap_gives_way_when_its_range_cannot_reach_it() -> None:
    capped = Goal(30.0, 30.3, False, 0.5, 1.1, cap=1000)
    over = [trial(0.0, 30.5, 1200)]  # 0.79 dB of bytes over; 1.4 dB per ln lambda assumed
    assert cap_in_reach(over, capped, -1.0)
    assert not cap_in_reach(over, capped, -0.3)
    # two trials measure the bytes' slope: flat, so no lambda in range brings it under
    flat = [trial(0.0, 30.5, 1200), trial(-0.5, 30.3, 1190)]
    assert not cap_in_reach(flat, capped, -1.4)
    assert cap_in_reach([trial(0.0, 30.5, 900)], capped, 0.0)  # under the cap already
    assert math.isfinite(GOAL.merit(over[0]))
