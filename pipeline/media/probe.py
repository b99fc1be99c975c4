"""Probing a source, and the checks on a frame range and frame size.

:func:`probe` demuxes every packet of the video stream (no decoding) to record the exact
frame count, the per-frame presentation timestamps and the keyframes. The video stream is
the first one that is not an attached picture (cover art); audio, subtitle and data
streams are ignored. One packet is one frame (VP8 invisible alt-ref packets and packets
the demuxer marks as discarded are skipped). Demuxing is cheap, but it does read the whole
file once (over S3: downloads it).

Containers without presentation timestamps (AVI, raw H.264/HEVC/MPEG-4 streams) are
numbered in decode order, timed by their decode timestamps when those increase (AVI: frame
numbers), else by the frame rate. Still images are one-frame sources with
``is_still=True`` and ``frame_rate=1``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.container

from pipeline.errors import ConfigError, CorruptSourceError, EmptySourceError, FrameTooLargeError
from pipeline.media.colour import ColorInfo, color_info, pix_format, plan_for
from pipeline.media.source import (
    Source,
    error_reason,
    open_container,
    open_source,
    select_video_stream,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "VideoInfo",
    "check_limit",
    "check_range",
    "has_real_pts",
    "probe",
]

#: Default limit on width * height of a decoded frame (~8K); raise it with ``--max-pixels``.
DEFAULT_MAX_PIXELS = 8192 * 4352

_IMAGE_FORMATS = {"image2", "gif", "apng", "webp"}
# Demuxers without real presentation timestamps (FFmpeg guesses them, wrongly once frames
# are reordered): frames are numbered in decode order and ranges are decoded from frame 0.
_NO_PTS_FORMATS = {
    "avi", "h264", "hevc", "vvc", "m4v", "mpegvideo", "cavsvideo", "vc1", "dirac", "avs2",
    "avs3", "mjpeg", "obu", "h261", "h263",
}  # fmt: skip


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` found out about a source (see the module docstring).

    ``width``/``height`` in pixels; ``frame_rate`` in frames per second; ``time_base`` in
    seconds per ``pts`` tick; ``pts`` holds one presentation timestamp per frame in
    presentation order and ``keyframes`` the indices of the frames a decoder can start at
    (always including 0).
    """

    source: str
    width: int
    height: int
    frame_rate: Fraction
    time_base: Fraction
    frame_count: int
    pix_fmt: str
    color: ColorInfo
    is_still: bool
    keyframes: tuple[int, ...]
    pts: tuple[int, ...]

    @property
    def duration(self) -> Fraction:
        """Nominal duration in seconds (``frame_count / frame_rate``)."""
        return Fraction(self.frame_count) / self.frame_rate

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (rationals as ``"num/den"`` strings)."""
        return {
            "source": self.source,
            "width": self.width,
            "height": self.height,
            "frame_rate": str(self.frame_rate),
            "time_base": str(self.time_base),
            "frame_count": self.frame_count,
            "pix_fmt": self.pix_fmt,
            "color": self.color.to_dict(),
            "is_still": self.is_still,
            "keyframes": list(self.keyframes),
            "pts": list(self.pts),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoInfo:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: a key is missing or a value is malformed.
        """
        try:
            return cls(
                source=str(d["source"]),
                width=int(d["width"]),
                height=int(d["height"]),
                frame_rate=Fraction(d["frame_rate"]),
                time_base=Fraction(d["time_base"]),
                frame_count=int(d["frame_count"]),
                pix_fmt=str(d["pix_fmt"]),
                color=ColorInfo.from_dict(d["color"]),
                is_still=bool(d["is_still"]),
                keyframes=tuple(int(k) for k in d["keyframes"]),
                pts=tuple(int(p) for p in d["pts"]),
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise ConfigError(
                f"video info is incomplete or malformed ({exc})",
                hint="pass a dict written by VideoInfo.to_dict, or probe the source again",
            ) from exc


def _is_invisible_vp8(packet: av.Packet) -> bool:
    """VP8 alt-ref frames are packets that the decoder never shows."""
    return packet.size > 0 and not (memoryview(packet)[0] >> 4) & 1


def has_real_pts(container: av.container.InputContainer) -> bool:
    """Whether the container's demuxer gives real presentation timestamps (False for AVI
    and raw elementary streams, whose frames are numbered in decode order)."""
    return not set(container.format.name.split(",")) & _NO_PTS_FORMATS


def _scan_packets(
    container: av.container.InputContainer, stream: av.VideoStream, name: str
) -> tuple[list[int | None], list[int | None], list[bool], int]:
    """Demux every packet of ``stream``: (pts, dts, keyframe flags) of its frames in decode
    order, and the number of non-empty packets demuxed (frames plus skipped packets).

    Raises:
        CorruptSourceError: demuxing fails part way (a truncated or damaged file).
    """
    stamps: list[int | None] = []
    decode_stamps: list[int | None] = []
    keys: list[bool] = []
    total = 0
    vp8 = stream.codec_context.name == "vp8"
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # flush packets (and empty AVI "drop" packets)
                continue
            total += 1
            if packet.is_discard or (vp8 and _is_invisible_vp8(packet)):
                continue
            stamps.append(packet.pts)
            decode_stamps.append(packet.dts)
            keys.append(bool(packet.is_keyframe))
    except (av.error.FFmpegError, OSError, EOFError) as exc:
        raise CorruptSourceError(
            f"{name}: reading the video packets failed after {len(stamps)} frames "
            f"({error_reason(exc)})",
            hint="the file is probably truncated or damaged; copy or export it again",
        ) from exc
    return stamps, decode_stamps, keys, total


def _frame_rate(stream: av.VideoStream, pts: Sequence[int], time_base: Fraction) -> Fraction:
    """The frame rate of ``stream`` in frames per second: its average, guessed or base rate,
    else measured from ``pts`` (ticks of ``time_base`` seconds), else 25."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    if len(pts) > 1 and pts[-1] > pts[0]:
        return (Fraction(len(pts) - 1) / ((pts[-1] - pts[0]) * time_base)).limit_denominator(
            1_001_000
        )
    return Fraction(25)


def _timestamps(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    time_base: Fraction,
    stamps: list[int | None],
    decode_stamps: list[int | None],
    keys: list[bool],
) -> tuple[list[int], list[int]]:
    """The per-frame pts in presentation order and the keyframe indices (from 0)."""
    if any(s is None for s in stamps) or not has_real_pts(container):
        # No presentation timestamps: frames are numbered in decode order, timed by the
        # decode timestamps when they increase (AVI: frame numbers), else the frame rate.
        if all(
            b is not None and (a is None or b > a)
            for a, b in zip([None, *decode_stamps[:-1]], decode_stamps, strict=True)
        ):
            pts = [int(d) for d in decode_stamps if d is not None]
        else:
            rate = _frame_rate(stream, [], time_base)
            pts = [round(i / (rate * time_base)) for i in range(len(stamps))]
        keyframes = [i for i, k in enumerate(keys) if k]
    else:
        pts = sorted(s for s in stamps if s is not None)
        keyframes = sorted(
            {bisect.bisect_left(pts, s) for s, k in zip(stamps, keys, strict=True) if k}
        )
    if not keyframes or keyframes[0] != 0:
        keyframes = [0, *keyframes] if keyframes else [0]
    return pts, keyframes


def probe(source: Source) -> VideoInfo:
    """Describe ``source`` (size, exact frame rate, timestamps, keyframes, colour).

    ``source`` is a path, a ``file://`` URI or a seekable binary file object. The whole
    file is demuxed once (not decoded).

    Raises:
        ConfigError: ``source`` is not a usable path, URI or file object.
        SourceNotFoundError: the file does not exist.
        NotVideoError: the file is not media, or has no video stream.
        CorruptSourceError: the file is truncated or damaged (cannot be opened, the frame
            size is unknown, demuxing fails, or frames listed in an MP4 index are missing).
        EmptySourceError: the file is empty, or its video stream has no frames.
        UnsupportedPixelFormatError: the pixel format or colour matrix is not supported.
        InputError: the file cannot be read, or its codec is not in this FFmpeg build.
    """
    with open_source(source) as (fh, name), open_container(fh, name) as container:
        stream = select_video_stream(container, name)
        cc = stream.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        pix_fmt = cc.pix_fmt
        if width <= 0 or height <= 0 or not pix_fmt:
            raise CorruptSourceError(
                f"{name}: the frame size or pixel format of the video stream is unknown",
                hint="the file is probably damaged; copy or export it again",
            )
        fmt = pix_format(pix_fmt, name)
        plan_for(pix_fmt, name)  # unsupported formats fail at probe, not mid-job
        color = color_info(cc, pix_fmt, fmt, height, name, cc.name)
        time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        stamps, decode_stamps, keys, total = _scan_packets(container, stream, name)
        declared = int(stream.frames or 0)
        if container.format.name.startswith("mov") and declared and total < declared:
            raise CorruptSourceError(
                f"{name}: only {total} of the {declared} video frames listed in its index "
                "are present",
                hint="the file is truncated; copy or export it again",
            )
        if not stamps:
            raise EmptySourceError(
                f"{name}: the video stream has no frames",
                hint="re-export the video; the encoder probably failed",
            )
        fmt_name = container.format.name
        is_still = len(stamps) == 1 and (fmt_name.endswith("_pipe") or fmt_name in _IMAGE_FORMATS)
        pts, keyframes = _timestamps(container, stream, time_base, stamps, decode_stamps, keys)
        frame_rate = Fraction(1) if is_still else _frame_rate(stream, pts, time_base)
        return VideoInfo(
            source=name,
            width=width,
            height=height,
            frame_rate=frame_rate,
            time_base=time_base,
            frame_count=len(pts),
            pix_fmt=pix_fmt,
            color=color,
            is_still=is_still,
            keyframes=tuple(keyframes),
            pts=tuple(pts),
        )


def check_limit(info: VideoInfo, max_pixels: int | None) -> None:
    """Check ``info``'s frame size against ``max_pixels`` (width * height; None:
    :data:`DEFAULT_MAX_PIXELS`).

    Raises:
        ConfigError: ``max_pixels`` is not a positive integer.
        FrameTooLargeError: the frames have more pixels than the limit.
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ConfigError(
            f"max_pixels must be a positive integer, got {max_pixels!r}",
            hint=f"pass --max-pixels N (default {DEFAULT_MAX_PIXELS})",
        )
    pixels = info.width * info.height
    if pixels > limit:
        raise FrameTooLargeError(
            f"{info.source}: frames are {info.width}x{info.height} ({pixels} pixels), above "
            f"the limit of {limit} pixels",
            hint=f"raise the limit with --max-pixels {pixels} (or more) if the machine has "
            "the memory, or downscale the source first",
        )


def check_range(info: VideoInfo, start: int, end: int | None) -> int:
    """Check the frame range ``[start, end)`` of ``info``'s source (``end`` None: to the
    last frame) and return the resolved ``end``.

    Raises:
        ConfigError: ``start``/``end`` is not an integer, ``start`` is negative, ``end`` is
            past the last frame, or the range is empty.
    """
    for label, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(
                f"{info.source}: frame range {label} must be an integer, got {value!r}",
                hint="pass integer frame indices",
            )
    stop = info.frame_count if end is None else end
    if start < 0:
        raise ConfigError(
            f"{info.source}: frame range start {start} is negative",
            hint="frame indices start at 0",
        )
    if stop > info.frame_count:
        raise ConfigError(
            f"{info.source}: frame range end {stop} is past the last frame "
            f"(the source has {info.frame_count} frames)",
            hint=f"use an end of at most {info.frame_count}",
        )
    if start >= stop:
        raise ConfigError(
            f"{info.source}: frame range [{start}, {stop}) is empty",
            hint="start must be smaller than end",
        )
    return stop
