"""Per-frame latent refinement: the networks and the entropy model stay fixed.

For each frame x we start from the encoder's latents (y0 = g_a(x), and z0 = h_a(y0) for
hyperprior models) and take Adam steps on the latents alone, minimising the frame's own
rate-distortion loss under a relaxation of quantization::

    L = bits(y~, z~) / pixels + lambda * 255^2 * MSE(x, g_s(y~))

Methods:

* ``campos`` (Campos et al. 2019, the seed): y~ = y + U(-1/2, 1/2), z~ likewise.
* ``sga`` (Yang, Bamler, Mandt 2020): stochastic Gumbel annealing. y~ is a Gumbel-softmax
  draw between floor and ceil of y (on its quantization grid ``offset + Z``), with logits
  ``-atanh(distance) / tau``; the temperature follows the paper's schedule
  ``tau = min(0.5, 0.5 * exp(-1e-3 * (t - 700)))`` rescaled from 2000 iterations to the
  budget, so the relaxation anneals towards hard rounding by the last iteration.

Compute savers (docs/refinement.md):

* early stopping (``tol``/``window``): a frame stops when its relaxed loss stops improving;
* temporal warm start (``warm_start``): frame t starts from ``g_a(x_t) + (y*_{t-1} -
  g_a(x_{t-1}))`` when frames t-1 and t are close (:func:`frames_close`); chains restart on
  the grid of frame indices that are multiples of ``grid``;
* adaptive budget (``budget``): ``budget`` iterations per frame on average over each grid
  group, given where a short probe measured the most gain (:func:`allocate`).

The engine refines :class:`FrameState` objects: one frame's latents, its Adam moments, its
noise generator (seeded by the config seed and the frame's index in the video) and its step
count. Frames of a batch are stacked into one tensor per step, but every per-frame quantity
(noise, Adam step, temperature, stopping) is the frame's own, so a frame's result does not
depend on which other frames share its batch, nor on the batch size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from pipeline.entropy import LatentCodec, Relax
from pipeline.errors import ConfigError

METHODS = ("none", "campos", "sga")
AUTOCAST = ("none", "bf16")


@dataclass(frozen=True)
class RefineConfig:
    """How latents are refined. Frozen; its :meth:`hash` goes into every stream header.

    Attributes:
        method: ``none`` (plain CompressAI coding), ``campos`` (gradient descent on the
            latents under uniform noise, the seed's method) or ``sga`` (stochastic Gumbel
            annealing; the paper uses lr 5e-3).
        iters: iteration budget per frame (with ``budget``: the cap of one frame).
        lr: Adam step size (the seed uses 1e-3).
        lmbda: rate-distortion trade-off; ``None`` means the checkpoint's training lambda.
        tol: convergence tolerance: a frame stops once its relaxed loss has not improved
            by a relative ``tol`` over ``window`` iterations. 0 disables early stopping.
        window: iterations over which ``tol`` is judged.
        seed: seed of the relaxation noise.
        warm_start: start frame t from frame t-1's refinement offset when the two frames
            are close (MSE of their 8-bit RGB <= ``warm_threshold``).
        grid: K: warm-start chains and budget groups restart at frame indices that are
            multiples of K (shard cuts of the distributed encoder fall on this grid).
        warm_threshold: largest MSE (8-bit RGB, 0-255 scale) of two consecutive frames
            for which the later one is warm-started.
        budget: average iterations per frame over each grid group; 0 = off (every frame
            gets ``iters``). Needs ``probe <= budget <= iters``.
        probe: iterations every frame runs before the group's budget is shared out.
        autocast: ``bf16`` runs g_s (forward and backward) under bfloat16 autocast; the
            latents, the bits and the final coding stay fp32.
    """

    method: Literal["none", "campos", "sga"] = "campos"
    iters: int = 50
    lr: float = 1e-3
    lmbda: float | None = None
    tol: float = 1e-3
    window: int = 20
    seed: int = 0
    warm_start: bool = False
    grid: int = 16
    warm_threshold: float = 1000.0
    budget: int = 0
    probe: int = 8
    autocast: Literal["none", "bf16"] = "none"

    def validate(self) -> RefineConfig:
        if self.method not in METHODS:
            raise ConfigError(f"unknown refinement method {self.method!r}", hint=f"use one of {', '.join(METHODS)}")
        if self.iters < 0:
            raise ConfigError(f"--iters {self.iters} is negative", hint="use 0 or more iterations")
        if not self.lr > 0:
            raise ConfigError(f"--lr {self.lr} must be positive", hint="the seed uses 1e-3")
        if self.lmbda is not None and not self.lmbda > 0:
            raise ConfigError(f"--lambda {self.lmbda} must be positive", hint="omit it to use the model's training lambda")
        if self.tol < 0 or self.window < 1:
            raise ConfigError("--tol must be >= 0 and --window >= 1")
        if self.grid < 1:
            raise ConfigError(f"--grid {self.grid} must be at least 1", hint="e.g. the source's GOP length")
        if not self.warm_threshold >= 0:
            raise ConfigError(f"--warm-threshold {self.warm_threshold} must be >= 0")
        if self.budget < 0:
            raise ConfigError(f"--budget-iters-per-frame {self.budget} is negative", hint="0 turns the adaptive budget off")
        if self.budget > 0 and self.method != "none":
            if self.probe < 2:
                raise ConfigError(f"--probe {self.probe} must be at least 2 (the gain is measured between probe iterations)")
            if not self.probe <= self.budget <= self.iters:
                raise ConfigError(
                    f"--budget-iters-per-frame {self.budget} must lie between the probe ({self.probe}) and --iters ({self.iters})",
                    hint="--iters is the cap of one frame under an adaptive budget, e.g. 4x the average",
                )
        if self.autocast not in AUTOCAST:
            raise ConfigError(f"unknown --autocast {self.autocast!r}", hint=f"use one of {', '.join(AUTOCAST)}")
        return self

    @property
    def active(self) -> bool:
        """Whether any refinement runs."""
        return self.method != "none" and self.iters > 0

    @property
    def uses_grid(self) -> bool:
        """Whether frames are coded in grid groups (warm-start chains or budget groups):
        then the bytes of a frame depend on the other frames of its group, and shard cuts
        must fall on the grid."""
        return self.active and (self.warm_start or self.budget > 0)

    def resolved(self, model_lmbda: float) -> RefineConfig:
        """The config with ``lmbda`` filled in (what actually runs and is hashed)."""
        cfg = self if self.lmbda is not None else replace(self, lmbda=model_lmbda)
        if cfg.method == "none":
            cfg = replace(cfg, iters=0)
        if not cfg.active:
            cfg = replace(cfg, warm_start=False, budget=0, autocast="none")
        return cfg.validate()

    def to_json(self) -> dict[str, Any]:
        """Canonical form: float fields are floats whether given as 0 or 0.0. Settings that
        are off are left out (so configs from before they existed keep their hash)."""
        d = asdict(self)
        for k in ("lr", "lmbda", "tol", "warm_threshold"):
            if d[k] is not None:
                d[k] = float(d[k])
        if not self.warm_start:
            del d["warm_start"], d["warm_threshold"]
        if self.budget <= 0:
            del d["budget"], d["probe"]
        if not (self.warm_start or self.budget > 0):
            del d["grid"]
        if self.autocast == "none":
            del d["autocast"]
        return d

    def hash(self) -> str:
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def frame_generator(seed: int, frame_index: int) -> torch.Generator:
    digest = hashlib.sha256(f"relatent-noise:{seed}:{frame_index}".encode()).digest()
    g = torch.Generator(device="cpu")
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def sga_tau(t: int, budget: int) -> float:
    """The SGA temperature at iteration ``t`` (1-based) of ``budget``: the paper's schedule
    for 2000 iterations, stretched or compressed to the budget."""
    t0, rate = 0.35 * budget, 1.3 / (0.65 * budget)
    return min(0.5, 0.5 * math.exp(-rate * (t - t0)))


# --------------------------------------------------------------------------- warm starts


def frame_mse(a: np.ndarray, b: np.ndarray) -> float:
    """MSE of two 8-bit frames on the 0-255 scale, exactly: an integer sum of squares
    divided once (the same value on every machine)."""
    d = a.astype(np.int64) - b.astype(np.int64)
    return int(np.dot(d.ravel(), d.ravel())) / d.size


def frames_close(prev: np.ndarray, cur: np.ndarray, threshold: float) -> bool:
    """The warm-start criterion: consecutive 8-bit frames whose MSE is at most ``threshold``."""
    return prev.shape == cur.shape and frame_mse(prev, cur) <= threshold


# --------------------------------------------------------------------------- budgets


def allocate(total: int, gains: Sequence[float], lo: Sequence[int], hi: Sequence[int]) -> list[int]:
    """Share ``total`` iterations among the frames of one group.

    Frame i gets ``n_i`` in ``[lo_i, hi_i]`` (its probe iterations, its cap) with
    ``n_i`` proportional to its measured gain ``gains[i]`` where the bounds allow: the
    optimum of ``sum_i gain_i * log(n_i)`` under ``sum_i n_i = total`` (refinement gains
    grow roughly with the log of the iterations). Found by bisection on the proportionality
    constant, rounded down, the remainder handed out one by one by largest fraction (ties:
    the earlier frame). Pure float64 arithmetic on the inputs, so deterministic.
    """
    n = len(gains)
    lo_s, hi_s = sum(lo), sum(hi)
    if total <= lo_s:
        return list(lo)
    if total >= hi_s:
        return list(hi)
    g = [max(0.0, float(x)) if math.isfinite(x) else 0.0 for x in gains]

    def fill(mu: float) -> list[float]:
        return [min(float(hi[i]), max(float(lo[i]), mu * g[i])) for i in range(n)]

    if sum(g) <= 0:
        g = [1.0] * n  # no measured gain anywhere: share evenly
    a, b = 0.0, 1.0
    while sum(fill(b)) < total and b < 1e300:
        b *= 2.0
    for _ in range(200):
        mid = 0.5 * (a + b)
        if sum(fill(mid)) < total:
            a = mid
        else:
            b = mid
    share = fill(b)
    out = [min(hi[i], max(lo[i], math.floor(share[i]))) for i in range(n)]
    left = total - sum(out)
    order = sorted(range(n), key=lambda i: (-(share[i] - math.floor(share[i])), i))
    while left > 0:
        moved = False
        for i in order:
            if left > 0 and out[i] < hi[i]:
                out[i] += 1
                left -= 1
                moved = True
        if not moved:
            break
    return out


# --------------------------------------------------------------------------- engine


@dataclass
class FrameState:
    """One frame's refinement in progress. Latents and moments are ``[1, ...]`` tensors."""

    index: int
    params: dict[str, Tensor]
    m: dict[str, Tensor]
    v: dict[str, Tensor]
    gen: torch.Generator
    stop: int  # the frame runs until t == stop (or it converges)
    schedule: int  # the length the SGA temperature schedule is stretched to
    t: int = 0
    best: float = math.inf
    best_at: int = 0
    loss_start: float = math.nan
    loss_end: float = math.nan
    loss_min: float = math.inf
    converged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, latents: dict[str, Tensor], index: int, seed: int, stop: int, schedule: int | None = None) -> FrameState:
        """A fresh state (zero moments) from ``[1, ...]`` latents."""
        p = {k: v.detach().clone() for k, v in latents.items()}
        return cls(
            index, p, {k: torch.zeros_like(v) for k, v in p.items()}, {k: torch.zeros_like(v) for k, v in p.items()},
            frame_generator(seed, index), stop, stop if schedule is None else schedule,
        )  # fmt: skip

    @property
    def done(self) -> bool:
        return self.converged or self.t >= self.stop

    def offset(self, latents0: dict[str, Tensor]) -> dict[str, Tensor]:
        """What refinement added to the encoder's latents (the warm start of the next frame)."""
        return {k: (self.params[k] - latents0[k]).detach() for k in self.params}


