"""Writing frames: a PNG folder, one PNG, Y4M (4:4:4) or H.264 in MP4/Matroska.

:func:`write_frames` writes a PNG folder (exact RGB), a single ``.png`` (exactly one
frame), ``.y4m`` (4:4:4) or ``.mp4``/``.mkv`` (libx264, crf 12, yuv420p, preset medium),
converting RGB to YCbCr with :func:`pipeline.media.colour.rgb_to_ycbcr`. Output appears
atomically: a hidden temporary file (or folder) next to the destination is written and
renamed on success, and removed on error. :class:`ExtraStreams` (e.g.
:class:`pipeline.media.carry.CarryMuxer`) adds other streams to video outputs.

How the frames are displayed (:class:`~pipeline.media.display.DisplayInfo`) is written where
the output can hold it: MP4/Matroska get the display matrix, the sample aspect ratio, the
field order (the frames coded interlaced) and the title, and 10-bit samples for sources above
8 bits; Y4M and PNG get the pixels rotated as ffmpeg's ``autorotate`` would, the SAR (Y4M
``A``, PNG ``pHYs``), Y4M the field order (``I``) and PNG the colour tags of HDR or
wide-gamut sources (``cICP``).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import av.container
import numpy as np

from pipeline.errors import ConfigError
from pipeline.media.colour import (
    ColorInfo,
    matrix_code,
    output_color,
    primaries_code,
    rgb_to_ycbcr,
    transfer_code,
)
from pipeline.media.display import (
    NEUTRAL_PRIMARIES,
    NEUTRAL_TRANSFERS,
    DisplayInfo,
    FieldTagger,
    field_order_code,
    orient,
    oriented_sar,
)
from pipeline.media.source import local_path, source_name

__all__ = ["HIGH_DEPTH_FORMAT", "ExtraStreams", "high_depth_supported", "write_frames"]

#: The 10-bit format written for sources above 8 bits (when libx264 supports it).
HIGH_DEPTH_FORMAT = "yuv420p10le"


def high_depth_supported() -> bool:
    """Whether this FFmpeg's libx264 encodes :data:`HIGH_DEPTH_FORMAT` (10-bit 4:2:0)."""
    try:
        formats = av.codec.Codec("libx264", "w").video_formats or ()
    except (av.error.FFmpegError, ValueError):
        return False
    return any(f.name == HIGH_DEPTH_FORMAT for f in formats)


class ExtraStreams(Protocol):
    """Streams muxed next to the video by :func:`write_frames` (``.mp4``/``.mkv``)."""

    def add_streams(self, out: av.container.OutputContainer, video: av.VideoStream) -> None:
        """Add streams, metadata and chapters to ``out`` (called once, before its header)."""

    def mux_until(self, out: av.container.OutputContainer, t: Fraction | None) -> None:
        """Mux the packets up to time ``t`` in seconds (None: all that remain)."""


def _check_frame_array(rgb: Any, index: int, dst: str, size: tuple[int, int] | None) -> None:
    if (
        not isinstance(rgb, np.ndarray)
        or rgb.dtype != np.uint8
        or rgb.ndim != 3
        or rgb.shape[2] != 3
    ):
        what = (
            f"{type(rgb).__name__} {rgb.dtype} {rgb.shape}"
            if isinstance(rgb, np.ndarray)
            else type(rgb).__name__
        )
        raise ConfigError(
            f"{dst}: frame {index} is a {what}, not a uint8 HxWx3 RGB array",
            hint="convert float RGB with np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)",
        )
    if size is not None and rgb.shape[:2] != size:
        raise ConfigError(
            f"{dst}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]} but frame 0 is "
            f"{size[1]}x{size[0]}",
            hint="all frames of one output must have the same size",
        )


def _checked_frames(frames: Iterable[np.ndarray], dst: str) -> Iterator[np.ndarray]:
    size: tuple[int, int] | None = None
    count = 0
    for count, rgb in enumerate(frames, start=1):
        _check_frame_array(rgb, count - 1, dst, size)
        size = (rgb.shape[0], rgb.shape[1])
        yield np.ascontiguousarray(rgb)
    if count == 0:
        raise ConfigError(f"{dst}: no frames to write", hint="pass at least one frame")


def _encode_png(
    rgb: np.ndarray, sar: Fraction | None = None, color: ColorInfo | None = None
) -> bytes:
    """One PNG of ``rgb``, with the SAR (``pHYs``) and, for HDR or wide-gamut ``color``,
    the primaries and transfer (``cICP``)."""
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height, cc.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
    if sar is not None:
        cc.sample_aspect_ratio = sar
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    if color is not None and (
        color.primaries not in NEUTRAL_PRIMARIES or color.transfer not in NEUTRAL_TRANSFERS
    ):
        frame.color_primaries = primaries_code(color.primaries)
        frame.color_trc = transfer_code(color.transfer)
    return b"".join(bytes(p) for p in [*cc.encode(frame), *cc.encode(None)])


