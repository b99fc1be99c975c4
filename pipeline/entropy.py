"""Coding a GIVEN latent with a fixed CompressAI model (what refinement needs).

:class:`LatentCodec` wraps a frozen :class:`~pipeline.models.LoadedModel` and gives, for
each latent kind, the same four operations in one dict contract (names follow the maths):

* ``analyze(x)`` -> ``{"y": ..., "z": ...}``: the encoder's initial latents
  (``z`` only for hyperprior kinds).
* ``relaxed(latents, relax)`` -> per-frame bits and the reconstruction ``x_tilde`` under a
  relaxation of quantization (differentiable w.r.t. the latents). ``relax(name, v, offset)``
  perturbs latent ``v`` whose quantization grid is ``offset + Z`` (uniform noise for
  ``campos``, annealed soft rounding for ``sga``).
* ``compress(latents)`` -> per frame: the entropy strings and the CRC32 of the integer
  symbols, plus the quantized latents ``y_hat`` used for the real reconstruction.
* ``decompress(strings)`` -> ``{"y_hat": ..., "symbols_crc": ...}`` for one frame.

Determinism: the path that chooses CDF indexes for hyperprior models (``h_s`` -> scales,
means -> ``build_indexes``) runs on the CPU in float64 with one thread, at both ends, so
every process derives the same indexes; the CRC of the decoded symbols then proves it.
"""

from __future__ import annotations

import copy
import functools
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline import inter
from pipeline.errors import BitstreamError
from pipeline.models import LoadedModel, fixed_threads

__all__ = [
    "LATENT_BOUND",
    "Coded",
    "LatentCodec",
    "bound_latent",
    "cumulative_logits",
    "density_layers",
    "relaxed_p_bits",
    "symbols_crc",
]

#: ``relax(name, v, offset) -> v~``: a relaxation of quantizing ``v`` to ``offset + Z``.
Relax = Callable[[str, Tensor, "Tensor | None"], Tensor]

#: The hard path (:meth:`LatentCodec.quantize` and :meth:`LatentCodec.compress`, the same
#: way in both, so the encoder's reconstruction is the decoder's) codes every latent within
#: ``LATENT_BOUND`` of its centre: the entropy bottleneck's medians (``y`` of the factorized
#: kind, ``z``), the Gaussian means (``y`` of the mean-scale kind) or 0 (``y`` of the scale
#: kind). Further values, +-inf included, are clamped to ``centre +- LATENT_BOUND`` and
#: nan becomes the centre (:func:`bound_latent`). Latents of real images lie within a few
#: hundred of their centre (the shipped models: under 40 on the shared clips), so this
#: never touches them; it bounds what a diverged refinement can hand the coder. Symbols
#: are then ``|s| <= 2^15``: CompressAI's rANS codes a value outside its CDF table with
#: the escape symbol and at most 5 four-bit bypass symbols (its raw value is below 2^17),
#: so any frame codes in time linear in its size. Unbounded, ``nan``/``inf``/``|v| >=
#: 2^31`` wrap to a negative int32 and the coder's bypass loop never ends.
LATENT_BOUND = 32768.0


def bound_latent(v: Tensor, centre: Tensor | None) -> Tensor:
    """``v`` with every element further than :data:`LATENT_BOUND` from ``centre`` (0 when
    ``None``; broadcast, e.g. the medians ``[1, C, 1, 1]``) clamped to ``centre +-
    LATENT_BOUND`` (``+-inf`` too), and ``nan`` replaced by ``centre``. Elements within
    the bound are returned bit-exact, so streams of sane latents do not change. Same shape,
    dtype and device as ``v``."""
    c = torch.zeros((), dtype=v.dtype, device=v.device) if centre is None else centre
    d = v - c
    inside = d.abs() <= LATENT_BOUND  # False for nan
    if bool(inside.all()):
        return v
    far = torch.nan_to_num(d, nan=0.0, posinf=LATENT_BOUND, neginf=-LATENT_BOUND)
    return torch.where(inside, v, c + far.clamp(-LATENT_BOUND, LATENT_BOUND))


def symbols_crc(*symbols: Tensor) -> int:
    """CRC32 (zlib) of the integer symbols, each tensor as int32 bytes in C order, chained
    in argument order; an unsigned 32-bit value (what a packet's ``latent_crc`` holds)."""
    crc = 0
    for s in symbols:
        crc = zlib.crc32(s.detach().to("cpu", torch.int32).contiguous().numpy().tobytes(), crc)
    return crc & 0xFFFFFFFF


