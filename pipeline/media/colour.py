"""Colour: how decoded samples map to RGB, and RGB back to YCbCr for writing.

The conversion to RGB is done here with numpy, not by swscale, so it is explicit and
testable: the stream's matrix (BT.601, BT.709, BT.2020 non-constant luminance, or RGB
stored in YUV planes) and range (limited or full) are honoured for any bit depth up to 16.
An unspecified matrix means BT.601 below 720 lines and BT.709 from 720 lines up (what
players do); JPEG-style sources (``yuvj*``, MJPEG) default to BT.601 full range.
Subsampled chroma is upsampled linearly, co-sited horizontally (MPEG-2/H.264 default) and
centred vertically; JPEG-style sources are centred in both directions. swscale is only
used for repacking (semi-planar and packed YUV to planar, packed RGB and palettes to
``rgb24``/``rgb48le``; packed formats above 8 bits are widened to 16 bits). The transfer
function is not touched: the RGB is the non-linear (gamma-encoded) signal. Alpha is
dropped. Bayer, XYZ, hardware and floating-point YUV formats and the less common matrices
(FCC, SMPTE 240M, YCgCo, BT.2020 constant luminance, ICtCp, ...) raise
:class:`~pipeline.errors.UnsupportedPixelFormatError`.

Why not swscale's own YUV->RGB: its default conversion takes the nearest chroma sample
(no interpolation) and rounds to 8 bits, so high bit depths would lose their extra
precision; the conversion here keeps float precision and the standard chroma siting. It is
tested against FFmpeg's conversion of the same frames (the ``scale`` filter told the same
chroma siting; range and matrix are FFmpeg's own choice from the tags, or its defaults) for
every pixel format PyAV decodes (tests/pipeline/media/test_pixel_formats.py).

A pixel format is classified by its components in FFmpeg's descriptor
(:func:`pixel_family`), never by its name: three colour components that are not RGB are
YUV whatever their layout (planar, semi-planar ``nv24``/``p010``, packed ``vuya``/``yuyv422``),
one is grey. An untagged YUV source is limited range unless it is JPEG-style (what swscale
assumes); untagged grey and RGB are full range.

Formulas: ITU-T H.273 (the MatrixCoefficients equations of clause 8.3, and the code
points of the name tables, named as FFmpeg's libavutil/pixdesc.c names them) and ITU-R
BT.601/BT.709/BT.2020 for the luma coefficients (:data:`LUMA_COEFFS`) and the
limited-range levels (:func:`levels`). :data:`LUMA_COEFFS` is the one copy of the luma coefficients in the
library (:func:`pipeline.metrics.psnr_y` uses its BT.601 row).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from pipeline.errors import ConfigError, UnsupportedPixelFormatError
from pipeline.media.source import SUPPORTED_HINT

__all__ = [
    "FAMILIES",
    "LUMA_COEFFS",
    "MATRICES",
    "RANGES",
    "ColorInfo",
    "ConversionPlan",
    "color_info",
    "default_matrix",
    "frame_to_rgb",
    "is_jpeg_style",
    "levels",
    "matrix_code",
    "output_color",
    "pix_format",
    "pixel_family",
    "plan_for",
    "primaries_code",
    "rgb_to_ycbcr",
    "transfer_code",
]

#: The matrices :class:`ColorInfo` knows (``"rgb"``: RGB stored in the Y, Cb, Cr planes).
MATRICES = ("bt601", "bt709", "bt2020", "rgb")
#: The sample ranges: limited ("TV", 16-235 at 8 bits) and full ("PC", 0-255).
RANGES = ("limited", "full")
#: ``(Kr, Kg, Kb)`` luma coefficients of the YCbCr matrices, Y' = Kr R' + Kg G' + Kb B'
#: (the luma equations of ITU-R BT.601, BT.709 and BT.2020; ITU-T H.273 clause 8.3). Kg is
#: the standards' decimal 1 - Kr - Kb; every float32 coefficient derived from it equals
#: the one derived from the float64 ``1 - Kr - Kb`` (tests/pipeline/media/test_colour.py).
LUMA_COEFFS: dict[str, tuple[float, float, float]] = {
    "bt601": (0.299, 0.587, 0.114),
    "bt709": (0.2126, 0.7152, 0.0722),
    "bt2020": (0.2627, 0.6780, 0.0593),
}

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

_HW_FORMATS = (
    "vaapi", "cuda", "vdpau", "videotoolbox", "qsv", "d3d11", "d3d12", "dxva2", "drm_prime",
    "mediacodec", "opencl", "vulkan", "mmal", "xvmc",
)  # fmt: skip
_MATRIX_HINT = (
    "convert it to BT.709 first, e.g. "
    "`ffmpeg -i SRC -vf colorspace=all=bt709:format=yuv420p -c:v libx264 -crf 12 OUT.mp4`"
)


# --------------------------------------------------------------------------- ColorInfo


@dataclass(frozen=True)
class ColorInfo:
    """How the decoded samples map to RGB.

    ``matrix`` is the matrix actually used for the conversion (an unspecified matrix is
    resolved to BT.601 below 720 lines and BT.709 otherwise); ``range`` is ``"limited"``
    or ``"full"``; ``primaries`` and ``transfer`` are FFmpeg names or ``"unknown"`` (they
    are recorded, not applied); ``bit_depth`` is the coded sample depth.

    Raises:
        ConfigError: ``matrix`` is not in :data:`MATRICES`, ``range`` not in
            :data:`RANGES`, or ``bit_depth`` is not an integer in 1..32.
    """

    matrix: str
    range: str
    primaries: str
    transfer: str
    bit_depth: int

    def __post_init__(self) -> None:
        if self.matrix not in MATRICES:
            raise ConfigError(
                f"colour matrix {self.matrix!r} is not one of {', '.join(MATRICES)}",
                hint="use one of the listed names",
            )
        if self.range not in RANGES:
            raise ConfigError(
                f"colour range {self.range!r} is not 'limited' or 'full'",
                hint="use 'limited' (TV, 16-235) or 'full' (PC, 0-255)",
            )
        if not isinstance(self.bit_depth, int) or not 1 <= self.bit_depth <= 32:
            raise ConfigError(
                f"colour bit depth {self.bit_depth!r} is invalid", hint="use 8, 10, 12 or 16"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the five fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColorInfo:
        """Inverse of :meth:`to_dict` (``primaries`` and ``transfer`` may be absent).

        Raises:
            ConfigError: a required key is missing or a value is malformed.
        """
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


def default_matrix(height: int) -> str:
    """The matrix of an untagged source ``height`` lines high: BT.601 below 720, else BT.709."""
    return "bt601" if height < 720 else "bt709"


def pix_format(pix_fmt: str, name: str) -> av.VideoFormat:
    """PyAV's description of the pixel format ``pix_fmt`` (``name``: the source, for messages).

    Raises:
        UnsupportedPixelFormatError: FFmpeg does not know ``pix_fmt``.
    """
    try:
        return av.VideoFormat(pix_fmt)
    except (ValueError, av.error.FFmpegError) as exc:
        raise UnsupportedPixelFormatError(
            f"{name}: unknown pixel format {pix_fmt!r}", hint=SUPPORTED_HINT
        ) from exc


#: The pixel-format families of :func:`pixel_family`.
FAMILIES = ("yuv", "rgb", "grey", "palette")


def pixel_family(fmt: av.VideoFormat, name: str) -> str:
    """The family of the pixel format ``fmt`` (one of :data:`FAMILIES`), from its
    components in FFmpeg's descriptor (``AVPixFmtDescriptor``; ``name``: for messages).

    ``"palette"``: the PAL flag (``pal8``). ``"rgb"``: the RGB flag (packed or planar RGB or
    BGR, with alpha or padding, float too). ``"yuv"``: three colour (non-alpha) components
    and neither flag, in any layout: planar (``yuv444p``), semi-planar (``nv12``, ``nv24``,
    ``nv42``, ``p010le``), packed (``yuyv422``, ``uyvy422``, ``vuya``, ``xv30le``), with or
    without alpha. ``"grey"``: one colour component (``gray*``, ``ya8``, ``monob``).
    PyAV's ``VideoFormatComponent.is_chroma`` is FFmpeg's log2 chroma subsampling, so it is
    false for every 4:4:4 format: it is not used.

    Raises:
        UnsupportedPixelFormatError: a hardware or opaque format (no components), raw
            Bayer data, CIE XYZ, or a component count that fits no family.
    """
    colour = [c for c in fmt.components if not c.is_alpha]

    def unsupported(why: str) -> UnsupportedPixelFormatError:
        return UnsupportedPixelFormatError(
            f"{name}: pixel format {fmt.name} is not supported ({why})", hint=SUPPORTED_HINT
        )

    if not colour or fmt.name.startswith(_HW_FORMATS):
        raise unsupported("a hardware or opaque format")
    if fmt.is_bayer:
        raise unsupported("raw Bayer sensor data needs demosaicing")
    if fmt.name.startswith("xyz"):  # FFmpeg's XYZ flag is not exposed by PyAV
        raise unsupported("CIE XYZ needs a colour-managed conversion")
    if fmt.has_palette:
        return "palette"
    if fmt.is_rgb:
        return "rgb"
    if len(colour) == 3:
        return "yuv"
    if len(colour) == 1:
        return "grey"
    raise unsupported(f"{len(colour)} colour components")


def is_jpeg_style(pix_fmt: str, codec_name: str) -> bool:
    """Whether a source follows JPEG conventions (``yuvj*`` or a JPEG codec): BT.601 full
    range by default, and chroma centred in both directions."""
    return pix_fmt.startswith("yuvj") or codec_name in ("mjpeg", "jpegls", "ljpeg")


def color_info(
    cc: Any, pix_fmt: str, fmt: av.VideoFormat, height: int, name: str, codec_name: str
) -> ColorInfo:
    """The :class:`ColorInfo` of a video stream from its codec context ``cc`` (H.273 code
    points in ``colorspace``, ``color_range``, ``color_primaries``, ``color_trc``), its
    pixel format and height (for the untagged default matrix).

    An untagged range is limited for YUV (full for JPEG-style sources) and full for grey,
    as swscale assumes; RGB and palettes are always full range.

    Raises:
        UnsupportedPixelFormatError: the pixel format is not supported (see
            :func:`pixel_family`), or the stream is tagged with a matrix other than BT.601,
            BT.709, BT.2020 non-constant luminance or RGB.
    """
    family = pixel_family(fmt, name)
    colour_bits = [c.bits for c in fmt.components if not c.is_alpha]
    bit_depth = 8 if family == "palette" else max(colour_bits)
    primaries = _PRIMARIES_NAMES.get(int(cc.color_primaries or 2), "unknown")
    transfer = _TRANSFER_NAMES.get(int(cc.color_trc or 2), "unknown")
    if family in ("rgb", "palette"):
        return ColorInfo("rgb", "full", primaries, transfer, bit_depth)
    code = int(cc.colorspace if cc.colorspace is not None else 2)
    jpeg = is_jpeg_style(pix_fmt, codec_name)
    if code in _UNSPECIFIED_MATRIX_CODES or code > 14:
        matrix = "bt601" if jpeg else default_matrix(height)
    elif code in _MATRIX_FROM_CODE:
        matrix = _MATRIX_FROM_CODE[code]
    else:
        raise UnsupportedPixelFormatError(
            f"{name}: colour matrix {_MATRIX_NAMES.get(code, code)} is not supported "
            "(only BT.601, BT.709, BT.2020 non-constant luminance and RGB are)",
            hint=_MATRIX_HINT,
        )
    range_code = int(cc.color_range or 0)
    if range_code == 2:
        rng = "full"
    elif range_code == 1:
        rng = "limited"
    else:  # unspecified: yuvj* and grey are full range (like swscale), other YUV limited
        rng = "full" if jpeg or family == "grey" else "limited"
    return ColorInfo(matrix, rng, primaries, transfer, bit_depth)


def _code_of(names: dict[int, str], name: str) -> int:
    for code, n in names.items():
        if n == name:
            return code
    return 2  # unspecified


def primaries_code(name: str) -> int:
    """The H.273 ColourPrimaries code point of an FFmpeg primaries name (2, unspecified,
    for ``"unknown"`` and names not in the table)."""
    return _code_of(_PRIMARIES_NAMES, name)


def transfer_code(name: str) -> int:
    """The H.273 TransferCharacteristics code point of an FFmpeg transfer name (2,
    unspecified, for ``"unknown"`` and names not in the table)."""
    return _code_of(_TRANSFER_NAMES, name)


def matrix_code(matrix: str) -> int:
    """The H.273 MatrixCoefficients code point written for ``matrix`` (one of
    :data:`MATRICES`; BT.601 is written as 6, SMPTE 170M)."""
    return _MATRIX_TO_CODE[matrix]


# --------------------------------------------------------------------------- decoding to RGB


@dataclass(frozen=True)
class ConversionPlan:
    """How to turn a decoded frame of one pixel format into RGB.

    ``kind`` is ``"planar"`` (read the planes), ``"packed_rgb"`` (``to_ndarray``) or
    ``"float_rgb"``; ``target`` is the swscale repack target, or None to use the frame as
    it is.
    """

    kind: str
    target: str | None


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


def plan_for(pix_fmt: str, name: str) -> ConversionPlan:
    """The :class:`ConversionPlan` for frames in ``pix_fmt`` (``name``: for messages).

    The family comes from :func:`pixel_family`; YUV other than planar is repacked to the
    planar format of the same subsampling (8 or 16 bits), grey to ``gray``/``gray16le``,
    packed RGB and palettes to ``rgb24``/``rgb48le``; the repack is tried once on a blank
    frame, so a format swscale cannot read fails here, not mid-job.

    Raises:
        UnsupportedPixelFormatError: ``pix_fmt`` is unknown, a hardware or opaque format,
            Bayer, XYZ, floating-point YUV/grey, has an unusual subsampling or depth, or
            swscale cannot read it.
    """
    return _checked(_plan(pix_fmt, name), pix_fmt, name)


def _plan(pix_fmt: str, name: str) -> ConversionPlan:
    fmt = pix_format(pix_fmt, name)
    family = pixel_family(fmt, name)
    comps = list(fmt.components)
    colour = [c for c in comps if not c.is_alpha]

    def unsupported(why: str) -> UnsupportedPixelFormatError:
        return UnsupportedPixelFormatError(
            f"{name}: pixel format {pix_fmt} is not supported ({why})", hint=SUPPORTED_HINT
        )

    is_float = any(tag in pix_fmt for tag in ("f16", "f32", "f64"))
    if family == "palette":
        return ConversionPlan("packed_rgb", "rgb24")
    # Every component in its own plane, LSB-aligned integers: the planes are read directly.
    direct = (
        not is_float
        and len({c.plane for c in comps}) == len(comps)
        and len({c.bits for c in colour}) == 1
        and colour[0].bits <= 16
        and "msb" not in pix_fmt
    )
    if family == "rgb":
        if is_float:
            return ConversionPlan("float_rgb", "gbrpf32le")
        if direct and len(colour) == 3:
            return ConversionPlan("planar", None)
        bits = max(c.bits for c in colour)
        return ConversionPlan("packed_rgb", "rgb24" if bits <= 8 else "rgb48le")
    if is_float:
        raise unsupported("floating-point YUV/grey")
    if fmt.is_bit_stream:
        return ConversionPlan("planar", "gray")
    if direct:
        return ConversionPlan("planar", None)
    bits = max(c.bits for c in colour)
    if family == "grey":
        return ConversionPlan("planar", "gray" if bits <= 8 else "gray16le")
    table = _YUV8_TARGETS if bits <= 8 else _YUV16_TARGETS
    target = table.get(_log2_subsampling(fmt))
    if target is None or bits > 16:
        raise unsupported("unusual chroma subsampling or bit depth")
    return ConversionPlan("planar", target)


def _checked(plan: ConversionPlan, pix_fmt: str, name: str) -> ConversionPlan:
    """``plan`` once swscale has shown it can repack ``pix_fmt`` to the plan's target (a
    blank 16x16 frame is converted: swscale reads some formats only as outputs).

    Raises:
        UnsupportedPixelFormatError: swscale cannot read ``pix_fmt``.
    """
    if plan.target is None or plan.target == pix_fmt:
        return plan
    try:
        av.VideoFrame(16, 16, pix_fmt).reformat(format=plan.target, threads=1)
    except (av.error.FFmpegError, ValueError, NotImplementedError) as exc:
        raise UnsupportedPixelFormatError(
            f"{name}: pixel format {pix_fmt} is not supported (FFmpeg's swscale cannot read it)",
            hint=SUPPORTED_HINT,
        ) from exc
    return plan


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


def levels(rng: str, bits: int) -> tuple[float, float, float, float]:
    """``(luma offset, luma scale, chroma offset, chroma scale)`` mapping ``bits``-bit codes
    of range ``rng`` to Y' in [0, 1] and Cb/Cr in [-0.5, 0.5]: code = offset + scale * v.

    Full range: 0 and 2^bits - 1, chroma centred on 2^(bits-1). Limited range: 16 + 219 Y'
    and 128 + 224 C at 8 bits, times 2^(bits-8) (the quantisation levels of ITU-R BT.601,
    BT.709 and BT.2020; the full-range form is H.273's VideoFullRangeFlag = 1).
    """
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
    y_off, y_scale, c_off, c_scale = levels(color.range, bits)
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
    else:  # the H.273 clause 8.3 equations, solved for R', G', B'
        kr, kg, kb = LUMA_COEFFS[color.matrix]
        out[..., 0] = y + np.float32(2.0 * (1.0 - kr)) * cr
        out[..., 1] = (
            y
            - np.float32(2.0 * kb * (1.0 - kb) / kg) * cb
            - np.float32(2.0 * kr * (1.0 - kr) / kg) * cr
        )
        out[..., 2] = y + np.float32(2.0 * (1.0 - kb)) * cb
    np.clip(out, 0.0, 1.0, out=out)
    return out


def frame_to_rgb(
    frame: av.VideoFrame, plan: ConversionPlan, color: ColorInfo, jpeg_siting: bool
) -> np.ndarray:
    """A decoded frame as float32 HxWx3 RGB in [0, 1] (C-contiguous).

    ``plan`` is :func:`plan_for` of the frame's pixel format, ``color`` the source's
    :class:`ColorInfo` (it decides the matrix and range), ``jpeg_siting`` centres the
    chroma horizontally too (:func:`is_jpeg_style` sources).

    The swscale repack runs on one thread: with sliced threads, FFmpeg 8's swscale
    sometimes writes wrong chroma rows at the slice boundaries (seen with ``nv20le`` and
    ``y210le`` repacked to ``yuv422p16le``, a few runs in a hundred), which would make the
    decoded frames, and so the streams, differ from run to run.
    """
    if plan.target is not None and frame.format.name != plan.target:
        frame = frame.reformat(format=plan.target, threads=1)
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


# --------------------------------------------------------------------------- RGB to YCbCr


def rgb_to_ycbcr(
    rgb: np.ndarray, matrix: str, rng: str, bits: int, subsample: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 HxWx3 RGB -> Y, Cb, Cr code planes (uint8 for ``bits`` <= 8, else uint16).

    ``matrix`` is a key of :data:`LUMA_COEFFS`, ``rng`` one of :data:`RANGES` (the H.273
    clause 8.3 equations and :func:`levels`, rounded to the nearest code and clipped). With
    ``subsample`` the chroma planes are 4:2:0 (H/2 x W/2; H and W must be even): a
    co-sited [1, 2, 1] / 4 filter horizontally, the centred average of two rows vertically.
    """
    x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    kr, kg, kb = LUMA_COEFFS[matrix]
    y = np.float32(kr) * r + np.float32(kg) * g + np.float32(kb) * b
    pb = (b - y) * np.float32(0.5 / (1.0 - kb))
    pr = (r - y) * np.float32(0.5 / (1.0 - kr))
    if subsample:  # co-sited [1, 2, 1] / 4 horizontally, centred average vertically
        pb, pr = (_downsample_420(p) for p in (pb, pr))
    y_off, y_scale, c_off, c_scale = levels(rng, bits)
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


def output_color(color: ColorInfo | None, height: int) -> tuple[str, str, int]:
    """``(matrix, range, bit depth)`` used to write YUV for frames ``height`` lines high.

    No ``color``: the height default matrix, limited range, 8 bits. An RGB source: the
    height default matrix in its range. Depth: 8 for sources up to 8 bits, else 10.
    """
    if color is None:
        return default_matrix(height), "limited", 8
    if color.matrix == "rgb":
        return default_matrix(height), color.range, 8 if color.bit_depth <= 8 else 10
    return color.matrix, color.range, 8 if color.bit_depth <= 8 else 10