def _write_png_dir(
    tmp: Path, frames: Iterator[np.ndarray], sar: Fraction | None, color: ColorInfo | None
) -> None:
    for i, rgb in enumerate(frames):
        with (tmp / f"frame_{i:06d}.png").open("wb") as fh:
            fh.write(_encode_png(rgb, sar, color))


def _write_png_file(
    tmp: Path,
    frames: Iterator[np.ndarray],
    dst: str,
    sar: Fraction | None,
    color: ColorInfo | None,
) -> None:
    items = list(frames)
    if len(items) != 1:
        raise ConfigError(
            f"{dst}: a .png file holds one frame, got {len(items)}",
            hint="write a folder of PNGs instead (a destination path without a suffix)",
        )
    with tmp.open("wb") as fh:
        fh.write(_encode_png(items[0], sar, color))


def _y4m_tags(display: DisplayInfo | None) -> str:
    """The Y4M interlacing and aspect parameters (``Ip A1:1`` by default) of oriented frames."""
    d = display or DisplayInfo()
    woven = d.interlaced and not (d.quarter_turn and d.matrix is None)
    field = ("t" if d.top_first else "b") if woven else "p"
    sar = oriented_sar(display) or Fraction(1)
    return f"I{field} A{sar.numerator}:{sar.denominator}"


def _write_y4m(
    tmp: Path,
    frames: Iterator[np.ndarray],
    frame_rate: Fraction,
    color: ColorInfo | None,
    display: DisplayInfo | None = None,
) -> None:
    with tmp.open("wb") as fh:
        for i, rgb in enumerate(frames):
            h, w = rgb.shape[:2]
            matrix, rng, bits = output_color(color, h)
            if i == 0:
                chroma = "C444" if bits == 8 else f"C444p{bits}"
                fh.write(
                    f"YUV4MPEG2 W{w} H{h} F{frame_rate.numerator}:{frame_rate.denominator} "
                    f"{_y4m_tags(display)} {chroma} XCOLORRANGE={rng.upper()}\n".encode("ascii")
                )
            planes = rgb_to_ycbcr(rgb, matrix, rng, bits, subsample=False)
            fh.write(b"FRAME\n")
            for plane in planes:
                fh.write(plane.astype("<u2" if bits > 8 else np.uint8).tobytes())


def _add_video_stream(
    out: av.container.OutputContainer,
    w: int,
    h: int,
    frame_rate: Fraction,
    time_base: Fraction,
    color: ColorInfo | None,
    dst: str,
    display: DisplayInfo | None = None,
) -> tuple[av.VideoStream, str, str, int]:
    """The libx264 4:2:0 stream for ``w`` x ``h`` frames, tagged with ``color`` and
    ``display`` (SAR, field order: coded interlaced); and the matrix, range and bit depth
    (10 for sources above 8 bits when libx264 can, else 8) its frames are converted with."""
    if h % 2 or w % 2:
        raise ConfigError(
            f"{dst}: {w}x{h} cannot be encoded as 4:2:0 video (odd size)",
            hint="pad or crop to an even size, or write .y4m or PNG instead",
        )
    matrix, rng, bits = output_color(color, h)
    bits = 10 if bits > 8 and high_depth_supported() else 8
    stream = out.add_stream("libx264", rate=frame_rate)
    stream.width, stream.height = w, h
    stream.pix_fmt = HIGH_DEPTH_FORMAT if bits > 8 else "yuv420p"
    stream.time_base = time_base
    cc = stream.codec_context
    cc.time_base = time_base
    cc.colorspace = matrix_code(matrix)
    cc.color_range = 2 if rng == "full" else 1
    if color is not None:
        cc.color_primaries = primaries_code(color.primaries)
        cc.color_trc = transfer_code(color.transfer)
    options = {"crf": "12", "preset": "medium"}
    if display is not None and display.sar is not None:
        cc.sample_aspect_ratio = display.sar
    if display is not None and display.interlaced:
        cc.field_order = field_order_code(display.field_order)
        options["x264-params"] = "tff=1" if display.top_first else "bff=1"
    stream.options = options
    return stream, matrix, rng, bits


def _set_display(
    out: av.container.OutputContainer, stream: av.VideoStream, display: DisplayInfo | None
) -> None:
    """Write ``display``'s display matrix and title to ``out`` (before its header)."""
    if display is None:
        return
    if display.matrix is not None:
        stream.set_display_matrix(list(display.matrix))
    elif display.rotation or display.hflip:
        stream.set_display_rotation(display.rotation, hflip=display.hflip)
    if display.title and "title" not in out.metadata:
        out.metadata["title"] = display.title


