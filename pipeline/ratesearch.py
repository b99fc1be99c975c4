"""The arithmetic of rate control's per-GOP search (:mod:`pipeline.ratecontrol`): a trial
(one coding of a GOP at one rate point and lambda), the goal it aims at, and the plain
functions that pick the next lambda from the trials so far. Pure Python: no torch.

A trial's quality lives on the goal's scale ``q``, in dB: PSNR as is, MS-SSIM as
``-10 log10(1 - ms_ssim)``, a byte budget as ``10 log10(bytes)``
(:func:`quality_db`, :func:`bytes_db`); lambdas as ``ln lambda``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.bitrate import BYTES_SLOPE_DB

if TYPE_CHECKING:
    from pipeline.codec import EncodedFrame

__all__ = [
    "KEEP_HIGH",
    "KEEP_LOW",
    "RD_SLOPE_DB",
    "Goal",
    "Trial",
    "bytes_db",
    "cap_in_reach",
    "expected",
    "quality_db",
    "secant",
]

#: ``--target-kbps``: a GOP keeps a trial within ``[KEEP_LOW, KEEP_HIGH] x`` its budget.
KEEP_LOW = 0.95
KEEP_HIGH = 1.05
#: Trials are compared at the aim along this slope (:meth:`Goal.merit`; dB of PSNR per dB
#: of bytes: the fixed rate points' curves of the shared clips have 0.9 to 1.5; MS-SSIM
#: targets use it on their dB scale too, uncalibrated: it only ranks trials of one GOP).
RD_SLOPE_DB = 1.0


def bytes_db(nbytes: float) -> float:
    """The search's scale of a byte count: ``10 log10(bytes)`` (at least 1 byte)."""
    return 10.0 * math.log10(max(1.0, float(nbytes)))


def quality_db(metric: str, value: float) -> float:
    """The search's quality scale: PSNR in dB as is; MS-SSIM as ``-10 log10(1 - v)`` dB."""
    if metric == "psnr":
        return float(value)
    return -10.0 * math.log10(max(1e-12, 1.0 - float(value)))


@dataclass
class Trial:
    """One coding of a GOP at one rate point and lambda: ``log_lmbda`` (``ln lambda``),
    ``slot`` (the rate point's index, ascending lambda), ``score`` (the GOP's mean of the
    quality metric in its natural units: PSNR dB, or MS-SSIM), ``q`` (the goal's scale, dB),
    ``bytes`` (packet bytes) and the coded ``frames`` (empty for an expected trial)."""

    log_lmbda: float
    slot: int
    score: float  # natural units (dB or MS-SSIM)
    q: float  # dB scale
    bytes: int
    frames: list[EncodedFrame]


@dataclass(frozen=True)
class Goal:
    """What one GOP's search aims at, on its scale ``q`` (dB): ``[lo, hi]``; for a quality
    target ``lo`` is the target and ``hi`` the window's top; for a byte budget ``q`` is
    ``10 log10(bytes)``, the window ``[0.96, 1.04] x`` the budget and ``budget`` its dB.
    ``cap``: the GOP's most bytes (``--max-kbps``), or None."""

    lo: float
    hi: float
    bytes: bool
    headroom: float
    slope: float
    cap: int | None = None
    budget: float = 0.0  # a byte budget's 10 log10(bytes)

    @property
    def aim(self) -> float:
        return self.budget if self.bytes else (self.lo + self.hi) / 2

    def over_cap(self, t: Trial) -> bool:
        return self.cap is not None and t.bytes > self.cap

    def below(self, t: Trial) -> bool:
        return t.q < self.lo and not self.over_cap(t)

    def above(self, t: Trial) -> bool:
        return t.q > self.hi or self.over_cap(t)

    def met(self, t: Trial) -> bool:
        """Reached: a quality target at least (under the cap); a byte budget within
        ``[KEEP_LOW, KEEP_HIGH]`` of it (under the cap)."""
        if self.bytes:
            keep = (
                self.budget + 10 * math.log10(KEEP_LOW),
                self.budget + 10 * math.log10(KEEP_HIGH),
            )
            return keep[0] <= t.q <= keep[1] and not self.over_cap(t)
        return t.q >= self.lo and not self.over_cap(t)

    def near(self, pred: float) -> bool:
        """A prediction worth a trial: in the window, widened by a quarter of its width."""
        w = (self.hi - self.lo) / 4
        return self.lo - w <= pred <= self.hi + w

    def done(self, t: Trial) -> bool:
        return self.lo <= t.q <= self.hi and not self.over_cap(t)

    def at_aim(self, t: Trial) -> bool:
        """Done, and within a sixth of the window's width of the aim."""
        return self.done(t) and abs(t.q - self.aim) <= (self.hi - self.lo) / 6

    def merit(self, t: Trial) -> float:
        """A trial's worth for the goal, higher is better, at the aim along
        :data:`RD_SLOPE_DB`: for a quality, minus its bytes (dB) at the target's quality;
        for a byte budget, its PSNR at the budget."""
        if self.bytes:
            return t.score - RD_SLOPE_DB * (t.q - self.budget)
        return (t.q - self.aim) / RD_SLOPE_DB - bytes_db(t.bytes)

    def best(self, trials: Sequence[Trial]) -> Trial:
        """The trial a GOP keeps: for a quality, the fewest bytes that reach it (under the
        cap), else the highest quality under the cap, else the fewest bytes; for a byte
        budget, the best :meth:`merit` within ``[KEEP_LOW, KEEP_HIGH]`` of it (under the
        cap), else the highest PSNR under the window's top, else the fewest bytes."""
        if self.bytes:
            inside = [t for t in trials if self.met(t)]
            if inside:
                return max(inside, key=lambda t: (self.merit(t), -t.bytes))
            ok = [t for t in trials if t.q <= self.hi]
            if ok:
                return max(ok, key=lambda t: (t.score, -t.bytes))
            return min(trials, key=lambda t: (t.bytes, t.log_lmbda))
        met = [t for t in trials if self.met(t)]
        if met:
            return min(met, key=lambda t: (t.bytes, t.log_lmbda))
        under = [t for t in trials if not self.over_cap(t)]
        if under:
            return max(under, key=lambda t: (t.score, -t.bytes))
        return min(trials, key=lambda t: (t.bytes, t.log_lmbda))


