"""Frame I/O: probe a video or still image, decode frame ranges to float RGB, write frames.

Sources
    A local path, a ``file://`` URI or a seekable binary file object (for example
    :func:`pipeline.storage.open_read` over S3). Local files are opened by this module and
    handed to PyAV as file objects too, so every kind of source goes through the same
    content-based demuxer selection (and a path is never interpreted as an FFmpeg protocol
    or an image-sequence pattern). Anything PyAV demuxes and decodes works: mp4, mkv, webm,
    avi, y4m, ... Still images (PNG, JPEG, ...) are read with PyAV too (its ``*_pipe`` image
    demuxers) and are one-frame sources with ``is_still=True`` and ``frame_rate=1``.

Probing
    :func:`probe` demuxes every packet of the chosen video stream (no decoding) to record
    the exact frame count, the per-frame presentation timestamps and the keyframes. The
    video stream is the first one that is not an attached picture (cover art); audio,
    subtitle and data streams are ignored. One packet is one frame (VP8 invisible
    alt-ref packets and packets the demuxer marks as discarded are skipped). Demuxing is
    cheap, but it does read the whole file once (over S3: downloads it).

Decoding
    :func:`read_frames` decodes ``[start, end)`` without decoding from the beginning: it
    seeks to the keyframe at or before ``start`` and identifies decoded frames by their
    timestamps, so the frame indices are exact. When the timestamps cannot identify the
    frames (missing or duplicated timestamps) or a seek lands after ``start``, it falls
    back to an earlier keyframe and finally to decoding from the first frame, counting.
    Containers without presentation timestamps (AVI, raw H.264/HEVC/MPEG-4 streams) are
    numbered in decode order (AVI: by their frame numbers) and always decoded from frame 0.
    Fewer frames than requested, decoder errors and frames the decoder flags as damaged
    raise :class:`~pipeline.errors.CorruptSourceError`.

Colour
    The conversion to RGB is done here with numpy, not by swscale, so it is explicit and
    testable: the stream's matrix (BT.601, BT.709, BT.2020 non-constant luminance, or RGB
    stored in YUV planes) and range (limited or full) are honoured for any bit depth up to
    16. An unspecified matrix means BT.601 below 720 lines and BT.709 from 720 lines up
    (what players do); JPEG-style sources (``yuvj*``, MJPEG) default to BT.601 full range.
    Subsampled chroma is upsampled linearly, co-sited horizontally (MPEG-2/H.264 default)
    and centred vertically; JPEG-style sources are centred in both directions. swscale is
    only used for repacking (semi-planar and packed YUV to planar, packed RGB and palettes
    to ``rgb24``/``rgb48le``; packed formats above 8 bits are widened to 16 bits). The
    transfer function is not touched: the RGB is the non-linear (gamma-encoded) signal.
    Alpha is dropped. Bayer, XYZ, hardware and floating-point YUV formats and the less
    common matrices (FCC, SMPTE 240M, YCgCo, BT.2020 constant luminance, ICtCp, ...)
    raise :class:`~pipeline.errors.UnsupportedPixelFormatError`.

Writing
    :func:`write_frames` writes a PNG folder (exact RGB), a single ``.png`` (exactly one
    frame), ``.y4m`` (4:4:4) or ``.mp4``/``.mkv`` (libx264, crf 12, yuv420p, preset medium).
    Output appears atomically: a hidden temporary file (or folder) next to the destination
    is written and renamed on success, and removed on error.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import io
import os
import secrets
import shutil
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeAlias
from urllib.parse import unquote, urlparse

import av
import av.container
import av.stream
import numpy as np

from pipeline.errors import (
    ConfigError,
    CorruptSourceError,
    EmptySourceError,
    FrameTooLargeError,
    InputError,
    NotVideoError,
    SourceNotFoundError,
    UnsupportedPixelFormatError,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ColorInfo",
    "ExtraStreams",
    "Frame",
    "Source",
    "VideoInfo",
    "crop_to",
    "pad_to_multiple",
    "probe",
    "read_frames",
    "write_frames",
]

#: Default limit on width * height of a decoded frame (~8K); raise it with ``--max-pixels``.
DEFAULT_MAX_PIXELS = 8192 * 4352

Source: TypeAlias = "str | os.PathLike[str] | BinaryIO"

_IO_BUFFER = 256 * 1024
_MATRICES = ("bt601", "bt709", "bt2020", "rgb")
_RANGES = ("limited", "full")
# (Kr, Kb) luma coefficients of the YCbCr matrices.
_LUMA_COEFFS = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}

# FFmpeg names of the H.273 code points (libavutil/pixdesc.c).
_PRIMARIES_NAMES = {
    1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film",
    9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213",
}  # fmt: skip
_TRANSFER_NAMES = {
    1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
    9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1",
    14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67",
}  # fmt: skip
_MATRIX_NAMES = {
    0: "rgb", 1: "bt709", 2: "unknown", 3: "reserved", 4: "fcc", 5: "bt470bg", 6: "smpte170m",
    7: "smpte240m", 8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085",
    12: "chroma-derived-nc", 13: "chroma-derived-c", 14: "ictcp",
}  # fmt: skip
_MATRIX_FROM_CODE = {0: "rgb", 1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020"}
_MATRIX_TO_CODE = {"rgb": 0, "bt709": 1, "bt601": 6, "bt2020": 9}
_UNSPECIFIED_MATRIX_CODES = {2, 3}

# Demuxers that turn non-media files into "video" (the tty demuxer renders text files).
_NON_MEDIA_FORMATS = {"tty"}
_IMAGE_FORMATS = {"image2", "gif", "apng", "webp"}
# Demuxers without real presentation timestamps (FFmpeg guesses them, wrongly once frames
# are reordered): frames are numbered in decode order and ranges are decoded from frame 0.
_NO_PTS_FORMATS = {
    "avi", "h264", "hevc", "vvc", "m4v", "mpegvideo", "cavsvideo", "vc1", "dirac", "avs2",
    "avs3", "mjpeg", "obu", "h261", "h263",
}  # fmt: skip
_HW_FORMATS = (
    "vaapi", "cuda", "vdpau", "videotoolbox", "qsv", "d3d11", "d3d12", "dxva2", "drm_prime",
    "mediacodec", "opencl", "vulkan", "mmal", "xvmc",
)  # fmt: skip
_SUPPORTED_HINT = (
    "convert it to a standard format first, e.g. "
    "`ffmpeg -i SRC -pix_fmt yuv420p -c:v libx264 -crf 12 OUT.mp4`"
)
_MATRIX_HINT = (
    "convert it to BT.709 first, e.g. "
    "`ffmpeg -i SRC -vf colorspace=all=bt709:format=yuv420p -c:v libx264 -crf 12 OUT.mp4`"
)


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class ColorInfo:
    """How the decoded samples map to RGB.

    ``matrix`` is the matrix actually used for the conversion (an unspecified matrix is
    resolved to BT.601 below 720 lines and BT.709 otherwise); ``range`` is ``"limited"``
    or ``"full"``; ``primaries`` and ``transfer`` are FFmpeg names or ``"unknown"`` (they
    are recorded, not applied); ``bit_depth`` is the coded sample depth.
    """

    matrix: str
    range: str
    primaries: str
    transfer: str
    bit_depth: int

    def __post_init__(self) -> None:
        if self.matrix not in _MATRICES:
            raise ConfigError(
                f"colour matrix {self.matrix!r} is not one of {', '.join(_MATRICES)}",
                hint="use one of the listed names",
            )
        if self.range not in _RANGES:
            raise ConfigError(
                f"colour range {self.range!r} is not 'limited' or 'full'",
                hint="use 'limited' (TV, 16-235) or 'full' (PC, 0-255)",
            )
        if not isinstance(self.bit_depth, int) or not 1 <= self.bit_depth <= 32:
            raise ConfigError(
                f"colour bit depth {self.bit_depth!r} is invalid", hint="use 8, 10, 12 or 16"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColorInfo:
        try:
            return cls(
                matrix=str(d["matrix"]),
                range=str(d["range"]),
                primaries=str(d.get("primaries", "unknown")),
                transfer=str(d.get("transfer", "unknown")),
                bit_depth=int(d["bit_depth"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"colour info {d!r} is incomplete or malformed ({exc})",
                hint="it needs matrix, range and bit_depth (as written by ColorInfo.to_dict)",
            ) from exc


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` found out about a source (see the module docstring)."""

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
        """Inverse of :meth:`to_dict`."""
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


