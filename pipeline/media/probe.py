"""Probing a source, and the checks on a frame range and frame size.

:func:`probe` demuxes every packet of the video stream (no decoding) to record the exact
frame count, the per-frame presentation timestamps and the keyframes. The video stream is
the one :func:`pipeline.media.source.select_video_stream` picks (``video_stream``, else the
default-flagged, then the largest); :attr:`VideoInfo.left_out` names the other video
streams. Audio, subtitle and data streams are not coded. One packet is one frame (VP8
invisible alt-ref packets and packets the demuxer marks as discarded are skipped).
Demuxing is cheap, but it does read the whole file once (over S3: downloads it).

Completeness: what a container declares is checked against what is present, and a source
that ends early raises :class:`~pipeline.errors.CorruptSourceError` (a partial upload must
not become a finished encode of the wrong length). Declared frame counts (MP4/MOV index,
AVI header) must all be present; declared durations (Matroska/WebM segment duration and
the muxer's per-stream ``DURATION`` tag, FLV ``onMetaData``, ASF file properties) must be
covered by the packets present, within :data:`DURATION_SLACK` seconds or two frames.
Formats that declare neither (MPEG-TS, raw streams, fragmented or live-written MP4/MKV)
cannot be checked and are taken as they are.

Containers without presentation timestamps (AVI, raw H.264/HEVC/MPEG-4 streams) are
numbered in decode order, timed by their decode timestamps when those increase (AVI: frame
numbers), else by the frame rate. Still images are one-frame sources with
``is_still=True`` and ``frame_rate=1``.

How the frames are displayed (rotation, sample aspect ratio, field order, the container
title: :class:`~pipeline.media.display.DisplayInfo`) is read too; the first frame is decoded
for its display matrix.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.container

from pipeline.errors import ConfigError, CorruptSourceError, EmptySourceError, FrameTooLargeError
from pipeline.media.colour import ColorInfo, color_info, pix_format, plan_for
from pipeline.media.display import DisplayInfo, display_of
from pipeline.media.source import (
    TRUNCATED_HINT,
    Source,
    describe_stream,
    error_reason,
    open_container,
    open_source,
    other_video_streams,
    select_video_stream,
    truncation_evidence,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DURATION_SLACK",
    "VideoInfo",
    "check_limit",
    "check_range",
    "has_real_pts",
    "probe",
    "warn_left_out",
]

log = logging.getLogger("relatent.media")

#: Default limit on width * height of a decoded frame (~8K); raise it with ``--max-pixels``.
DEFAULT_MAX_PIXELS = 8192 * 4352

#: Seconds a declared duration may exceed the packets present (or two frames, if longer):
#: muxers round durations (Matroska to 1 ms) and may count a last frame's display time.
DURATION_SLACK = Fraction(1, 10)

# Demuxers whose header declares the file's duration, written when the muxer finishes
# (a live-written file declares none). Estimates (MPEG-TS, raw streams) are not declarations.
_DECLARED_DURATION = {"matroska", "webm", "flv", "asf"}
# Demuxers whose index or header declares the video's frame count (``stream.frames``).
_DECLARED_FRAMES = {"mov", "mp4", "avi"}

# Packets fed to the decoder at most for the first frame (decoder delay, damaged packets).
_FIRST_FRAME_PACKETS = 64

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
    #: The coded stream's number in the container (None: unknown, e.g. an old ``to_dict``;
    #: decoding then picks the stream by the default rule).
    stream_index: int | None = None
    #: The other video streams, not coded (e.g. ``video stream #0 (h264 32x32, "preview")``).
    left_out: tuple[str, ...] = ()
    #: How the frames are displayed (rotation, sample aspect ratio, field order, title).
    display: DisplayInfo = field(default_factory=DisplayInfo)
    #: Warnings about the display (a display matrix that is not a quarter turn, ...).
    display_notes: tuple[str, ...] = ()

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
            "stream_index": self.stream_index,
            "left_out": list(self.left_out),
            "display": self.display.to_dict(),
            "display_notes": list(self.display_notes),
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
                stream_index=None if d.get("stream_index") is None else int(d["stream_index"]),
                left_out=tuple(str(x) for x in d.get("left_out", ())),
                display=DisplayInfo.from_dict(d.get("display")),
                display_notes=tuple(str(x) for x in d.get("display_notes", ())),
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


@dataclass
class _Scan:
    """What demuxing found: the video's frames (pts, dts, keyframe flags, in decode order),
    its packet counts, and where each demuxed stream's packets end (seconds)."""

    stamps: list[int | None]
    decode_stamps: list[int | None]
    keys: list[bool]
    total: int = 0  # non-empty video packets (frames plus skipped packets)
    slots: int = 0  # video packets including empty AVI "drop" packets
    ends: dict[int, Fraction] | None = None  # stream index -> end of its last packet
    first: av.VideoFrame | None = None  # the first decoded frame (its display matrix)


