"""Shared helpers of the ``relatent bench`` commands (``jobs.bench.*``).

* provenance of every result file: git commit (+ dirty flag), model sha256s, library
  versions, the machine (:func:`provenance`, :func:`machine_info`);
* inputs: Kodak PNGs, centre crops, evenly spaced clip frames downscaled to a long side;
* classic codecs on 8-bit RGB: JPEG (Pillow, 4:2:0) and x264 / x265 / SVT-AV1 through
  PyAV (:func:`av_sequence`), all measured in RGB after converting back with the same
  matrix (BT.601 full range, the JFIF matrix Pillow's JPEG uses too);
* metrics aggregation and BD-rate (``bjontegaard``, pchip, over the overlapping range);
* JSON / Markdown writing helpers.

Nothing here imports torch, PyAV or the pipeline's media code at module level: ``relatent
--help`` builds every bench parser.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fractions
import io
import json
import math
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError

__all__ = [
    "AV_CODECS",
    "METRIC_KEYS",
    "PRESETS",
    "REPO",
    "av_sequence",
    "bd_rate",
    "centre_crop",
    "clip_frames",
    "clip_run",
    "codec_options",
    "downsample2",
    "even_indices",
    "even_size",
    "fmt_pct",
    "git_state",
    "interleaved",
    "jpeg_encode",
    "jpeg_point",
    "library_versions",
    "load_images",
    "machine_info",
    "md_table",
    "mean_point",
    "model_cards",
    "pareto",
    "planes_to_rgb",
    "png_metadata",
    "provenance",
    "provenance_md",
    "quality",
    "rate_change_at_quality",
    "resize",
    "rgb_to_planes",
    "rgb_to_ycbcr",
    "sei_bytes",
    "upsample2",
    "write_json",
    "ycbcr_to_rgb",
]

#: The root of this checkout (where ``git`` is asked for the commit of every result).
REPO = Path(__file__).resolve().parents[2]
#: The per-frame measurements every benchmark point carries.
METRIC_KEYS = ("bpp", "psnr", "psnr_y", "ms_ssim")

# --------------------------------------------------------------------------- provenance


def machine_info(with_torch: bool = True) -> dict[str, Any]:
    """The machine a result was measured on: CPU model, cores, memory (GB), load average,
    Python, platform, UTC date; with ``with_torch`` also the torch version, whether CUDA is
    available and the GPU's name (importing torch takes seconds: ``bench startup`` skips it).
    """
    cpu = platform.processor()
    try:
        with Path("/proc/cpuinfo").open() as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    try:
        with Path("/proc/meminfo").open() as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["mem_total_gb"] = round(int(line.split()[1]) / 2**20, 1)
                    break
    except OSError:
        pass
    if with_torch:
        import torch

        info["cuda"] = torch.cuda.is_available()
        info["torch"] = torch.__version__
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """``git rev-parse HEAD`` and whether the tree differs from it (with the changed paths)."""

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True
        ).stdout

    try:
        commit = run("rev-parse", "HEAD").strip()
        changed = [
            ln[3:]
            for ln in run("status", "--porcelain", "--untracked-files=no").splitlines()
            if ln.strip()
        ]
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None, "changed": []}
    return {"commit": commit, "dirty": bool(changed), "changed": changed}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a benchmark depends on ("absent" when missing),
    plus the FFmpeg libraries PyAV was built with (``ffmpeg``)."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name in (
        "torch",
        "compressai",
        "numpy",
        "av",
        "pillow",
        "bjontegaard",
        "scipy",
        "matplotlib",
        "pytorch-msssim",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    try:
        import av

        out["ffmpeg"] = " ".join(
            f"{k}={'.'.join(map(str, v))}" for k, v in av.library_versions.items()
        )
    except ImportError:
        pass
    return out


def model_cards() -> list[dict[str, Any]]:
    """The shipped rate points (whatever ``cards.json`` lists), sorted by arch and quality."""
    from pipeline.models import load_cards

    return sorted(load_cards()["models"], key=lambda c: (c["arch"], int(c["quality"])))


def provenance(command: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every result file records: the ``command`` and its ``args``, the git state,
    the shipped models (arch, quality, sha256, lambda, N, M, training steps), library
    versions and the machine (imports torch)."""
    return {
        "command": command,
        "args": args or {},
        "git": git_state(),
        "models": [
            {
                "arch": c["arch"],
                "quality": int(c["quality"]),
                "sha256": c["sha256"],
                "lambda": c.get("lambda"),
                "N": c.get("N"),
                "M": c.get("M"),
                "steps": c.get("steps", 0) + c.get("init_steps", 0),
            }
            for c in model_cards()
        ],
        "libraries": library_versions(),
        "machine": machine_info(),
    }


