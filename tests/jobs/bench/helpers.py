"""Synthetic inputs of the benchmark tests: natural-ish images and RD curves with known
BD-rates (no ../shared/data needed)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["curve", "log_linear", "smooth_image"]


def smooth_image(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """Natural-ish content: smooth gradients, a few edges and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [
            128 + 90 * np.sin(x / 9.0 + seed) * np.cos(y / 13.0),
            128 + 80 * np.cos((x + y) / 17.0),
            60 + 120 * (x > w / 2) + 30 * np.sin(y / 5.0),
        ],
        -1,
    )
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def curve(rates, psnrs):
    return [
        {"bpp": r, "psnr": p, "psnr_y": p + 1.0, "ms_ssim": 1 - 10 ** (-(p - 10) / 10)}
        for r, p in zip(rates, psnrs, strict=True)
    ]


def log_linear(r: float) -> float:
    """A quality curve linear in log-rate: pchip reproduces it exactly."""
    return 40.0 + 6.0 * math.log2(r)
