"""Pixel formats by family (issue 18, kind 3): every pixel format FFmpeg knows is classified
by its components (YUV in any layout, RGB, grey, palette; Bayer, XYZ, float grey and
hardware formats refused), and every one PyAV can decode is converted to RGB as FFmpeg
converts the same decoded frames.

The oracle is FFmpeg's own conversion: the ``scale`` filter with accurate rounding and
interpolated chroma, told only the chroma siting the reader uses (co-sited horizontally,
centred vertically; centred both ways for JPEG-style sources), so the range and matrix are
FFmpeg's choice from the frame's tags or its defaults for untagged frames (limited-range
BT.601 YUV; full-range grey and RGB). Frames are tiny; the whole module runs in a few seconds.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
import pytest

from pipeline.errors import UnsupportedPixelFormatError
from pipeline.media import probe, read_frames
from pipeline.media.colour import (
    color_info,
    frame_to_rgb,
    is_jpeg_style,
    pix_format,
    pixel_family,
    plan_for,
)
from tests.pipeline.media.clips import encode, to_u8

H, W = 32, 48  # multiples of 4: every subsampling (4:1:0 included) divides them
BLACK = (slice(0, 8), slice(0, 6))
WHITE = (slice(0, 8), slice(6, 12))


def pattern() -> np.ndarray:
    """uint8 HxWx3 RGB: ramps in R (left to right), G (top to bottom) and B (R's mirror),
    with a top row of 6x8 blocks: black, white, red, green, blue, yellow, cyan, magenta."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.empty((H, W, 3), np.uint8)
    img[..., 0] = x * 255 // (W - 1)
    img[..., 1] = y * 255 // (H - 1)
    img[..., 2] = 255 - img[..., 0]
    blocks = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
    blocks += [(255, 255, 0), (0, 255, 255), (255, 0, 255)]
    for i, colour in enumerate(blocks):
        img[0:8, 6 * i : 6 * i + 6] = colour
    return img


def ffmpeg_rgb(frame: av.VideoFrame, jpeg: bool) -> np.ndarray:
    """FFmpeg's rgb24 conversion of ``frame`` (the ``scale`` filter, one thread), chroma
    sited as the reader sites it; range and matrix from the frame's tags or FFmpeg's
    defaults."""
    fmt = frame.format
    sub_w = frame.width // fmt.chroma_width(frame.width)
    sub_h = frame.height // fmt.chroma_height(frame.height)
    h_pos = 128 * (sub_w - 1) if jpeg else 0  # 1/256 of a luma sample
    v_pos = 128 * (sub_h - 1)
    graph = av.filter.Graph()
    src = graph.add_buffer(
        width=frame.width, height=frame.height, format=fmt.name, time_base=Fraction(1, 25)
    )
    scale = graph.add(
        "scale",
        f"flags=bilinear+accurate_rnd+full_chroma_int:in_h_chr_pos={h_pos}"
        f":in_v_chr_pos={v_pos}:threads=1",
    )
    rgb = graph.add("format", "rgb24")
    sink = graph.add("buffersink")
    src.link_to(scale)
    scale.link_to(rgb)
    rgb.link_to(sink)
    graph.configure()
    graph.push(frame)
    return graph.pull().to_ndarray()


def synthetic(pix_fmt: str) -> av.VideoFrame:
    """The pattern in ``pix_fmt`` as swscale converts it (untagged: limited-range BT.601
    for YUV); formats swscale cannot write get deterministic random samples (floats in
    [0, 1] for floating-point formats)."""
    base = av.VideoFrame.from_ndarray(pattern(), format="rgb24")
    try:
        return base.reformat(format=pix_fmt, threads=1)
    except (av.error.FFmpegError, ValueError, NotImplementedError):
        pass
    frame = av.VideoFrame(W, H, pix_fmt)
    if pix_fmt == "uyyvyy411":  # packed U Y Y V Y Y from the pattern's yuv411p planes
        y, u, v = (
            np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]
            for p in base.reformat(format="yuv411p", threads=1).planes
        )
        packed = np.stack([u, y[:, 0::4], y[:, 1::4], v, y[:, 2::4], y[:, 3::4]], axis=-1).reshape(
            H, -1
        )
        line = frame.planes[0].line_size
        frame.planes[0].update(np.pad(packed, ((0, 0), (0, line - packed.shape[1]))).tobytes())
        return frame
    rng = np.random.default_rng(sum(map(ord, pix_fmt)))
    float_bytes = 2 if "f16" in pix_fmt else 4 if "f32" in pix_fmt else 0
    for plane in frame.planes:
        if float_bytes:
            order = ">" if frame.format.is_big_endian else "<"
            values = rng.random(plane.buffer_size // float_bytes)
            plane.update(values.astype(f"{order}f{float_bytes}").tobytes())
        else:
            plane.update(rng.integers(0, 256, plane.buffer_size, dtype=np.uint8).tobytes())
    return frame


def rawvideo_round_trip(frame: av.VideoFrame) -> tuple[av.VideoFrame, av.CodecContext]:
    """``frame`` coded by FFmpeg's rawvideo encoder and decoded by its decoder, with the
    decoder's codec context (untagged, as a stream with no colour tags)."""
    pix_fmt = frame.format.name
    enc = av.CodecContext.create("rawvideo", "w")
    enc.width, enc.height, enc.pix_fmt = frame.width, frame.height, pix_fmt
    enc.time_base = Fraction(1, 25)
    frame.pts = 0
    packets = [*enc.encode(frame), *enc.encode(None)]
    dec = av.CodecContext.create("rawvideo", "r")
    dec.width, dec.height, dec.pix_fmt = frame.width, frame.height, pix_fmt
    (decoded,) = [f for p in packets for f in dec.decode(p)]
    assert decoded.format.name == pix_fmt
    return decoded, dec


def decodable() -> list[str]:
    """Every pixel format FFmpeg knows whose frames PyAV can make and rawvideo can code."""
    names = []
    for name in sorted(av.video.format.names):
        try:
            rawvideo_round_trip(synthetic(name))
        except (av.error.FFmpegError, ValueError, NotImplementedError):
            continue
        names.append(name)
    return names


DECODABLE = decodable()
#: Formats refused on purpose (they need demosaicing, colour management, or are float
#: luma-only): the reader says so with UnsupportedPixelFormatError.
REFUSED = ("bayer_", "xyz", "grayf", "yaf")


def test_every_family_is_covered() -> None:
    families = {
        pixel_family(av.VideoFormat(n), "x") for n in DECODABLE if not n.startswith(REFUSED)
    }
    assert families == {"yuv", "rgb", "grey", "palette"}
    for name in ("nv24", "nv42", "vuya", "vuyx", "ayuv", "xv30le", "p410le", "yuv444p", "y210le"):
        assert name in DECODABLE and pixel_family(av.VideoFormat(name), "x") == "yuv"
    for name in ("gbrp", "gbrap16le", "rgb24", "bgr0", "x2rgb10le", "rgbf32le", "rgb565le"):
        assert name in DECODABLE and pixel_family(av.VideoFormat(name), "x") == "rgb"
    for name in ("gray", "gray10le", "gray16le", "ya8", "ya16be", "monob"):
        assert name in DECODABLE and pixel_family(av.VideoFormat(name), "x") == "grey"
    assert "pal8" in DECODABLE and pixel_family(av.VideoFormat("pal8"), "x") == "palette"


@pytest.mark.parametrize("pix_fmt", DECODABLE)
def test_decoded_frames_match_ffmpeg(pix_fmt: str) -> None:
    """A frame of every decodable format, decoded untagged, converts as FFmpeg converts it
    (within 2 of 255: FFmpeg rounds through fixed point); a format FFmpeg cannot convert
    is refused with a clear error, as are the :data:`REFUSED` ones."""
    frame, cc = rawvideo_round_trip(synthetic(pix_fmt))
    name = f"{pix_fmt}.raw"
    jpeg = is_jpeg_style(pix_fmt, cc.name)
    reference = None
    if not pix_fmt.startswith(REFUSED):  # (FFmpeg 8's scale filter aborts on yaf32be)
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            reference = ffmpeg_rgb(frame, jpeg).astype(int)
    if reference is None:
        with pytest.raises(UnsupportedPixelFormatError, match=rf"{name}: .*{pix_fmt}"):
            plan_for(pix_fmt, name)
        return
    color = color_info(cc, pix_fmt, pix_format(pix_fmt, name), H, name, cc.name)
    ours = to_u8(frame_to_rgb(frame, plan_for(pix_fmt, name), color, jpeg)).astype(int)
    assert np.abs(ours - reference).max() <= 2


def test_untagged_444_yuv_is_limited_range_in_every_layout() -> None:
    """The issue's case: 4:4:4 YUV with no range tag (planar, semi-planar, packed, with
    alpha, 8 to 16 bits) is limited range, so black and white stay black and white."""
    for pix_fmt in ("yuv444p", "yuva444p", "yuv444p10le", "yuv444p16le", "nv24", "nv42"):
        frame, cc = rawvideo_round_trip(synthetic(pix_fmt))
        color = color_info(cc, pix_fmt, pix_format(pix_fmt, "x"), H, "x", cc.name)
        assert color.range == "limited", pix_fmt
        rgb = to_u8(frame_to_rgb(frame, plan_for(pix_fmt, "x"), color, False))
        assert rgb[BLACK].max() <= 2 and rgb[WHITE].min() >= 253, pix_fmt
    for pix_fmt in ("vuya", "ayuv", "xv30le", "p410le", "xv48le"):
        frame, cc = rawvideo_round_trip(synthetic(pix_fmt))
        color = color_info(cc, pix_fmt, pix_format(pix_fmt, "x"), H, "x", cc.name)
        assert color.range == "limited", pix_fmt
        rgb = to_u8(frame_to_rgb(frame, plan_for(pix_fmt, "x"), color, False))
        assert rgb[BLACK].max() <= 2 and rgb[WHITE].min() >= 253, pix_fmt
        # The colour is kept: the red block is red.
        assert np.abs(rgb[1:7, 13:17].astype(int) - (255, 0, 0)).max() <= 3, pix_fmt
    # A JPEG-range format (yuvj*) untagged is full range; untagged grey too.
    for pix_fmt, rng in (("yuvj444p", "full"), ("gray", "full"), ("gray10le", "full")):
        cc = av.CodecContext.create("rawvideo", "r")
        cc.width, cc.height, cc.pix_fmt = W, H, pix_fmt
        assert color_info(cc, pix_fmt, av.VideoFormat(pix_fmt), H, "x", cc.name).range == rng


def test_unsupported_formats_are_refused_by_name() -> None:
    for pix_fmt, why in (
        ("bayer_rggb8", "Bayer"),
        ("xyz12le", "XYZ"),
        ("cuda", "hardware"),
        ("vaapi", "hardware"),
        ("grayf32le", "floating-point"),
    ):
        with pytest.raises(UnsupportedPixelFormatError, match=rf"clip\.mkv: .*{pix_fmt}.*{why}"):
            plan_for(pix_fmt, "clip.mkv")


# Real files through probe and read_frames: (pix_fmt, codec, suffix, colorspace, color range,
# expected family, expected range). Untagged unless said.
FILES = [
    ("yuv444p", "ffv1", ".mkv", 2, 0, "yuv", "limited"),
    ("yuv444p", "ffv1", ".mkv", 2, 2, "yuv", "full"),
    ("yuv444p", "ffv1", ".mkv", 1, 1, "yuv", "limited"),
    ("yuva444p", "ffv1", ".mkv", 2, 0, "yuv", "limited"),
    ("yuv444p12le", "ffv1", ".mkv", 2, 0, "yuv", "limited"),
    ("yuv420p", "ffv1", ".mkv", 1, 0, "yuv", "limited"),
    ("yuv422p10le", "ffv1", ".mkv", 2, 0, "yuv", "limited"),
    ("yuvj444p", "mjpeg", ".mkv", 2, 2, "yuv", "full"),
    ("nv12", "rawvideo", ".nut", 2, 0, "yuv", "limited"),
    ("nv21", "rawvideo", ".nut", 2, 0, "yuv", "limited"),
    ("yuyv422", "rawvideo", ".nut", 2, 0, "yuv", "limited"),
    ("uyvy422", "rawvideo", ".nut", 2, 0, "yuv", "limited"),
    ("vuya", "rawvideo", ".nut", 2, 0, "yuv", "limited"),
    ("uyva", "rawvideo", ".nut", 2, 0, "yuv", "limited"),
    ("vyu444", "rawvideo", ".nut", 2, 0, "yuv", "limited"),
    ("xv30le", "rawvideo", ".nut", 2, 0, "yuv", "limited"),
    ("y210le", "rawvideo", ".nut", 2, 0, "yuv", "limited"),
    ("gbrp", "rawvideo", ".nut", 2, 0, "rgb", "full"),
    ("gbrp10le", "ffv1", ".mkv", 2, 0, "rgb", "full"),
    ("rgb24", "rawvideo", ".nut", 2, 0, "rgb", "full"),
    ("bgr0", "ffv1", ".mkv", 2, 0, "rgb", "full"),
    ("argb", "rawvideo", ".nut", 2, 0, "rgb", "full"),
    ("gray", "ffv1", ".mkv", 2, 0, "grey", "full"),
    ("gray16le", "ffv1", ".mkv", 2, 0, "grey", "full"),
    ("ya8", "ffv1", ".mkv", 2, 0, "grey", "full"),
    ("monow", "rawvideo", ".nut", 2, 0, "grey", "full"),
    ("pal8", "rawvideo", ".nut", 2, 0, "palette", "full"),
]


@pytest.mark.parametrize(
    "pix_fmt,codec,suffix,colorspace,color_range,family,expected_range",
    FILES,
    ids=[f"{f[0]}-{f[1]}-c{f[3]}-r{f[4]}" for f in FILES],
)
def test_files_read_as_ffmpeg_reads_them(
    tmp_path: Path,
    pix_fmt: str,
    codec: str,
    suffix: str,
    colorspace: int,
    color_range: int,
    family: str,
    expected_range: str,
) -> None:
    """A two-frame file of each family, read by probe and read_frames, equals FFmpeg's
    conversion of the same decoded frames (tags from the container)."""

    def make() -> av.VideoFrame:
        if not color_range and colorspace == 2:
            return synthetic(pix_fmt)
        # Samples in the range and matrix the stream is tagged with.
        return av.VideoFrame.from_ndarray(pattern(), format="rgb24").reformat(
            format=pix_fmt,
            dst_colorspace="ITU709" if colorspace == 1 else None,
            dst_color_range="JPEG" if color_range == 2 else None,
            threads=1,
        )

    path = encode(
        tmp_path / f"c{suffix}",
        [make(), make()],
        codec=codec,
        pix_fmt=pix_fmt,
        colorspace=colorspace,
        color_range=color_range,
    )
    info = probe(path)
    assert info.pix_fmt == pix_fmt
    assert pixel_family(av.VideoFormat(pix_fmt), path.name) == family
    assert info.color.range == expected_range
    jpeg = is_jpeg_style(pix_fmt, codec)
    with av.open(str(path)) as container:
        references = [ffmpeg_rgb(f, jpeg) for f in container.decode(video=0)]
    frames = list(read_frames(path, info=info))
    assert len(frames) == len(references) == 2
    for got, reference in zip(frames, references, strict=True):
        assert np.abs(to_u8(got.rgb).astype(int) - reference.astype(int)).max() <= 2
    fmt = av.VideoFormat(pix_fmt)
    if family == "yuv" and (fmt.chroma_width(W), fmt.chroma_height(H)) == (W, H):  # 4:4:4
        rgb = to_u8(frames[0].rgb)
        assert rgb[BLACK].max() <= 2 and rgb[WHITE].min() >= 253
