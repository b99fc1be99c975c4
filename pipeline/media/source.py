"""Opening a source: local paths, ``file://`` URIs and file objects, sniffing, the container.

A source is a local path, a ``file://`` URI or a seekable binary file object (for example
:func:`pipeline.storage.open_read` over S3). Local files are opened here and handed to
PyAV as file objects too, so every kind of source goes through the same content-based
demuxer selection (and a path is never interpreted as an FFmpeg protocol or an
image-sequence pattern). Anything PyAV demuxes and decodes works: mp4, mkv, webm, avi,
y4m, ... and still images (PNG, JPEG, ...) through PyAV's ``*_pipe`` image demuxers.

When PyAV cannot open a file, its first bytes decide the error: a file that starts like a
known container (:data:`SIGNATURES`) is damaged media
(:class:`~pipeline.errors.CorruptSourceError`), anything else is not media
(:class:`~pipeline.errors.NotVideoError`).

The video stream (:func:`select_video_stream`) is the one asked for by index (``--video-stream
N``: the container's stream number, as ``ffprobe`` and ``relatent info`` print it), else the
one a player shows: among the video streams that are not attached pictures (cover art), the
default-flagged ones if any, and among those the largest (width x height; the first on a
tie). The other video streams are not coded (:func:`other_video_streams` names them for
the warning). Audio, subtitle and data streams are ignored by probing and decoding
(:mod:`pipeline.media.carry` copies them).

:func:`truncation_evidence` reads the sizes a file declares for itself (MP4 top-level boxes,
the Matroska Segment) so that a file that cannot be opened, or has no video stream, is
reported as truncated when it is.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias
from urllib.parse import unquote, urlparse

import av
import av.container
import av.stream

from pipeline.errors import (
    ConfigError,
    CorruptSourceError,
    EmptySourceError,
    InputError,
    NotVideoError,
    SourceNotFoundError,
)

__all__ = [
    "IO_BUFFER",
    "SIGNATURES",
    "SUPPORTED_HINT",
    "TRUNCATED_HINT",
    "Source",
    "describe_stream",
    "error_reason",
    "local_path",
    "media_kind",
    "open_container",
    "open_source",
    "other_video_streams",
    "select_video_stream",
    "source_name",
    "truncation_evidence",
]

#: What the frame I/O functions accept as a source (see the module docstring).
Source: TypeAlias = "str | os.PathLike[str] | BinaryIO"

#: PyAV's I/O buffer size in bytes for file-object sources.
IO_BUFFER = 256 * 1024

#: The fix suggested for a source that ends early.
TRUNCATED_HINT = (
    "the copy, upload or export was probably interrupted; copy or export the file again"
)

#: The fix suggested for a source whose codec or pixel format cannot be used.
SUPPORTED_HINT = (
    "convert it to a standard format first, e.g. "
    "`ffmpeg -i SRC -pix_fmt yuv420p -c:v libx264 -crf 12 OUT.mp4`"
)

# Demuxers that turn non-media files into "video" (the tty demuxer renders text files).
_NON_MEDIA_FORMATS = {"tty"}

#: Leading bytes of container formats, as ``(offset, magic, description)``: a file that
#: starts like one of these but cannot be opened is a damaged media file, anything else is
#: not media.
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "an MP4/MOV file"),
    (4, b"moov", "an MP4/MOV file"),
    (4, b"mdat", "an MP4/MOV file"),
    (4, b"free", "an MP4/MOV file"),
    (4, b"wide", "an MP4/MOV file"),
    (4, b"skip", "an MP4/MOV file"),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM file"),
    (0, b"RIFF", "a RIFF (AVI/WAV/WebP) file"),
    (0, b"YUV4MPEG2", "a Y4M file"),
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"GIF8", "a GIF image"),
    (0, b"OggS", "an Ogg file"),
    (0, b"FLV", "an FLV file"),
    (0, b"DKIF", "an IVF file"),
    (0, b"\x00\x00\x01\xba", "an MPEG program stream"),
    (0, b"\x00\x00\x01\xb3", "an MPEG video stream"),
    (0, b"\x00\x00\x00\x01", "an H.264/HEVC elementary stream"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "an ASF/WMV file"),
    (0, b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (0, b"nut/multimedia container", "a NUT file"),
)


def source_name(source: Any) -> str:
    """The name of ``source`` used in messages: the path or URI as given, a file object's
    ``uri`` or ``name`` attribute, else ``<TypeName object>``."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(os.fspath(source))
    for attr in ("uri", "name"):
        value = getattr(source, attr, None)
        if isinstance(value, str) and value:
            return value
    return f"<{type(source).__name__} object>"