def _scan_packets(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    name: str,
    every_stream: bool = False,
) -> _Scan:
    """Demux every packet of ``stream`` (``every_stream``: of every stream, to see where
    each ends) and record the video's frames (see :class:`_Scan`).

    Raises:
        CorruptSourceError: demuxing fails part way (a truncated or damaged file).
    """
    scan = _Scan([], [], [], ends={})
    assert scan.ends is not None
    vp8 = stream.codec_context.name == "vp8"
    frame = 1 / Fraction(stream.average_rate or 25)
    try:
        for packet in container.demux() if every_stream else container.demux(stream):
            if packet.size == 0 and packet.pts is None and packet.dts is None:
                continue  # flush packets
            if packet.pts is not None and packet.time_base:
                tb = Fraction(packet.time_base)
                dur = (
                    packet.duration * tb
                    if packet.duration
                    else (frame if packet.stream.index == stream.index else Fraction(0))
                )
                end = packet.pts * tb + dur
                idx = packet.stream.index
                if end > scan.ends.get(idx, end - 1):
                    scan.ends[idx] = end
            if packet.stream.index != stream.index:
                continue
            scan.slots += 1
            if packet.size == 0:  # empty AVI "drop" packets
                continue
            scan.total += 1
            if packet.is_discard or (vp8 and _is_invisible_vp8(packet)):
                continue
            scan.stamps.append(packet.pts)
            scan.decode_stamps.append(packet.dts)
            scan.keys.append(bool(packet.is_keyframe))
            if scan.first is None and len(scan.stamps) <= _FIRST_FRAME_PACKETS:
                scan.first = _first_frame(stream, packet)
    except (av.error.FFmpegError, OSError, EOFError) as exc:
        raise CorruptSourceError(
            f"{name}: reading the video packets failed after {len(scan.stamps)} frames "
            f"({error_reason(exc)})",
            hint="the file is probably truncated or damaged; copy or export it again",
        ) from exc
    if scan.first is None:
        scan.first = _first_frame(stream, None)
    return scan


def _first_frame(stream: av.VideoStream, packet: av.Packet | None) -> av.VideoFrame | None:
    """The first frame decoding ``packet`` gives (None: the decoder is flushed), or None;
    a decoding error is left to the frame reader to report."""
    try:
        frames = stream.codec_context.decode(packet)
    except (av.error.FFmpegError, ValueError):
        return None
    return frames[0] if frames else None


def _seconds(x: Fraction) -> str:
    """``x`` seconds for a message: at most 3 decimals, no trailing zeros."""
    return f"{float(round(x, 3)):g}"