def density_layers(eb: Any) -> list[tuple[Tensor, Tensor, Tensor | None]]:
    """The entropy bottleneck's layers as ``(softplus(H), b, tanh(a))`` (``None`` for the
    last layer's factor): the parameter transforms, computed once per call of the density."""
    n = len(eb.matrices)
    return [
        (
            torch.nn.functional.softplus(eb.matrices[i]),
            eb.biases[i],
            torch.tanh(eb.factors[i]) if i < n - 1 else None,
        )
        for i in range(n)
    ]


def cumulative_logits(layers: list[tuple[Tensor, Tensor, Tensor | None]], v: Tensor) -> Tensor:
    """``EntropyBottleneck._logits_cumulative`` of ``v`` (``[C, 1, n]``) for the layers of
    :func:`density_layers`, with the matrix products written out:
    ``sum_k softplus(H)[c, j, k] * logits[c, k, n]`` accumulated in order ``k = 0, 1, ...``,
    so no BLAS kernel choice (which varies with ``n`` and the CPU) can change the last bit.
    Same parameters, same maths as CompressAI."""
    logits = v
    for m, bias, factor in layers:  # m: [C, out, in]
        acc = m[:, :, 0:1] * logits[:, 0:1, :]
        for k in range(1, m.shape[2]):
            acc = acc + m[:, :, k : k + 1] * logits[:, k : k + 1, :]
        logits = acc + bias
        if factor is not None:
            logits = logits + factor * torch.tanh(logits)
    return logits


@functools.cache
def _laplace_scales() -> tuple[float, ...]:
    """The scale ``b_k = -1 / ln(ratio_k / 65536)`` of each Laplacian table of
    :mod:`pipeline.inter` (0.1 .. 15.6)."""
    return tuple(-1.0 / math.log(r / 65536) for r in inter.LAPLACE_RATIOS)


def relaxed_p_bits(r: Tensor, intra_bits: Tensor) -> Tensor:
    """The relaxed rate (bits, a 0-d tensor) of one P frame whose relaxed latents differ from
    the reference's ``y_hat`` by ``r`` (``[M, h, w]``), given the relaxed intra bits of each
    element (``intra_bits``, ``[M, h, w]``).

    It follows the coder (:mod:`pipeline.inter`): each channel costs the least of its intra
    bits and of its residual's bits under each Laplacian table ``k``; the frame costs the
    least of that sum plus the modes (``M log2 18`` bits) and its intra bits (the encoder
    keeps the smaller packet). A table's residual bits are ``-log2`` of the continuous
    Laplacian of scale ``b_k`` integrated over ``[r - 1/2, r + 1/2]`` (the density convolved
    with the unit box, as CompressAI's training rate), in closed form::

        |r| <  1/2:  p = 1 - exp(-1 / (2 b)) cosh(r / b)
        |r| >= 1/2:  p = exp(-(|r| - 1/2) / b) (1 - exp(-1 / b)) / 2

    The narrowest table (b = 0.1) stands for COPY: about 0.01 bit at r = 0. The minimum over
    modes is piecewise smooth: its gradient is that of the cheapest mode."""
    b = torch.tensor(_laplace_scales(), dtype=r.dtype, device=r.device).view(-1, 1, 1, 1)
    a = r.abs().unsqueeze(0)  # [1, M, h, w]
    inside = 1.0 - torch.exp(-0.5 / b) * torch.cosh(a.clamp(max=0.5) / b)
    bits_in = -torch.log2(inside.clamp_min(1e-9))
    bits_out = (a.clamp(min=0.5) - 0.5) / (b * math.log(2.0)) - torch.log2(
        0.5 * (1.0 - torch.exp(-1.0 / b))
    )
    lap = torch.where(a < 0.5, bits_in, bits_out).sum((2, 3))  # [K, M]
    intra_c = intra_bits.sum((1, 2))  # [M]
    per_channel = torch.cat([intra_c.unsqueeze(0), lap]).min(0).values
    p_total = per_channel.sum() + intra_c.numel() * math.log2(inter.MODES)
    return torch.minimum(p_total, intra_c.sum())


