"""Per-frame coding statistics: one typed record from the encoder to the stream footer, the
manifest, ``relatent info`` and the benchmarks, and one place that averages them.

Torch-free (the CLI, the cluster commit and ``info`` use it without loading a model).

Units: ``bytes`` is the frame's packet size (its bytes in the stream, packet header
included); ``bpp`` is ``8 * bytes / (width * height)`` over the *source* size (not the
padded one); ``psnr``/``psnr_y`` are in dB on 8-bit RGB / BT.601 luma
(:mod:`pipeline.metrics`); ``rd_before``/``rd_after`` are the RD cost
``bpp + lambda * MSE`` (MSE on the 0..255 scale, :func:`pipeline.metrics.rd_cost`) of the
unrefined and of the coded latents; ``iters`` are the refinement iterations the frame used
(probe iterations included); ``refine_seconds`` its share of the refinement wall time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["STREAM_FIELDS", "FrameStats", "StatsSummary", "check_floor", "summarize"]

#: The fields every stream's footer stores per frame, in this order (part of the format:
#: docs/bitstream.md). The other fields of :class:`FrameStats` stay with the encoder.
STREAM_FIELDS = (
    "index",
    "pts",
    "bytes",
    "bpp",
    "psnr",
    "psnr_y",
    "ms_ssim",
    "rd_before",
    "rd_after",
    "iters",
    "refined",
)


@dataclass(frozen=True)
class FrameStats:
    """What coding one frame measured (units in the module docstring).

    Attributes:
        index: the frame's index in the stream (0-based).
        pts: its presentation timestamp, in the stream's time base.
        bytes, bpp, psnr, psnr_y, ms_ssim, rd_before, rd_after, iters, refined: stored in
            the stream (:data:`STREAM_FIELDS`).
        refine_seconds: refinement wall time attributed to the frame (encoder side only).
        warm: the frame's refinement started warm from the previous frame's.
        frame_type: ``I`` or ``P`` (see :mod:`pipeline.inter`).
        probe_gain, allocated: the adaptive budget's probe gain and the iterations it gave
            the frame (``None`` without a budget).
        lmbda, rate_point: what rate control (``--target-psnr``, ``--target-msssim``) chose
            for the frame's GOP (``None`` without a target; the GOP's intra frame is refined
            at ``ip_ratio ** 2`` times it); stored in the stream.
    """

    index: int
    pts: int
    bytes: int
    bpp: float
    psnr: float
    psnr_y: float
    ms_ssim: float
    rd_before: float
    rd_after: float
    iters: int
    refined: bool
    refine_seconds: float = 0.0
    warm: bool = False
    probe_gain: float | None = None
    allocated: int | None = None
    #: ``I`` (intra) or ``P`` (coded against the previous frame's latents, format version 3).
    frame_type: str = "I"
    #: The lambda the frame was refined and chosen with, when rate control chose it
    #: (``--target-psnr``...; None: the stream's lambda, as in the header).
    lmbda: float | None = None
    #: The rate point (shipped quality index, or a midpoint ``q + 0.5``) that coded the frame,
    #: when rate control chose it (None: the header's ``quality``).
    rate_point: int | float | None = None

    def to_stream(self) -> dict[str, Any]:
        """The footer's record of the frame: :data:`STREAM_FIELDS`, in order, then
        ``"type": "P"`` for a P frame (absent means ``I``, so all-intra footers are those of
        format version 2), then ``"lambda"`` and ``"rate_point"`` when rate control chose
        them (absent otherwise, so footers of fixed-quality streams are unchanged)."""
        record = {k: getattr(self, k) for k in STREAM_FIELDS}
        if self.frame_type != "I":
            record["type"] = self.frame_type
        if self.lmbda is not None:
            record["lambda"] = self.lmbda
        if self.rate_point is not None:
            record["rate_point"] = self.rate_point
        return record

    def to_dict(self) -> dict[str, Any]:
        """Every field (JSON-ready), e.g. for ``info --json`` or a benchmark record."""
        return asdict(self)

    @classmethod
    def from_stream(cls, record: Mapping[str, Any]) -> FrameStats:
        """A footer record back as stats (encoder-only fields take their defaults).

        Raises:
            KeyError, TypeError, ValueError: a field is missing or of the wrong type (the
                footer parser turns these into :class:`~pipeline.errors.BitstreamError`).
        """
        return cls(
            index=int(record["index"]),
            pts=int(record["pts"]),
            bytes=int(record["bytes"]),
            bpp=float(record["bpp"]),
            psnr=float(record["psnr"]),
            psnr_y=float(record["psnr_y"]),
            ms_ssim=float(record["ms_ssim"]),
            rd_before=float(record["rd_before"]),
            rd_after=float(record["rd_after"]),
            iters=int(record["iters"]),
            refined=bool(record["refined"]),
            frame_type=_frame_type(record.get("type", "I")),
            lmbda=float(record["lambda"]) if "lambda" in record else None,
            rate_point=_quality(record["rate_point"]) if "rate_point" in record else None,
        )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """All field names, in declaration order."""
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class StatsSummary:
    """Totals and per-frame means of a sequence of :class:`FrameStats`.

    ``bytes`` is the sum of the frames' packet bytes (not the file size: the header, the
    carried streams and the footer are not in it); ``bpp``, ``psnr``, ``psnr_y``,
    ``ms_ssim``, ``rd_before``, ``rd_after`` and ``iters_per_frame`` are unweighted means
    over frames (0.0 for no frames); ``refined`` counts refined frames, ``iters`` sums
    iterations, ``refine_seconds`` sums refinement time."""

    frames: int
    bytes: int
    bpp: float
    psnr: float
    psnr_y: float
    ms_ssim: float
    rd_before: float
    rd_after: float
    refined: int
    iters: int
    iters_per_frame: float
    refine_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The summary as a plain dict."""
        return asdict(self)