def local_path(source: str | os.PathLike[str], name: str) -> Path:
    """The local path of a path or ``file://`` URI (``name`` is used in messages).

    Raises:
        ConfigError: ``source`` is a URI of another scheme (``s3://``, ...), or a
            ``file://`` URI naming a remote host.
    """
    if isinstance(source, str) and "://" in source:
        parsed = urlparse(source)
        if parsed.scheme != "file":
            raise ConfigError(
                f"{name}: {parsed.scheme}:// URIs cannot be read directly",
                hint="open it with pipeline.storage.open_read(uri) and pass the file object",
            )
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{name}: file:// URI names the remote host {parsed.netloc!r}",
                hint="use file:///absolute/path for a local file",
            )
        return Path(unquote(parsed.path))
    return Path(os.fsdecode(os.fspath(source)))


def _check_file_object(source: Any, name: str) -> None:
    """Check that a file-object source is seekable and not empty, and rewind it."""
    if not (hasattr(source, "read") and hasattr(source, "seek")):
        raise ConfigError(
            f"{name}: not a path, a file:// URI or a binary file object",
            hint="pass a path or an object opened with open(path, 'rb')",
        )
    seekable = getattr(source, "seekable", None)
    if seekable is not None and not seekable():
        raise ConfigError(
            f"{name}: the file object is not seekable",
            hint="pass a seekable object (io.BytesIO, a local file, storage.open_read)",
        )
    source.seek(0, io.SEEK_END)
    size = source.tell()
    source.seek(0)
    if not size:
        raise EmptySourceError(
            f"{name}: the source is empty (0 bytes)", hint="re-export or re-upload it"
        )


@contextlib.contextmanager
def open_source(source: Source) -> Iterator[tuple[BinaryIO, str]]:
    """A binary file object positioned at 0, and the name used in messages.

    A file object is used as is (not closed on exit); a path or ``file://`` URI is opened
    here and closed on exit.

    Raises:
        ConfigError: ``source`` is not a path, URI or seekable binary file object, or is a
            URI :func:`local_path` rejects.
        SourceNotFoundError: the file does not exist.
        NotVideoError: the path is a directory.
        EmptySourceError: the file or file object holds 0 bytes.
        InputError: the file cannot be accessed or opened (permissions, ...).
    """
    name = source_name(source)
    if not isinstance(source, (str, os.PathLike)):
        _check_file_object(source, name)
        yield source, name
        return

    path = local_path(source, name)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SourceNotFoundError(
            f"{name}: no such file",
            hint=f"check the path (relative paths are resolved from {Path.cwd()})",
        ) from None
    except OSError as exc:
        raise InputError(
            f"{name}: cannot access the file ({exc.strerror or exc})",
            hint="check the path and its permissions",
        ) from exc
    if path.is_dir():
        raise NotVideoError(
            f"{name}: is a directory, not a video or image file",
            hint="pass one video file (mp4, mkv, webm, avi, y4m) or image (png, jpeg)",
        )
    if st.st_size == 0:
        raise EmptySourceError(
            f"{name}: the file is empty (0 bytes)",
            hint="the upload or export probably failed; re-create the file",
        )
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(
            f"{name}: cannot open the file ({exc.strerror or exc})",
            hint="make the file readable by this user",
        ) from exc
    with fh:
        yield fh, name


def media_kind(head: bytes) -> str | None:
    """What the first bytes of a file say it is (e.g. ``"an MP4/MOV file"``), or None.

    Matches :data:`SIGNATURES`, and MPEG transport streams by their 0x47 sync bytes
    188 bytes apart (so ``head`` should hold at least 189 bytes).
    """
    for offset, magic, kind in SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "an MPEG transport stream"
    return None