def _tag_duration(stream: av.stream.Stream) -> Fraction | None:
    """The duration a Matroska muxer wrote in the stream's ``DURATION`` tag
    (``HH:MM:SS.nnnnnnnnn``), or None. Language-suffixed copies (``DURATION-eng``, mkvmerge
    statistics) are not trusted: remuxing tools copy them stale."""
    for key, value in stream.metadata.items():
        if key.upper() != "DURATION":
            continue
        try:
            h, m, sec = str(value).strip().split(":")
            return int(h) * 3600 + int(m) * 60 + Fraction(sec)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def _check_complete(
    container: av.container.InputContainer, stream: av.VideoStream, name: str, scan: _Scan
) -> None:
    """Compare what ``container`` declares (frame counts, durations) with the packets
    present (see the module docstring).

    Raises:
        CorruptSourceError: the file ends before what it declares.
    """
    fmts = set(container.format.name.split(","))
    declared = int(stream.frames or 0)
    if fmts & _DECLARED_FRAMES and declared and scan.slots < declared:
        raise CorruptSourceError(
            f"{name}: only {scan.slots} of the {declared} video frames listed in its index "
            "are present (the file looks truncated)",
            hint=TRUNCATED_HINT,
        )
    ends = scan.ends or {}
    if stream.index not in ends:
        return
    frame = 1 / Fraction(stream.average_rate or 25)
    slack = max(DURATION_SLACK, 2 * frame)
    present = ends[stream.index]
    checks: list[tuple[Fraction, Fraction, str]] = []
    if fmts & _DECLARED_DURATION:
        tagged = _tag_duration(stream)
        if tagged:
            checks.append((tagged, present, "the frames present cover"))
        if container.duration and container.duration > 0:  # every stream was demuxed
            everything = max(ends.values())
            checks.append(
                (Fraction(container.duration, 1_000_000), everything, "its streams end at")
            )
    for want, got, what in checks:
        if got < want - slack:
            raise CorruptSourceError(
                f"{name}: the file ends early: {what} {_seconds(got)} s of the declared "
                f"{_seconds(want)} s ({scan.total} video frames present; the file looks truncated)",
                hint=TRUNCATED_HINT,
            )


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


def probe(source: Source, *, video_stream: int | None = None) -> VideoInfo:
    """Describe ``source`` (size, exact frame rate, timestamps, keyframes, colour).

    ``source`` is a path, a ``file://`` URI or a seekable binary file object. The whole
    file is demuxed once (not decoded). ``video_stream`` is the number of the stream to
    code (``--video-stream``; None: the default-flagged, then the largest, see
    :func:`~pipeline.media.source.select_video_stream`).

    Raises:
        ConfigError: ``source`` is not a usable path, URI or file object, or
            ``video_stream`` is not the number of one of its video streams.
        SourceNotFoundError: the file does not exist.
        NotVideoError: the file is not media, or has no video stream.
        CorruptSourceError: the file is truncated or damaged (cannot be opened, the frame
            size is unknown, demuxing fails, or it ends before the frames or duration it
            declares).
        EmptySourceError: the file is empty, or its video stream has no frames.
        UnsupportedPixelFormatError: the pixel format or colour matrix is not supported.
        InputError: the file cannot be read, or its codec is not in this FFmpeg build.
    """
    with open_source(source) as (fh, name), open_container(fh, name) as container:
        stream = select_video_stream(container, name, video_stream, fh)
        left_out = tuple(describe_stream(s) for s in other_video_streams(container, stream))
        cc = stream.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        pix_fmt = cc.pix_fmt
        if width <= 0 or height <= 0 or not pix_fmt:
            evidence = truncation_evidence(fh)
            raise CorruptSourceError(
                f"{name}: the frame size or pixel format of the video stream is unknown"
                + (f" (the file looks truncated: {evidence})" if evidence else ""),
                hint=TRUNCATED_HINT
                if evidence
                else "the file is probably damaged; copy or export it again",
            )
        fmt = pix_format(pix_fmt, name)
        plan_for(pix_fmt, name)  # unsupported formats fail at probe, not mid-job
        color = color_info(cc, pix_fmt, fmt, height, name, cc.name)
        time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        every = bool(set(container.format.name.split(",")) & _DECLARED_DURATION)
        scan = _scan_packets(container, stream, name, every_stream=every)
        _check_complete(container, stream, name, scan)
        stamps, decode_stamps, keys = scan.stamps, scan.decode_stamps, scan.keys
        if not stamps:
            raise EmptySourceError(
                f"{name}: the video stream has no frames",
                hint="re-export the video; the encoder probably failed",
            )
        display, notes = display_of(container, stream, scan.first, name)
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
            stream_index=stream.index,
            left_out=left_out,
            display=display,
            display_notes=tuple(notes),
        )


def warn_left_out(info: VideoInfo, warn: Callable[[str], None] | None = None) -> list[str]:
    """Report each video stream of ``info``'s source that is not coded, and each warning
    about its display (:attr:`VideoInfo.display_notes`), through ``warn`` (default: this
    module's logger); returns the messages."""
    msgs = [
        f"{info.source}: {other} is not coded (stream #{info.stream_index} is; choose with "
        "--video-stream N)"
        for other in info.left_out
    ] + list(info.display_notes)
    for msg in msgs:
        (warn or log.warning)(msg)
    return msgs


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
