"""Quality and rate metrics, all on 8-bit RGB (what the decoder outputs).

* ``psnr_rgb``: PSNR over the three RGB channels, peak 255.
* ``psnr_y``: PSNR of BT.601 luma (Y' = 0.299 R + 0.587 G + 0.114 B, full range), the
  convention of the learned-compression literature.
* ``ms_ssim``: multi-scale SSIM on RGB (pytorch-msssim, Gaussian window 11). Frames whose
  short side is too small for 5 scales use as many scales as fit, with the standard
  weights renormalised; ``ms_ssim_levels`` says how many.
* ``bpp``: bits per source pixel from actual bytes.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.media.colour import LUMA_COEFFS

__all__ = [
    "MS_SSIM_WEIGHTS",
    "bpp",
    "ms_ssim",
    "ms_ssim_levels",
    "mse",
    "psnr_from_mse",
    "psnr_rgb",
    "psnr_y",
    "rd_cost",
    "to_uint8",
]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_LUMA_601 = np.array(LUMA_COEFFS["bt601"], dtype=np.float64)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] to 8-bit, round half to even (numpy's rint)."""
    return np.clip(np.rint(np.asarray(rgb, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error of two 8-bit images (``[H, W, 3]`` uint8), on the [0, 1] scale
    (the 0..255 MSE divided by 255^2)."""
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(d * d)) / (255.0 * 255.0)


def psnr_from_mse(m: float) -> float:
    """PSNR in dB of an MSE on the [0, 1] scale: 10 log10(1 / MSE), i.e. the usual
    10 log10(255^2 / MSE) of the 0..255 MSE; ``inf`` when ``m`` is 0."""
    return 10.0 * math.log10(1.0 / m) if m > 0 else float("inf")


def psnr_rgb(ref: np.ndarray, rec: np.ndarray) -> float:
    """PSNR in dB over the three channels of two ``[H, W, 3]`` uint8 RGB images (peak 255)."""
    return psnr_from_mse(mse(ref, rec))


def psnr_y(ref: np.ndarray, rec: np.ndarray) -> float:
    """PSNR in dB of the BT.601 luma (Y' = 0.299 R + 0.587 G + 0.114 B, full range, not
    rounded) of two ``[H, W, 3]`` uint8 RGB images (peak 255)."""
    ya = ref.astype(np.float64) @ _LUMA_601
    yb = rec.astype(np.float64) @ _LUMA_601
    m = float(np.mean((ya - yb) ** 2)) / (255.0 * 255.0)
    return psnr_from_mse(m)


def ms_ssim_levels(height: int, width: int, win: int = 11) -> int:
    """How many MS-SSIM scales (1..5) fit a ``height`` x ``width`` image (pixels): the
    short side must exceed ``(win - 1) * 2^(levels - 1)``, pytorch-msssim's condition."""
    levels = 5
    while levels > 1 and min(height, width) <= (win - 1) * 2 ** (levels - 1):
        levels -= 1
    return levels


def ms_ssim(ref: np.ndarray, rec: np.ndarray) -> float:
    """MS-SSIM (Wang, Simoncelli, Bovik 2003, with pytorch-msssim's SSIM: Gaussian window
    11, sigma 1.5, data range 255) of two ``[H, W, 3]`` uint8 RGB images; unitless, at most
    1. Float32; bit-reproducible when run, as the encoder does, in its fixed
    single-threaded context. Small frames use :func:`ms_ssim_levels` scales with the
    standard weights renormalised."""
    import torch
    import torch.nn.functional as F
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    h, w = ref.shape[:2]
    x = torch.from_numpy(ref.astype(np.float32)).permute(2, 0, 1)[None]
    y = torch.from_numpy(rec.astype(np.float32)).permute(2, 0, 1)[None]
    levels = ms_ssim_levels(h, w)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=torch.float64)
    weights = weights / weights.sum()
    win = _fspecial_gauss_1d(11, 1.5).repeat([3, 1, 1, 1])
    mcs = []
    with torch.no_grad():
        for i in range(levels):
            ssim_c, cs = _ssim(x, y, win=win, data_range=255.0, size_average=False, K=(0.01, 0.03))
            if i < levels - 1:
                mcs.append(torch.relu(cs))
                pad = [s % 2 for s in x.shape[2:]]
                x = F.avg_pool2d(x, kernel_size=2, padding=pad)
                y = F.avg_pool2d(y, kernel_size=2, padding=pad)
        stack = torch.stack([*mcs, torch.relu(ssim_c)], dim=0)
        val = torch.prod(stack.double() ** weights.view(-1, 1, 1), dim=0).mean()
    return float(val)


def bpp(num_bytes: int, height: int, width: int) -> float:
    """Bits per source pixel: 8 * ``num_bytes`` / (``height`` * ``width``), with the
    source's (unpadded) size in pixels."""
    return 8.0 * num_bytes / (height * width)


def rd_cost(bpp_value: float, mse_value: float, lmbda: float) -> float:
    """The training objective's units: bpp + lambda * 255^2 * MSE (MSE on [0, 1])."""
    return bpp_value + lmbda * 255.0 * 255.0 * mse_value
