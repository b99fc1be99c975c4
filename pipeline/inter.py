"""Inter-frame coding of integer latents: a frame's symbols coded conditionally on the
previous frame's symbols (drift-free: the reference is integers, never decoded pixels).

A *P frame* codes each latent channel ``c`` of ``sym_t`` (``[M, h, w]`` int, the factorized
model's symbols ``round(y - medians)``) in one of these modes, chosen by the encoder from the
channel's cost in bits and signalled in the packet:

* ``INTRA`` (0): the symbols themselves, under the model's own per-channel CDF (what an I
  frame does);
* ``COPY`` (1): ``sym_t[c] == ref[c]`` everywhere; nothing else is coded;
* ``LAPLACE + k`` (2..17): the residual ``sym_t[c] - ref[c]`` under the discretized Laplacian
  table ``k`` (:data:`LAPLACE_RATIOS`).

Everything goes into ONE rANS stream (CompressAI's coder, 16-bit CDFs): first the ``M``
modes (uniform over the 18 modes), then every symbol of every non-COPY channel in
channel-major, row-major order. Symbols outside a table's range are escaped by the coder
(Elias-gamma-like bypass bits), so any integer decodes.

The Laplacian tables are built from integers only (:func:`laplace_cdf`): ``w_0 = 2^32``,
``w_{j+1} = (w_j * ratio_k) >> 16`` for ``|r| = j``, the pmf ``w_|r| / sum(w)`` over
``r = -L..L`` plus an escape mass, quantized with CompressAI's ``pmf_to_quantized_cdf``
(basic IEEE arithmetic only). The tables are part of the format (docs/bitstream.md).

Mode choice: per channel, the mode of fewest estimated bits (fixed-point table look-ups
summed in integers, so the choice never depends on floating-point summation order). The
frame-level choice between I and P is made by the caller on the actual bytes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.errors import BitstreamError

__all__ = [
    "COPY",
    "INTRA",
    "LAPLACE",
    "LAPLACE_RANGE",
    "LAPLACE_RATIOS",
    "MODES",
    "ChannelTables",
    "choose_modes",
    "decode_p",
    "encode_p",
    "laplace_cdf",
    "uniform_cdf",
]

INTRA = 0
COPY = 1
LAPLACE = 2
#: ``round(65536 * exp(-1 / s))`` for the scales ``s = 0.1 * 1.4^k``, k = 0..15 (0.1 .. 15.6):
#: the decay per unit of |residual| of the Laplacian tables, as 16-bit fixed point.
LAPLACE_RATIOS = (3, 52, 399, 1713, 4853, 10209, 17366, 25380, 33281, 40391, 46381, 51196,
                  54938, 57778, 59896, 61456)  # fmt: skip
#: Residuals ``-L..L`` have table entries; others are escaped.
LAPLACE_RANGE = 32
MODES = LAPLACE + len(LAPLACE_RATIOS)
PRECISION = 16
_FIXED = 1 << 16  # cost tables: bits in 1/65536 units


def _quantize(weights: Sequence[int]) -> list[int]:
    from compressai._CXX import pmf_to_quantized_cdf

    total = sum(weights)
    return list(pmf_to_quantized_cdf([w / total for w in weights], PRECISION))


@functools.cache
def laplace_cdf(k: int) -> tuple[int, ...]:
    """The 16-bit CDF of Laplacian table ``k``: ``2 * LAPLACE_RANGE + 3`` entries (``r =
    -L..L``, the escape symbol, the closing 65536); offset ``-L`` (docs/bitstream.md)."""
    ratio = LAPLACE_RATIOS[k]
    w = [1 << 32]
    for _ in range(LAPLACE_RANGE):
        w.append(max(1, (w[-1] * ratio) >> 16))
    pmf = [w[abs(r)] for r in range(-LAPLACE_RANGE, LAPLACE_RANGE + 1)]
    pmf.append(max(1, sum(pmf) >> 20))  # escape mass
    return tuple(_quantize(pmf))


@functools.cache
def uniform_cdf(n: int) -> tuple[int, ...]:
    """The 16-bit CDF of ``n`` equally likely values (plus the coder's escape entry)."""
    return tuple(_quantize([1] * n + [1]))


def _bits_table(cdf: Sequence[int], length: int) -> np.ndarray:
    """Cost in 1/65536 bit of each value ``0..length-2`` of a CDF; the last is the escape."""
    freqs = np.diff(np.asarray(cdf[:length], dtype=np.int64))
    return np.array([round(-math.log2(f / (1 << PRECISION)) * _FIXED) for f in freqs], np.int64)


@dataclass(frozen=True)
class ChannelTables:
    """The CDF tables a P frame is coded with: the model's per-channel intra CDFs
    (``intra_cdfs[c]`` of ``intra_lengths[c]`` entries, values offset by ``intra_offsets[c]``),
    then the Laplacian tables, then the mode table. Build with :meth:`from_bottleneck`."""

    intra_cdfs: tuple[tuple[int, ...], ...]
    intra_lengths: tuple[int, ...]
    intra_offsets: tuple[int, ...]

    @classmethod
    def from_bottleneck(cls, eb: object) -> ChannelTables:
        """The tables of a CompressAI ``EntropyBottleneck`` (after ``update()``)."""
        cdf = eb._quantized_cdf.tolist()  # type: ignore[attr-defined]
        lengths = [int(n) for n in eb._cdf_length.tolist()]  # type: ignore[attr-defined]
        offsets = [int(o) for o in eb._offset.tolist()]  # type: ignore[attr-defined]
        return cls(
            tuple(tuple(c[:n]) for c, n in zip(cdf, lengths, strict=True)),
            tuple(lengths),
            tuple(offsets),
        )

    @property
    def channels(self) -> int:
        """``M``: the number of latent channels (one intra CDF each)."""
        return len(self.intra_cdfs)

    @functools.cached_property
    def coder_tables(self) -> tuple[list[list[int]], list[int], list[int]]:
        """``(cdfs, lengths, offsets)`` in the coder's index order: intra channels
        ``0..M-1``, Laplacian tables ``M..M+15``, the mode table ``M+16``."""
        lap = [list(laplace_cdf(k)) for k in range(len(LAPLACE_RATIOS))]
        modes = list(uniform_cdf(MODES))
        cdfs = [list(c) for c in self.intra_cdfs] + lap + [modes]
        lengths = [*self.intra_lengths, *(len(c) for c in lap), len(modes)]
        offsets = [*self.intra_offsets, *([-LAPLACE_RANGE] * len(lap)), 0]
        return cdfs, lengths, offsets

    @functools.cached_property
    def cost_tables(self) -> list[np.ndarray]:
        """Per coder index: the cost of each in-range value, 1/65536 bit."""
        cdfs, lengths, _ = self.coder_tables
        return [_bits_table(c, n) for c, n in zip(cdfs, lengths, strict=True)]


def _cost(values: np.ndarray, table: np.ndarray, offset: int) -> int:
    """Estimated cost (1/65536 bit) of ``values`` under one table; escapes cost their escape
    symbol plus the coder's bypass bits (about 2 * bit length + 4)."""
    v = values.astype(np.int64) - offset
    inside = (v >= 0) & (v < len(table) - 1)
    cost = int(table[v[inside]].sum())
    out = v[~inside]
    if out.size:
        n = np.abs(np.where(out < 0, -2 * out - 1, 2 * (out - len(table) + 1)))
        bits = 2 * np.floor(np.log2(n + 1)).astype(np.int64) + 4
        cost += int(out.size) * int(table[-1]) + int(bits.sum()) * _FIXED
    return cost


def choose_modes(sym: np.ndarray, ref: np.ndarray, tables: ChannelTables) -> list[int]:
    """Per channel, the mode of fewest estimated bits (ties: the lower mode)."""
    m = tables.channels
    costs = tables.cost_tables
    _, _, offsets = tables.coder_tables
    modes = []
    for c in range(m):
        res = sym[c] - ref[c]
        if not res.any():
            modes.append(COPY)
            continue
        best, best_cost = INTRA, _cost(sym[c], costs[c], offsets[c])
        for k in range(len(LAPLACE_RATIOS)):
            cost = _cost(res, costs[m + k], -LAPLACE_RANGE)
            if cost < best_cost:
                best, best_cost = LAPLACE + k, cost
        modes.append(best)
    return modes


def encode_p(sym: np.ndarray, ref: np.ndarray, tables: ChannelTables) -> tuple[bytes, list[int]]:
    """Code ``sym`` (``[M, h, w]`` int) given ``ref`` (same shape, the previous frame's
    symbols); returns the rANS string and the channel modes."""
    from compressai.ans import BufferedRansEncoder

    if sym.shape != ref.shape:
        raise ValueError(f"symbols {sym.shape} and reference {ref.shape} differ in shape")
    m = tables.channels
    modes = choose_modes(sym, ref, tables)
    cdfs, lengths, offsets = tables.coder_tables
    values: list[int] = list(modes)
    indexes: list[int] = [m + len(LAPLACE_RATIOS)] * m
    for c, mode in enumerate(modes):
        if mode == COPY:
            continue
        if mode == INTRA:
            v, idx = sym[c], c
        else:
            v, idx = sym[c] - ref[c], m + mode - LAPLACE
        values += v.reshape(-1).astype(np.int64).tolist()
        indexes += [idx] * v.size
    enc = BufferedRansEncoder()
    enc.encode_with_indexes(values, indexes, cdfs, lengths, offsets)
    return enc.flush(), modes


def decode_p(
    data: bytes, ref: np.ndarray, tables: ChannelTables, where: str = "P frame"
) -> np.ndarray:
    """The symbols of a P frame (``[M, h, w]`` int64) from its rANS string and the reference.

    Raises:
        BitstreamError: a decoded mode is out of range (the packet is corrupt).
    """
    from compressai.ans import RansDecoder

    m, plane = tables.channels, ref.shape[1] * ref.shape[2]
    if ref.shape[0] != m:
        raise BitstreamError(f"{where}: reference has {ref.shape[0]} channels, the model {m}")
    cdfs, lengths, offsets = tables.coder_tables
    dec = RansDecoder()
    dec.set_stream(data)
    modes = dec.decode_stream([m + len(LAPLACE_RATIOS)] * m, cdfs, lengths, offsets)
    if any(not 0 <= mode < MODES for mode in modes):
        raise BitstreamError(f"{where}: channel modes out of range", hint="the stream is corrupt")
    coded = [c for c, mode in enumerate(modes) if mode != COPY]
    indexes: list[int] = []
    for c in coded:
        indexes += [c if modes[c] == INTRA else m + modes[c] - LAPLACE] * plane
    values = (
        np.asarray(dec.decode_stream(indexes, cdfs, lengths, offsets), np.int64)
        if indexes
        else np.zeros(0, np.int64)
    )
    out = ref.astype(np.int64).copy()
    for j, c in enumerate(coded):
        v = values[j * plane : (j + 1) * plane].reshape(ref.shape[1:])
        out[c] = v if modes[c] == INTRA else ref[c] + v
    return out
