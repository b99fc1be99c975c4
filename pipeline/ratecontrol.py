"""Rate control: encode each GOP to a quality or a bitrate target with fixed models.

Refinement minimises ``R + lambda * D`` (:mod:`pipeline.refine`). A lambda other than the
model's moves a frame along its rate-distortion curve with the networks and the decoder
unchanged, so a target (``--target-psnr``, ``--target-msssim``, ``--target-kbps``) is met
by choosing, per GOP, one of the rate points (the shipped models and the midpoints between
them, :func:`rate_point_models`) and a continuous lambda. A bitrate is first shared out
among the GOPs (:func:`plan_bitrate`, :mod:`pipeline.bitrate`);
each GOP's search then aims at ``10 log10(bytes)`` of its share instead of a quality.
The search, per GOP, every trial coding the whole GOP for real (docs/ratecontrol.md):

1. every frame is analysed and synthesised, unrefined, at every rate point (a bitrate:
   coded unrefined, the first pass); the lowest rate point whose GOP mean, plus the
   refinement gain expected at its own lambda (:data:`HEADROOM_DB`), reaches the aim, at a
   lambda below its own by :data:`SLOPE_DB` per unit of ``ln lambda`` for the surplus, is
   trial 0;
2. when trial 0 overshoots, the lowest rate point that the refinement gain it measured
   brings to the aim, if lower, is trial 1 (screen content gains far more than
   :data:`HEADROOM_DB`); trial ``k + 1`` moves lambda by the secant of ``(log lambda, quality)`` through the
   trials of that rate point nearest the aim (bisection when it leaves the bracket; the
   end of the range when the secant points past it and the end is expected near the aim);
   past a rate point's range, the neighbouring rate point, at the lambda that the gain
   measured so far predicts. Every trial is a fresh encode at its lambda: restarts from an
   earlier trial's latents stayed stuck where its lambda had put them (measured, docs);
3. once a trial lands in ``[target, target + WINDOW_DB]`` (PSNR dB, or dB of MS-SSIM,
   ``-10 log10(1 - ms_ssim)``; a bitrate: ``[BUDGET_LOW, BUDGET_HIGH]`` of the share),
   the neighbouring rate point on the other side of the landing is tried too: a landing
   below its rate point's own lambda from the rate point below, raised, else from the
   rate point above, lowered; its lambda moves to the aim while it is about as good as
   the landing (:meth:`~pipeline.ratesearch.Goal.merit`): which side codes fewer bits
   depends on the content (measured: docs/ratecontrol.md);
4. after :data:`TRIALS` trials, or when no untried lambda is left, the GOP keeps the trial
   of fewest bytes that reaches the target, else the one of highest quality (reported as
   missing); a bitrate: the best PSNR at the budget within ``[KEEP_LOW, KEEP_HIGH]`` of it.

Without refinement (``--refine none``) lambda moves nothing: the GOP takes the lowest rate
point whose unrefined mean reaches the target, which step 1 measured exactly.

Every decision depends on the GOP's own frames only, so the bytes do not depend on the
batch, the shard layout or retries (shards are cut on GOP boundaries).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline import metrics
from pipeline.bitrate import (
    BYTES_SLOPE_DB,
    allocate_bytes,
    bitrate_budgets,
    first_pass_rows,
    kbps_bytes,
    plan_bitrate,
)
from pipeline.bitstream.format import RATE_SLOT_SHIFT
from pipeline.codec import (
    EncodedFrame,
    FrameEncoder,
    FrameInit,
    batched,
    deterministic,
    to_uint8_frames,
)
from pipeline.config import RefineConfig
from pipeline.errors import ConfigError, TargetUnreachableError
from pipeline.models import LoadedModel, rate_point_models
from pipeline.ratesearch import (
    KEEP_HIGH,
    KEEP_LOW,
    Goal,
    Trial,
    bytes_db,
    cap_in_reach,
    expected,
    quality_db,
    secant,
)
from pipeline.refine import grid_groups

__all__ = [
    "BUDGET_HIGH",
    "BUDGET_LOW",
    "HEADROOM_DB",
    "KEEP_HIGH",
    "KEEP_LOW",
    "REACH_DB",
    "TRIALS",
    "WINDOW_DB",
    "GopOutcome",
    "RateController",
    "allocate_bytes",
    "bitrate_budgets",
    "first_pass_rows",
    "make_encoder",
    "plan_bitrate",
    "quality_db",
    "rate_point_models",
]

#: Trials per GOP at most (each codes the whole GOP).
TRIALS = 5
#: Trials after the first landing, on the other side of it (:meth:`RateController._other_side`);
#: after the first, only while the other side's best is within OTHER_SIDE_MARGIN_DB of the
#: landing (:meth:`~pipeline.ratesearch.Goal.merit`).
OTHER_SIDE_TRIALS = 3
OTHER_SIDE_MARGIN_DB = 0.1
#: A landing nearer its own lambda (``|ln|``) than this is tried from the rate point above.
OTHER_SIDE_MIN = 0.15
#: Width of the band above the target a GOP aims into (dB of the target's metric).
WINDOW_DB = 0.3
#: The refinement gain in quality (dB) expected at a rate point's own lambda: trial 0's
#: guess only (measured on carphone, q3, the CLI default before --ip-ratio: +0.55 dB).
HEADROOM_DB = 0.5
#: How far above its best unrefined quality a frame can be brought by refinement at the
#: top of the lambda range (dB; generous): a target above it is refused up front.
REACH_DB = 1.5
#: Quality (dB) per unit of ``ln lambda`` when only one trial is known (measured on
#: carphone, q3, SGA 2e-2: 1.0 between 0.7x and 1x its lambda, 1.1 from 0.5x, 1.7 from
#: 0.25x to 0.5x).
SLOPE_DB = 1.1
#: A rate point is refined with lambdas from its own / SPAN**2 to its own * SPAN**1.5.
SPAN = 2.0
#: ``--target-kbps``: a GOP aims into ``[BUDGET_LOW, BUDGET_HIGH] x`` its byte budget.
BUDGET_LOW = 0.96
BUDGET_HIGH = 1.04
#: The change of bytes refinement makes at a rate point's own lambda (dB of bytes; -10%),
#: trial 0's guess of a byte budget (carphone, q3, the CLI default before --ip-ratio: -10%).
BYTES_HEADROOM_DB = -0.46
#: The first pass codes without refinement (and without a target).
_PLAIN: dict[str, object] = {
    "method": "none", "target_psnr": None, "target_msssim": None, "target_kbps": None,
    "max_kbps": None, "lmbda": None,
}  # fmt: skip


@dataclass(frozen=True)
class GopOutcome:
    """What rate control chose for one GOP.

    ``score`` is the GOP's achieved mean of the target metric (PSNR in dB, or MS-SSIM);
    ``met``: at least the target; ``trials``: trials coded; ``bytes``: its packet bytes;
    ``iters``: refinement iterations spent on it over all trials."""

    first: int
    frames: int
    rate_point: int | float
    lmbda: float
    score: float
    bytes: int
    trials: int
    met: bool
    iters: int


class RateController:
    """Encodes whole GOPs to a quality target: the :class:`~pipeline.codec.FrameEncoder`
    interface that :func:`pipeline.codec.encode_frames` drives (``refine``,
    :meth:`encode_groups`), over one encoder per rate point.

    Args:
        models: the rate points, one loaded model each, all of one architecture (any
            order: slots are in ascending lambda). Their packets carry their slot
            (format version 4) when there is more than one.
        refine: the config, with ``target_psnr`` or ``target_msssim`` set and ``lmbda`` None.
        warn: called with a message for GOPs that miss the target.

    Raises:
        ConfigError: no target, an explicit lambda, mixed architectures, or an invalid
            config (:meth:`~pipeline.config.RefineConfig.resolved`)."""

    def __init__(
        self,
        models: Sequence[LoadedModel],
        refine: RefineConfig,
        warn: Callable[[str], None] | None = None,
        frame_rate: float | None = None,
    ) -> None:
        target = refine.target
        if target is None:
            raise ConfigError("rate control needs --target-psnr, --target-msssim or --target-kbps")
        if (target[0] == "kbps" or refine.max_kbps is not None) and not frame_rate:
            raise ConfigError("a bitrate needs the video's frame rate", hint="pass frame_rate")
        if refine.lmbda is not None:
            raise ConfigError(
                f"--lambda {refine.lmbda} and a target quality both set the rate",
                hint="drop --lambda: rate control chooses each GOP's lambda",
            )
        if not models:
            raise ConfigError("rate control needs at least one model")
        if len({m.arch.id for m in models}) != 1:
            raise ConfigError("the rate points of one stream must share an architecture")
        order = sorted(models, key=lambda m: m.identity.lmbda)
        self.metric, self.target = target
        self.target_db = quality_db(self.metric, self.target) if self.metric != "kbps" else 0.0
        #: Bytes one frame may take on average (``--target-kbps``) and at most
        #: (``--max-kbps``), from the frame rate; None when not asked for.
        self.frame_bytes = kbps_bytes(self.target, frame_rate) if self.metric == "kbps" else None
        self.frame_rate = frame_rate  # frames/s (None: not given)
        self.cap_frame_bytes = kbps_bytes(refine.max_kbps, frame_rate)
        #: ``--target-kbps``: each GOP's byte budget (GOP number -> bytes), set from the
        #: first pass (:meth:`first_pass`, :func:`allocate_bytes`) before it is coded.
        self.budgets: dict[int, int] = {}
        #: The first pass's bytes of each GOP at each rate point (GOP number -> [slot]).
        self.first_bytes: dict[int, list[int]] = {}
        self.warn = warn
        self.encoders = [FrameEncoder(m, refine) for m in order]
        for slot, enc in enumerate(self.encoders):
            enc.rate_point = enc.model.identity.quality
            enc.packet_flags = slot << RATE_SLOT_SHIFT if len(order) > 1 else 0
        self.log_lmbdas = [math.log(e.lmbda) for e in self.encoders]
        #: The config every rate point runs (lambda: each GOP's own, so None here).
        self.refine = dataclasses.replace(self.encoders[0].refine, lmbda=None)
        #: One outcome per GOP coded, in coding order.
        self.outcomes: list[GopOutcome] = []

    @property
    def models(self) -> list[LoadedModel]:
        """The rate points' models, slot order (ascending lambda)."""
        return [e.model for e in self.encoders]

    # ----------------------------------------------------------------- measurement

    def _score(self, ref: np.ndarray, rec: np.ndarray) -> float:
        if self.metric == "psnr":
            return metrics.psnr_from_mse(metrics.mse(ref, rec))
        return metrics.ms_ssim(ref, rec)

    def unrefined(self, rgbs: Sequence[np.ndarray], batch: int) -> list[list[float]]:
        """Every frame's quality (PSNR dB or MS-SSIM) coded unrefined at each rate point:
        ``[slot][frame]``. Frame by frame in the encoder's numerics (batch-invariant)."""
        out: list[list[float]] = []
        for enc in self.encoders:
            scores: list[float] = []
            for chunk in batched(range(len(rgbs)), batch):
                with deterministic(enc.model.device), torch.no_grad():
                    refs, x = enc._prepare([rgbs[i] for i in chunk])
                    y_hat = enc.codec.quantize(enc.codec.analyze(x))["y_hat"]
                    rec = to_uint8_frames(enc.codec.synthesize(y_hat), *refs.shape[1:3])
                scores += [self._score(refs[j], rec[j]) for j in range(len(chunk))]
            out.append(scores)
        return out

    def check_reachable(self, rgb: np.ndarray, name: str) -> None:
        """Refuse a target above what the best rate point can reach on ``rgb`` (the first
        frame coded): its unrefined quality plus :data:`REACH_DB` with refinement.

        Raises:
            TargetUnreachableError: the target is out of reach (exit 2)."""
        best = self.unrefined([rgb], 1)[-1][0]
        reach = REACH_DB if self.refine.active else 0.3
        ceiling = quality_db(self.metric, best) + reach
        if self.target_db > ceiling:
            top = self.encoders[-1].model.identity
            unit = "dB PSNR" if self.metric == "psnr" else "MS-SSIM"
            raise TargetUnreachableError(
                f"{name}: target {self.target} {unit} is above what the best rate point "
                f"({top.arch} q{top.quality}) reaches on the first frame ({best:.4g} "
                f"unrefined{f', about +{reach:.1f} dB with refinement' if self.refine.active else ''})",
                hint="ask for a lower target",
            )

    def prepare(
        self,
        read: Callable[[int, int], Iterable[Any]],
        start: int,
        end: int,
        batch: int,
        name: str,
    ) -> None:
        """Before a video's frames ``[start, end)`` are coded: with ``--target-kbps`` the
        first pass over all of them (:func:`plan_bitrate`), else the reachability check of
        the first one (:meth:`check_reachable`). ``read(a, b)`` yields the decoded frames
        ``a..b-1`` (objects with ``rgb``, ``index``, ``pts``: :func:`pipeline.media.read_frames`).

        Raises:
            TargetUnreachableError: the target is out of reach (exit 2)."""
        if self.metric == "kbps":
            frames = ((g.rgb, g.index - start, g.pts) for g in read(start, end))
            plan_bitrate(self, frames, batch, name)
        else:
            self.check_reachable(next(iter(read(start, start + 1))).rgb, name)

    # ----------------------------------------------------------------- search

    def _goal(self, first: int, frames: int) -> Goal:
        """The search's goal for the GOP of ``frames`` frames starting at frame ``first``."""
        cap = None if self.cap_frame_bytes is None else int(self.cap_frame_bytes * frames)
        if self.metric != "kbps":
            return Goal(
                self.target_db, self.target_db + WINDOW_DB, False, HEADROOM_DB, SLOPE_DB, cap
            )
        gop = first // self.refine.grid
        if gop not in self.budgets:
            raise ConfigError(
                f"frames {first}..{first + frames - 1}: no byte budget for GOP {gop}",
                hint="run the first pass (RateController.first_pass, allocate_bytes) first",
            )
        budget = self.budgets[gop]
        top = budget * BUDGET_HIGH if cap is None else min(cap, budget * BUDGET_HIGH)
        bottom = min(budget * BUDGET_LOW, top * BUDGET_LOW / BUDGET_HIGH)
        return Goal(
            bytes_db(bottom),
            bytes_db(top),
            True,
            BYTES_HEADROOM_DB,
            BYTES_SLOPE_DB,
            cap,
            bytes_db(min(budget, math.sqrt(bottom * top))),
        )

    def first_pass(
        self,
        rgbs: Sequence[np.ndarray],
        frame_indices: Sequence[int],
        pts: Sequence[int],
        batch: int,
    ) -> list[list[int]]:
        """The packet bytes of each GOP of the frames (whole GOPs, in order) coded
        unrefined at each rate point, ``[gop][slot]``: what :func:`allocate_bytes` shares
        a bitrate out by. Actual coding (intra and P frames), no refinement."""
        fidx = [int(i) for i in frame_indices]
        groups = grid_groups(fidx, self.refine.grid)
        table = [[0] * len(self.encoders) for _ in groups]
        for s, enc in enumerate(self.encoders):
            plain = FrameEncoder(enc.model, dataclasses.replace(self.refine, **_PLAIN))
            out = plain.encode_groups(list(rgbs), fidx, list(pts), batch)
            for g, grp in enumerate(groups):
                table[g][s] = sum(out[i].stats.bytes for i in grp)
        return table

    def _range(self, slot: int) -> tuple[float, float]:
        """The ``log lambda`` range a rate point is refined over: from a quarter of its own
        lambda to ``2**1.5`` times it (above its own only when the next rate point was
        tried and overshot, or from the other side of a landing: module docstring)."""
        own = self.log_lmbdas[slot]
        return own - 2 * math.log(SPAN), own + 1.5 * math.log(SPAN)

    def _first_guess(
        self, unrefined: Sequence[float], goal: Goal, trials: Sequence[Trial] = ()
    ) -> tuple[int, float]:
        """Trial 0's rate point and ``log lambda`` from the GOP's unrefined mean at each
        rate point (on the goal's scale): the lowest rate point expected to reach the aim
        after refinement (the goal's headroom, or the gain ``trials`` measured), at a
        lambda below its own by the expected surplus (the goal's slope)."""
        top = len(unrefined) - 1
        gain = self._headroom(trials, unrefined, goal)
        s = next((i for i, q in enumerate(unrefined) if q + gain >= goal.aim), top)
        return self._guess(s, unrefined, goal, trials)

    def _guess(
        self,
        slot: int,
        unrefined: Sequence[float],
        goal: Goal,
        trials: Sequence[Trial] = (),
        above_own: bool = False,
    ) -> tuple[int, float]:
        """Rate point ``slot`` at the lambda expected to bring the GOP to the aim from its
        unrefined mean at that rate point (no higher than its own lambda unless
        ``above_own``): refinement's gain at the rate point's own lambda is the goal's
        headroom, or what the last of ``trials`` measured on its rate point."""
        own = self.log_lmbdas[slot]
        x = own + (goal.aim - self._predict(slot, own, unrefined, goal, trials)) / goal.slope
        lo, hi = self._range(slot)
        return slot, min(max(x, lo), hi if above_own else own)

    def _predict(
        self,
        slot: int,
        x: float,
        unrefined: Sequence[float],
        goal: Goal,
        trials: Sequence[Trial] = (),
    ) -> float:
        """The goal's scale expected at rate point ``slot`` and ``log lambda`` ``x``: its
        unrefined mean, refinement's gain (:meth:`_headroom` of ``trials``) and the goal's
        slope for the distance from its own lambda."""
        gain = self._headroom(trials, unrefined, goal)
        return unrefined[slot] + gain + goal.slope * (x - self.log_lmbdas[slot])

    def _headroom(self, trials: Sequence[Trial], unrefined: Sequence[float], goal: Goal) -> float:
        """Refinement's change of the goal's scale at a rate point's own lambda: measured by
        the last trial (less the goal's slope times its distance from its own lambda), else
        the goal's assumption."""
        if not trials:
            return goal.headroom
        t = trials[-1]
        return t.q - unrefined[t.slot] - goal.slope * (t.log_lmbda - self.log_lmbdas[t.slot])

    def _other_side(
        self, trials: Sequence[Trial], unrefined: Sequence[float], goal: Goal
    ) -> tuple[int, float] | None:
        """After a trial landed in the goal's window: the next trial on the other side of
        the landing (module docstring, step 3), or None. The other side of a landing below
        its own lambda is the rate point below, raised, and the reverse; of a landing within
        :data:`OTHER_SIDE_MIN` of its own lambda, the rate point above, lowered. Its lambda
        moves toward the aim (:func:`~pipeline.ratesearch.secant`), for at most
        :data:`OTHER_SIDE_TRIALS` trials, while its best is within
        :data:`OTHER_SIDE_MARGIN_DB` of the landing at the aim
        (:meth:`~pipeline.ratesearch.Goal.merit`), as is the trial the line through its
        trials expects (:func:`~pipeline.ratesearch.expected`), and none of its trials is
        at the aim (:meth:`~pipeline.ratesearch.Goal.at_aim`); none when even the end of
        its range is expected to miss the window."""
        first = next(i for i, t in enumerate(trials) if goal.done(t))
        landed = trials[first]
        gap = landed.log_lmbda - self.log_lmbdas[landed.slot]
        if len(trials) - 1 - first >= OTHER_SIDE_TRIALS:
            return None
        other = landed.slot + (-1 if gap <= -OTHER_SIDE_MIN else 1)
        if not 0 <= other < len(self.encoders):
            return None
        mine = [t for t in trials if t.slot == other]
        if any(goal.at_aim(t) for t in mine):
            return None
        if mine and max(map(goal.merit, mine)) < goal.merit(landed) - OTHER_SIDE_MARGIN_DB:
            return None
        lo, hi = self._range(other)
        if not mine:
            slot, x = self._guess(other, unrefined, goal, [landed], above_own=True)
            pred = self._predict(other, x, unrefined, goal, [landed])
            return None if pred < goal.lo - 0.5 or pred > goal.hi + 0.5 else (slot, x)
        x, beyond, pred = secant(mine, goal, lo, hi)
        if (beyond and not goal.near(pred)) or min(abs(x - t.log_lmbda) for t in mine) < 1e-3:
            return None
        guess = expected(mine, x)  # not where the line through its trials expects it worse
        if guess is not None and goal.merit(guess) < goal.merit(landed) - OTHER_SIDE_MARGIN_DB:
            return None
        return other, x

    def _next(
        self, trials: Sequence[Trial], unrefined: Sequence[float], goal: Goal
    ) -> tuple[int, float] | None:
        """The next trial's rate point and ``log lambda``, or None when the search is over.

        Within the last trial's rate point: the secant through the two trials of that rate
        point nearest the aim (the goal's slope with one), bisection when it leaves the
        bracket of the trials below the goal and above it (:func:`~pipeline.ratesearch.secant`). When the
        secant points beyond the rate point's range: the end of the range, if untried and
        expected in the window (:meth:`~pipeline.ratesearch.Goal.near`); else the next rate point up (below
        the goal) or down (above it), at the lambda :meth:`_guess` gives it, unless that
        one was tried already. Once a trial landed: :meth:`_other_side`."""
        if any(goal.done(t) for t in trials):
            return self._other_side(trials, unrefined, goal)
        last = trials[-1]
        slot = last.slot
        if len(trials) == 1 and goal.above(last) and not goal.over_cap(last):
            # trial 0 overshot: with the gain it measured, a lower rate point may reach the
            # aim nearer its own lambda (off its lambda a rate point loses: module docstring)
            guess = self._first_guess(unrefined, goal, trials)
            if guess[0] < slot:
                return guess
        lo, hi = self._range(slot)
        top = slot + 1 == len(self.encoders)
        if not top and not any(t.slot == slot + 1 for t in trials):
            hi = min(hi, self.log_lmbdas[slot])  # above its own lambda only as a last resort
        mine = [t for t in trials if t.slot == slot]
        below = [t.log_lmbda for t in mine if goal.below(t)]
        x, beyond, pred = secant(mine, goal, lo, hi)
        untried = min(abs(x - t.log_lmbda) for t in mine) >= 1e-3
        if untried and (not beyond or goal.near(pred)) and cap_in_reach(mine, goal, lo):
            return slot, x
        # this rate point cannot do better: move to a neighbour not tried yet
        step = 1 if goal.below(last) else -1 if goal.above(last) else 0
        other = slot + step
        if step == 0 or not 0 <= other < len(self.encoders):
            return None
        if any(t.slot == other for t in trials):
            if step == -1 or hi >= self._range(slot)[1]:
                return None
            # the next rate point up overshot: this one may go above its own lambda
            hi = self._range(slot)[1]
            x = (max(below) + hi) / 2 if below else hi
            return (slot, x) if min(abs(x - t.log_lmbda) for t in mine) >= 1e-3 else None
        return self._guess(other, unrefined, goal, [last])

    def _measure(self, frames: list[EncodedFrame], goal: Goal) -> tuple[float, float, int]:
        """``(score, q, bytes)`` of a trial: the mean of the quality metric (PSNR when the
        goal is bytes), the goal's scale and the packet bytes."""
        metric = "psnr" if self.metric == "kbps" else self.metric
        vals = [f.stats.psnr if metric == "psnr" else f.stats.ms_ssim for f in frames]
        score = float(sum(vals) / len(vals))
        nbytes = sum(f.stats.bytes for f in frames)
        q = bytes_db(nbytes) if goal.bytes else quality_db(metric, score)
        return score, q, nbytes

    def _run(
        self,
        slot: int,
        positions: Sequence[int],
        rgbs: Sequence[np.ndarray],
        fidx: Sequence[int],
        pts: Sequence[int],
        batch: int,
        inits: Sequence[FrameInit],
    ) -> list[EncodedFrame]:
        """Code the frames at ``positions`` with rate point ``slot``, each at its
        ``inits[i].lmbda`` (one trial of their GOPs)."""
        enc = self.encoders[slot]
        for i in positions:
            enc._refs.pop(fidx[i], None)
        args = (
            [rgbs[i] for i in positions],
            [fidx[i] for i in positions],
            [pts[i] for i in positions],
        )
        return enc.encode_groups(*args, batch, lmbdas=[inits[i].lmbda for i in positions])

    def encode_groups(
        self,
        rgbs: Sequence[np.ndarray],
        frame_indices: Sequence[int],
        pts: Sequence[int],
        batch: int,
    ) -> list[EncodedFrame]:
        """Encode whole GOPs (grid groups of ``refine.grid`` frames; consecutive, in order)
        to the target: see the module docstring. Returns each frame's chosen coding, with
        ``stats.iters`` and ``stats.refine_seconds`` counting every trial, and appends a
        :class:`GopOutcome` per GOP to :attr:`outcomes`."""
        n = len(rgbs)
        if n == 0:
            return []
        rgbs = [r if r.dtype == np.uint8 else metrics.to_uint8(r) for r in rgbs]
        fidx = [int(i) for i in frame_indices]
        groups = grid_groups(fidx, self.refine.grid)
        if self.metric == "kbps":  # the unrefined bytes at each rate point (first pass)
            numbers = [fidx[grp[0]] // self.refine.grid for grp in groups]
            if all(n in self.first_bytes for n in numbers):
                table = [self.first_bytes[n] for n in numbers]
            else:
                table = self.first_pass(rgbs, fidx, pts, batch)
            per_gop = [[bytes_db(b) for b in row] for row in table]
        else:
            per_slot = self.unrefined(rgbs, batch)
            per_gop = [
                [
                    quality_db(self.metric, sum(per_slot[s][i] for i in grp) / len(grp))
                    for s in range(len(self.encoders))
                ]
                for grp in groups
            ]
        goals = [self._goal(fidx[grp[0]], len(grp)) for grp in groups]
        # under a byte cap, trial 0 starts no higher than the highest rate point whose
        # unrefined bytes (less refinement's usual saving) fit under it
        limits = [len(self.encoders) - 1] * len(groups)
        if self.cap_frame_bytes is not None and self.metric != "kbps":
            caps = self.first_pass(rgbs, fidx, pts, batch)
            for g, row in enumerate(caps):
                fit = [s for s, b in enumerate(row) if b * 0.9 <= (goals[g].cap or 0)]
                limits[g] = fit[-1] if fit else 0
        trials: list[list[Trial]] = [[] for _ in groups]
        spent = [0] * n
        spent_s = [0.0] * n
        x_next: list[tuple[int, float] | None] = []
        for g in range(len(groups)):
            mean, goal = per_gop[g], goals[g]
            if not self.refine.active:  # unrefined, measured exactly: choose from them
                if goal.bytes:  # the highest rate point under the window's top
                    ok = [s for s, q in enumerate(mean) if q <= goal.hi]
                    s = ok[-1] if ok else 0
                else:  # the lowest rate point that reaches the target (under the cap)
                    ok = [s for s, q in enumerate(mean) if q >= goal.lo]
                    s = min(ok[0] if ok else len(mean) - 1, limits[g])
                x_next.append((s, self.log_lmbdas[s]))
            else:
                slot, x = self._first_guess(mean, goal)
                x_next.append(self._guess(limits[g], mean, goal) if slot > limits[g] else (slot, x))
        for _trial in range(TRIALS if self.refine.active else 1):
            live = [g for g in range(len(groups)) if x_next[g] is not None]
            if not live:
                break
            by_slot: dict[int, list[int]] = {}
            for g in live:
                by_slot.setdefault(x_next[g][0], []).append(g)  # type: ignore[index]
            inits: list[FrameInit] = [FrameInit() for _ in range(n)]
            for slot, gs in sorted(by_slot.items()):
                positions = [i for g in gs for i in groups[g]]
                for g in gs:
                    lam = math.exp(x_next[g][1])  # type: ignore[index]
                    for i in groups[g]:
                        inits[i] = FrameInit(lmbda=lam)
                # every trial is a plain encode at its lambda (module docstring, step 2)
                out = self._run(slot, positions, rgbs, fidx, pts, batch, inits)
                got = dict(zip(positions, out, strict=True))
                for g in gs:
                    frames = [got[i] for i in groups[g]]
                    for i, f in zip(groups[g], frames, strict=True):
                        spent[i] += f.stats.iters
                        spent_s[i] += f.stats.refine_seconds
                    score, q, nbytes = self._measure(frames, goals[g])
                    x = x_next[g][1]  # type: ignore[index]
                    trials[g].append(Trial(x, slot, score, q, nbytes, frames))
            for g in live:
                x_next[g] = self._next(trials[g], per_gop[g], goals[g])
        results: list[EncodedFrame] = []
        for g, grp in enumerate(groups):
            best = goals[g].best(trials[g])
            for i, f in zip(grp, best.frames, strict=True):
                f.stats = dataclasses.replace(
                    f.stats, iters=spent[i], refine_seconds=round(spent_s[i], 6)
                )
                results.append(f)
            outcome = GopOutcome(
                first=fidx[grp[0]],
                frames=len(grp),
                rate_point=self.encoders[best.slot].model.identity.quality,
                lmbda=math.exp(best.log_lmbda),
                score=round(best.score, 6),
                bytes=best.bytes,
                trials=len(trials[g]),
                met=goals[g].met(best),
                iters=sum(spent[i] for i in grp),
            )
            self.outcomes.append(outcome)
            if not outcome.met and self.warn is not None:
                what = (
                    f"{outcome.bytes} bytes for a budget of {int(10 ** (goals[g].budget / 10))}"
                    if goals[g].bytes
                    else f"reached {outcome.score:.4g}, below the target {self.target}"
                )
                self.warn(
                    f"frames {outcome.first}..{outcome.first + outcome.frames - 1}: {what} "
                    f"(q{outcome.rate_point}, lambda {outcome.lmbda:.4g})"
                )
        return results


def make_encoder(
    models: LoadedModel | Sequence[LoadedModel],
    refine: RefineConfig | None = None,
    warn: Callable[[str], None] | None = None,
    frame_rate: float | None = None,
) -> FrameEncoder | RateController:
    """The encoder of a config: a :class:`FrameEncoder` of one model, or with a target
    quality (``refine.target``) a :class:`pipeline.ratecontrol.RateController` over the
    rate points ``models``. Both have ``refine``, ``encode_groups`` and ``models``.

    Raises:
        ConfigError: several models without a target, or an invalid config."""
    ms = [models] if isinstance(models, LoadedModel) else list(models)
    if refine is not None and refine.target is not None:
        return RateController(ms, refine, warn=warn, frame_rate=frame_rate)
    if len(ms) != 1:
        raise ConfigError(
            f"{len(ms)} models without a target quality: a stream codes one model",
            hint="pass one model, or --target-psnr/--target-msssim to choose among them",
        )
    return FrameEncoder(ms[0], refine)