class ExtraStreams(Protocol):
    """Streams muxed next to the video by :func:`write_frames` (``.mp4``/``.mkv``)."""

    def add_streams(self, out: av.container.OutputContainer, video: av.VideoStream) -> None:
        """Add streams, metadata and chapters to ``out`` (called once, before its header)."""

    def mux_until(self, out: av.container.OutputContainer, t: Fraction | None) -> None:
        """Mux the packets up to time ``t`` in seconds (None: all that remain)."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame: ``rgb`` is float32 HxWx3 in [0, 1], C-contiguous."""

    index: int
    pts: int
    rgb: np.ndarray


# --------------------------------------------------------------------------- sources


def _source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(os.fspath(source))
    for attr in ("uri", "name"):
        value = getattr(source, attr, None)
        if isinstance(value, str) and value:
            return value
    return f"<{type(source).__name__} object>"


def _local_path(source: str | os.PathLike[str], name: str) -> Path:
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


@contextlib.contextmanager
def _open_source(source: Source) -> Iterator[tuple[BinaryIO, str]]:
    """A binary file object positioned at 0, and the name used in messages."""
    name = _source_name(source)
    if not isinstance(source, (str, os.PathLike)):
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
        yield source, name
        return

    path = _local_path(source, name)
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


# Leading bytes of container formats: a file that starts like one of these but cannot be
# opened is a damaged media file, anything else is not media.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
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


