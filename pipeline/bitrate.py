"""``--target-kbps``: sharing a bitrate out among a video's GOPs (docs/ratecontrol.md).

A target bitrate is shared out before any GOP is coded, from a first pass that codes every
GOP unrefined at every rate point (:meth:`pipeline.ratecontrol.RateController.first_pass`):
one lambda for the whole video at which the GOPs' predicted bytes add up to the bitrate's
(equal RD slope), so bits go where they buy the most quality. Every GOP's budget is a
function of the whole video's first-pass bytes, which depend on each GOP's own frames only:
``relatent encode`` and the distributed driver (:mod:`cluster.bitrate`) call the same
:func:`bitrate_budgets`, and the budgets do not depend on the shard layout.

Pure arithmetic: importing this module loads neither torch nor ray.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from pipeline import metrics
from pipeline.errors import ConfigError, TargetUnreachableError

if TYPE_CHECKING:
    from pipeline.ratecontrol import RateController

__all__ = [
    "BYTES_SLOPE_DB",
    "allocate_bytes",
    "bitrate_budgets",
    "first_pass_rows",
    "kbps_bytes",
    "plan_bitrate",
]

#: Bytes (dB) per unit of ``ln lambda`` (carphone, q3, SGA 2e-2: 1.4 from 0.5x to 1x).
BYTES_SLOPE_DB = 1.4


def bitrate_budgets(
    first_bytes: Mapping[int, Sequence[int]],
    log_lmbdas: Sequence[float],
    kbps: float,
    frame_rate: float,
    frames: int,
    name: str = "video",
) -> dict[int, int]:
    """``--target-kbps K``: each GOP's byte budget (GOP number -> bytes): ``kbps`` over the
    ``frames`` frames' duration at ``frame_rate`` frames/s, shared by :func:`allocate_bytes`
    (GOP order) from the whole video's first pass ``first_bytes`` (GOP number -> bytes per
    slot: :func:`first_pass_rows`) and the slots' ``ln lambda``. ``encode``
    (:func:`plan_bitrate`) and the distributed path's driver share the bits out with it.

    Raises:
        TargetUnreachableError: the bitrate is above what the best rate point spends at
            twice its lambda, or below what the lowest spends at a quarter of its own
            (estimated from the first pass: 1.3x the top's unrefined bytes, 0.45x the
            lowest's); ``name`` names the video in the message."""
    frame_bytes = kbps_bytes(kbps, frame_rate)
    if frame_bytes is None:
        raise ConfigError(f"{name}: a bitrate needs the video's frame rate")
    numbers = sorted(first_bytes)
    table = [first_bytes[n] for n in numbers]
    total = frame_bytes * frames
    top, bottom = sum(r[-1] for r in table), sum(r[0] for r in table)
    if total > 1.3 * top or total < 0.45 * bottom:
        per_s = kbps / frame_bytes  # kb/s of one byte per frame
        raise TargetUnreachableError(
            f"{name}: --target-kbps {kbps:g} is outside what the rate points can spend on "
            f"this video (about {0.45 * bottom / frames * per_s:.0f}..{1.3 * top / frames * per_s:.0f} kb/s)",
            hint="ask for a bitrate within that range",
        )
    budgets = allocate_bytes(table, log_lmbdas, total)
    return dict(zip(numbers, budgets, strict=True))


def kbps_bytes(kbps: float | None, frame_rate: float | None) -> float | None:
    """Bytes per frame of ``kbps`` kb/s at ``frame_rate`` frames/s (None: no bitrate)."""
    if kbps is None or not frame_rate:
        return None
    return float(kbps) * 1000.0 / 8.0 / float(frame_rate)


def allocate_bytes(
    table: Sequence[Sequence[int]], log_lmbdas: Sequence[float], total: float
) -> list[int]:
    """Share ``total`` bytes out among GOPs at equal RD slope: one lambda for the whole
    video, found by bisection in ``log lambda`` so that the GOPs' predicted bytes add up to
    ``total``; each GOP's predicted bytes at a lambda are its first-pass bytes
    (``table[gop][slot]``, unrefined, at each rate point's own lambda ``log_lmbdas``)
    interpolated linearly in ``(log lambda, log bytes)`` and extrapolated with the end
    segments. The shares are then scaled to add up to ``total`` exactly (rounded down).

    Returns:
        Each GOP's byte budget, in the order of ``table``."""
    if not table:
        return []
    xs = list(log_lmbdas)

    def predicted(row: Sequence[int], x: float) -> float:
        ys = [math.log(max(1, b)) for b in row]
        if len(xs) == 1:
            return math.exp(ys[0] + (x - xs[0]) * BYTES_SLOPE_DB * math.log(10) / 10)
        i = (
            0
            if x <= xs[0]
            else len(xs) - 2
            if x >= xs[-1]
            else max(j for j in range(len(xs) - 1) if xs[j] <= x)
        )
        t = (x - xs[i]) / (xs[i + 1] - xs[i])
        return math.exp(ys[i] + t * (ys[i + 1] - ys[i]))

    lo, hi = xs[0] - 6.0, xs[-1] + 6.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if sum(predicted(r, mid) for r in table) > total:
            hi = mid
        else:
            lo = mid
    shares = [predicted(r, (lo + hi) / 2) for r in table]
    scale = total / sum(shares)
    return [int(v * scale) for v in shares]


def plan_bitrate(
    rc: RateController,
    frames: Iterable[tuple[np.ndarray, int, int]],
    batch: int,
    name: str = "video",
) -> list[int]:
    """``--target-kbps``: run the first pass over every frame of the video (``(rgb, index,
    pts)`` in coding order, indices from 0 at the span's start; :func:`first_pass_rows`)
    and set ``rc.first_bytes`` and ``rc.budgets`` (:func:`bitrate_budgets`). Returns the
    budgets in GOP order. Nothing is written.

    Raises:
        TargetUnreachableError: as :func:`bitrate_budgets`."""
    if rc.frame_bytes is None:
        raise ConfigError("plan_bitrate needs a --target-kbps rate controller")
    rows, count = first_pass_rows(rc, frames, batch)
    rc.first_bytes.update(rows)
    args = (rc.log_lmbdas, rc.target, rc.frame_rate or 0.0, count, name)
    rc.budgets = bitrate_budgets(rc.first_bytes, *args)
    return [rc.budgets[n] for n in sorted(rc.budgets)]


def first_pass_rows(
    rc: RateController, frames: Iterable[tuple[np.ndarray, int, int]], batch: int
) -> tuple[dict[int, list[int]], int]:
    """:meth:`RateController.first_pass` over ``frames`` (``(rgb, index, pts)``, whole GOPs
    in coding order), ``batch`` GOPs at a time. Returns each GOP's bytes at each rate point
    (GOP number ``index // refine.grid`` -> ``[slot]``) and the number of frames. A GOP's
    row depends on its own frames only (not on the batch or the other frames)."""
    grid = rc.refine.grid
    rows: dict[int, list[int]] = {}
    buf: list[tuple[np.ndarray, int, int]] = []
    count = 0

    def flush() -> None:
        out = rc.first_pass([b[0] for b in buf], [b[1] for b in buf], [b[2] for b in buf], batch)
        numbers = sorted({b[1] // grid for b in buf})
        rows.update(zip(numbers, out, strict=True))

    for rgb, idx, pts in frames:
        if buf and idx // grid != buf[-1][1] // grid and len({b[1] // grid for b in buf}) >= batch:
            flush()
            buf = []
        buf.append((rgb if rgb.dtype == np.uint8 else metrics.to_uint8(rgb), int(idx), int(pts)))
        count += 1
    if buf:
        flush()
    return rows, count