def _copy_gen(g: torch.Generator) -> torch.Generator:
    c = torch.Generator(device="cpu")
    c.set_state(g.get_state())
    return c


class Relaxation:
    """The per-iteration ``relax(name, v, offset)`` callable (see :mod:`pipeline.entropy`).

    Random numbers come from each frame's own generator, drawn frame by frame in a fixed
    order, and every frame has its own temperature, so a frame's relaxation does not depend
    on the other frames of its batch."""

    def __init__(self, method: str, gens: list[torch.Generator], taus: list[float]) -> None:
        self.method = method
        self.gens = gens
        self.taus = taus

    def _uniform(self, shape: torch.Size, device: torch.device) -> Tensor:
        return torch.stack([torch.rand(shape, generator=g) for g in self.gens]).to(device)

    def __call__(self, name: str, v: Tensor, offset: Tensor | None) -> Tensor:
        if self.method == "campos":
            return v + (self._uniform(v.shape[1:], v.device) - 0.5)
        # sga: annealed soft rounding between floor and ceil on the grid offset + Z
        d = v - offset if offset is not None else v
        fl = torch.floor(d).detach()
        r = d - fl
        eps = 1e-5
        u = self._uniform((*v.shape[1:], 2), v.device).clamp(1e-10, 1 - 1e-7)
        gumbel = -torch.log(-torch.log(u))
        outs = []
        for j, tau in enumerate(self.taus):  # each frame at its own temperature
            rj = r[j : j + 1]
            logits = torch.stack(
                [-torch.atanh(rj.clamp(-1 + eps, 1 - eps)) / tau, -torch.atanh((1 - rj).clamp(-1 + eps, 1 - eps)) / tau], -1
            )
            outs.append(torch.softmax((logits + gumbel[j : j + 1]) / tau, dim=-1)[..., 1])
        d_t = fl + (outs[0] if len(outs) == 1 else torch.cat(outs))
        return d_t + offset if offset is not None else d_t