def provenance_md(prov: dict[str, Any]) -> list[str]:
    """Markdown lines (commit, machine, libraries, models) of a :func:`provenance` dict."""
    g, m = prov["git"], prov["machine"]
    commit = (
        "unknown" if not g["commit"] else g["commit"][:12] + (" (dirty tree)" if g["dirty"] else "")
    )
    libs = ", ".join(f"{k} {v}" for k, v in prov["libraries"].items() if k != "ffmpeg")
    lines = [
        f"Produced by `{prov['command']}` at commit `{commit}` on {m['date']}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, CUDA {m['cuda']}"
        + (f" ({m['gpu']})" if m.get("gpu") else "")
        + (f", load average at start {m['load_average']}" if m.get("load_average") else "")
        + ".",
        f"Libraries: {libs}; FFmpeg: {prov['libraries'].get('ffmpeg', '?')}.",
        "Models: "
        + (
            ", ".join(
                f"{d['arch']} q{d['quality']} (sha256 `{d['sha256'][:12]}`, {d['steps']} steps)"
                for d in prov["models"]
            )
            or "none shipped"
        )
        + ".",
    ]
    return lines


def png_metadata(prov: dict[str, Any]) -> dict[str, str]:
    """PNG text chunks: the plot carries the same provenance as its JSON."""
    g = prov["git"]
    return {
        "Software": prov["command"],
        "Source": f"git {g['commit']}{' (dirty)' if g['dirty'] else ''}",
        "Comment": json.dumps(
            {
                "models": [m["sha256"] for m in prov.get("models", [])],
                "date": prov["machine"]["date"],
            }
        ),
    }


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (numpy scalars and arrays, paths allowed) through a
    temporary file renamed into place, so a reader never sees a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table: one line per row, cells converted with ``str``."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def fmt_pct(v: float | None) -> str:
    """A signed percentage with one decimal (``+1.5%``), or ``n/a`` for None / NaN."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.1f}%"


def interleaved(
    configs: list[Any], fn: Callable[[Any], dict[str, float]], repeats: int
) -> list[list[dict[str, float]]]:
    """Run every config once per repeat, rotating the order each repeat, so slow phases of
    the shared machine hit all configs alike. Returns per-config lists of measurements."""
    res: list[list[dict[str, float]]] = [[] for _ in configs]
    n = len(configs)
    for r in range(repeats):
        order = [(i + r) % n for i in range(n)]
        if r % 2:
            order.reverse()
        for i in order:
            res[i].append(fn(configs[i]))
    return res


# --------------------------------------------------------------------------- inputs


def load_images(folder: Path, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """The PNGs of ``folder`` in name order (the first ``limit``) as (file name, HxWx3 uint8
    RGB) pairs.

    Raises:
        InputError: the folder holds no PNG.
    """
    from PIL import Image

    files = sorted(folder.glob("*.png"))
    if not files:
        raise InputError(
            f"no PNG images in {folder}", hint="pass --kodak pointing at the 24 Kodak PNGs"
        )
    out = []
    for f in files[:limit]:
        with Image.open(f) as im:
            out.append((f.name, np.asarray(im.convert("RGB"))))
    return out


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` square of an HxWxC image (contiguous copy).

    Raises:
        InputError: the image is smaller than ``size`` on a side.
    """
    h, w = img.shape[:2]
    if size > min(h, w):
        raise InputError(f"cannot take a {size}x{size} crop of a {w}x{h} image")
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def even_size(h: int, w: int, long_side: int | None) -> tuple[int, int]:
    """Size after scaling so the long side is ``long_side`` (never upscaling), rounded to
    even numbers so 4:2:0 codecs take the frame unchanged."""
    s = 1.0 if long_side is None else min(1.0, long_side / max(h, w))
    return max(2, 2 * round(h * s / 2)), max(2, 2 * round(w * s / 2))


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """8-bit RGB resized to ``h`` x ``w`` with Lanczos (Pillow); unchanged when equal."""
    from PIL import Image

    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.LANCZOS))


