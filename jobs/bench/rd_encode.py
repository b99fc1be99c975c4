"""The encodes of ``relatent bench rd``, in worker processes: relatent frames and
sequences at each rate point and budget, the classic codecs' quality sweeps, the pool
that runs them and the calibration that predicts their run time.

Every function that a worker runs takes one picklable item and loads its model once per
process (:data:`MODEL_CACHE`); torch runs one thread per process (:func:`init_worker`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from jobs.bench import lib as bl
from jobs.bench.rd_protocol import Protocol
from pipeline.errors import InputError

__all__ = [
    "CRF_SWEEPS",
    "JPEG_QUALITIES",
    "MODEL_CACHE",
    "cached_model",
    "classic_task",
    "classic_tasks",
    "encode_item",
    "encode_sequence_item",
    "estimate_minutes",
    "init_worker",
    "padded_px",
    "pool_map",
    "run_items",
]

#: Pillow JPEG qualities of the JPEG sweep.
JPEG_QUALITIES = (2, *range(5, 100, 5))
#: crf values of each PyAV encoder's sweep.
CRF_SWEEPS = {
    "libx264": (17, 22, 27, 32, 37, 42, 47, 51),
    "libx265": (17, 22, 27, 32, 37, 42, 47, 51),
    "libsvtav1": (20, 28, 35, 42, 50, 58, 63),
}

#: (arch, quality) -> loaded model, one per worker process (tests put small models here).
MODEL_CACHE: dict[tuple[str, int], Any] = {}


def cached_model(arch: str, quality: int, device: str = "cpu") -> Any:
    """The shipped model ``arch`` at ``quality`` on ``device``, loaded once per process.

    Raises:
        ModelError: the rate point is not shipped or its weights do not load.
    """
    from pipeline.models import load_model

    key = (arch, quality)
    if key not in MODEL_CACHE:
        MODEL_CACHE[key] = load_model(arch, quality, device=device)
    return MODEL_CACHE[key]


def encode_item(item: dict[str, Any]) -> dict[str, Any]:
    """One frame, one rate point, one budget (0 = unrefined). Runs in a worker process.

    ``item`` holds ``rgb`` (HxWx3 uint8), ``index``, ``arch``, ``quality``, ``budget``,
    ``method``, ``lr``, ``seed``, ``device`` and labels; the record returned is the item
    without ``rgb`` plus the frame's stats (bpp from the packet's bytes, PSNR in dB, RD cost
    before/after refinement, iterations, seconds).

    Raises:
        ModelError: the model does not load.
    """
    from pipeline.codec import FrameEncoder
    from pipeline.config import RefineConfig

    model = cached_model(item["arch"], item["quality"], item.get("device", "cpu"))
    b = item["budget"]
    cfg = (
        RefineConfig(method="none")
        if b == 0
        else RefineConfig(method=item["method"], iters=b, lr=item["lr"], tol=0.0, seed=item["seed"])
    )
    t0 = time.perf_counter()
    s = (
        FrameEncoder(model, cfg)
        .encode([item["rgb"].astype(np.float32) / 255.0], [item["index"]], [0])[0]
        .stats
    )
    rec = {k: v for k, v in item.items() if k not in ("rgb",)}
    rec.update(
        codec=f"relatent-{item['arch']}",
        setting=item["quality"],
        bpp=float(s.bpp),
        psnr=float(s.psnr),
        psnr_y=float(s.psnr_y),
        ms_ssim=float(s.ms_ssim),
        bytes=int(s.bytes),
        rd_before=float(s.rd_before),
        rd_after=float(s.rd_after),
        refined=bool(s.refined),
        iters=int(s.iters),
        refine_seconds=float(s.refine_seconds),
        seconds=time.perf_counter() - t0,
    )
    return rec


def encode_sequence_item(item: dict[str, Any]) -> list[dict[str, Any]]:
    """One sequence, one rate point, one recipe and budget (``none``/0 = unrefined), coded as
    a stream is (grid groups, warm-start chains). Runs in a worker process.

    ``item`` holds ``rgbs`` (HxWx3 uint8 frames of equal size), ``names``, ``arch``,
    ``quality``, ``method``, ``budget``, ``config`` (the recipe's RefineConfig fields) and
    ``dataset``; one record per frame is returned.

    Raises:
        ModelError: the model does not load.
    """
    from pipeline.codec import FrameEncoder, encode_frames
    from pipeline.config import RefineConfig

    model = cached_model(item["arch"], item["quality"], item.get("device", "cpu"))
    cfg = (
        RefineConfig(method="none") if item["method"] == "none" else RefineConfig(**item["config"])
    )
    t0 = time.perf_counter()
    enc = FrameEncoder(model, cfg)
    out = list(
        encode_frames(
            enc, [(rgb, i, i) for i, rgb in enumerate(item["rgbs"])], item.get("batch", 4)
        )
    )
    secs = time.perf_counter() - t0
    recs = []
    for name, e in zip(item["names"], out, strict=True):
        s = e.stats
        recs.append(
            {
                "dataset": item["dataset"],
                "frame": name,
                "sweep": "methods",
                "arch": item["arch"],
                "quality": item["quality"],
                "codec": f"relatent-{item['arch']}",
                "setting": item["quality"],
                "budget": item["budget"],
                "method": item["method"],
                "bpp": float(s.bpp),
                "psnr": float(s.psnr),
                "psnr_y": float(s.psnr_y),
                "ms_ssim": float(s.ms_ssim),
                "bytes": int(s.bytes),
                "rd_before": float(s.rd_before),
                "rd_after": float(s.rd_after),
                "refined": bool(s.refined),
                "iters": int(s.iters),
                "warm": bool(s.warm),
                "refine_seconds": float(s.refine_seconds),
                "seconds": secs / len(out),
                "size": list(item["rgbs"][0].shape[:2]),
            }
        )
    return recs


def padded_px(h: int, w: int) -> int:
    """Pixels of an ``h`` x ``w`` frame after the factorized codec's padding (what the
    networks see)."""
    from pipeline.codec import padded_size
    from pipeline.models import get_architecture

    hp, wp = padded_size(h, w, get_architecture("bmshj2018-factorized").pad_multiple)
    return hp * wp


def estimate_minutes(
    items: list[dict[str, Any]], proto: Protocol, cards: list[dict[str, Any]]
) -> dict[str, Any]:
    """Predicted wall time of the relatent encodes: a 3-iteration calibration per rate
    point on a 256x256 crop in this process, scaled by padded pixels and budgets.

    Returns ``minutes`` (over ``proto.jobs`` processes) and ``seconds_per_iter_256`` per
    rate point ("arch qN").
    """
    from pipeline.codec import FrameEncoder
    from pipeline.config import RefineConfig

    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(0.5, 0.2, (256, 256, 3)), 0, 1).astype(np.float32)
    per: dict[tuple[str, int], float] = {}
    base: dict[tuple[str, int], float] = {}
    init_worker()
    for c in cards:
        key = (c["arch"], int(c["quality"]))
        m = cached_model(*key, proto.device)
        t0 = time.perf_counter()
        FrameEncoder(m, RefineConfig(method="none")).encode([img], [0], [0])
        base[key] = time.perf_counter() - t0
        enc = FrameEncoder(m, RefineConfig(method="campos", iters=3, lr=proto.lr, tol=0.0))
        enc.encode([img], [0], [0])
        per[key] = enc.last_refine.seconds / 3
    total = 0.0
    for it in items:
        key = (it["arch"], it["quality"])
        total += (base[key] + it["budget"] * per[key]) * padded_px(*it["rgb"].shape[:2]) / 65536
    return {
        "minutes": total / max(1, proto.jobs) / 60,
        "seconds_per_iter_256": {f"{a} q{q}": round(v, 4) for (a, q), v in per.items()},
    }


def run_items(items: list[dict[str, Any]], jobs: int, log: Any = print) -> list[dict[str, Any]]:
    """Run :func:`encode_item` items, biggest first, over ``jobs`` processes (inline when
    1), logging progress and the remaining time through ``log``; records in finishing order."""
    items = sorted(
        items, key=lambda it: -(it["budget"] + 1) * it["rgb"].shape[0] * it["rgb"].shape[1]
    )
    total = sum((it["budget"] + 1) * it["rgb"].shape[0] * it["rgb"].shape[1] for it in items) or 1
    out: list[dict[str, Any]] = []
    done = 0.0
    t0 = time.perf_counter()

    def note(rec: dict[str, Any]) -> None:
        nonlocal done
        out.append(rec)
        h, w = rec["size"]
        done += (rec["budget"] + 1) * h * w
        el = time.perf_counter() - t0
        eta = el / done * (total - done)
        if len(out) % max(1, len(items) // 40) == 0 or rec["budget"] > 0:
            log(
                f"  [{len(out)}/{len(items)}] {rec['dataset']} {rec['frame']} {rec['arch']} q{rec['quality']} "
                f"budget {rec['budget']}: {rec['bpp']:.4f} bpp {rec['psnr']:.2f} dB ({rec['seconds']:.1f} s; "
                f"elapsed {el / 60:.1f} min, eta {eta / 60:.1f} min)"
            )

    for it in items:
        it["size"] = list(it["rgb"].shape[:2])
    for rec in pool_map(encode_item, items, jobs):
        note(rec)
    return out


def init_worker() -> None:
    """Set up a worker process: one torch thread (metrics and codecs; shared, noisy machine)."""
    import torch

    torch.set_num_threads(1)  # metrics and codecs: one thread per process (shared, noisy machine)


def pool_map(fn: Callable[[Any], Any], tasks: list[Any], jobs: int) -> Iterator[Any]:
    """``fn`` over ``tasks`` in ``jobs`` spawned processes (inline when 1), results as they finish."""
    if jobs <= 1 or len(tasks) <= 1:
        init_worker()
        for t in tasks:
            yield fn(t)
        return
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(min(jobs, len(tasks)), initializer=init_worker) as pool:
        yield from pool.imap_unordered(fn, tasks, chunksize=1)


# --------------------------------------------------------------------------- classic codecs


def classic_task(
    task: tuple[str, list[tuple[str, np.ndarray]], str],
) -> tuple[str, str, float, list[dict[str, Any]]]:
    """One codec's whole sweep on one frame set (JPEG: ``jpeg``; else a
    :data:`jobs.bench.lib.AV_CODECS` label): (dataset, label, seconds, per-frame records)."""
    dataset, frames, label = task
    t0 = time.perf_counter()
    recs: list[dict[str, Any]] = []
    if label == "jpeg":
        for q in JPEG_QUALITIES:
            for n, im in frames:
                recs.append(
                    {
                        "dataset": dataset,
                        "frame": n,
                        "codec": "jpeg-420",
                        "setting": q,
                        "budget": 0,
                        **bl.jpeg_point(im, q),
                    }
                )
    else:
        spec = bl.AV_CODECS[label]
        for crf in CRF_SWEEPS[spec["codec"]]:
            r = bl.av_sequence([im for _, im in frames], label, crf)
            for (n, _), q in zip(frames, r["frames"], strict=False):
                recs.append(
                    {
                        "dataset": dataset,
                        "frame": n,
                        "codec": label,
                        "setting": crf,
                        "budget": 0,
                        **q,
                        "stream_bytes": r["total_bytes"],
                        "sei_bytes": r["sei_bytes"],
                        "encode_seconds": r["seconds"],
                    }
                )
    return dataset, label, time.perf_counter() - t0, recs


def classic_tasks(
    dataset: str, frames: list[tuple[str, np.ndarray]], codecs: list[str], gop: bool
) -> list[Any]:
    """The codec sweeps of one frame set; GOP-mode codecs only when ``gop`` (clips).

    Raises:
        InputError: an unknown codec label.
    """
    out = []
    for label in codecs:
        if label != "jpeg" and label not in bl.AV_CODECS:
            raise InputError(
                f"unknown codec {label!r}", hint=f"use jpeg or one of {', '.join(bl.AV_CODECS)}"
            )
        if label == "jpeg" or bl.AV_CODECS[label]["intra"] or gop:
            out.append((dataset, frames, label))
    return out