@dataclass
class Coded:
    """The coded form of one frame: ``strings`` are ``(y,)`` for the factorized kind,
    ``(z, y)`` for the hyperprior kinds; ``symbols_crc`` is :func:`symbols_crc` of the
    integer symbols coded."""

    strings: tuple[bytes, ...]
    symbols_crc: int
    #: The frame's integer symbols ``round(y - medians)``, ``[M, h, w]`` int32 (factorized
    #: kind only: what a P frame is coded from and what the next frame references).
    symbols: np.ndarray | None = None


class LatentCodec:
    """Forward/compress/decompress of given latents for one loaded model."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.net = model.net
        self.kind = model.arch.kind
        if self.kind != "factorized":
            # The index path, in float64 on the CPU (kept apart from the working copy).
            self._h_s64 = copy.deepcopy(self.net.h_s).to("cpu", torch.float64).eval()

    # ------------------------------------------------------------------ shapes
    @property
    def device(self) -> torch.device:
        """The model's device (where ``y_hat`` and reconstructions live)."""
        return self.model.device

    def latent_shapes(self, padded_h: int, padded_w: int) -> dict[str, tuple[int, int]]:
        """Spatial sizes of the latents of a padded ``padded_h`` x ``padded_w`` frame:
        ``y`` is 1/16 of it, ``z`` (hyperprior kinds only) 1/64."""
        shapes = {"y": (padded_h // 16, padded_w // 16)}
        if self.kind != "factorized":
            shapes["z"] = (padded_h // 64, padded_w // 64)
        return shapes

    # ------------------------------------------------------------------ forward pieces
    def analyze(self, x: Tensor) -> dict[str, Tensor]:
        """The encoder's latents of ``x`` (``[B, 3, Hp, Wp]`` float32 in [0, 1]): ``y`` =
        g_a(x), ``[B, M, Hp/16, Wp/16]``, and for hyperprior kinds ``z`` = h_a(|y|) (scale)
        or h_a(y) (mean-scale), ``[B, N, Hp/64, Wp/64]``. Gradients follow the caller's mode."""
        y = self.net.g_a(x)
        out = {"y": y}
        if self.kind == "scale-hyperprior":
            out["z"] = self.net.h_a(torch.abs(y))
        elif self.kind == "mean-scale-hyperprior":
            out["z"] = self.net.h_a(y)
        return out

    @torch.no_grad()
    def synthesize(self, y_hat: Tensor) -> Tensor:
        """The decoder: x_hat = g_s(y_hat), ``[B, M, Hp/16, Wp/16]`` -> ``[B, 3, Hp, Wp]``
        float32, clamped to [0, 1]."""
        return self.net.g_s(y_hat).clamp_(0.0, 1.0)

    def _gaussian_params(self, z_hat: Tensor) -> tuple[Tensor, Tensor | None]:
        params = self.net.h_s(z_hat)
        if self.kind == "mean-scale-hyperprior":
            scales, means = params.chunk(2, 1)
            return scales, means
        return params, None

    def _bottleneck_likelihood(self, v: Tensor) -> Tensor:
        """Likelihood of ``v`` (B,C,H,W) under the factorized entropy bottleneck, frame by
        frame so that a frame's numbers never depend on the other frames of its batch.

        CompressAI's ``EntropyBottleneck._likelihood`` multiplies its small density matrices
        with one ``[C, k, B*H*W]`` tensor; the BLAS kernel (and so the last bit) it picks
        depends on ``B`` (measured: batch 1 and batch 4 differ by 1 ulp on an AVX-512 Xeon).
        Here each frame is evaluated on its own with the same maths written as element-wise
        products summed in a fixed order (:func:`cumulative_logits`)."""
        eb = self.net.entropy_bottleneck
        b, c, h, w = v.shape
        layers = density_layers(eb)
        out = []
        for i in range(b):
            vi = v[i].reshape(c, 1, h * w)
            lower = cumulative_logits(layers, vi - 0.5)
            upper = cumulative_logits(layers, vi + 0.5)
            lik = torch.sigmoid(upper) - torch.sigmoid(lower)
            if eb.use_likelihood_bound:
                lik = eb.likelihood_lower_bound(lik)
            out.append(lik.reshape(c, h, w))
        return torch.stack(out)

    def relaxed(
        self,
        latents: dict[str, Tensor],
        relax: Relax,
        synth: Callable[[Tensor], Tensor] | None = None,
        refs: Sequence[Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Per-frame bits (shape [B]; -log2 of the likelihoods of y~ and z~) and x_tilde
        (``[B, 3, Hp, Wp]``, not clamped) for relaxed latents y~ (and z~).
        ``synth`` replaces ``g_s`` for x_tilde (e.g. g_s under bf16 autocast).

        ``refs[i]`` (factorized kind only) is the reference of frame ``i`` when it will be
        coded as a P frame: the previous frame's ``y_hat`` (``[1, M, h, w]``), and its bits
        are then the relaxed conditional rate :func:`relaxed_p_bits`; ``None`` = intra."""
        medians = self.net.entropy_bottleneck._get_medians()
        if self.kind == "factorized":
            y_t = relax("y", latents["y"], medians)
            intra = -torch.log2(self._bottleneck_likelihood(y_t))
            bits = intra.flatten(1).sum(1)
            if refs is not None and any(r is not None for r in refs):
                bits = torch.stack(
                    [
                        bits[i] if r is None else relaxed_p_bits(y_t[i] - r[0], intra[i])
                        for i, r in enumerate(refs)
                    ]
                )
        else:
            z_t = relax("z", latents["z"], medians)
            lz = self._bottleneck_likelihood(z_t)
            scales, means = self._gaussian_params(z_t)
            y_t = relax("y", latents["y"], means)
            gc = self.net.gaussian_conditional
            ly = gc._likelihood(y_t, scales, means)
            if gc.use_likelihood_bound:
                ly = gc.likelihood_lower_bound(ly)
            bits = -torch.log2(lz).flatten(1).sum(1) - torch.log2(ly).flatten(1).sum(1)
        return bits, (self.net.g_s if synth is None else synth)(y_t)

    # ------------------------------------------------------------------ hard path
    def _index_path(self, z_hat: Tensor) -> tuple[Tensor, Tensor | None]:
        """Indexes (and means) from z_hat: float64, CPU, one thread, at both ends."""
        with fixed_threads(1), torch.no_grad():
            params = self._h_s64(z_hat.detach().to("cpu", torch.float64))
            if self.kind == "mean-scale-hyperprior":
                scales, means = params.chunk(2, 1)
            else:
                scales, means = params, None
            idx = self.net.gaussian_conditional.build_indexes(scales)
        return idx, means

    @torch.no_grad()
    def quantize(self, latents: dict[str, Tensor]) -> dict[str, Tensor]:
        """Hard-quantized latents exactly as the decoder will see them (``y_hat`` on the
        model's device, float32), after :func:`bound_latent` (as :meth:`compress` does)."""
        eb = self.net.entropy_bottleneck
        med = eb._get_medians()
        if self.kind == "factorized":
            y_hat = eb.quantize(bound_latent(latents["y"], med), "dequantize", med)
            return {"y_hat": y_hat}
        z_hat = eb.quantize(bound_latent(latents["z"], med), "dequantize", med)
        idx, means = self._index_path(z_hat)
        y = bound_latent(latents["y"].detach().to("cpu", torch.float64), means)
        y_hat = torch.round(y) if means is None else torch.round(y - means) + means
        return {
            "y_hat": y_hat.to(self.device, torch.float32),
            "z_hat": z_hat,
            "indexes": idx,
            "means": means,
        }

    @torch.no_grad()
    def compress(self, latents: dict[str, Tensor]) -> list[Coded]:
        """Entropy-code a batch of latents (``y`` ``[B, M, h, w]``, and ``z`` ``[B, N, h/4,
        w/4]`` for hyperprior kinds), bounded first (:func:`bound_latent`, as
        :meth:`quantize` does: any value codes in bounded time); one :class:`Coded` per
        frame."""
        eb = self.net.entropy_bottleneck
        gc = getattr(self.net, "gaussian_conditional", None)
        out: list[Coded] = []
        if self.kind == "factorized":
            y = bound_latent(latents["y"].detach(), eb._get_medians())
            y_strings = eb.compress(y)
            sym = torch.round(y - eb._get_medians())
            sym_np = sym.to("cpu", torch.int32).numpy()
            for i in range(y.shape[0]):
                out.append(Coded((y_strings[i],), symbols_crc(sym[i]), sym_np[i]))
            return out
        z = bound_latent(latents["z"].detach(), eb._get_medians())
        z_strings = eb.compress(z)
        z_sym = torch.round(z - eb._get_medians())
        z_hat = eb.quantize(z, "dequantize", eb._get_medians())
        idx, means = self._index_path(z_hat)
        y64 = bound_latent(latents["y"].detach().to("cpu", torch.float64), means)
        assert gc is not None
        y_strings = gc.compress(y64, idx, means=means)
        y_sym = torch.round(y64 - means) if means is not None else torch.round(y64)
        for i in range(z.shape[0]):
            out.append(Coded((z_strings[i], y_strings[i]), symbols_crc(z_sym[i], y_sym[i])))
        return out

    # ------------------------------------------------------------------ inter frames
    @property
    def supports_inter(self) -> bool:
        """Whether P frames can be coded (:mod:`pipeline.inter`): the factorized kind only,
        for now (hyperprior latents would need their side information coded too)."""
        return self.kind == "factorized"

    @functools.cached_property
    def inter_tables(self) -> inter.ChannelTables:
        """The CDF tables of P frames (:class:`pipeline.inter.ChannelTables`)."""
        return inter.ChannelTables.from_bottleneck(self.net.entropy_bottleneck)

    def compress_p(self, symbols: np.ndarray, ref: np.ndarray) -> bytes:
        """The rANS string of a P frame: ``symbols`` (``[M, h, w]``) given the previous
        frame's ``ref`` (:func:`pipeline.inter.encode_p`)."""
        return inter.encode_p(symbols, ref, self.inter_tables)[0]

    @torch.no_grad()
    def dequantize(self, symbols: np.ndarray) -> Tensor:
        """``y_hat`` (``[1, M, h, w]`` float32 on the model's device) of factorized symbols
        (``[M, h, w]`` int): symbols + medians, exactly as CompressAI dequantizes."""
        t = torch.from_numpy(np.ascontiguousarray(symbols, np.int32))[None].to(torch.float32)
        return (t + self.net.entropy_bottleneck._get_medians().to("cpu")).to(self.device)

    @torch.no_grad()
    def decompress_p(self, data: bytes, ref: np.ndarray, where: str = "P frame") -> dict[str, Any]:
        """Decode a P frame against ``ref`` (``[M, h, w]`` int): ``y_hat`` (``[1, M, h, w]``
        float32, dequantized exactly as CompressAI does: symbols + medians), its
        ``symbols_crc`` and its ``symbols`` (int32).

        Raises:
            BitstreamError: the packet is corrupt (a mode out of range).
        """
        sym = inter.decode_p(data, ref, self.inter_tables, where).astype(np.int32)
        t = torch.from_numpy(sym)[None]
        y_hat = t.to(torch.float32) + self.net.entropy_bottleneck._get_medians().to("cpu")
        return {
            "y_hat": y_hat.to(self.device),
            "symbols_crc": symbols_crc(t[0]),
            "symbols": sym,
        }

    @torch.no_grad()
    def decompress(self, strings: Sequence[bytes], padded_h: int, padded_w: int) -> dict[str, Any]:
        """Decode one frame's strings to ``y_hat`` (``[1, M, padded_h/16, padded_w/16]``
        float32 on the model's device) and the CRC of its symbols (``symbols_crc``).

        Raises:
            BitstreamError: the packet holds the wrong number of strings for the kind.
        """
        eb = self.net.entropy_bottleneck
        shapes = self.latent_shapes(padded_h, padded_w)
        if self.kind == "factorized":
            if len(strings) != 1:
                raise BitstreamError(
                    f"factorized packet has {len(strings)} strings, expected 1",
                    hint="the stream is corrupt",
                )
            y_hat = eb.decompress([strings[0]], shapes["y"])
            sym = torch.round(y_hat - eb._get_medians())
            return {
                "y_hat": y_hat,
                "symbols_crc": symbols_crc(sym[0]),
                "symbols": sym[0].to("cpu", torch.int32).numpy(),
            }
        if len(strings) != 2:
            raise BitstreamError(
                f"hyperprior packet has {len(strings)} strings, expected 2",
                hint="the stream is corrupt",
            )
        z_hat = eb.decompress([strings[0]], shapes["z"])
        z_sym = torch.round(z_hat - eb._get_medians())
        idx, means = self._index_path(z_hat)
        gc = self.net.gaussian_conditional
        y_hat = gc.decompress([strings[1]], idx, dtype=torch.float64, means=means)
        y_sym = torch.round(y_hat - means) if means is not None else torch.round(y_hat)
        return {
            "y_hat": y_hat.to(self.device, torch.float32),
            "symbols_crc": symbols_crc(z_sym[0], y_sym[0]),
        }