def _frame_pts(
    i: int,
    pts: Sequence[int] | None,
    last_pts: int | None,
    frame_rate: Fraction,
    time_base: Fraction,
    dst: str,
) -> int:
    """The timestamp of frame ``i``: ``pts[i]``, or a constant rate when ``pts`` is None."""
    if pts is None:
        t = round(i / (frame_rate * time_base))
    elif i < len(pts):
        t = int(pts[i])
    else:
        raise ConfigError(
            f"{dst}: more frames than timestamps ({len(pts)} pts given)",
            hint="pass one pts per frame, or pts=None for a constant frame rate",
        )
    if last_pts is not None and t <= last_pts:
        raise ConfigError(
            f"{dst}: pts must increase, but frame {i} has {t} after {last_pts}",
            hint="pass the source's pts (VideoInfo.pts) in presentation order",
        )
    return t


def _write_video(
    tmp: Path,
    container_format: str,
    frames: Iterator[np.ndarray],
    frame_rate: Fraction,
    time_base: Fraction,
    pts: Sequence[int] | None,
    color: ColorInfo | None,
    dst: str,
    extra: ExtraStreams | None = None,
    display: DisplayInfo | None = None,
) -> None:
    options = {}
    if container_format == "mp4" and time_base.numerator == 1:
        # Keep the time base exactly (the muxer would otherwise pick its own timescale), and
        # use it for the edit list too, so a start offset is not rounded to milliseconds.
        options["video_track_timescale"] = str(time_base.denominator)
        options["movie_timescale"] = str(time_base.denominator)
    with av.open(str(tmp), mode="w", format=container_format, container_options=options) as out:
        stream: av.VideoStream | None = None
        tagger: FieldTagger | None = None
        last_pts: int | None = None
        count = 0
        for i, rgb in enumerate(frames):
            count = i + 1
            h, w = rgb.shape[:2]
            if stream is None:
                stream, matrix, rng, bits = _add_video_stream(
                    out, w, h, frame_rate, time_base, color, dst, display
                )
                cc = stream.codec_context
                if extra is not None:
                    extra.add_streams(out, stream)
                _set_display(out, stream, display)  # after the carried tags: the header wins
                if display is not None and display.interlaced:
                    tagger = FieldTagger(w, h, stream.pix_fmt, time_base, display.top_first)
            t = last_pts = _frame_pts(i, pts, last_pts, frame_rate, time_base, dst)
            y, cb, cr = rgb_to_ycbcr(rgb, matrix, rng, bits, subsample=True)
            packed = np.concatenate([y.ravel(), cb.ravel(), cr.ravel()]).reshape(h * 3 // 2, w)
            frame = av.VideoFrame.from_ndarray(packed, format=stream.pix_fmt)
            frame.pts = t
            frame.time_base = time_base
            frame.colorspace = cc.colorspace
            frame.color_range = cc.color_range
            if tagger is not None:
                frame = tagger(frame)
            if extra is not None:
                extra.mux_until(out, t * time_base)
            for packet in stream.encode(frame):
                out.mux(packet)
        if pts is not None and count != len(pts):
            raise ConfigError(
                f"{dst}: {count} frames but {len(pts)} pts",
                hint="pass one pts per frame, or pts=None for a constant frame rate",
            )
        if stream is not None:
            for packet in stream.encode(None):
                out.mux(packet)
            if extra is not None:
                extra.mux_until(out, None)


def _temp_path(path: Path, suffix: str) -> Path:
    """A hidden, unused name next to ``path`` (created by the writer, so with the usual
    permissions, unlike mkstemp's 0600)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}")


def _is_png_output_dir(path: Path) -> bool:
    return all(
        p.is_file() and p.name.startswith("frame_") and p.suffix == ".png" for p in path.iterdir()
    )


def _write_png_folder(
    path: Path,
    checked: Iterator[np.ndarray],
    name: str,
    sar: Fraction | None = None,
    color: ColorInfo | None = None,
) -> None:
    """Write ``checked`` as a folder of PNGs at ``path``, replacing a previous PNG folder."""
    if path.exists() and not (path.is_dir() and _is_png_output_dir(path)):
        raise ConfigError(
            f"{name}: exists and is not a folder of frame_*.png files",
            hint="choose a new destination or remove the existing one",
        )
    tmp_dir = _temp_path(path, "")
    tmp_dir.mkdir()
    try:
        _write_png_dir(tmp_dir, checked, sar, color)
        if path.exists():
            old = _temp_path(path, ".old")
            path.rename(old)
            try:
                tmp_dir.rename(path)
            except BaseException:
                old.rename(path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp_dir.rename(path)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def write_frames(
    dst: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    *,
    frame_rate: Fraction,
    time_base: Fraction | None = None,
    pts: Sequence[int] | None = None,
    color: ColorInfo | None = None,
    extra: ExtraStreams | None = None,
    display: DisplayInfo | None = None,
) -> None:
    """Write uint8 HxWx3 RGB ``frames`` to ``dst``; the kind of output follows ``dst``.

    * an existing directory or a path without a suffix: a folder of ``frame_000000.png``,
      ... (exact RGB). An existing folder is replaced only if it holds nothing but
      ``frame_*.png`` files.
    * ``.png``: one PNG (exactly one frame).
    * ``.y4m``: 4:4:4 YUV at 8 bits (10 if ``color.bit_depth`` > 8), converted from RGB
      with ``color``'s matrix and range (BT.601/BT.709 by height and limited range when
      ``color`` is None or RGB). It reproduces the source decoder's YUV up to rounding.
      Y4M stores the range but not the matrix: readers assume the height default, so read
      a non-default matrix back with ``read_frames(..., info=replace(probe(dst),
      color=color))``. Y4M has no timestamps (constant ``frame_rate``).
    * ``.mp4`` / ``.mkv``: H.264 (libx264, crf 12, preset medium, yuv420p, even sizes only)
      with ``color``'s matrix/range/primaries/transfer tagged, the stream time base set to
      ``time_base`` and each frame's ``pts`` kept (Matroska rounds them to milliseconds);
      10-bit (``yuv420p10le``) when ``color.bit_depth`` > 8 and libx264 supports it.

    ``display`` (:class:`~pipeline.media.display.DisplayInfo`) says how the frames are
    displayed: ``.mp4``/``.mkv`` get its display matrix, SAR, field order (coded interlaced)
    and title; ``.y4m`` and PNG frames are rotated/mirrored to how they display
    (:func:`~pipeline.media.display.orient`; a free matrix is not applied) and get the SAR,
    ``.y4m`` the field order (``It``/``Ib``; not for quarter-turned frames).
    :func:`~pipeline.media.display.output_notes` lists what an output cannot hold.

    ``frame_rate`` is in frames per second; ``time_base`` (seconds per ``pts`` tick)
    defaults to ``1 / frame_rate``; ``pts`` (one per frame, increasing) defaults to a
    constant rate. ``extra`` adds other streams to ``.mp4``/``.mkv`` outputs
    (:class:`ExtraStreams`, e.g. :class:`pipeline.media.carry.CarryMuxer`; the other
    outputs are video-only and ignore it). The output appears atomically.

    Raises:
        ConfigError: ``dst`` is a non-file URI, its folder does not exist, its suffix is
            not writable, or it is an existing folder with other content; the rate, time
            base or pts are invalid; a frame is not uint8 HxWx3 or differs in size from
            frame 0; there are no frames, or not exactly one for ``.png``; a video output
            has an odd size.
    """
    name = source_name(dst)
    if isinstance(dst, str) and "://" in dst and not dst.startswith("file://"):
        raise ConfigError(
            f"{name}: cannot write to a {dst.split('://', 1)[0]}:// URI directly",
            hint="write to a local file and upload it with pipeline.storage",
        )
    path = local_path(dst, name)
    rate = Fraction(frame_rate)
    if isinstance(frame_rate, float):
        rate = rate.limit_denominator(1_001_000)  # 29.97 -> 2997/100, not a binary fraction
    if rate <= 0:
        raise ConfigError(f"{name}: frame rate {frame_rate} is not positive", hint="pass e.g. 25")
    tb = Fraction(time_base) if time_base is not None else 1 / rate
    if tb <= 0:
        raise ConfigError(
            f"{name}: time base {time_base} is not positive", hint="pass e.g. 1/90000"
        )
    suffix = path.suffix.lower()
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"{name}: the folder {parent} does not exist", hint="create it first")
    checked = _checked_frames(frames, name)
    oriented = (orient(rgb, display) for rgb in checked)  # for outputs without a matrix
    sar = oriented_sar(display)

    if path.is_dir() or not suffix:
        _write_png_folder(path, oriented, name, sar, color)
        return

    writers: dict[str, Callable[[Path], None]] = {
        ".png": lambda tmp: _write_png_file(tmp, oriented, name, sar, color),
        ".y4m": lambda tmp: _write_y4m(tmp, oriented, rate, color, display),
        ".mp4": lambda tmp: _write_video(
            tmp, "mp4", checked, rate, tb, pts, color, name, extra, display
        ),
        ".mkv": lambda tmp: _write_video(
            tmp, "matroska", checked, rate, tb, pts, color, name, extra, display
        ),
    }
    writer = writers.get(suffix)
    if writer is None:
        raise ConfigError(
            f"{name}: cannot write {suffix} files",
            hint="use .mp4, .mkv, .y4m, .png, or a folder (a path without a suffix) for PNGs",
        )
    tmp = _temp_path(path, suffix)
    try:
        writer(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
