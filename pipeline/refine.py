"""Per-frame latent refinement (content-adaptive optimization, Campos et al. 2019).

The networks and the entropy model stay fixed. For each frame x we start from the
encoder's latents (y0 = g_a(x), and z0 = h_a(y0) for hyperprior models) and take gradient
steps on the latents alone, minimising the frame's own rate-distortion loss under the
uniform-noise relaxation of quantization::

    y~ = y + U(-1/2, 1/2)            (z~ likewise)
    L  = bits(y~, z~) / pixels + lambda * 255^2 * MSE(x, g_s(y~))

The frames of a batch are refined together as one tensor, but every frame's noise comes
from its own generator (seeded by the config seed and the frame's index in the video), the
optimiser (Adam) is element-wise with a per-frame step count, and converged frames leave
the batch. So a frame's result does not depend on which other frames share its batch.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor

from pipeline.entropy import LatentCodec
from pipeline.errors import ConfigError

METHODS = ("none", "campos")


@dataclass(frozen=True)
class RefineConfig:
    """How latents are refined. Frozen; its :meth:`hash` goes into every stream header.

    Attributes:
        method: ``none`` (plain CompressAI coding) or ``campos`` (gradient descent on the
            latents under uniform noise, the seed's method).
        iters: iteration budget per frame.
        lr: Adam step size (the seed uses 1e-3).
        lmbda: rate-distortion trade-off; ``None`` means the checkpoint's training lambda.
        tol: convergence tolerance: a frame stops once its relaxed loss has not improved
            by a relative ``tol`` over ``window`` iterations. 0 disables early stopping.
        window: iterations over which ``tol`` is judged.
        seed: seed of the relaxation noise.
    """

    method: Literal["none", "campos"] = "campos"
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
        return asdict(self)

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


def _noise(gens: list[torch.Generator], active: list[int], shapes: dict[str, torch.Size], device: torch.device) -> dict[str, Tensor]:
    out = {}
    for name, shape in shapes.items():
        parts = [torch.rand(shape, generator=gens[i]) - 0.5 for i in active]
        out[name] = torch.stack(parts).to(device)
    return out


def relaxed_loss(
    codec: LatentCodec, latents: dict[str, Tensor], noise: dict[str, Tensor], x: Tensor, h: int, w: int, lmbda: float
) -> Tensor:
    """Per-frame relaxed RD loss (shape [B]); distortion only over the valid h x w area."""
    bits, x_t = codec.relaxed(latents, noise)
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
    shapes = {k: v.shape[1:] for k, v in params.items()}
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
        noise = _noise(gens, active, shapes, x.device)
        loss = relaxed_loss(codec, cur, noise, x.index_select(0, idx), h, w, cfg.lmbda)
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