def error_reason(exc: BaseException) -> str:
    """A short reason for ``exc`` to put in parentheses in a message: its ``strerror``,
    else its text, else its class name, without a trailing full stop."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).rstrip(".")


@contextlib.contextmanager
def open_container(fh: BinaryIO, name: str) -> Iterator[av.container.InputContainer]:
    """Open ``fh`` (from :func:`open_source`) with PyAV, demuxer chosen by content.

    Raises:
        CorruptSourceError: the file starts like a known container (:func:`media_kind`)
            but cannot be opened.
        NotVideoError: the file is not media (or is a text file PyAV would render).
    """
    head = fh.read(200)
    fh.seek(0)
    try:
        container = av.open(fh, mode="r", buffer_size=IO_BUFFER)
    except (av.error.FFmpegError, OSError, EOFError, ValueError) as exc:
        kind = media_kind(head)
        if kind is not None:
            evidence = truncation_evidence(fh)
            if evidence is not None:
                raise CorruptSourceError(
                    f"{name}: looks like a truncated file ({evidence}); it cannot be opened "
                    f"({error_reason(exc)})",
                    hint=TRUNCATED_HINT,
                ) from exc
            raise CorruptSourceError(
                f"{name}: looks like {kind} but cannot be opened ({error_reason(exc)})",
                hint="the file is probably truncated or damaged; copy or export it again",
            ) from exc
        raise NotVideoError(
            f"{name}: is not a video or image file that can be read ({error_reason(exc)})",
            hint="pass a video (mp4, mkv, webm, avi, y4m) or an image (png, jpeg)",
        ) from exc
    with container:
        if container.format.name in _NON_MEDIA_FORMATS:
            raise NotVideoError(
                f"{name}: is a text file, not a video or image",
                hint="pass a video (mp4, mkv, webm, avi, y4m) or an image (png, jpeg)",
            )
        yield container


def _is_picture(stream: av.stream.Stream) -> bool:
    """Whether ``stream`` is a video stream that is not an attached picture (cover art)."""
    return stream.type == "video" and not int(stream.disposition) & int(
        av.stream.Disposition.attached_pic
    )


def _area(stream: av.stream.Stream) -> int:
    cc = getattr(stream, "codec_context", None)
    return int(getattr(cc, "width", 0) or 0) * int(getattr(cc, "height", 0) or 0)


def describe_stream(stream: av.stream.Stream) -> str:
    """``video stream #1 (h264 96x64, "main", default)``: how messages name a stream."""
    cc = getattr(stream, "codec_context", None)
    parts = [getattr(cc, "name", None) or "unknown codec"]
    if stream.type == "video":
        w, h = int(getattr(cc, "width", 0) or 0), int(getattr(cc, "height", 0) or 0)
        parts[0] += f" {w}x{h}"
    title = stream.metadata.get("title")
    if title:
        parts.append(f'"{title}"')
    if int(stream.disposition) & int(av.stream.Disposition.default):
        parts.append("default")
    return f"{stream.type} stream #{stream.index} ({', '.join(parts)})"


def other_video_streams(
    container: av.container.InputContainer, chosen: av.VideoStream
) -> list[av.VideoStream]:
    """The video streams (not cover art) of ``container`` other than ``chosen``: the ones
    that are not coded."""
    return [s for s in container.streams.video if _is_picture(s) and s.index != chosen.index]


def _pick(container: av.container.InputContainer, name: str, index: int) -> av.VideoStream:
    """The video stream number ``index`` of ``container`` (``--video-stream``)."""
    pictures = [s for s in container.streams.video if _is_picture(s)]
    listed = ", ".join(describe_stream(s) for s in pictures) or "none"
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ConfigError(
            f"{name}: --video-stream {index!r} is not a stream number",
            hint=f"pass the number of a video stream: {listed}",
        )
    found = [s for s in container.streams if s.index == index]
    if not found or not _is_picture(found[0]):
        what = (
            f"stream #{index} is {'cover art' if found[0].type == 'video' else found[0].type}"
            if found
            else f"there is no stream #{index} (streams are numbered from 0)"
        )
        raise ConfigError(
            f"{name}: --video-stream {index}: {what}, not a video stream that can be coded",
            hint=f"pass the number of a video stream: {listed}",
        )
    return found[0]  # type: ignore[return-value]


def select_video_stream(
    container: av.container.InputContainer,
    name: str,
    index: int | None = None,
    fh: BinaryIO | None = None,
) -> av.VideoStream:
    """The video stream to code (see the module docstring): stream number ``index`` when
    given, else the default-flagged (then the largest) video stream that is not cover art.
    ``fh``, the file ``container`` reads, lets a missing video stream be reported as a
    truncated file when it is one (:func:`truncation_evidence`).

    Raises:
        ConfigError: ``index`` is not the number of a video stream of ``container``.
        InputError: the chosen stream's codec cannot be decoded by this FFmpeg build.
        CorruptSourceError: there is no video stream and the file looks truncated.
        NotVideoError: there is no video stream (the message lists what there is).
    """
    if index is not None:
        chosen: av.VideoStream | None = _pick(container, name, index)
    else:
        pictures = [s for s in container.streams.video if _is_picture(s)]
        default = int(av.stream.Disposition.default)
        pool = [s for s in pictures if int(s.disposition) & default] or pictures
        chosen = max(pool, key=_area) if pool else None  # max keeps the first on a tie
    if chosen is not None:
        if getattr(chosen, "codec_context", None) is None:
            raise InputError(
                f"{name}: the codec of its {describe_stream(chosen)} cannot be decoded by "
                "this build of FFmpeg",
                hint=SUPPORTED_HINT
                + (
                    " (or pick another stream with --video-stream N)"
                    if len(container.streams.video) > 1
                    else ""
                ),
            )
        return chosen
    evidence = truncation_evidence(fh) if fh is not None else None
    if evidence is not None:
        raise CorruptSourceError(
            f"{name}: looks like a truncated file ({evidence}): no video stream can be read",
            hint=TRUNCATED_HINT,
        )
    kinds: dict[str, int] = {}
    for stream in container.streams:
        kind = stream.type
        if kind == "video":
            kind = "cover-art"
        kinds[kind] = kinds.get(kind, 0) + 1
    found = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no streams at all"
    raise NotVideoError(
        f"{name}: has no video stream (it contains {found})",
        hint="pass a file with a video track, or an image",
    )