@contextlib.contextmanager
def _synth_autocast(mode: str, device: torch.device) -> Iterator[None]:
    if mode == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def relaxed_loss(
    codec: LatentCodec, latents: dict[str, Tensor], relax: Relax, x: Tensor, h: int, w: int, lmbda: float,
    autocast: str = "none",
) -> Tensor:
    """Per-frame relaxed RD loss (shape [B]); distortion only over the valid h x w area.
    With ``autocast="bf16"`` only g_s runs in bfloat16 (bits and latents stay fp32)."""
    if autocast == "none":
        bits, x_t = codec.relaxed(latents, relax)
    else:
        bits, x_t = codec.relaxed(latents, relax, synth=lambda y: _autocast_synth(codec, y, autocast))
    d = (x_t[..., :h, :w] - x[..., :h, :w]) ** 2
    mse = d.flatten(1).mean(1)
    return bits / (h * w) + lmbda * 255.0**2 * mse


def _autocast_synth(codec: LatentCodec, y: Tensor, mode: str) -> Tensor:
    with _synth_autocast(mode, y.device):
        out = codec.net.g_s(y)
    return out.float()


def run_states(
    codec: LatentCodec, x: Tensor, states: Sequence[FrameState], valid_hw: tuple[int, int], cfg: RefineConfig
) -> float:
    """Advance every state (``states[i]`` is the frame ``x[i]``) until it stops or converges;
    returns the seconds spent. The states change only when the whole run succeeds (a CUDA
    out-of-memory error leaves them as they were, so the caller can retry in halves)."""
    assert cfg.lmbda is not None, "resolve the RefineConfig first"
    t0 = time.perf_counter()
    h, w = valid_hw
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    work = [
        replace(s, params=dict(s.params), m=dict(s.m), v=dict(s.v), gen=_copy_gen(s.gen), extra=dict(s.extra)) for s in states
    ]
    active = [i for i, s in enumerate(work) if not s.done]
    while active:
        idx = torch.tensor(active, device=x.device)
        keys = list(work[active[0]].params)
        cur = {k: torch.cat([work[i].params[k] for i in active]).requires_grad_(True) for k in keys}
        ts = [work[i].t + 1 for i in active]
        taus = [sga_tau(t, work[i].schedule) for t, i in zip(ts, active, strict=True)] if cfg.method == "sga" else []
        relax = Relaxation(cfg.method, [work[i].gen for i in active], taus)
        xb = x if len(active) == x.shape[0] else x.index_select(0, idx)
        loss = relaxed_loss(codec, cur, relax, xb, h, w, cfg.lmbda, cfg.autocast)
        loss.sum().backward()
        with torch.no_grad():
            for k in keys:
                grad = cur[k].grad
                assert grad is not None
                for j, i in enumerate(active):  # element-wise Adam with the frame's own step count
                    s, t, g = work[i], ts[j], grad[j : j + 1]
                    s.m[k] = s.m[k].mul(beta1).add_(g, alpha=1 - beta1)
                    s.v[k] = s.v[k].mul(beta2).addcmul_(g, g, value=1 - beta2)
                    step = cfg.lr / (1 - beta1**t)
                    denom = (s.v[k] / (1 - beta2**t)).sqrt_().add_(eps)
                    s.params[k] = cur[k][j : j + 1].detach() - step * s.m[k] / denom
        losses = loss.detach().cpu().tolist()
        still = []
        for j, i in enumerate(active):
            s = work[i]
            s.t = ts[j]
            if s.t == 1:
                s.loss_start = losses[j]
            s.loss_end = losses[j]
            s.loss_min = min(s.loss_min, losses[j])
            if losses[j] < s.best * (1 - cfg.tol):
                s.best, s.best_at = losses[j], s.t
            if cfg.tol > 0 and s.t - s.best_at >= cfg.window:
                s.converged = True  # no relative improvement of tol over the window
            if not s.done:
                still.append(i)
        active = still
    for s, wk in zip(states, work, strict=True):
        s.__dict__.update(wk.__dict__)
    return time.perf_counter() - t0