def _media_kind(head: bytes) -> str | None:
    for offset, magic, kind in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "an MPEG transport stream"
    return None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).rstrip(".")


@contextlib.contextmanager
def _open_container(fh: BinaryIO, name: str) -> Iterator[av.container.InputContainer]:
    head = fh.read(200)
    fh.seek(0)
    try:
        container = av.open(fh, mode="r", buffer_size=_IO_BUFFER)
    except (av.error.FFmpegError, OSError, EOFError, ValueError) as exc:
        kind = _media_kind(head)
        if kind is not None:
            raise CorruptSourceError(
                f"{name}: looks like {kind} but cannot be opened ({_reason(exc)})",
                hint="the file is probably truncated or damaged; copy or export it again",
            ) from exc
        raise NotVideoError(
            f"{name}: is not a video or image file that can be read ({_reason(exc)})",
            hint="pass a video (mp4, mkv, webm, avi, y4m) or an image (png, jpeg)",
        ) from exc
    with container:
        if container.format.name in _NON_MEDIA_FORMATS:
            raise NotVideoError(
                f"{name}: is a text file, not a video or image",
                hint="pass a video (mp4, mkv, webm, avi, y4m) or an image (png, jpeg)",
            )
        yield container


def _select_video_stream(container: av.container.InputContainer, name: str) -> av.VideoStream:
    attached = av.stream.Disposition.attached_pic
    for stream in container.streams.video:
        if not stream.disposition & attached:
            if getattr(stream, "codec_context", None) is None:
                raise InputError(
                    f"{name}: its video codec cannot be decoded by this build of FFmpeg",
                    hint=_SUPPORTED_HINT,
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


# --------------------------------------------------------------------------- colour


def _default_matrix(height: int) -> str:
    return "bt601" if height < 720 else "bt709"


def _pix_format(pix_fmt: str, name: str) -> av.VideoFormat:
    try:
        return av.VideoFormat(pix_fmt)
    except (ValueError, av.error.FFmpegError) as exc:
        raise UnsupportedPixelFormatError(
            f"{name}: unknown pixel format {pix_fmt!r}", hint=_SUPPORTED_HINT
        ) from exc


def _is_jpeg_style(pix_fmt: str, codec_name: str) -> bool:
    return pix_fmt.startswith("yuvj") or codec_name in ("mjpeg", "jpegls", "ljpeg")


def _color_info(
    cc: Any, pix_fmt: str, fmt: av.VideoFormat, height: int, name: str, codec_name: str
) -> ColorInfo:
    colour_bits = [c.bits for c in fmt.components if not c.is_alpha]
    bit_depth = max(colour_bits) if colour_bits else 8
    if fmt.has_palette:
        bit_depth = 8
    primaries = _PRIMARIES_NAMES.get(int(cc.color_primaries or 2), "unknown")
    transfer = _TRANSFER_NAMES.get(int(cc.color_trc or 2), "unknown")
    if fmt.is_rgb or fmt.has_palette:
        return ColorInfo("rgb", "full", primaries, transfer, bit_depth)
    code = int(cc.colorspace if cc.colorspace is not None else 2)
    jpeg = _is_jpeg_style(pix_fmt, codec_name)
    if code in _UNSPECIFIED_MATRIX_CODES or code > 14:
        matrix = "bt601" if jpeg else _default_matrix(height)
    elif code in _MATRIX_FROM_CODE:
        matrix = _MATRIX_FROM_CODE[code]
    else:
        raise UnsupportedPixelFormatError(
            f"{name}: colour matrix {_MATRIX_NAMES.get(code, code)} is not supported "
            "(only BT.601, BT.709, BT.2020 non-constant luminance and RGB are)",
            hint=_MATRIX_HINT,
        )
    has_chroma = any(c.is_chroma for c in fmt.components)
    range_code = int(cc.color_range or 0)
    if range_code == 2:
        rng = "full"
    elif range_code == 1:
        rng = "limited"
    else:  # unspecified: yuvj* and grey are full range (like swscale), other YUV limited
        rng = "full" if jpeg or not has_chroma else "limited"
    return ColorInfo(matrix, rng, primaries, transfer, bit_depth)


@dataclass(frozen=True)
class _Plan:
    """How to turn a decoded frame of one pixel format into RGB."""

    kind: str  # "planar" (read the planes), "packed_rgb" (to_ndarray), "float_rgb"
    target: str | None  # swscale repack target, or None to use the frame as is


_YUV8_TARGETS = {
    (0, 0): "yuv444p", (1, 0): "yuv422p", (1, 1): "yuv420p", (0, 1): "yuv440p",
    (2, 0): "yuv411p", (2, 2): "yuv410p",
}  # fmt: skip
_YUV16_TARGETS = {
    (0, 0): "yuv444p16le", (1, 0): "yuv422p16le", (1, 1): "yuv420p16le", (0, 1): "yuv440p12le",
}  # fmt: skip


def _log2_subsampling(fmt: av.VideoFormat) -> tuple[int, int]:
    w = fmt.chroma_width(1024)
    h = fmt.chroma_height(1024)
    return (
        max(0, (1024 // max(w, 1)).bit_length() - 1),
        max(0, (1024 // max(h, 1)).bit_length() - 1),
    )


def _plan_for(pix_fmt: str, name: str) -> _Plan:
    fmt = _pix_format(pix_fmt, name)
    comps = list(fmt.components)
    colour = [c for c in comps if not c.is_alpha]

    def unsupported(why: str) -> UnsupportedPixelFormatError:
        return UnsupportedPixelFormatError(
            f"{name}: pixel format {pix_fmt} is not supported ({why})", hint=_SUPPORTED_HINT
        )

    if not colour or pix_fmt.startswith(_HW_FORMATS):
        raise unsupported("a hardware or opaque format")
    if fmt.is_bayer:
        raise unsupported("raw Bayer sensor data needs demosaicing")
    if pix_fmt.startswith("xyz"):
        raise unsupported("CIE XYZ needs a colour-managed conversion")
    is_float = any(tag in pix_fmt for tag in ("f16", "f32", "f64"))
    if fmt.has_palette:
        return _Plan("packed_rgb", "rgb24")
    # Every component in its own plane, LSB-aligned integers: the planes are read directly.
    direct = (
        not is_float
        and len({c.plane for c in comps}) == len(comps)
        and len({c.bits for c in colour}) == 1
        and colour[0].bits <= 16
        and "msb" not in pix_fmt
    )
    if fmt.is_rgb:
        if is_float:
            return _Plan("float_rgb", "gbrpf32le")
        if direct and len(colour) == 3:
            return _Plan("planar", None)
        return _Plan("packed_rgb", "rgb24" if max(c.bits for c in colour) <= 8 else "rgb48le")
    if is_float:
        raise unsupported("floating-point YUV/grey")
    if fmt.is_bit_stream:
        return _Plan("planar", "gray")
    if direct:
        return _Plan("planar", None)
    bits = max(c.bits for c in colour)
    if not any(c.is_chroma for c in colour):
        return _Plan("planar", "gray" if bits <= 8 else "gray16le")
    table = _YUV8_TARGETS if bits <= 8 else _YUV16_TARGETS
    target = table.get(_log2_subsampling(fmt))
    if target is None or bits > 16:
        raise unsupported("unusual chroma subsampling or bit depth")
    return _Plan("planar", target)


def _read_plane(frame: av.VideoFrame, index: int, bits: int, big_endian: bool) -> np.ndarray:
    plane = frame.planes[index]
    dtype = np.dtype(np.uint8) if bits <= 8 else np.dtype(">u2" if big_endian else "<u2")
    data = np.frombuffer(plane, dtype=dtype)
    stride = plane.line_size // dtype.itemsize
    return data[: plane.height * stride].reshape(plane.height, stride)[:, : plane.width]


def _upsample_axis(c: np.ndarray, axis: int, n_out: int, factor: int, cosited: bool) -> np.ndarray:
    """Linear interpolation of chroma ``c`` along ``axis`` (0 or 1) to ``n_out`` samples.

    Co-sited: chroma sample k sits on luma sample ``factor * k``; otherwise it sits in the
    middle of its ``factor`` luma samples. Edges are clamped.
    """
    n_in = c.shape[axis]
    if factor == 1:
        return c if n_in == n_out else np.take(c, np.arange(n_out), axis=axis)
    if factor == 2 and n_out in (2 * n_in, 2 * n_in - 1):
        cm = np.moveaxis(c, axis, 0)
        nxt = np.concatenate([cm[1:], cm[-1:]], axis=0)  # sample k + 1, clamped
        shape = list(cm.shape)
        shape[0] = 2 * n_in
        up = np.empty(shape, dtype=np.float32)
        if cosited:
            up[0::2] = cm
            np.add(cm, nxt, out=up[1::2])
            up[1::2] *= np.float32(0.5)
        else:
            prev = np.concatenate([cm[:1], cm[:-1]], axis=0)  # sample k - 1, clamped
            q = np.float32(0.25)
            np.multiply(cm, np.float32(0.75), out=up[0::2])
            up[0::2] += q * prev
            np.multiply(cm, np.float32(0.75), out=up[1::2])
            up[1::2] += q * nxt
        return np.moveaxis(up[:n_out], 0, axis)
    x = np.arange(n_out, dtype=np.float64)
    u = x / factor if cosited else (x + 0.5) / factor - 0.5
    u = np.clip(u, 0.0, n_in - 1)
    i0 = np.floor(u).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    shape = [1, 1]
    shape[axis] = n_out
    w = (u - i0).astype(np.float32).reshape(shape)
    a = np.take(c, i0, axis=axis)
    return a + (np.take(c, i1, axis=axis) - a) * w


def _levels(rng: str, bits: int) -> tuple[float, float, float, float]:
    """(luma offset, luma scale, chroma offset, chroma scale) mapping codes to [0,1]/[-.5,.5]."""
    if rng == "full":
        peak = float((1 << bits) - 1)
        return 0.0, peak, float(1 << (bits - 1)), peak
    s = float(1 << (bits - 8)) if bits >= 8 else 1.0 / (1 << (8 - bits))
    return 16.0 * s, 219.0 * s, 128.0 * s, 224.0 * s


def _normalised(
    frame: av.VideoFrame, plane: int, bits: int, big: bool, offset: float, scale: float
) -> np.ndarray:
    """A plane as float32 ``(code - offset) / scale``."""
    v = _read_plane(frame, plane, bits, big).astype(np.float32)
    v -= np.float32(offset)
    v *= np.float32(1.0 / scale)
    return v


def _planar_to_rgb(frame: av.VideoFrame, color: ColorInfo, jpeg_siting: bool) -> np.ndarray:
    fmt = frame.format
    comps = [c for c in fmt.components if not c.is_alpha]
    bits = comps[0].bits
    big = fmt.is_big_endian
    h, w = frame.height, frame.width
    out = np.empty((h, w, 3), dtype=np.float32)
    if fmt.is_rgb:  # planar RGB (gbrp*): components are R, G, B
        for ch, comp in enumerate(comps[:3]):
            out[..., ch] = _normalised(frame, comp.plane, bits, big, 0.0, (1 << bits) - 1)
        return out
    y_off, y_scale, c_off, c_scale = _levels(color.range, bits)
    y = _normalised(frame, comps[0].plane, bits, big, y_off, y_scale)
    if len(comps) == 1:  # grey
        np.clip(y, 0.0, 1.0, out=y)
        out[...] = y[..., None]
        return out
    if color.matrix == "rgb":  # G, B, R stored in the Y, Cb, Cr planes, all scaled like luma
        c_off, c_scale = y_off, y_scale
    log2_w, log2_h = _log2_subsampling(fmt)
    # Normalise at chroma resolution (cheaper; linear interpolation commutes with it).
    cb, cr = (
        _upsample_axis(
            _upsample_axis(
                _normalised(frame, comp.plane, bits, big, c_off, c_scale),
                1, w, 1 << log2_w, cosited=not jpeg_siting,
            ),
            0, h, 1 << log2_h, cosited=False,
        )
        for comp in comps[1:3]
    )  # fmt: skip
    if color.matrix == "rgb":
        out[..., 0] = cr
        out[..., 1] = y
        out[..., 2] = cb
    else:
        kr, kb = _LUMA_COEFFS[color.matrix]
        kg = 1.0 - kr - kb
        out[..., 0] = y + np.float32(2.0 * (1.0 - kr)) * cr
        out[..., 1] = (
            y
            - np.float32(2.0 * kb * (1.0 - kb) / kg) * cb
            - np.float32(2.0 * kr * (1.0 - kr) / kg) * cr
        )
        out[..., 2] = y + np.float32(2.0 * (1.0 - kb)) * cb
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _frame_to_rgb(
    frame: av.VideoFrame, plan: _Plan, color: ColorInfo, jpeg_siting: bool
) -> np.ndarray:
    if plan.target is not None and frame.format.name != plan.target:
        frame = frame.reformat(format=plan.target)
    if plan.kind == "packed_rgb":
        arr = frame.to_ndarray()
        peak = 255.0 if arr.dtype == np.uint8 else 65535.0
        rgb = arr[..., :3].astype(np.float32)
        rgb *= np.float32(1.0 / peak)
        return np.ascontiguousarray(rgb)
    if plan.kind == "float_rgb":
        h, w = frame.height, frame.width
        rgb = np.empty((h, w, 3), dtype=np.float32)
        for ch, plane in ((1, 0), (2, 1), (0, 2)):  # gbrpf32le: planes G, B, R
            p = frame.planes[plane]
            data = np.frombuffer(p, dtype="<f4")
            stride = p.line_size // 4
            rgb[..., ch] = data[: h * stride].reshape(h, stride)[:, :w]
        np.clip(rgb, 0.0, 1.0, out=rgb)
        return rgb
    return _planar_to_rgb(frame, color, jpeg_siting)


# --------------------------------------------------------------------------- probe


def _is_invisible_vp8(packet: av.Packet) -> bool:
    """VP8 alt-ref frames are packets that the decoder never shows."""
    return packet.size > 0 and not (memoryview(packet)[0] >> 4) & 1


def _has_real_pts(container: av.container.InputContainer) -> bool:
    return not set(container.format.name.split(",")) & _NO_PTS_FORMATS


def _scan_packets(
    container: av.container.InputContainer, stream: av.VideoStream, name: str
) -> tuple[list[int | None], list[int | None], list[bool], int]:
    """(pts, dts, keyframe flags) in decode order, and the number of packets demuxed."""
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
            f"{name}: reading the video packets failed after {len(stamps)} frames ({_reason(exc)})",
            hint="the file is probably truncated or damaged; copy or export it again",
        ) from exc
    return stamps, decode_stamps, keys, total


def _frame_rate(stream: av.VideoStream, pts: Sequence[int], time_base: Fraction) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    if len(pts) > 1 and pts[-1] > pts[0]:
        return (Fraction(len(pts) - 1) / ((pts[-1] - pts[0]) * time_base)).limit_denominator(
            1_001_000
        )
    return Fraction(25)


def probe(source: Source) -> VideoInfo:
    """Describe ``source`` (size, exact frame rate, timestamps, keyframes, colour)."""
    with _open_source(source) as (fh, name), _open_container(fh, name) as container:
        stream = _select_video_stream(container, name)
        cc = stream.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        pix_fmt = cc.pix_fmt
        if width <= 0 or height <= 0 or not pix_fmt:
            raise CorruptSourceError(
                f"{name}: the frame size or pixel format of the video stream is unknown",
                hint="the file is probably damaged; copy or export it again",
            )
        fmt = _pix_format(pix_fmt, name)
        _plan_for(pix_fmt, name)  # unsupported formats fail at probe, not mid-job
        color = _color_info(cc, pix_fmt, fmt, height, name, cc.name)
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
        if any(s is None for s in stamps) or not _has_real_pts(container):
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


# --------------------------------------------------------------------------- decode


def _check_limit(info: VideoInfo, max_pixels: int | None) -> None:
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


def _check_range(info: VideoInfo, start: int, end: int | None) -> int:
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


class _Decoder:
    """State shared by the decode loops of one :func:`read_frames` call."""

    def __init__(self, info: VideoInfo, name: str, start: int, end: int) -> None:
        self.info = info
        self.name = name
        self.start = start
        self.end = end
        self.plans: dict[str, _Plan] = {}
        self.jpeg_siting = _is_jpeg_style(info.pix_fmt, "")
        self.last = -1  # index of the last frame decoded, for messages
        self.index_of: dict[int, int] | None = None
        if len(set(info.pts)) == len(info.pts):
            self.index_of = {p: i for i, p in enumerate(info.pts)}

    def corrupt(self, what: str) -> CorruptSourceError:
        return CorruptSourceError(
            f"{self.name}: {what}",
            hint="the file is truncated or damaged; copy or export it again, or re-encode it",
        )

    def frames(
        self, container: av.container.InputContainer, stream: av.VideoStream, seek: int | None
    ) -> Iterator[av.VideoFrame]:
        if seek is not None:
            try:
                container.seek(seek, stream=stream, backward=True, any_frame=False)
            except (av.error.FFmpegError, OSError) as exc:
                raise self.corrupt(f"seeking to timestamp {seek} failed ({_reason(exc)})") from exc
            stream.codec_context.flush_buffers()
        try:
            yield from container.decode(stream)
        except (av.error.FFmpegError, OSError, EOFError) as exc:
            where = f"after frame {self.last}" if self.last >= 0 else "at its first frame"
            raise self.corrupt(f"decoding failed {where} ({_reason(exc)})") from exc

    def convert(self, frame: av.VideoFrame, index: int) -> Frame:
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
            plan = self.plans[pix_fmt] = _plan_for(pix_fmt, self.name)
        rgb = _frame_to_rgb(frame, plan, info.color, self.jpeg_siting)
        return Frame(index=index, pts=info.pts[index], rgb=rgb)

    def after_seek(
        self, container: av.container.InputContainer, stream: av.VideoStream, keyframe: int
    ) -> Generator[Frame, None, bool]:
        """Decode [start, end) after seeking to ``keyframe``; False if the seek cannot be
        used (nothing has been yielded then)."""
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
    name = _source_name(source)
    dec = _Decoder(info, name, start, end)
    with _open_source(source) as (fh, name), _open_container(fh, name) as container:
        stream = _select_video_stream(container, name)
        _configure(stream)
        if not _has_real_pts(container):
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
    with _open_source(source) as (fh, name), _open_container(fh, name) as container:
        stream = _select_video_stream(container, name)
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
    """Decode frames ``[start, end)`` of ``source`` as float32 RGB.

    ``info`` is :func:`probe` of the same source (probed here when omitted; its ``color``
    decides the conversion, so a corrected copy overrides wrong tags). ``max_pixels``
    limits width * height (default :data:`DEFAULT_MAX_PIXELS`). The range, the size limit
    and the pixel format are checked before this returns; decoding happens lazily.
    """
    if info is None:
        info = probe(source)
    _check_limit(info, max_pixels)
    stop = _check_range(info, start, end)
    _plan_for(info.pix_fmt, info.source)
    return _decode(source, info, start, stop)


# --------------------------------------------------------------------------- write


def _rgb_to_ycbcr(
    rgb: np.ndarray, matrix: str, rng: str, bits: int, subsample: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 RGB -> Y, Cb, Cr code planes (uint8 or uint16); 4:2:0 when ``subsample``."""
    x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    kr, kb = _LUMA_COEFFS[matrix]
    y = np.float32(kr) * r + np.float32(1.0 - kr - kb) * g + np.float32(kb) * b
    pb = (b - y) * np.float32(0.5 / (1.0 - kb))
    pr = (r - y) * np.float32(0.5 / (1.0 - kr))
    if subsample:  # co-sited [1, 2, 1] / 4 horizontally, centred average vertically
        pb, pr = (_downsample_420(p) for p in (pb, pr))
    y_off, y_scale, c_off, c_scale = _levels(rng, bits)
    peak = (1 << bits) - 1
    dtype = np.uint8 if bits <= 8 else np.uint16

    def quantise(v: np.ndarray, scale: float, offset: float) -> np.ndarray:
        return np.clip(np.rint(v * np.float32(scale) + np.float32(offset)), 0, peak).astype(dtype)

    return quantise(y, y_scale, y_off), quantise(pb, c_scale, c_off), quantise(pr, c_scale, c_off)


def _downsample_420(p: np.ndarray) -> np.ndarray:
    left = np.concatenate([p[:, :1], p[:, :-1]], axis=1)
    right = np.concatenate([p[:, 1:], p[:, -1:]], axis=1)
    h = (left + 2.0 * p + right)[:, ::2] * np.float32(0.25)
    return (h[0::2] + h[1::2]) * np.float32(0.5)


def _output_color(color: ColorInfo | None, height: int) -> tuple[str, str, int]:
    """(matrix, range, bit depth) used to write YUV."""
    if color is None:
        return _default_matrix(height), "limited", 8
    if color.matrix == "rgb":
        return _default_matrix(height), color.range, 8 if color.bit_depth <= 8 else 10
    return color.matrix, color.range, 8 if color.bit_depth <= 8 else 10


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


def _encode_png(rgb: np.ndarray) -> bytes:
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height, cc.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return b"".join(bytes(p) for p in [*cc.encode(frame), *cc.encode(None)])


def _write_png_dir(tmp: Path, frames: Iterator[np.ndarray]) -> None:
    for i, rgb in enumerate(frames):
        with (tmp / f"frame_{i:06d}.png").open("wb") as fh:
            fh.write(_encode_png(rgb))


def _write_png_file(tmp: Path, frames: Iterator[np.ndarray], dst: str) -> None:
    items = list(frames)
    if len(items) != 1:
        raise ConfigError(
            f"{dst}: a .png file holds one frame, got {len(items)}",
            hint="write a folder of PNGs instead (a destination path without a suffix)",
        )
    with tmp.open("wb") as fh:
        fh.write(_encode_png(items[0]))


def _write_y4m(
    tmp: Path, frames: Iterator[np.ndarray], frame_rate: Fraction, color: ColorInfo | None
) -> None:
    with tmp.open("wb") as fh:
        for i, rgb in enumerate(frames):
            h, w = rgb.shape[:2]
            matrix, rng, bits = _output_color(color, h)
            if i == 0:
                chroma = "C444" if bits == 8 else f"C444p{bits}"
                fh.write(
                    f"YUV4MPEG2 W{w} H{h} F{frame_rate.numerator}:{frame_rate.denominator} "
                    f"Ip A1:1 {chroma} XCOLORRANGE={rng.upper()}\n".encode("ascii")
                )
            planes = _rgb_to_ycbcr(rgb, matrix, rng, bits, subsample=False)
            fh.write(b"FRAME\n")
            for plane in planes:
                fh.write(plane.astype("<u2" if bits > 8 else np.uint8).tobytes())


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
) -> None:
    options = {}
    if container_format == "mp4" and time_base.numerator == 1:
        # Keep the time base exactly (the muxer would otherwise pick its own timescale), and
        # use it for the edit list too, so a start offset is not rounded to milliseconds.
        options["video_track_timescale"] = str(time_base.denominator)
        options["movie_timescale"] = str(time_base.denominator)
    with av.open(str(tmp), mode="w", format=container_format, container_options=options) as out:
        stream: av.VideoStream | None = None
        last_pts: int | None = None
        count = 0
        for i, rgb in enumerate(frames):
            count = i + 1
            h, w = rgb.shape[:2]
            if stream is None:
                if h % 2 or w % 2:
                    raise ConfigError(
                        f"{dst}: {w}x{h} cannot be encoded as 4:2:0 video (odd size)",
                        hint="pad or crop to an even size, or write .y4m or PNG instead",
                    )
                matrix, rng, _ = _output_color(color, h)
                stream = out.add_stream("libx264", rate=frame_rate)
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.time_base = time_base
                cc = stream.codec_context
                cc.time_base = time_base
                cc.colorspace = _MATRIX_TO_CODE[matrix]
                cc.color_range = 2 if rng == "full" else 1
                if color is not None:
                    cc.color_primaries = _code_of(_PRIMARIES_NAMES, color.primaries)
                    cc.color_trc = _code_of(_TRANSFER_NAMES, color.transfer)
                stream.options = {"crf": "12", "preset": "medium"}
                if extra is not None:
                    extra.add_streams(out, stream)
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
            last_pts = t
            y, cb, cr = _rgb_to_ycbcr(rgb, matrix, rng, 8, subsample=True)
            packed = np.concatenate([y.ravel(), cb.ravel(), cr.ravel()]).reshape(h * 3 // 2, w)
            frame = av.VideoFrame.from_ndarray(packed, format="yuv420p")
            frame.pts = t
            frame.time_base = time_base
            frame.colorspace = cc.colorspace
            frame.color_range = cc.color_range
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


def _code_of(names: dict[int, str], name: str) -> int:
    for code, n in names.items():
        if n == name:
            return code
    return 2  # unspecified


def _temp_path(path: Path, suffix: str) -> Path:
    """A hidden, unused name next to ``path`` (created by the writer, so with the usual
    permissions, unlike mkstemp's 0600)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}")


def _is_png_output_dir(path: Path) -> bool:
    return all(
        p.is_file() and p.name.startswith("frame_") and p.suffix == ".png" for p in path.iterdir()
    )


def write_frames(
    dst: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    *,
    frame_rate: Fraction,
    time_base: Fraction | None = None,
    pts: Sequence[int] | None = None,
    color: ColorInfo | None = None,
    extra: ExtraStreams | None = None,
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
      ``time_base`` and each frame's ``pts`` kept (Matroska rounds them to milliseconds).

    ``time_base`` defaults to ``1 / frame_rate``; ``pts`` (one per frame, increasing)
    defaults to a constant rate. ``extra`` adds other streams to ``.mp4``/``.mkv`` outputs
    (:class:`ExtraStreams`, e.g. :class:`pipeline.carry.CarryMuxer`; the other outputs are
    video-only and ignore it). The output appears atomically.
    """
    name = _source_name(dst)
    if isinstance(dst, str) and "://" in dst and not dst.startswith("file://"):
        raise ConfigError(
            f"{name}: cannot write to a {dst.split('://', 1)[0]}:// URI directly",
            hint="write to a local file and upload it with pipeline.storage",
        )
    path = _local_path(dst, name)
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

    if path.is_dir() or not suffix:
        if path.exists() and not (path.is_dir() and _is_png_output_dir(path)):
            raise ConfigError(
                f"{name}: exists and is not a folder of frame_*.png files",
                hint="choose a new destination or remove the existing one",
            )
        tmp_dir = _temp_path(path, "")
        tmp_dir.mkdir()
        try:
            _write_png_dir(tmp_dir, checked)
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
        return

    writers: dict[str, Callable[[Path], None]] = {
        ".png": lambda tmp: _write_png_file(tmp, checked, name),
        ".y4m": lambda tmp: _write_y4m(tmp, checked, rate, color),
        ".mp4": lambda tmp: _write_video(tmp, "mp4", checked, rate, tb, pts, color, name, extra),
        ".mkv": lambda tmp: _write_video(
            tmp, "matroska", checked, rate, tb, pts, color, name, extra
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


# --------------------------------------------------------------------------- padding


def pad_to_multiple(rgb: np.ndarray, multiple: int = 64) -> tuple[np.ndarray, tuple[int, int]]:
    """Replicate-pad the bottom and right of an HxW[xC] array up to multiples of ``multiple``.

    Returns the padded (C-contiguous) array and ``(pad_h, pad_w)``; :func:`crop_to` undoes it.
    """
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ConfigError(
            f"pad multiple must be a positive integer, got {multiple!r}", hint="use e.g. 64"
        )
    if rgb.ndim < 2:
        raise ConfigError(
            f"cannot pad an array of shape {rgb.shape}", hint="pass an HxW or HxWxC image"
        )
    h, w = rgb.shape[:2]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return np.ascontiguousarray(rgb), (0, 0)
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (rgb.ndim - 2)
    return np.pad(rgb, widths, mode="edge"), (pad_h, pad_w)


def crop_to(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The top-left ``height`` x ``width`` of ``rgb`` (C-contiguous)."""
    if rgb.ndim < 2 or not (0 < height <= rgb.shape[0] and 0 < width <= rgb.shape[1]):
        raise ConfigError(
            f"cannot crop an array of shape {rgb.shape} to {height}x{width}",
            hint="the crop size must be positive and no larger than the array",
        )
    return np.ascontiguousarray(rgb[:height, :width])
