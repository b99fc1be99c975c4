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

The frames of a batch are refined together as one tensor, but every frame's noise comes
from its own generator (seeded by the config seed and the frame's index in the video), the
optimiser (Adam) is element-wise with a per-frame step count, and converged frames leave
the batch. So a frame's result does not depend on which other frames share its batch.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor

from pipeline.entropy import LatentCodec, Relax
from pipeline.errors import ConfigError

METHODS = ("none", "campos", "sga")


@dataclass(frozen=True)
class RefineConfig:
    """How latents are refined. Frozen; its :meth:`hash` goes into every stream header.

    Attributes:
        method: ``none`` (plain CompressAI coding), ``campos`` (gradient descent on the
            latents under uniform noise, the seed's method) or ``sga`` (stochastic Gumbel
            annealing; the paper uses lr 5e-3).
        iters: iteration budget per frame.
        lr: Adam step size (the seed uses 1e-3).
        lmbda: rate-distortion trade-off; ``None`` means the checkpoint's training lambda.
        tol: convergence tolerance: a frame stops once its relaxed loss has not improved
            by a relative ``tol`` over ``window`` iterations. 0 disables early stopping.
        window: iterations over which ``tol`` is judged.
        seed: seed of the relaxation noise.
    """

    method: Literal["none", "campos", "sga"] = "campos"
    iters: int = 50
    lr: float = 1e-3
    lmbda: float | None = None
    tol: float = 1e-3
    window: int = 20
    seed: int = 0

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
        return self

    def resolved(self, model_lmbda: float) -> RefineConfig:
        """The config with ``lmbda`` filled in (what actually runs and is hashed)."""
        cfg = self if self.lmbda is not None else replace(self, lmbda=model_lmbda)
        if cfg.method == "none":
            cfg = replace(cfg, iters=0)
        return cfg.validate()

    def to_json(self) -> dict[str, Any]:
        """Canonical form: float fields are floats whether given as 0 or 0.0."""
        d = asdict(self)
        for k in ("lr", "lmbda", "tol"):
            if d[k] is not None:
                d[k] = float(d[k])
        return d

    def hash(self) -> str:
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class RefineResult:
    latents: dict[str, Tensor]
    iters: list[int]
    seconds: float
    loss_start: list[float]
    loss_end: list[float]


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


class Relaxation:
    """The per-iteration ``relax(name, v, offset)`` callable (see :mod:`pipeline.entropy`).

    Random numbers come from each frame's own generator, drawn frame by frame in a fixed
    order, so a frame's draws do not depend on the other frames of its batch."""

    def __init__(self, method: str, gens: list[torch.Generator], active: list[int], t: int, budget: int) -> None:
        self.method = method
        self.gens = [gens[i] for i in active]
        self.tau = sga_tau(t, budget) if method == "sga" else 0.0

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
        tau = self.tau
        logits = torch.stack(
            [-torch.atanh(r.clamp(-1 + eps, 1 - eps)) / tau, -torch.atanh((1 - r).clamp(-1 + eps, 1 - eps)) / tau], -1
        )
        u = self._uniform((*v.shape[1:], 2), v.device).clamp(1e-10, 1 - 1e-7)
        gumbel = -torch.log(-torch.log(u))
        w = torch.softmax((logits + gumbel) / tau, dim=-1)
        d_t = fl + w[..., 1]
        return d_t + offset if offset is not None else d_t


def relaxed_loss(
    codec: LatentCodec, latents: dict[str, Tensor], relax: Relax, x: Tensor, h: int, w: int, lmbda: float
) -> Tensor:
    """Per-frame relaxed RD loss (shape [B]); distortion only over the valid h x w area."""
    bits, x_t = codec.relaxed(latents, relax)
    d = (x_t[..., :h, :w] - x[..., :h, :w]) ** 2
    mse = d.flatten(1).mean(1)
    return bits / (h * w) + lmbda * 255.0**2 * mse


def refine_latents(
    codec: LatentCodec,
    x: Tensor,
    latents0: dict[str, Tensor],
    valid_hw: tuple[int, int],
    frame_indices: list[int],
    cfg: RefineConfig,
) -> RefineResult:
    """Refine a batch of latents; ``cfg`` must be :meth:`RefineConfig.resolved`."""
    assert cfg.lmbda is not None, "resolve the RefineConfig first"
    t0 = time.perf_counter()
    b = x.shape[0]
    h, w = valid_hw
    params = {k: v.detach().clone() for k, v in latents0.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    gens = [frame_generator(cfg.seed, i) for i in frame_indices]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    iters = [0] * b
    best = [float("inf")] * b
    best_at = [0] * b
    loss_start = [float("nan")] * b
    loss_end = [float("nan")] * b
    active = list(range(b))
    for t in range(1, cfg.iters + 1):
        if not active:
            break
        idx = torch.tensor(active, device=x.device)
        cur = {k: p.index_select(0, idx).requires_grad_(True) for k, p in params.items()}
        relax = Relaxation(cfg.method, gens, active, t, cfg.iters)
        loss = relaxed_loss(codec, cur, relax, x.index_select(0, idx), h, w, cfg.lmbda)
        loss.sum().backward()
        with torch.no_grad():
            for k, p in params.items():
                g = cur[k].grad
                mk = m[k].index_select(0, idx).mul_(beta1).add_(g, alpha=1 - beta1)
                vk = v2[k].index_select(0, idx).mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m[k].index_copy_(0, idx, mk)
                v2[k].index_copy_(0, idx, vk)
                step = cfg.lr / (1 - beta1**t)
                denom = (vk / (1 - beta2**t)).sqrt_().add_(eps)
                p.index_copy_(0, idx, cur[k].detach() - step * mk / denom)
        losses = loss.detach().cpu().tolist()
        still = []
        for j, i in enumerate(active):
            iters[i] = t
            if t == 1:
                loss_start[i] = losses[j]
            loss_end[i] = losses[j]
            if losses[j] < best[i] * (1 - cfg.tol):
                best[i], best_at[i] = losses[j], t
            if cfg.tol > 0 and t - best_at[i] >= cfg.window:
                continue  # converged: no relative improvement of tol over the window
            still.append(i)
        active = still
    return RefineResult(params, iters, time.perf_counter() - t0, loss_start, loss_end)
