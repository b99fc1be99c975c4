"""pipeline.media.colour: matrices, ranges, bit depths, chroma siting and pixel formats,
checked against the textbook H.273 formulas of :mod:`tests.pipeline.media.clips`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline import metrics
from pipeline.errors import UnsupportedPixelFormatError
from pipeline.media import LUMA_COEFFS, probe, read_frames
from pipeline.media.colour import levels
from tests.pipeline.media.clips import (
    KR_KB,
    MATRIX_CODE,
    QUAD_COLOURS,
    codes_to_rgb,
    encode,
    interior,
    make_frame,
    quad_image,
    rgb_to_codes,
    to_u8,
    yuv_planes,
)


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


def test_luma_coefficients_are_the_standards_and_metrics_use_them() -> None:
    # The one table: Kr, Kb as the textbook oracle has them, Kg = 1 - Kr - Kb.
    for matrix, (kr, kg, kb) in LUMA_COEFFS.items():
        assert (kr, kb) == KR_KB[matrix]
        assert kg == pytest.approx(1 - kr - kb, abs=1e-12)
        # Every float32 coefficient the conversions derive from Kg is the one that the
        # float64 1 - Kr - Kb gives (so the table did not change a decoded or written frame).
        for g in (kg, 1.0 - kr - kb):
            derived = (g, 2 * kb * (1 - kb) / g, 2 * kr * (1 - kr) / g)
            assert [np.float32(c) for c in derived] == [
                np.float32(kg),
                np.float32(2 * kb * (1 - kb) / kg),
                np.float32(2 * kr * (1 - kr) / kg),
            ]
    # psnr_y is BT.601 luma from the same table.
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    rec = np.clip(ref.astype(int) + rng.integers(-3, 4, ref.shape), 0, 255).astype(np.uint8)
    y = lambda a: a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    mse = np.mean((y(ref) - y(rec)) ** 2) / 255**2
    assert metrics.psnr_y(ref, rec) == pytest.approx(10 * np.log10(1 / mse), rel=1e-12)
    # Limited-range 8-bit levels: 16 + 219 Y', 128 + 224 C.
    assert levels("limited", 8) == (16.0, 219.0, 128.0, 224.0)
    assert levels("full", 10) == (0.0, 1023.0, 512.0, 1023.0)
