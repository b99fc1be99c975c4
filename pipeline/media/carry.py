"""Carry a source's non-video streams through a transcode, untouched.

relatent re-codes the frames of one video stream; everything else in the title (audio
tracks, subtitles, attachments such as fonts, data streams, chapters, stream and container
metadata) is *carried*: copied packet for packet, never re-encoded, and muxed back next to
the decoded video by ``relatent decode in.rlv out.mkv|out.mp4``.

Extraction (:func:`extract_carry`, once per video)
    The carried streams are remuxed (stream copy) into one in-memory file, the *blob*:
    Matroska, or QuickTime/MOV for MP4/MOV sources (it keeps their exact time bases and
    holds their ``mov_text`` subtitles, which Matroska cannot); whichever of the two holds
    more of the carried streams wins (Matroska holds nearly every audio and subtitle codec,
    and attachments). A stream that the
    blob format cannot hold (e.g. an MP4 ``tmcd`` timecode data track) is skipped with a
    warning and recorded in :attr:`CarryInfo.dropped`. Everything a user may want to know
    without opening the blob goes into :class:`CarryInfo` (stored as JSON next to the
    blob): per-stream type, codec, language, title, disposition, first timestamp,
    duration, bytes and packet count; the chapters (exact rationals); the container
    metadata; the coded video stream's language, title, disposition and rotation.

    Audio streams are *verified*: every packet is decoded (decoding audio is cheap next to
    coding video), so a corrupt track is found before any frame is coded. A corrupt track
    raises :class:`~pipeline.errors.CorruptSourceError` naming the stream (index, codec,
    language) and the timestamp, or, with ``drop_broken=True``, is left out with a warning
    and recorded in :attr:`CarryInfo.dropped` (``kind="broken"``).

Timestamps
    Packets keep the source's timestamps (no shift, no re-basing to zero): the video packets
    of an .rlv keep the source's pts too, so audio and video stay in sync, including start
    offsets (an audio track that starts late) and negative priming timestamps (AAC encoder
    delay). A MOV blob keeps the source's time bases exactly; a Matroska blob stores
    milliseconds, like a Matroska source, so a timestamp moves by at most 0.5 ms (far below
    one frame) only when a non-Matroska source had to go into a Matroska blob.

Frame ranges
    When only frames ``[start, end)`` are coded (``relatent encode --start/--end``), the
    carried streams are trimmed to the coded video's time span: a packet is kept when it
    overlaps ``[pts(start), pts(end))`` (no lower bound when ``start`` is 0, no upper bound
    when ``end`` is the last frame), so a partial encode decodes to a file whose audio
    covers the same span as its video. Chapters are kept when they overlap the span. A track
    left without packets is recorded in :attr:`CarryInfo.dropped` (``kind="empty"``).

Memory and I/O
    The blob is built in memory (the carried packets are held until the corrupt-track check
    has passed), so extraction needs about twice the size of the carried streams; the whole
    source is read once (video packets are demuxed, not decoded, except the first frame,
    which gives the display rotation).

Muxing (:class:`CarryMuxer`, at decode)
    Each carried stream is checked against the output format first (a throw-away header
    write per stream): a stream the format cannot hold (an ASS/SubRip subtitle in MP4, an
    attachment in MP4, mov_text in Matroska) is skipped with a warning naming it, or, with
    ``strict=True``, :class:`~pipeline.errors.UnsupportedStreamError` is raised before
    anything is written. Packets are interleaved with the video as it is coded.

Manifests
    :meth:`CarryInfo.to_rows` gives one flat record per carried or dropped stream (type,
    codec, language, duration, bytes, ...) for the distributed path's manifest summary.

Never imports ray.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import av
import av.container
import av.stream

from pipeline.errors import BitstreamError, ConfigError, CorruptSourceError, UnsupportedStreamError
from pipeline.media.source import error_reason, open_container, open_source, select_video_stream

log = logging.getLogger(__name__)

__all__ = [
    "BLOB_FORMATS",
    "CarriedStream",
    "CarryInfo",
    "CarryMuxer",
    "DroppedStream",
    "extract_carry",
]

#: Formats the blob may use, in order of preference.
BLOB_FORMATS = ("matroska", "mov")
#: Container metadata keys that describe the file, not the title (not carried over).
_MUXER_KEYS = {"major_brand", "minor_version", "compatible_brands", "encoder", "creation_time"}
_STREAM_MUXER_KEYS = {"handler_name", "vendor_id", "encoder", "duration", "creation_time"}

#: A callable that reports a warning message (the default is this module's logger).
Warn = Callable[[str], None]


def _fr(x: Fraction | None) -> str | None:
    return None if x is None else f"{x.numerator}/{x.denominator}"


def _disposition_names(flags: int) -> list[str]:
    return [d.name for d in av.stream.Disposition if d.name and flags & d.value]


def _disposition_flags(names: list[str]) -> int:
    out = 0
    for n in names:
        try:
            out |= av.stream.Disposition[n].value
        except KeyError:
            continue
    return out


# --------------------------------------------------------------------------- description


@dataclass(frozen=True)
class CarriedStream:
    """One carried stream. ``index`` is its index in the source, ``blob_index`` in the
    blob; ``start`` and ``duration`` are seconds (None for attachments)."""

    index: int
    blob_index: int
    type: str
    codec: str
    language: str | None
    title: str | None
    disposition: list[str]
    start: float | None
    duration: float | None
    bytes: int
    packets: int
    metadata: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """E.g. ``audio stream #1 (aac, eng 'Main')``, for messages."""
        lang = self.language or "und"
        title = f" {self.title!r}" if self.title else ""
        return f"{self.type} stream #{self.index} ({self.codec}, {lang}{title})"