def _frame_type(value: Any) -> str:
    if value not in ("I", "P"):
        raise ValueError(f"frame type {value!r} is neither I nor P")
    return str(value)


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def summarize(stats: Sequence[FrameStats]) -> StatsSummary:
    """Totals and unweighted per-frame means of ``stats`` (see :class:`StatsSummary`)."""
    return StatsSummary(
        frames=len(stats),
        bytes=sum(s.bytes for s in stats),
        bpp=_mean([s.bpp for s in stats]),
        psnr=_mean([s.psnr for s in stats]),
        psnr_y=_mean([s.psnr_y for s in stats]),
        ms_ssim=_mean([s.ms_ssim for s in stats]),
        rd_before=_mean([s.rd_before for s in stats]),
        rd_after=_mean([s.rd_after for s in stats]),
        refined=sum(bool(s.refined) for s in stats),
        iters=sum(s.iters for s in stats),
        iters_per_frame=_mean([s.iters for s in stats]),
        refine_seconds=float(sum(s.refine_seconds for s in stats)),
    )


def check_floor(
    stats: Sequence[FrameStats],
    min_psnr: float | None,
    strict: bool,
    name: str,
    warn: Callable[[str], None] | None = None,
) -> list[int]:
    """The indices of the frames whose RGB PSNR is below ``min_psnr`` (dB; None: no floor),
    named in a ``warn``-ing.

    Raises:
        QualityFloorError: there are such frames and ``strict`` is set."""
    from pipeline.errors import QualityFloorError

    if min_psnr is None:
        return []
    low = [s for s in stats if s.psnr < min_psnr]
    if not low:
        return []
    worst = min(low, key=lambda s: s.psnr)
    shown = ", ".join(str(s.index) for s in low[:8]) + (" ..." if len(low) > 8 else "")
    msg = (
        f"{name}: {len(low)} of {len(stats)} frames are below --min-psnr {min_psnr:g} dB "
        f"(frames {shown}; the lowest, frame {worst.index}, {worst.psnr:.2f} dB)"
    )
    if strict:
        raise QualityFloorError(
            msg + "; --strict: nothing was written",
            hint="raise the quality (--target-psnr, --quality) or lower --min-psnr",
        )
    if warn is not None:
        warn(msg)
    return [s.index for s in low]


def _quality(v: Any) -> int | float:
    """A footer's ``rate_point``: an int, or a half step (a midpoint rate point)."""
    from pipeline.models import quality_value

    if not (2 * float(v)).is_integer():
        raise ValueError(f"rate point {v!r} is not an integer or a half step")
    return quality_value(v)