def secant(mine: Sequence[Trial], goal: Goal, lo: float, hi: float) -> tuple[float, bool, float]:
    """Within one rate point: the next ``log lambda`` from the secant of ``(log lambda,
    q)`` through the two trials nearest the aim (the goal's slope with one), bisection
    when it leaves the bracket of the trials below and above the goal, clamped to
    ``[lo, hi]`` (past the range: its end, when that is in the bracket). Returns it,
    whether the secant pointed beyond the range, and the value the secant predicts at
    the returned point."""
    below = [t.log_lmbda for t in mine if goal.below(t)]
    above = [t.log_lmbda for t in mine if goal.above(t)]
    b_lo = max(below) if below else lo
    b_hi = min(above) if above else hi
    near = sorted(mine, key=lambda t: abs(t.q - goal.aim))[:2]
    a = near[0]
    slope = goal.slope
    if len(near) == 2 and abs(near[1].log_lmbda - a.log_lmbda) > 1e-6:
        s = (near[1].q - a.q) / (near[1].log_lmbda - a.log_lmbda)
        if s > 0.05:
            slope = s
    x = a.log_lmbda + (goal.aim - a.q) / slope
    if goal.above(a) and a.q <= goal.hi:  # over the byte cap only: come down
        x = min(x, a.log_lmbda - 0.25)
    beyond = x > hi + 1e-3 or x < lo - 1e-3
    end = min(max(x, lo), hi)
    if beyond and b_lo <= end <= b_hi:  # the end of the range, where the secant points
        x = end
    elif not b_lo < x < b_hi:
        x = (b_lo + b_hi) / 2
    x = min(max(x, lo), hi)
    return x, beyond, a.q + slope * (x - a.log_lmbda)


def cap_in_reach(mine: Sequence[Trial], goal: Goal, lo: float) -> bool:
    """Whether a rate point over the byte cap (``mine``: its trials) may come under it at
    its lowest lambda ``lo``: the bytes' secant in ``ln lambda`` (:data:`BYTES_SLOPE_DB`
    with one trial). Else the search moves down a rate point (lambda may barely move the
    bytes: few iterations, screen content)."""
    over = sorted((t for t in mine if goal.over_cap(t)), key=lambda t: t.log_lmbda)
    if goal.cap is None or not over:
        return True
    low, high = over[0], over[-1]
    slope = BYTES_SLOPE_DB
    if high.log_lmbda - low.log_lmbda > 1e-6:
        slope = (bytes_db(high.bytes) - bytes_db(low.bytes)) / (high.log_lmbda - low.log_lmbda)
    return bytes_db(low.bytes) + max(slope, 0.0) * (lo - low.log_lmbda) <= bytes_db(goal.cap)


def expected(mine: Sequence[Trial], x: float) -> Trial | None:
    """The trial expected at ``log lambda`` ``x`` on the rate point of ``mine`` (its trials,
    two at least): its score, ``q`` and bytes (in dB) on the line in ``log lambda``
    through the two trials nearest ``x``; None with fewer than two distinct lambdas."""
    near = sorted(mine, key=lambda t: abs(t.log_lmbda - x))[:2]
    if len(near) < 2 or abs(near[1].log_lmbda - near[0].log_lmbda) < 1e-6:
        return None
    a, b = near
    f = (x - a.log_lmbda) / (b.log_lmbda - a.log_lmbda)
    nbytes = 10 ** ((bytes_db(a.bytes) + f * (bytes_db(b.bytes) - bytes_db(a.bytes))) / 10)
    score = a.score + f * (b.score - a.score)
    return Trial(x, a.slot, score, a.q + f * (b.q - a.q), round(nbytes), [])