@dataclass(frozen=True)
class DroppedStream:
    """A source stream that is not carried: ``kind`` is ``"broken"`` (corrupt, left out
    with ``drop_broken``), ``"unsupported"`` (no blob format holds it) or ``"empty"`` (no
    packets, e.g. none in the coded span of a partial encode)."""

    index: int
    type: str
    codec: str
    language: str | None
    kind: str
    reason: str

    def describe(self) -> str:
        """E.g. ``audio stream #2 (aac, spa)``, for messages."""
        return f"{self.type} stream #{self.index} ({self.codec}, {self.language or 'und'})"


@dataclass(frozen=True)
class CarryInfo:
    """What was carried from ``source`` (JSON round trip: :meth:`to_dict`/:meth:`from_dict`).

    ``source`` names the source in messages only: it is not stored (the stream's bytes
    depend on the source's content, not on its path or URI)."""

    source: str = field(compare=False)
    format: str | None  # the blob's format; None when nothing is carried
    streams: tuple[CarriedStream, ...] = ()
    dropped: tuple[DroppedStream, ...] = ()
    chapters: tuple[dict[str, Any], ...] = ()  # id, start, end, time_base "n/d", metadata
    metadata: dict[str, str] = field(default_factory=dict)
    video: dict[str, Any] = field(
        default_factory=dict
    )  # index, language, title, disposition, rotation
    span: tuple[str | None, str | None] = (None, None)  # trim window in seconds ("n/d")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (without ``source``), as stored in the carry section."""
        return {
            "format": self.format,
            "streams": [
                s.__dict__ | {"disposition": list(s.disposition), "metadata": dict(s.metadata)}
                for s in self.streams
            ],
            "dropped": [d.__dict__.copy() for d in self.dropped],
            "chapters": [dict(c) for c in self.chapters],
            "metadata": dict(self.metadata),
            "video": dict(self.video),
            "span": list(self.span),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CarryInfo:
        """Inverse of :meth:`to_dict` (``source`` is taken from ``d`` when present).

        Raises:
            ConfigError: a stream entry is incomplete or malformed.
        """
        try:
            return cls(
                source=str(d.get("source", "")),
                format=d.get("format"),
                streams=tuple(CarriedStream(**s) for s in d.get("streams", [])),
                dropped=tuple(DroppedStream(**s) for s in d.get("dropped", [])),
                chapters=tuple(d.get("chapters", [])),
                metadata=dict(d.get("metadata", {})),
                video=dict(d.get("video", {})),
                span=tuple(d.get("span", (None, None))),  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"carry info is incomplete or malformed ({type(exc).__name__}: {exc})",
                hint="pass a dict written by CarryInfo.to_dict",
            ) from exc

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat record per stream, carried first, then dropped: ``index``, ``type``,
        ``codec``, ``language``, ``title``, ``duration`` (s), ``bytes``, ``packets``,
        ``status`` (``carried``, ``broken`` or ``unsupported``) and ``reason``."""
        rows = [
            {
                "index": s.index, "type": s.type, "codec": s.codec, "language": s.language or "",
                "title": s.title or "", "duration": float(s.duration or 0.0), "bytes": s.bytes,
                "packets": s.packets, "status": "carried", "reason": "",
            }
            for s in self.streams
        ]  # fmt: skip
        rows += [
            {
                "index": d.index, "type": d.type, "codec": d.codec, "language": d.language or "",
                "title": "", "duration": 0.0, "bytes": 0, "packets": 0, "status": d.kind,
                "reason": d.reason,
            }
            for d in self.dropped
        ]  # fmt: skip
        return rows

    @property
    def total_bytes(self) -> int:
        """The carried streams' packet (and attachment) bytes."""
        return sum(s.bytes for s in self.streams)


# --------------------------------------------------------------------------- extraction


def _stream_codec(stream: av.stream.Stream) -> str:
    cc = stream.codec_context
    if cc is not None:
        return getattr(cc.codec, "canonical_name", None) or cc.name
    desc = getattr(stream, "mimetype", None) if stream.type == "attachment" else None
    return desc or "none"


def _holds(fmt: str, stream: av.stream.Stream) -> str | None:
    """None if ``fmt`` can hold ``stream`` (copied), else the reason it cannot."""
    try:
        with av.open(io.BytesIO(), "w", format=fmt) as out:
            out.add_stream_from_template(stream)
            out.start_encoding()
    except (av.error.FFmpegError, ValueError, OSError, TypeError) as exc:
        return str(exc).strip() or type(exc).__name__
    return None


def _metadata(stream: av.stream.Stream) -> dict[str, str]:
    return {k: str(v) for k, v in stream.metadata.items() if k.lower() not in _STREAM_MUXER_KEYS}


def _packet_seconds(p: av.Packet) -> tuple[Fraction | None, Fraction]:
    ts = p.pts if p.pts is not None else p.dts
    tb = Fraction(p.time_base) if p.time_base else Fraction(0)
    start = None if ts is None else ts * tb
    return start, (p.duration or 0) * tb


def extract_carry(
    source: Any,
    *,
    start: Fraction | None = None,
    end: Fraction | None = None,
    drop_broken: bool = False,
    verify: bool = True,
    warn: Warn | None = None,
    video_stream: int | None = None,
) -> tuple[bytes | None, CarryInfo]:
    """Copy every non-video stream of ``source`` (path, ``file://`` URI or seekable binary
    file object) into a blob, and describe it.

    ``video_stream`` is the number of the coded video stream (as given to
    :func:`~pipeline.media.probe.probe`; None: the default choice of ``select_video_stream``).
    The other video streams are not carried: :attr:`CarryInfo.dropped` lists each of them.

    ``start``/``end`` (seconds) trim the carried packets to the coded video's span (see the
    module docstring). ``verify`` decodes every audio packet; a corrupt stream raises
    :class:`CorruptSourceError` naming it, or with ``drop_broken`` is left out (``warn`` is
    called, and :attr:`CarryInfo.dropped` records it). Returns ``(None, info)`` when no
    stream is carried (``info`` still holds the chapters, metadata and drops).

    Raises:
        CorruptSourceError: a carried audio stream is corrupt (without ``drop_broken``),
            reading the packets fails, or the blob lost streams.
        ConfigError, InputError: the source cannot be opened or has no video stream (see
            :func:`pipeline.media.source.open_source` and ``select_video_stream``).
    """
    warn = warn or log.warning
    with open_source(source) as (fh, name), open_container(fh, name) as container:
        video = select_video_stream(container, name, video_stream)
        vinfo: dict[str, Any] = {
            "index": video.index,
            "language": video.metadata.get("language"),
            "title": video.metadata.get("title"),
            "disposition": _disposition_names(int(video.disposition)),
            "metadata": _metadata(video),
        }
        keep, dropped, fmt = _choose_streams(container, video, name, warn)
        chapters = _chapters(container, start, end)
        metadata = {
            k: str(v) for k, v in container.metadata.items() if k.lower() not in _MUXER_KEYS
        }
        packets, broken, rotation = _read_packets(
            container, video, keep, name, start, end, verify, drop_broken
        )
        if rotation:
            vinfo["rotation"] = rotation
        keep = _drop_broken_and_empty(keep, broken, packets, dropped, name, start, end, warn)
        info = CarryInfo(
            name, None, (), tuple(sorted(dropped, key=lambda d: d.index)), tuple(chapters),
            metadata, vinfo, (_fr(start), _fr(end)),
        )  # fmt: skip
        if not keep:
            return None, info
        assert fmt is not None
        # The packets belong to the open source: mux them before it is closed.
        blob, streams = _write_blob(fmt, keep, [p for p in packets if p.stream.index not in broken])
        del packets
    with av.open(io.BytesIO(blob)) as check:
        if len(check.streams) != len(streams):
            raise CorruptSourceError(
                f"{name}: copying its {len(streams)} audio/subtitle/attachment streams into a "
                f"{fmt} blob kept only {len(check.streams)}",
                hint="pass --no-carry to code the video alone, or remux the source first",
            )
    return blob, replace(info, format=fmt, streams=tuple(streams))


def _choose_streams(
    container: av.container.InputContainer, video: av.VideoStream, name: str, warn: Warn
) -> tuple[list[av.stream.Stream], list[DroppedStream], str | None]:
    """The streams to carry, the ones dropped (other video streams, and those the blob
    format cannot hold: ``warn``-ed), and the blob format (None when nothing is left)."""
    candidates: list[av.stream.Stream] = []
    dropped: list[DroppedStream] = []
    reasons: dict[int, dict[str, str | None]] = {}
    for s in container.streams:
        if s.index == video.index:
            continue
        if s.type == "video" and not int(s.disposition) & av.stream.Disposition.attached_pic.value:
            dropped.append(
                DroppedStream(
                    s.index,
                    s.type,
                    _stream_codec(s),
                    s.metadata.get("language"),
                    "unsupported",
                    "only one video stream is coded; other video streams are not carried",
                )
            )
            continue
        candidates.append(s)
        reasons[s.index] = {fmt: _holds(fmt, s) for fmt in BLOB_FORMATS}
    fmt = None
    if candidates:
        # MP4/MOV sources keep their exact time bases in a MOV blob (Matroska rounds to ms).
        order = BLOB_FORMATS[::-1] if container.format.name.startswith("mov") else BLOB_FORMATS
        fmt = max(
            order,
            key=lambda f: (sum(reasons[s.index][f] is None for s in candidates), -order.index(f)),
        )
    keep = []
    for s in candidates:
        why = reasons[s.index][fmt] if fmt else "no stream"
        if why is None:
            keep.append(s)
        else:
            d = DroppedStream(
                s.index,
                s.type,
                _stream_codec(s),
                s.metadata.get("language"),
                "unsupported",
                f"cannot be stored without re-encoding ({why})",
            )
            warn(f"{name}: {d.describe()} is not carried: {d.reason}")
            dropped.append(d)
    return keep, dropped, fmt


def _drop_broken_and_empty(
    keep: list[av.stream.Stream],
    broken: dict[int, str],
    packets: list[av.Packet],
    dropped: list[DroppedStream],
    name: str,
    start: Fraction | None,
    end: Fraction | None,
    warn: Warn,
) -> list[av.stream.Stream]:
    """``keep`` less the broken streams (``warn``-ed) and the tracks without packets; both
    are appended to ``dropped``."""
    for s in keep:
        if s.index in broken:
            d = DroppedStream(
                s.index, s.type, _stream_codec(s), s.metadata.get("language"), "broken",
                broken[s.index],
            )  # fmt: skip
            warn(f"{name}: {d.describe()} is corrupt and is not carried ({d.reason})")
            dropped.append(d)
    keep = [s for s in keep if s.index not in broken]
    # A track without packets (e.g. one that starts after the coded span) is not kept:
    # some formats (MOV) drop empty tracks, and an empty track plays nothing.
    has_packets = {p.stream.index for p in packets}
    for s in keep:
        if s.type != "attachment" and s.index not in has_packets:
            span_note = " in the coded span" if start is not None or end is not None else ""
            dropped.append(DroppedStream(s.index, s.type, _stream_codec(s), s.metadata.get("language"),
                                         "empty", f"no packets{span_note}"))  # fmt: skip
    return [s for s in keep if s.type == "attachment" or s.index in has_packets]


def _chapters(
    container: av.container.InputContainer, start: Fraction | None, end: Fraction | None
) -> list[dict[str, Any]]:
    out = []
    for c in container.chapters():
        tb = Fraction(c["time_base"])
        if end is not None and c["start"] * tb >= end:
            continue
        if start is not None and c["end"] * tb <= start:
            continue
        out.append(
            {
                "id": int(c["id"]),
                "start": int(c["start"]),
                "end": int(c["end"]),
                "time_base": _fr(tb),
                "metadata": {k: str(v) for k, v in (c.get("metadata") or {}).items()},
            }
        )
    return out


def _read_packets(
    container: av.container.InputContainer,
    video: av.VideoStream,
    keep: list[av.stream.Stream],
    name: str,
    start: Fraction | None,
    end: Fraction | None,
    verify: bool,
    drop_broken: bool,
) -> tuple[list[av.Packet], dict[int, str], float | None]:
    """The packets of ``keep`` inside the span, in file order; the broken streams; and the
    display rotation of ``video`` (degrees; from its first decoded frame, the only video
    frame decoded)."""
    demuxed = [s for s in keep if s.type != "attachment"]
    by_index = {s.index: s for s in keep}
    check = {
        s.index for s in demuxed if verify and s.type == "audio" and s.codec_context is not None
    }
    broken: dict[int, str] = {}
    packets: list[av.Packet] = []
    rotation: float | None = None
    rotation_done = False

    def fail(stream: av.stream.Stream, t: Fraction | None, exc: BaseException) -> None:
        where = f"at {float(t):.3f} s" if t is not None else "at the end"
        reason = f"decoding the packet {where} failed: {error_reason(exc)}"
        if not drop_broken:
            s = by_index[stream.index]
            lang = s.metadata.get("language") or "und"
            raise CorruptSourceError(
                f"{name}: {s.type} stream #{s.index} ({_stream_codec(s)}, {lang}) is corrupt: {reason}",
                hint="repair or remove that track, or pass --drop-broken-streams to encode without it",
            ) from exc
        broken.setdefault(stream.index, reason)

    try:
        for p in container.demux([*demuxed, video]):
            if p.size == 0 and p.pts is None and p.dts is None:
                continue  # end-of-stream marker
            if p.stream.index == video.index:
                if not rotation_done:
                    try:
                        got = video.codec_context.decode(p)
                    except (av.error.FFmpegError, ValueError):
                        got, rotation_done = [], True  # the frames are checked elsewhere
                    if got:
                        rotation, rotation_done = float(getattr(got[0], "rotation", 0) or 0), True
                if rotation_done and not demuxed:
                    break
                continue
            t, dur = _packet_seconds(p)
            if p.stream.index in check and p.stream.index not in broken:
                try:
                    p.stream.codec_context.decode(p)
                except (av.error.FFmpegError, ValueError) as exc:
                    fail(p.stream, t, exc)
            if t is not None and (
                (end is not None and t >= end)
                or (start is not None and t + dur <= start and t < start)
            ):
                continue
            packets.append(p)
    except (av.error.FFmpegError, OSError, EOFError) as exc:
        raise CorruptSourceError(
            f"{name}: reading the audio/subtitle packets failed after {len(packets)} packets ({error_reason(exc)})",
            hint="the file is probably truncated or damaged; copy or export it again",
        ) from exc
    for idx in sorted(check - set(broken)):
        s = by_index[idx]
        try:
            s.codec_context.decode(None)
        except (av.error.FFmpegError, ValueError) as exc:
            fail(s, None, exc)
    return packets, broken, rotation


def _write_blob(
    fmt: str, keep: list[av.stream.Stream], packets: list[av.Packet]
) -> tuple[bytes, list[CarriedStream]]:
    buf = io.BytesIO()
    stats: dict[int, dict[str, Any]] = {
        s.index: {"bytes": 0, "packets": 0, "first": None, "last": None} for s in keep
    }
    # bitexact: no random Matroska UIDs, no library version string, so the same source gives
    # the same bytes (the stream is byte-identical across runs and shard layouts).
    with av.open(buf, "w", format=fmt, container_options={"fflags": "+bitexact"}) as out:
        mapping = {}
        for s in keep:
            o = out.add_stream_from_template(s)
            o.metadata.update(_metadata(s))
            if s.type == "attachment":
                o.metadata.update({k: str(v) for k, v in s.metadata.items()})
            o.disposition = s.disposition
            mapping[s.index] = o
        for p in packets:
            st = stats[p.stream.index]
            t, dur = _packet_seconds(p)
            st["bytes"] += p.size
            st["packets"] += 1
            if t is not None:
                st["first"] = t if st["first"] is None else min(st["first"], t)
                st["last"] = t + dur if st["last"] is None else max(st["last"], t + dur)
            p.stream = mapping[p.stream.index]
            out.mux(p)
        if not packets:
            out.start_encoding()
    streams = []
    for blob_index, s in enumerate(keep):
        st = stats[s.index]
        if s.type == "attachment":
            data = getattr(s, "data", b"") or b""
            st["bytes"] = len(data)
        first, last = st["first"], st["last"]
        streams.append(
            CarriedStream(
                index=s.index, blob_index=blob_index, type=s.type, codec=_stream_codec(s),
                language=s.metadata.get("language"), title=s.metadata.get("title"),
                disposition=_disposition_names(int(s.disposition)),
                start=None if first is None else round(float(first), 6),
                duration=None if first is None else round(float(last - first), 6),
                bytes=int(st["bytes"]), packets=int(st["packets"]), metadata=_metadata(s),
            )
        )  # fmt: skip
    return buf.getvalue(), streams


# --------------------------------------------------------------------------- muxing


class CarryMuxer:
    """Muxes carried streams next to a video being written (an
    :class:`~pipeline.media.write.ExtraStreams` hook of
    :func:`pipeline.media.write.write_frames`). The constructor checks which streams the
    ``output_format`` (a PyAV/FFmpeg format name: ``"mp4"``, ``"matroska"``) can hold: the
    others are skipped (``warn`` names each), or with ``strict`` an error is raised, before
    anything is written.

    Raises:
        UnsupportedStreamError: with ``strict``, the format cannot hold a carried stream.
        BitstreamError: the blob does not hold the streams ``info`` lists.
    """

    def __init__(self, blob: bytes | None, info: CarryInfo, output_format: str, *, dst: str = "output",
                 strict: bool = False, warn: Warn | None = None) -> None:  # fmt: skip
        self.info = info
        self.blob = blob or b""
        self.format = output_format
        self.skipped: list[tuple[CarriedStream, str]] = []
        self.plan: list[CarriedStream] = []
        warn = warn or log.warning
        self._input: av.container.InputContainer | None = None
        if not self.blob or not info.streams:
            return
        try:
            blob_in = av.open(io.BytesIO(self.blob))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise BitstreamError(
                f"{dst}: the carry blob is not a readable {info.format or 'media'} file ({exc})",
                hint="the stream is corrupt; decode with --video-only, or re-encode it",
            ) from exc
        with blob_in:
            if len(blob_in.streams) != len(info.streams):
                raise BitstreamError(
                    f"{dst}: the carry blob holds {len(blob_in.streams)} streams, its info lists "
                    f"{len(info.streams)}",
                    hint="the stream is corrupt; decode with --video-only, or re-encode it",
                )
            for cs in info.streams:
                why = _holds(output_format, blob_in.streams[cs.blob_index])
                if why is None:
                    self.plan.append(cs)
                    continue
                self.skipped.append((cs, why))
                if strict:
                    raise UnsupportedStreamError(
                        f"{dst}: the {output_format} format cannot hold the carried {cs.describe()} ({why})",
                        hint="write .mkv (it holds most codecs), drop --strict to skip that stream, or pass --video-only",
                    )
                warn(
                    f"{dst}: the carried {cs.describe()} is skipped: {output_format} cannot hold it ({why})"
                )

    def add_streams(self, out: av.container.OutputContainer, video: av.VideoStream) -> None:
        """Add the carried streams, chapters and metadata to ``out`` (before its header)."""
        info = self.info
        out.metadata.update(info.metadata)
        for key in ("language", "title"):
            if info.video.get(key):
                video.metadata[key] = info.video[key]
        if info.video.get("disposition"):
            video.disposition = av.stream.Disposition(_disposition_flags(info.video["disposition"]))
        if info.video.get("rotation"):
            video.set_display_rotation(float(info.video["rotation"]))
        if info.chapters:
            out.set_chapters([dict(c, time_base=Fraction(c["time_base"])) for c in info.chapters])
        if not self.plan:
            return
        self._input = av.open(io.BytesIO(self.blob))
        self._map = {}
        for cs in self.plan:
            src = self._input.streams[cs.blob_index]
            o = out.add_stream_from_template(src)
            o.metadata.update(cs.metadata)
            o.disposition = av.stream.Disposition(_disposition_flags(cs.disposition))
            self._map[cs.blob_index] = o
        demux = [self._input.streams[cs.blob_index] for cs in self.plan if cs.type != "attachment"]
        self._packets: Iterator[av.Packet] = iter(self._input.demux(demux)) if demux else iter(())
        self._pending: av.Packet | None = None

    def mux_until(self, out: av.container.OutputContainer, t: Fraction | None) -> None:
        """Mux the carried packets up to time ``t`` (seconds; None: all the rest)."""
        if self._input is None:
            return
        while True:
            p = self._pending if self._pending is not None else next(self._packets, None)
            self._pending = None
            if p is None:
                self._input.close()
                self._input = None
                return
            if p.size == 0 and p.pts is None and p.dts is None:
                continue
            ts = p.dts if p.dts is not None else p.pts
            if t is not None and ts is not None and ts * Fraction(p.time_base) > t:
                self._pending = p
                return
            p.stream = self._map[p.stream.index]
            out.mux(p)
