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

The video stream is the first one that is not an attached picture (cover art); audio,
subtitle and data streams are ignored by probing and decoding (:mod:`pipeline.media.carry`
copies them).
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
    "Source",
    "error_reason",
    "local_path",
    "media_kind",
    "open_container",
    "open_source",
    "select_video_stream",
    "source_name",
]

#: What the frame I/O functions accept as a source (see the module docstring).
Source: TypeAlias = "str | os.PathLike[str] | BinaryIO"

#: PyAV's I/O buffer size in bytes for file-object sources.
IO_BUFFER = 256 * 1024

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


def select_video_stream(container: av.container.InputContainer, name: str) -> av.VideoStream:
    """The video stream to code: the first video stream that is not an attached picture.

    Raises:
        InputError: that stream's codec cannot be decoded by this FFmpeg build.
        NotVideoError: there is no such stream (the message lists what there is).
    """
    attached = av.stream.Disposition.attached_pic
    for stream in container.streams.video:
        if not stream.disposition & attached:
            if getattr(stream, "codec_context", None) is None:
                raise InputError(
                    f"{name}: its video codec cannot be decoded by this build of FFmpeg",
                    hint=SUPPORTED_HINT,
                )
            return stream
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