def probe_gains(
    codec: LatentCodec, x: Tensor, latents0: dict[str, Tensor], states: Sequence[FrameState], valid_hw: tuple[int, int],
    cfg: RefineConfig,
) -> list[float]:
    """What each probed frame gained: its relaxed loss at the start minus at the end of the
    probe, both under the SAME uniform-noise draw (common random numbers: the noise of the
    relaxation cancels in the difference, which a difference of two iterations' losses does
    not). The draw comes from a generator of its own (seed, frame index), so the measurement
    is deterministic and batch-invariant; it costs two forward passes per frame."""
    assert cfg.lmbda is not None
    h, w = valid_hw

    def gens() -> list[torch.Generator]:
        return [frame_generator(cfg.seed ^ 0x5EED, s.index) for s in states]

    with torch.no_grad():
        before = relaxed_loss(codec, latents0, Relaxation("campos", gens(), []), x, h, w, cfg.lmbda, cfg.autocast)
        after = relaxed_loss(codec, stack_states(states), Relaxation("campos", gens(), []), x, h, w, cfg.lmbda, cfg.autocast)
    return [float(b) - float(a) for b, a in zip(before.cpu().tolist(), after.cpu().tolist(), strict=True)]


# --------------------------------------------------------------------------- batch API


@dataclass
class RefineResult:
    latents: dict[str, Tensor]
    iters: list[int]
    seconds: float
    loss_start: list[float]
    loss_end: list[float]


def stack_states(states: Sequence[FrameState]) -> dict[str, Tensor]:
    return {k: torch.cat([s.params[k] for s in states]) for k in states[0].params}


def refine_latents(
    codec: LatentCodec,
    x: Tensor,
    latents0: dict[str, Tensor],
    valid_hw: tuple[int, int],
    frame_indices: list[int],
    cfg: RefineConfig,
) -> RefineResult:
    """Refine a batch of latents from cold (``cfg`` must be :meth:`RefineConfig.resolved`)."""
    states = [
        FrameState.start({k: v[i : i + 1] for k, v in latents0.items()}, fi, cfg.seed, cfg.iters)
        for i, fi in enumerate(frame_indices)
    ]
    secs = run_states(codec, x, states, valid_hw, cfg)
    return RefineResult(
        stack_states(states), [s.t for s in states], secs, [s.loss_start for s in states], [s.loss_end for s in states]
    )