def even_indices(count: int, n: int) -> list[int]:
    """``n`` evenly spaced frame indices of ``count`` (centres of n equal segments)."""
    n = min(n, count)
    return sorted({int((i + 0.5) * count / n) for i in range(n)})


def clip_frames(
    path: Path, n: int, long_side: int | None
) -> tuple[list[int], list[np.ndarray], Any]:
    """``n`` evenly spaced frames of a clip as 8-bit RGB, downscaled (long side) to even sizes.

    Returns (frame indices, HxWx3 uint8 frames, the clip's probe info).

    Raises:
        InputError: the clip cannot be opened or decoded (from :mod:`pipeline.media`).
    """
    from pipeline import media as fio
    from pipeline import metrics

    info = fio.probe(str(path))
    idx = even_indices(info.frame_count, n)
    h, w = even_size(info.height, info.width, long_side)
    out = []
    for i in idx:  # one seek per frame: only the wanted frames are converted to RGB
        fr = next(
            iter(
                fio.read_frames(str(path), i, i + 1, info=info, max_pixels=info.width * info.height)
            )
        )
        out.append(resize(metrics.to_uint8(fr.rgb), h, w))
    return idx, out, info


def clip_run(
    path: Path, n: int, long_side: int | None, start: int | None = None
) -> tuple[list[int], list[np.ndarray], Any]:
    """``n`` consecutive frames of a clip (from ``start``; default: the middle) as 8-bit
    RGB, downscaled (long side) to even sizes: a sequence for warm-start measurements.

    Returns (frame indices, HxWx3 uint8 frames, the clip's probe info).

    Raises:
        InputError: the clip cannot be opened or decoded (from :mod:`pipeline.media`).
    """
    from pipeline import media as fio
    from pipeline import metrics

    info = fio.probe(str(path))
    n = min(n, info.frame_count)
    first = max(0, (info.frame_count - n) // 2) if start is None else start
    h, w = even_size(info.height, info.width, long_side)
    frames = fio.read_frames(
        str(path), first, first + n, info=info, max_pixels=info.width * info.height
    )
    out = [resize(metrics.to_uint8(fr.rgb), h, w) for fr in frames]
    return list(range(first, first + len(out))), out, info


# --------------------------------------------------------------------------- metrics


def quality(ref: np.ndarray, rec: np.ndarray, nbytes: float) -> dict[str, float]:
    """The :data:`METRIC_KEYS` of a reconstruction ``rec`` of ``ref`` (HxWx3 uint8) coded
    in ``nbytes`` bytes: bpp, RGB PSNR, BT.601 Y PSNR (dB) and RGB MS-SSIM."""
    from pipeline import metrics

    return {
        "bpp": metrics.bpp(nbytes, *ref.shape[:2]),
        "psnr": metrics.psnr_rgb(ref, rec),
        "psnr_y": metrics.psnr_y(ref, rec),
        "ms_ssim": metrics.ms_ssim(ref, rec),
    }


def mean_point(points: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of equally keyed points (a curve point is a per-frame mean)."""
    return {k: float(np.mean([p[k] for p in points])) for k in points[0]}


def pareto(points: list[dict[str, float]], dist: Any) -> list[dict[str, float]]:
    """The points of a curve that no other point dominates (less rate and more quality),
    sorted by rate: BD-rate interpolation needs quality increasing with rate, and an
    under-trained rate point can fall below its neighbour."""
    out: list[dict[str, float]] = []
    for p in sorted(points, key=lambda p: p["bpp"]):
        if not out or dist(p) > dist(out[-1]):
            out.append(p)
    return out


def bd_rate(
    anchor: list[dict[str, float]], test: list[dict[str, float]], key: str = "psnr"
) -> float | None:
    """BD-rate (%) of ``test`` against ``anchor`` (pchip), over the overlapping range.

    ``key`` is ``psnr``, ``psnr_y`` or ``ms_ssim`` (taken in dB, -10 log10(1 - MS-SSIM)).
    None when either curve has fewer than 2 points or the curves do not overlap."""
    import bjontegaard as bd

    if len(anchor) < 2 or len(test) < 2:
        return None
    dist = (lambda p: -10 * math.log10(1 - p[key])) if key == "ms_ssim" else (lambda p: p[key])
    a = pareto(anchor, dist)
    t = pareto(test, dist)
    if len(a) < 2 or len(t) < 2:
        return None
    try:
        v = float(
            bd.bd_rate(
                [p["bpp"] for p in a],
                [dist(p) for p in a],
                [p["bpp"] for p in t],
                [dist(p) for p in t],
                method="pchip",
                require_matching_points=False,
                min_overlap=0.0,
            )
        )
    except (ValueError, AssertionError, ZeroDivisionError):
        return None
    return None if math.isnan(v) else v


def rate_change_at_quality(
    anchor: list[dict[str, float]], point: dict[str, float], key: str = "psnr"
) -> float | None:
    """Rate of ``point`` against the ``anchor`` curve at the same quality (%), for single
    points where BD-rate is undefined: the anchor's log-rate is interpolated (pchip) as a
    function of quality. None outside the anchor's quality range."""
    from scipy.interpolate import PchipInterpolator

    def dist(p: dict[str, float]) -> float:
        return -10 * math.log10(1 - p[key]) if key == "ms_ssim" else p[key]

    pts = sorted(anchor, key=dist)
    xs, ys = [], []
    for p in pts:  # keep a strictly increasing quality axis
        if not xs or dist(p) > xs[-1]:
            xs.append(dist(p))
            ys.append(math.log(p["bpp"]))
    q = dist(point)
    if len(xs) < 2 or not xs[0] <= q <= xs[-1]:
        return None
    return 100.0 * (point["bpp"] / math.exp(float(PchipInterpolator(xs, ys)(q))) - 1.0)


# --------------------------------------------------------------------------- JPEG


def jpeg_encode(img: np.ndarray, quality_: int) -> tuple[int, np.ndarray]:
    """Pillow (libjpeg) baseline JPEG, 4:2:0; returns (file bytes, decoded RGB)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality_, subsampling=2)
    n = buf.tell()
    buf.seek(0)
    with Image.open(buf) as im:
        rec = np.asarray(im.convert("RGB"))
    return n, rec


def jpeg_point(img: np.ndarray, quality_: int) -> dict[str, float]:
    """:func:`quality` of a Pillow JPEG (4:2:0) of ``img`` at quality ``quality_``."""
    n, rec = jpeg_encode(img, quality_)
    return quality(img, rec, n)


# --------------------------------------------------------------------------- colour conversion

# The classic codecs here get BT.601 full range ("JFIF"), the matrix Pillow/libjpeg uses,
# so every codec sees the same YCbCr and PSNR in RGB is measured after the inverse of the
# same matrix. The coefficients are the library's one table
# (:data:`pipeline.media.colour.LUMA_COEFFS`); the conversion is in float64 with JPEG's
# centre-sited chroma (ITU-T T.871 / JFIF), which the video writer does not need.


def _bt601() -> tuple[float, float, float]:
    """BT.601 ``(Kr, Kg, Kb)`` with ``Kg = 1 - Kr - Kb`` in float64 (as the benchmarks
    always computed it), from :data:`pipeline.media.colour.LUMA_COEFFS`."""
    from pipeline.media.colour import LUMA_COEFFS

    kr, _, kb = LUMA_COEFFS["bt601"]
    return kr, 1 - kr - kb, kb


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """8-bit RGB HxWx3 -> float64 YCbCr HxWx3 (full range, 0..255, chroma centred on 128).

    Y = Kr R + Kg G + Kb B, Cb = (B - Y) / (2 (1 - Kb)) + 128, Cr = (R - Y) / (2 (1 - Kr))
    + 128 with the BT.601 coefficients (ITU-T T.871, the JFIF conversion)."""
    kr, kg, kb = _bt601()
    x = rgb.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = kr * r + kg * g + kb * b
    cb = (b - y) / (2 * (1 - kb)) + 128.0
    cr = (r - y) / (2 * (1 - kr)) + 128.0
    return np.stack([y, cb, cr], -1)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Float YCbCr HxWx3 (full range) -> 8-bit RGB (rounded, clipped): the exact inverse of
    :func:`rgb_to_ycbcr` before rounding."""
    kr, kg, kb = _bt601()
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128.0, ycc[..., 2] - 128.0
    r = y + 2 * (1 - kr) * cr
    b = y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / kg
    return np.clip(np.rint(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)


def _q8(v: np.ndarray) -> np.ndarray:
    """Round and clip float samples to 8 bits."""
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def downsample2(c: np.ndarray) -> np.ndarray:
    """2x2 box average (centre-sited chroma, as JPEG); H and W must be even."""
    return 0.25 * (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2])


def _up_axis(c: np.ndarray, axis: int) -> np.ndarray:
    """2x upsampling along ``axis`` with the 3/4, 1/4 triangle filter (edges repeated)."""
    c = np.moveaxis(c, axis, 0)
    prev = np.concatenate([c[:1], c[:-1]])
    nxt = np.concatenate([c[1:], c[-1:]])
    out = np.empty((2 * c.shape[0], *c.shape[1:]), dtype=np.float64)
    out[0::2] = 0.75 * c + 0.25 * prev
    out[1::2] = 0.75 * c + 0.25 * nxt
    return np.moveaxis(out, 0, axis)


def upsample2(c: np.ndarray) -> np.ndarray:
    """Centre-sited 2x upsampling with the triangle filter (libjpeg's "fancy upsampling")."""
    return _up_axis(_up_axis(c.astype(np.float64), 0), 1)


def rgb_to_planes(rgb: np.ndarray, pix_fmt: str) -> list[np.ndarray]:
    """8-bit RGB HxWx3 -> the Y, Cb, Cr uint8 planes of ``yuv444p`` (each HxW) or
    ``yuv420p`` (chroma H/2 x W/2, :func:`downsample2`).

    Raises:
        ValueError: another pixel format (a programming error, not a user input).
    """
    ycc = rgb_to_ycbcr(rgb)
    if pix_fmt == "yuv444p":
        return [_q8(ycc[..., i]) for i in range(3)]
    if pix_fmt == "yuv420p":
        return [_q8(ycc[..., 0]), _q8(downsample2(ycc[..., 1])), _q8(downsample2(ycc[..., 2]))]
    raise ValueError(f"unsupported pixel format {pix_fmt}")


def planes_to_rgb(planes: Sequence[np.ndarray], pix_fmt: str) -> np.ndarray:
    """The inverse of :func:`rgb_to_planes`: Y, Cb, Cr planes -> 8-bit RGB HxWx3 (4:2:0
    chroma upsampled with :func:`upsample2`)."""
    y, cb, cr = (p.astype(np.float64) for p in planes)
    if pix_fmt == "yuv420p":
        cb, cr = upsample2(cb), upsample2(cr)
    return ycbcr_to_rgb(np.stack([y, cb, cr], -1))


# --------------------------------------------------------------------------- PyAV codecs

#: What each classic codec run is (labels are what the tables and plots show). ``-gop-``
#: rows run with the encoder's default GOP and B-frames (x264/x265: keyint 250, preset
#: medium; nothing but crf set) on consecutive frames coded as one sequence.
AV_CODECS: dict[str, dict[str, Any]] = {
    "x264-intra-420": {"codec": "libx264", "pix_fmt": "yuv420p", "intra": True, "knob": "crf"},
    "x264-intra-444": {"codec": "libx264", "pix_fmt": "yuv444p", "intra": True, "knob": "crf"},
    "x265-intra-420": {"codec": "libx265", "pix_fmt": "yuv420p", "intra": True, "knob": "crf"},
    "x265-intra-444": {"codec": "libx265", "pix_fmt": "yuv444p", "intra": True, "knob": "crf"},
    "svtav1-intra-420": {"codec": "libsvtav1", "pix_fmt": "yuv420p", "intra": True, "knob": "crf"},
    "x265-gop-420": {"codec": "libx265", "pix_fmt": "yuv420p", "intra": False, "knob": "crf"},
    "x264-gop-420": {"codec": "libx264", "pix_fmt": "yuv420p", "intra": False, "knob": "crf"},
}
#: The decoder that reads each encoder's stream back.
_DECODERS = {"libx264": "h264", "libx265": "hevc", "libsvtav1": "libdav1d"}
#: Encoder presets: x264/x265 at their default (medium, what a user gets); SVT-AV1 at 6,
#: its mid-range preset (8 is ~4% bigger at equal PSNR on Kodak crops, 4 ~5% smaller).
PRESETS = {"libx264": "medium", "libx265": "medium", "libsvtav1": "6"}


def codec_options(codec: str, value: int, intra: bool) -> dict[str, str]:
    """The PyAV encoder options of ``codec`` (``libx264``, ``libx265``, ``libsvtav1``) at
    crf ``value``, all-intra (keyint 1) when ``intra``, preset from :data:`PRESETS`.

    Raises:
        ValueError: an unknown codec (a programming error: labels come from AV_CODECS).
    """
    if codec == "libx264":
        return {
            "crf": str(value),
            "preset": PRESETS[codec],
            **({"x264-params": "keyint=1"} if intra else {}),
        }
    if codec == "libx265":
        params = "log-level=error:info=0" + (":keyint=1" if intra else "")
        return {"crf": str(value), "preset": PRESETS[codec], "x265-params": params}
    if codec == "libsvtav1":
        # SVT-AV1 reports "pred struct: all intra" for keyint=1
        return {
            "crf": str(value),
            "preset": PRESETS[codec],
            **({"svtav1-params": "keyint=1"} if intra else {}),
        }
    raise ValueError(f"unknown codec {codec}")


def sei_bytes(data: bytes, codec: str) -> int:
    """Bytes of SEI NAL units (with their start codes) in an Annex-B packet: x264 writes its
    whole option string as SEI user data in the first packet (~0.5-0.7 kB), which no decoder
    needs. AV1 has no SEI (0)."""
    if codec not in ("libx264", "libx265"):
        return 0
    starts = []
    i = 0
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j)
        i = j + 3
    total = 0
    for k, s in enumerate(starts):
        begin = s - 1 if s > 0 and data[s - 1] == 0 else s  # 4-byte start code
        end = starts[k + 1] if k + 1 < len(starts) else len(data)
        if k + 1 < len(starts) and data[starts[k + 1] - 1] == 0:
            end = starts[k + 1] - 1
        if s + 3 >= len(data):
            continue
        h = data[s + 3]
        nal_type = h & 0x1F if codec == "libx264" else (h >> 1) & 0x3F
        if (codec == "libx264" and nal_type == 6) or (codec == "libx265" and nal_type in (39, 40)):
            total += end - begin
    return total


def _to_frame(rgb: np.ndarray, pix_fmt: str, pts: int) -> Any:
    """8-bit RGB as an ``av.VideoFrame`` in ``pix_fmt`` (BT.601 full range) at ``pts``."""
    import av

    planes = rgb_to_planes(rgb, pix_fmt)
    h, w = rgb.shape[:2]
    if pix_fmt == "yuv444p":
        arr = np.stack(planes)
    else:
        arr = np.concatenate([p.reshape(-1) for p in planes]).reshape(h * 3 // 2, w)
    f = av.VideoFrame.from_ndarray(arr, format=pix_fmt)
    f.pts = pts
    return f


def _planes_of(frame: Any) -> list[np.ndarray]:
    """The uint8 planes of a decoded ``av.VideoFrame`` (line padding removed)."""
    out = []
    for p in frame.planes:
        a = np.frombuffer(bytes(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width]
        out.append(a.copy())
    return out


def av_sequence(frames: Sequence[np.ndarray], label: str, value: int) -> dict[str, Any]:
    """Encode 8-bit RGB frames (equal, even sizes) as one stream with the codec ``label``
    (see :data:`AV_CODECS`) at crf ``value``; decode it back and measure.

    Returns ``frames``: per-frame dicts (bpp from that frame's packet for intra codecs,
    SEI excluded; for GOP mode every frame gets the stream average, since inter frames
    cannot be attributed), ``total_bytes`` (all packets), ``sei_bytes`` and ``seconds``.

    Raises:
        RuntimeError: the decoder returned fewer frames than were encoded (a codec bug).
    """
    import time

    import av

    spec = AV_CODECS[label]
    codec, pix_fmt, intra = spec["codec"], spec["pix_fmt"], spec["intra"]
    os.environ.setdefault("SVT_LOG", "1")
    h, w = frames[0].shape[:2]
    t0 = time.perf_counter()
    cc = av.CodecContext.create(codec, "w")
    cc.width, cc.height, cc.pix_fmt = w, h, pix_fmt
    cc.time_base = fractions.Fraction(1, 25)
    cc.framerate = fractions.Fraction(25, 1)
    cc.thread_count = 1
    try:
        cc.color_range = 2  # full ("pc"/JPEG) range, BT.601 matrix (bt470bg)
        cc.colorspace = 5
    except (AttributeError, TypeError, ValueError):
        pass
    if intra:
        cc.gop_size = 1
    cc.options = codec_options(codec, value, intra)
    packets = []
    for i, rgb in enumerate(frames):
        packets += cc.encode(_to_frame(rgb, pix_fmt, i))
    packets += cc.encode(None)
    enc_s = time.perf_counter() - t0
    datas = [(p.pts, bytes(p)) for p in packets]
    dec = av.CodecContext.create(_DECODERS[codec], "r")
    dec.thread_count = 1
    recon: dict[int, np.ndarray] = {}
    order: list[Any] = []
    for p in packets:
        order += dec.decode(p)
    order += dec.decode(None)
    for k, fr in enumerate(order):
        pts = fr.pts if fr.pts is not None else k
        recon[int(pts)] = planes_to_rgb(_planes_of(fr), pix_fmt)
    if len(recon) != len(frames):
        raise RuntimeError(f"{label}: decoded {len(recon)} of {len(frames)} frames")
    total = sum(len(d) for _, d in datas)
    sei = sum(sei_bytes(d, codec) for _, d in datas)
    per_frame_bytes: dict[int, int] = {}
    if intra and len(datas) == len(frames):
        for pts, d in datas:
            per_frame_bytes[int(pts)] = len(d) - sei_bytes(d, codec)
    out = []
    for i, ref in enumerate(frames):
        nbytes = per_frame_bytes.get(i, (total - sei) / len(frames))
        q = quality(ref, recon[i], nbytes)
        out.append(q)
    return {
        "frames": out,
        "total_bytes": total,
        "sei_bytes": sei,
        "seconds": enc_s,
        "codec": codec,
        "pix_fmt": pix_fmt,
        "options": codec_options(codec, value, intra),
        "gop_size": 1 if intra else "default",
    }
