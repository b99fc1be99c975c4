"""Decoding a frame range of a source to float RGB.

:func:`read_frames` decodes ``[start, end)`` without decoding from the beginning: it seeks
to the keyframe at or before ``start`` and identifies decoded frames by their timestamps,
so the frame indices are exact. When the timestamps cannot identify the frames (missing or
duplicated timestamps) or a seek lands after ``start``, it falls back to an earlier
keyframe and finally to decoding from the first frame, counting. Containers without
presentation timestamps (AVI, raw H.264/HEVC/MPEG-4 streams) are numbered in decode order
(AVI: by their frame numbers) and always decoded from frame 0. The stream decoded is the one
the probe chose (:attr:`~pipeline.media.probe.VideoInfo.stream_index`). Fewer frames than
requested, decoder errors and frames the decoder flags as damaged raise
:class:`~pipeline.errors.CorruptSourceError`. The conversion to RGB is
:func:`pipeline.media.colour.frame_to_rgb`.
"""

from __future__ import annotations

import bisect
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import av
import av.container
import numpy as np

from pipeline.errors import CorruptSourceError, InputError
from pipeline.media.colour import ConversionPlan, frame_to_rgb, is_jpeg_style, plan_for
from pipeline.media.probe import VideoInfo, check_limit, check_range, has_real_pts, probe
from pipeline.media.source import (
    Source,
    error_reason,
    open_container,
    open_source,
    select_video_stream,
    source_name,
)

