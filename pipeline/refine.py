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

P frames (``gop`` > 1) are refined under the rate they are coded with: a state with a
``ref`` (the previous frame's coded ``y_hat``) counts its bits with the relaxed conditional
rate of :func:`pipeline.entropy.relaxed_p_bits` (per channel the cheapest of intra and the
Laplacian residual tables, per frame the cheaper of P and I), so refinement can trade a
little distortion for latents that match the reference. The encoder refines a GOP's frames
in order (lockstep over GOPs), so the reference is final when a frame is refined.

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
import itertools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.config import RefineConfig
from pipeline.entropy import LatentCodec, Relax

__all__ = [
    "FrameState",
    "RefineResult",
    "Relaxation",
    "allocate",
    "frame_generator",
    "frame_mse",
    "frames_close",
    "grid_groups",
    "probe_gains",
    "relaxed_loss",
    "run_states",
    "sga_tau",
    "stack_states",
    "warm_flags",
]


def frame_generator(seed: int, frame_index: int) -> torch.Generator:
    """The CPU noise generator of frame ``frame_index``: seeded with the first 8 bytes
    (little-endian, 63 bits) of sha256(``relatent-noise:<seed>:<frame_index>``), so a
    frame's noise depends on neither its batch nor the process."""
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


def grid_groups(frame_indices: Sequence[int], grid: int) -> list[list[int]]:
    """Positions of ``frame_indices`` (in coding order) grouped by ``index // grid``:
    warm-start chains and budget groups never cross a multiple of ``grid``."""
    positions = range(len(frame_indices))
    return [
        list(g) for _, g in itertools.groupby(positions, key=lambda i: frame_indices[i] // grid)
    ]


def warm_flags(
    refs: Sequence[np.ndarray],
    frame_indices: Sequence[int],
    groups: Sequence[Sequence[int]],
    threshold: float,
) -> list[bool]:
    """Which frames start warm from the previous one: a frame that follows its group's
    previous frame directly (consecutive indices) and is close to it (:func:`frames_close`
    on 8-bit RGB, ``threshold`` on the 0..255 MSE scale). A group's first frame is cold."""
    warm = [False] * len(refs)
    for grp in groups:
        for a, b in itertools.pairwise(grp):
            warm[b] = frame_indices[b] == frame_indices[a] + 1 and frames_close(
                refs[a], refs[b], threshold
            )
    return warm


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
    #: The reference ``y_hat`` (``[1, M, h, w]``) when the frame will be a P frame: its
    #: rate is then the relaxed conditional rate (:func:`pipeline.entropy.relaxed_p_bits`).
    ref: Tensor | None = None
    #: The frame's own RD trade-off (the encoder sets it: a GOP's lambda from rate control,
    #: an intra frame's scaled by ``ip_ratio ** 2``); None = ``cfg.lmbda``.
    lmbda: float | None = None

    @classmethod
    def start(
        cls,
        latents: dict[str, Tensor],
        index: int,
        seed: int,
        stop: int,
        schedule: int | None = None,
    ) -> FrameState:
        """A fresh state (zero moments) from ``[1, ...]`` latents."""
        p = {k: v.detach().clone() for k, v in latents.items()}
        return cls(
            index, p, {k: torch.zeros_like(v) for k, v in p.items()}, {k: torch.zeros_like(v) for k, v in p.items()},
            frame_generator(seed, index), stop, stop if schedule is None else schedule,
        )  # fmt: skip

    @property
    def done(self) -> bool:
        """Whether the frame stopped: converged early, or reached ``stop`` iterations."""
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
                [
                    -torch.atanh(rj.clamp(-1 + eps, 1 - eps)) / tau,
                    -torch.atanh((1 - rj).clamp(-1 + eps, 1 - eps)) / tau,
                ],
                -1,
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
    codec: LatentCodec,
    latents: dict[str, Tensor],
    relax: Relax,
    x: Tensor,
    h: int,
    w: int,
    lmbda: float | Sequence[float],
    autocast: str = "none",
    refs: Sequence[Tensor | None] | None = None,
) -> Tensor:
    """Per-frame relaxed RD loss (shape [B]): bits / (h * w) + lambda * 255^2 * MSE, i.e.
    bpp over the valid ``h`` x ``w`` source pixels plus CompressAI's distortion term, the
    MSE taken on [0, 1] over the valid area of ``x`` (``[B, 3, Hp, Wp]`` float32 in [0, 1]).
    With ``autocast="bf16"`` only g_s runs in bfloat16 (bits and latents stay fp32).
    ``refs[i]``: frame i's P-frame reference (see :meth:`LatentCodec.relaxed`), or None.
    ``lmbda`` is one value for the batch or one per frame; either way the factor
    ``lambda * 255^2`` is formed in double precision and rounded once to the MSE's dtype, so
    a frame's loss is bit-identical whichever form carries its lambda."""
    if autocast == "none":
        bits, x_t = codec.relaxed(latents, relax, refs=refs)
    else:
        bits, x_t = codec.relaxed(
            latents, relax, synth=lambda y: _autocast_synth(codec, y, autocast), refs=refs
        )
    d = (x_t[..., :h, :w] - x[..., :h, :w]) ** 2
    mse = d.flatten(1).mean(1)
    if isinstance(lmbda, int | float):
        return bits / (h * w) + lmbda * 255.0**2 * mse
    coef = torch.tensor([float(v) * 255.0**2 for v in lmbda], dtype=mse.dtype, device=mse.device)
    return bits / (h * w) + coef * mse


def _autocast_synth(codec: LatentCodec, y: Tensor, mode: str) -> Tensor:
    with _synth_autocast(mode, y.device):
        out = codec.net.g_s(y)
    return out.float()


def _batch_lmbda(states: Sequence[FrameState], cfg: RefineConfig) -> float | list[float]:
    """The ``lmbda`` argument of :func:`relaxed_loss` for ``states``: each state's own
    (None: ``cfg.lmbda``), as one value when every state has the config's."""
    base = cfg.lmbda
    assert base is not None, "resolve the RefineConfig first"
    lams = [base if s.lmbda is None else s.lmbda for s in states]
    return base if all(v == base for v in lams) else lams


def run_states(
    codec: LatentCodec,
    x: Tensor,
    states: Sequence[FrameState],
    valid_hw: tuple[int, int],
    cfg: RefineConfig,
) -> float:
    """Advance every state (``states[i]`` is the frame ``x[i]``) until it stops or converges;
    returns the seconds spent. The states change only when the whole run succeeds (a CUDA
    out-of-memory error leaves them as they were, so the caller can retry in halves)."""
    assert cfg.lmbda is not None, "resolve the RefineConfig first"
    t0 = time.perf_counter()
    h, w = valid_hw
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    work = [
        replace(
            s,
            params=dict(s.params),
            m=dict(s.m),
            v=dict(s.v),
            gen=_copy_gen(s.gen),
            extra=dict(s.extra),
        )
        for s in states
    ]
    active = [i for i, s in enumerate(work) if not s.done]
    while active:
        idx = torch.tensor(active, device=x.device)
        keys = list(work[active[0]].params)
        cur = {k: torch.cat([work[i].params[k] for i in active]).requires_grad_(True) for k in keys}
        ts = [work[i].t + 1 for i in active]
        taus = (
            [sga_tau(t, work[i].schedule) for t, i in zip(ts, active, strict=True)]
            if cfg.method == "sga"
            else []
        )
        relax = Relaxation(cfg.method, [work[i].gen for i in active], taus)
        xb = x if len(active) == x.shape[0] else x.index_select(0, idx)
        refs = [work[i].ref for i in active]
        lam = _batch_lmbda([work[i] for i in active], cfg)
        loss = relaxed_loss(codec, cur, relax, xb, h, w, lam, cfg.autocast, refs)
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
    codec: LatentCodec,
    x: Tensor,
    latents0: dict[str, Tensor],
    states: Sequence[FrameState],
    valid_hw: tuple[int, int],
    cfg: RefineConfig,
) -> list[float]:
    """What each probed frame gained: its relaxed loss at the start minus at the end of the
    probe, both under the SAME uniform-noise draw (common random numbers: the noise of the
    relaxation cancels in the difference, which a difference of two iterations' losses does
    not). The draw comes from a generator of its own (seed, frame index), so the measurement
    is deterministic and batch-invariant; it costs two forward passes per frame."""
    assert cfg.lmbda is not None
    h, w = valid_hw
    lam = _batch_lmbda(states, cfg)  # each frame at the lambda it was probed at

    def gens() -> list[torch.Generator]:
        return [frame_generator(cfg.seed ^ 0x5EED, s.index) for s in states]

    with torch.no_grad():
        before = relaxed_loss(
            codec, latents0, Relaxation("campos", gens(), []), x, h, w, lam, cfg.autocast
        )
        after = relaxed_loss(
            codec,
            stack_states(states),
            Relaxation("campos", gens(), []),
            x,
            h,
            w,
            lam,
            cfg.autocast,
        )
    return [
        float(b) - float(a)
        for b, a in zip(before.cpu().tolist(), after.cpu().tolist(), strict=True)
    ]


# --------------------------------------------------------------------------- batch API


@dataclass
class RefineResult:
    """The refinement of one batch: the refined latents stacked per name (``[B, ...]``),
    each frame's iterations, the batch's wall seconds, and each frame's relaxed loss
    (bpp + lambda * 255^2 * MSE) at its first and last iteration."""

    latents: dict[str, Tensor]
    iters: list[int]
    seconds: float
    loss_start: list[float]
    loss_end: list[float]


def stack_states(states: Sequence[FrameState]) -> dict[str, Tensor]:
    """The states' ``[1, ...]`` latents concatenated per name into ``[B, ...]`` tensors."""
    return {k: torch.cat([s.params[k] for s in states]) for k in states[0].params}