# --------------------------------------------------------------------------- truncation

_MP4_TOP_BOXES = {
    b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"moof", b"mfra", b"meta",
    b"uuid", b"pdin", b"sidx", b"styp", b"emsg", b"prft", b"pnot", b"PICT", b"junk",
}  # fmt: skip
_EBML_ID = b"\x1a\x45\xdf\xa3"
_SEGMENT_ID = b"\x18\x53\x80\x67"
_MAX_BOXES = 4096  # top-level boxes walked (fragmented files have many; stop early)


def _vint(buf: bytes, i: int, keep_marker: bool = False) -> tuple[int, int] | None:
    """An EBML variable-size integer at ``buf[i:]``: (value, length in bytes), or None
    when it is malformed or cut. The value of an all-ones size ("unknown") is -1."""
    if i >= len(buf) or buf[i] == 0:
        return None
    length = 9 - buf[i].bit_length()
    if i + length > len(buf):
        return None
    value = buf[i] if keep_marker else buf[i] & (0xFF >> length)
    for k in range(1, length):
        value = (value << 8) | buf[i + k]
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return -1, length
    return value, length


def _mkv_evidence(head: bytes, size: int) -> str | None:
    """The Matroska Segment's declared size against the file's, from the first bytes."""
    hdr = _vint(head, 4)  # the EBML header's size
    if hdr is None or hdr[0] < 0:
        return None
    i = 4 + hdr[1] + hdr[0]
    if head[i : i + 4] != _SEGMENT_ID:
        return None
    seg = _vint(head, i + 4)
    if seg is None or seg[0] < 0:  # written as a live stream: no size declared
        return None
    end = i + 4 + seg[1] + seg[0]
    if end > size:
        return f"its Matroska segment declares {end} bytes but the file has {size}"
    return None


def _mp4_evidence(fh: BinaryIO, size: int) -> str | None:
    """The MP4/MOV top-level boxes' declared sizes against the file's, and the index."""
    offset, seen = 0, set()
    for _ in range(_MAX_BOXES):
        if offset + 8 > size:
            break
        fh.seek(offset)
        hdr = fh.read(16)
        box, kind = int.from_bytes(hdr[0:4], "big"), hdr[4:8]
        if box == 1 and len(hdr) >= 16:
            box = int.from_bytes(hdr[8:16], "big")
        elif box == 0:
            box = size - offset
        if kind not in _MP4_TOP_BOXES or box < 8:
            return None  # not a box structure we know: damaged, not truncated
        seen.add(kind)
        if offset + box > size:
            kind_s = kind.decode("latin-1")
            return f"its '{kind_s}' box ends at byte {offset + box} but the file has {size} bytes"
        offset += box
    else:
        return None  # too many boxes to walk: no verdict
    if b"moov" not in seen and b"moof" not in seen:
        return "it has no 'moov' box, the index an MP4/MOV file is played from"
    return None


def truncation_evidence(fh: BinaryIO) -> str | None:
    """Why the seekable binary file ``fh`` looks truncated, or None: an MP4/MOV top-level box,
    or the Matroska segment, that declares more bytes than the file has, or an MP4/MOV
    without its index (``moov``). Other formats declare no size here (None). The file
    position is restored."""
    try:
        pos = fh.tell()
    except (OSError, ValueError, AttributeError):
        return None
    try:
        fh.seek(0, io.SEEK_END)
        size = fh.tell()
        fh.seek(0)
        head = fh.read(64)
        if head[:4] == _EBML_ID:
            return _mkv_evidence(head, size)
        if head[4:8] in _MP4_TOP_BOXES:
            return _mp4_evidence(fh, size)
        return None
    except (OSError, ValueError):
        return None
    finally:
        with contextlib.suppress(OSError, ValueError):
            fh.seek(pos)
