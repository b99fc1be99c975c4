"""The shared benchmark helpers on tiny inputs (no timing here): BD-rate against analytic
values, the JPEG and PyAV codec wrappers, the frame selection helpers."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.bench import lib as bl
from pipeline import metrics
from tests.jobs.bench.helpers import curve, log_linear, smooth_image


@pytest.mark.parametrize("factor", [0.9, 0.75, 1.25])
def test_bd_rate_of_a_curve_scaled_in_rate_is_the_scale(factor: float) -> None:
    # test curve: the anchor's quality at rate r is reached at factor * r, so BD-rate is
    # exactly (factor - 1) * 100 %, also with sample points that do not match the anchor's
    anchor = curve([0.1, 0.2, 0.4, 0.8, 1.6], [log_linear(r) for r in (0.1, 0.2, 0.4, 0.8, 1.6)])
    test_r = [0.15, 0.3, 0.5, 0.9, 1.3]
    test = curve([factor * r for r in test_r], [log_linear(r) for r in test_r])
    for key in ("psnr", "psnr_y", "ms_ssim"):
        assert bl.bd_rate(anchor, test, key) == pytest.approx(100 * (factor - 1), abs=1e-6)


def test_bd_rate_edge_cases() -> None:
    a = curve([0.1, 0.2, 0.4], [30, 33, 36])
    assert bl.bd_rate(a, a) == pytest.approx(0.0, abs=1e-9)
    assert bl.bd_rate(a, a[:1]) is None  # one point: undefined
    assert bl.bd_rate(a[:1], a) is None
    # same shape, 1 dB better everywhere: fewer bits, i.e. negative
    assert bl.bd_rate(a, curve([0.1, 0.2, 0.4], [31, 34, 37])) < 0


def test_rate_change_at_equal_quality() -> None:
    anchor = curve([0.1, 0.2, 0.4, 0.8], [log_linear(r) for r in (0.1, 0.2, 0.4, 0.8)])
    pt = curve([0.3 * 0.8], [log_linear(0.3)])[0]  # anchor quality at 0.3 bpp, 20% fewer bits
    assert bl.rate_change_at_quality(anchor, pt) == pytest.approx(-20.0, abs=1e-6)
    assert bl.rate_change_at_quality(anchor, curve([1.0], [60.0])[0]) is None  # out of range


# --------------------------------------------------------------------------- codec wrappers


def test_colour_round_trip() -> None:
    img = smooth_image()
    assert metrics.psnr_rgb(img, bl.planes_to_rgb(bl.rgb_to_planes(img, "yuv444p"), "yuv444p")) > 45
    assert metrics.psnr_rgb(img, bl.planes_to_rgb(bl.rgb_to_planes(img, "yuv420p"), "yuv420p")) > 28
    flat = np.full((8, 8, 3), (200, 30, 90), np.uint8)  # chroma subsampling is exact on flat colour
    assert (
        np.abs(
            bl.planes_to_rgb(bl.rgb_to_planes(flat, "yuv420p"), "yuv420p").astype(int) - flat
        ).max()
        <= 1
    )


def test_jpeg_wrapper_is_sane_and_monotone() -> None:
    img = smooth_image()
    pts = [bl.jpeg_point(img, q) for q in (10, 50, 90)]
    for p in pts:
        assert set(p) == set(bl.METRIC_KEYS)
        assert 0.05 < p["bpp"] < 24 and 15 < p["psnr"] < 60 and 0 < p["ms_ssim"] <= 1
    assert pts[0]["bpp"] < pts[1]["bpp"] < pts[2]["bpp"]
    assert pts[0]["psnr"] < pts[1]["psnr"] < pts[2]["psnr"]


@pytest.mark.parametrize("label", ["x265-intra-420", "x265-intra-444", "x264-intra-420"])
def test_intra_wrappers_are_sane_and_monotone(label: str) -> None:
    frames = [smooth_image(seed=1)]
    runs = [bl.av_sequence(frames, label, crf) for crf in (18, 32, 46)]
    means = [bl.mean_point(r["frames"]) for r in runs]
    for r, m in zip(runs, means, strict=True):
        assert len(r["frames"]) == 1
        assert 0.01 < m["bpp"] < 24 and 15 < m["psnr"] < 60
        # per-frame bytes add up to the stream minus the informational SEI
        total = sum(f["bpp"] for f in r["frames"]) * 64 * 64 / 8
        assert total == pytest.approx(r["total_bytes"] - r["sei_bytes"], abs=1e-6)
    assert means[0]["bpp"] > means[1]["bpp"] > means[2]["bpp"]
    assert means[0]["psnr"] > means[1]["psnr"] > means[2]["psnr"]
    if label.startswith("x264"):
        assert runs[0]["sei_bytes"] > 100  # x264's option-string SEI is excluded from bpp


def test_gop_mode_and_svtav1() -> None:
    frames = [smooth_image(seed=0)] * 3  # a static scene: inter frames are nearly free
    gop = bl.av_sequence(frames, "x265-gop-420", 32)
    intra = bl.av_sequence(frames, "x265-intra-420", 32)
    assert gop["total_bytes"] < intra["total_bytes"]
    assert len({f["bpp"] for f in gop["frames"]}) == 1  # stream average per frame
    av1 = bl.av_sequence(frames[:1], "svtav1-intra-420", 40)
    assert 20 < av1["frames"][0]["psnr"] < 60 and av1["sei_bytes"] == 0


def test_sei_parser() -> None:
    sei = b"\x00\x00\x00\x01\x06" + b"x" * 50
    slice_ = b"\x00\x00\x01\x65" + b"y" * 20
    assert bl.sei_bytes(sei + slice_, "libx264") == len(sei)
    assert bl.sei_bytes(slice_, "libx264") == 0
    hevc_sei = b"\x00\x00\x01" + bytes([39 << 1, 1]) + b"z" * 10
    assert bl.sei_bytes(hevc_sei + slice_, "libx265") == len(hevc_sei)


def test_frame_selection_helpers() -> None:
    assert bl.even_indices(120, 8) == [7, 22, 37, 52, 67, 82, 97, 112]
    assert bl.even_indices(3, 8) == [0, 1, 2]
    assert bl.even_size(272, 640, 256) == (108, 256)
    assert bl.even_size(144, 176, 256) == (144, 176)  # never upscaled
    assert bl.centre_crop(np.zeros((512, 768, 3), np.uint8), 256).shape == (256, 256, 3)