__all__ = ["Frame", "RangeDecoder", "read_frames"]


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame: ``rgb`` is float32 HxWx3 in [0, 1], C-contiguous; ``index`` is its
    position in presentation order (from 0) and ``pts`` its timestamp (``VideoInfo.pts``)."""

    index: int
    pts: int
    rgb: np.ndarray


class RangeDecoder:
    """State shared by the decode loops of one :func:`read_frames` call: decoding
    ``[start, end)`` of the source ``info`` describes (``name``: for messages)."""

    def __init__(self, info: VideoInfo, name: str, start: int, end: int) -> None:
        self.info = info
        self.name = name
        self.start = start
        self.end = end
        self.plans: dict[str, ConversionPlan] = {}
        self.jpeg_siting = is_jpeg_style(info.pix_fmt, "")
        self.last = -1  # index of the last frame decoded, for messages
        self.index_of: dict[int, int] | None = None
        if len(set(info.pts)) == len(info.pts):
            self.index_of = {p: i for i, p in enumerate(info.pts)}

    def corrupt(self, what: str) -> CorruptSourceError:
        """The error to raise when the source turns out damaged (``what`` says how)."""
        return CorruptSourceError(
            f"{self.name}: {what}",
            hint="the file is truncated or damaged; copy or export it again, or re-encode it",
        )

    def frames(
        self, container: av.container.InputContainer, stream: av.VideoStream, seek: int | None
    ) -> Iterator[av.VideoFrame]:
        """The decoded frames of ``stream``, after seeking back to the keyframe at or before
        timestamp ``seek`` (None: from where the container is).

        Raises:
            CorruptSourceError: the seek or the decoder fails.
        """
        if seek is not None:
            try:
                container.seek(seek, stream=stream, backward=True, any_frame=False)
            except (av.error.FFmpegError, OSError) as exc:
                raise self.corrupt(
                    f"seeking to timestamp {seek} failed ({error_reason(exc)})"
                ) from exc
            stream.codec_context.flush_buffers()
        try:
            yield from container.decode(stream)
        except (av.error.FFmpegError, OSError, EOFError) as exc:
            where = f"after frame {self.last}" if self.last >= 0 else "at its first frame"
            raise self.corrupt(f"decoding failed {where} ({error_reason(exc)})") from exc

    def convert(self, frame: av.VideoFrame, index: int) -> Frame:
        """The decoded ``frame`` (frame ``index`` of the source) as a :class:`Frame`.

        Raises:
            CorruptSourceError: the decoder flagged the frame as damaged.
            InputError: the frame size differs from the stream's (a mid-stream change).
            UnsupportedPixelFormatError: the frame's pixel format is not supported.
        """
        info = self.info
        if frame.is_corrupt:
            raise self.corrupt(f"frame {index} is damaged (the decoder reported errors)")
        if frame.width != info.width or frame.height != info.height:
            raise InputError(
                f"{self.name}: frame {index} is {frame.width}x{frame.height} but the video "
                f"is {info.width}x{info.height} (the resolution changes mid-stream)",
                hint=f"re-encode it at one size, e.g. ffmpeg -vf scale={info.width}:{info.height}",
            )
        pix_fmt = frame.format.name
        plan = self.plans.get(pix_fmt)
        if plan is None:
            plan = self.plans[pix_fmt] = plan_for(pix_fmt, self.name)
        rgb = frame_to_rgb(frame, plan, info.color, self.jpeg_siting)
        return Frame(index=index, pts=info.pts[index], rgb=rgb)

    def after_seek(
        self, container: av.container.InputContainer, stream: av.VideoStream, keyframe: int
    ) -> Generator[Frame, None, bool]:
        """Decode [start, end) after seeking to ``keyframe``; False if the seek cannot be
        used (nothing has been yielded then).

        Raises:
            CorruptSourceError: frames are missing or undecodable after the first one.
        """
        assert self.index_of is not None
        expected = self.start
        for frame in self.frames(container, stream, self.info.pts[keyframe]):
            idx = self.index_of.get(frame.pts) if frame.pts is not None else None
            if idx is None:
                if expected == self.start:
                    return False
                raise self.corrupt(
                    f"after frame {expected - 1} the decoder returned a frame with the "
                    f"unknown timestamp {frame.pts}"
                )
            self.last = idx
            if idx < expected:
                continue
            if idx > expected:
                if expected == self.start:
                    return False
                raise self.corrupt(f"frames {expected} to {idx - 1} could not be decoded")
            yield self.convert(frame, idx)
            expected += 1
            if expected == self.end:
                return True
        if expected == self.start:
            return False
        raise self.corrupt(
            f"decoding stopped after frame {expected - 1}; frames {expected} to "
            f"{self.end - 1} are missing"
        )

    def sequential(
        self, container: av.container.InputContainer, stream: av.VideoStream
    ) -> Iterator[Frame]:
        """Decode from the first frame, counting, and yield [start, end).

        Raises:
            CorruptSourceError: frames are missing or undecodable.
        """
        count = 0
        for frame in self.frames(container, stream, None):
            if self.index_of is not None and frame.pts is not None:
                idx = self.index_of.get(frame.pts)
                if idx is not None and idx > count:
                    raise self.corrupt(f"frames {count} to {idx - 1} could not be decoded")
                if idx is not None and idx < count:
                    continue  # a repeated timestamp: not a new frame
            self.last = count
            if count >= self.start:
                yield self.convert(frame, count)
            count += 1
            if count == self.end:
                return
        raise self.corrupt(
            f"only {count} of its {self.info.frame_count} frames could be decoded "
            f"(frames {self.start} to {self.end - 1} were requested)"
        )


def _configure(stream: av.VideoStream) -> None:
    stream.codec_context.thread_type = "AUTO"


def _decode(source: Source, info: VideoInfo, start: int, end: int) -> Iterator[Frame]:
    name = source_name(source)
    dec = RangeDecoder(info, name, start, end)
    with open_source(source) as (fh, name), open_container(fh, name) as container:
        stream = select_video_stream(container, name, info.stream_index)
        _configure(stream)
        if not has_real_pts(container):
            dec.index_of = None  # count frames in decode order
        i = bisect.bisect_right(info.keyframes, start) - 1
        candidates = [k for k in info.keyframes[max(0, i - 2) : i + 1][::-1] if k > 0]
        if dec.index_of is None or not candidates:
            yield from dec.sequential(container, stream)
            return
        for keyframe in candidates:
            done = yield from dec.after_seek(container, stream, keyframe)
            if done:
                return
    # The seeks did not land where they should: decode from the first frame instead.
    with open_source(source) as (fh, name), open_container(fh, name) as container:
        stream = select_video_stream(container, name, info.stream_index)
        _configure(stream)
        yield from dec.sequential(container, stream)


def read_frames(
    source: Source,
    start: int = 0,
    end: int | None = None,
    *,
    info: VideoInfo | None = None,
    max_pixels: int | None = None,
) -> Iterator[Frame]:
    """Decode frames ``[start, end)`` of ``source`` as float32 RGB (:class:`Frame`).

    ``info`` is :func:`~pipeline.media.probe.probe` of the same source (probed here when
    omitted; its ``color`` decides the conversion, so a corrected copy overrides wrong
    tags). ``max_pixels`` limits width * height (default
    :data:`~pipeline.media.probe.DEFAULT_MAX_PIXELS`). The range, the size limit and the
    pixel format are checked before this returns; decoding happens lazily.

    Raises:
        ConfigError: the range or ``max_pixels`` is invalid (or the source, see ``probe``).
        FrameTooLargeError: the frames are larger than ``max_pixels``.
        UnsupportedPixelFormatError: the pixel format is not supported.
        CorruptSourceError: while iterating, frames turn out missing or damaged.
        InputError: any other error :func:`~pipeline.media.probe.probe` raises, or (while
            iterating) the frame size changes mid-stream.
    """
    if info is None:
        info = probe(source)
    check_limit(info, max_pixels)
    stop = check_range(info, start, end)
    plan_for(info.pix_fmt, info.source)
    return _decode(source, info, start, stop)
