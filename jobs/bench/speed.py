"""``relatent bench speed``: what refinement costs, and what decoding costs; projection to scale.

Measures on this machine (CPU; CUDA too when present), with side-by-side, interleaved,
repeated measurements (the machine is shared and noisy: medians and per-repeat ratios):

* encode frames/s at each iteration budget and resolution (Kodak centre crops). A
  (budget, size) pair whose predicted time exceeds ``--max-seconds`` per measurement is not
  run; its frames/s is projected from the measured per-iteration cost and flagged
  ``measured: false``;
* seconds per refinement iteration per megapixel at batch 1, 4 and 8;
* decode frames/s of refined and unrefined streams of the same frames, and their ratio
  (target 1.00 +/- 0.05: the decoder is untouched);
* peak memory (resident set: VmHWM, reset before each measurement through
  ``/proc/self/clear_refs``; ``ru_maxrss`` where that is not available; CUDA:
  ``torch.cuda.max_memory_allocated``);
* FLOPs per refinement iteration per megapixel (``torch.utils.flop_counter``);
* the inter section (:mod:`jobs.bench.speed_inter`): on real consecutive frames of the
  shared clips, encode and decode frames/s at ``--gop 1`` against the default GOP, the
  decode overhead of inter coding (target <= 1.10x), random-access decode time, and the
  bytes of both streams.

``--only kodak`` or ``--only inter`` runs one section; the other section's numbers are then
kept from the ``speed.json`` already in ``--out`` (merged, see :func:`merge_previous`).

On the CPU every encoder runs single-threaded (the determinism contract, see
``pipeline/codec.py``): one frame stream per core is how relatent scales on CPUs, so the
numbers here are per core. The decoder runs with ``--decode-threads`` torch threads.

Writes ``speed.json``, ``speed.md``, ``speed.png`` and ``scale.md`` (projection to GPU-hours
per hour of 1080p video and cluster sizes for a 10,000-hour catalog in a day; every
assumption is stated there).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from jobs.bench import lib as bl
from jobs.bench.lib import interleaved
from jobs.bench.speed_inter import (
    InterProtocol,
    add_inter_args,
    bench_inter,
    inter_protocol_from_args,
)
from jobs.bench.speed_report import projection, write_outputs
from jobs.refine_options import positive_float
from pipeline.errors import InputError

__all__ = [
    "SpeedProtocol",
    "add_args",
    "add_parser",
    "bench_batches",
    "bench_decode",
    "bench_encode",
    "cmd_speed",
    "flops_per_iter_per_mp",
    "kodak_crops",
    "measure",
    "med",
    "merge_previous",
    "peak_rss_mb",
    "protocol_from_args",
    "reset_peak_rss",
    "run",
]


@dataclass
class SpeedProtocol:
    """What a ``bench speed`` run measures (recorded in speed.json): iteration ``budgets``
    (0 = unrefined) at square crop ``sizes`` (pixels), refinement at each batch size
    (``batch_iters`` iterations), ``repeats`` interleaved repeats per point, points
    predicted over ``max_seconds`` projected instead of run, decode of ``decode_frames``
    frames (refined stream at ``decode_budget``) on ``decode_threads`` threads, the ``crop``
    of the batch / decode / FLOP measurements, Adam ``lr`` and the ``devices``; the
    ``sections`` run (``kodak``: all of the above; ``inter``: the ``inter`` protocol)."""

    budgets: list[int] = field(default_factory=lambda: [0, 25, 100, 400])
    sizes: list[int] = field(default_factory=lambda: [256, 512])
    batches: list[int] = field(default_factory=lambda: [1, 4, 8])
    batch_iters: int = 10
    repeats: int = 3
    max_seconds: float = 60.0
    decode_frames: int = 8
    decode_budget: int = 25
    decode_threads: int = 1
    crop: int = 256  # frame size of the batch, decode and FLOP measurements
    lr: float = 5e-3
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    sections: list[str] = field(default_factory=lambda: ["kodak", "inter"])
    inter: InterProtocol = field(default_factory=InterProtocol)


# --------------------------------------------------------------------------- measurement tools


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (VmHWM) through ``/proc/self/clear_refs``;
    False where that is not possible (the peak is then the process's lifetime peak)."""
    try:
        with Path("/proc/self/clear_refs").open("w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set of this process in MiB (VmHWM; ``ru_maxrss`` without /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def measure(device: str) -> Iterator[dict[str, float]]:
    """Wall time and peak memory of the block (CUDA synchronised): the dict yielded gets
    ``seconds``, ``peak_rss_mb`` (MiB), ``rss_peak_is_process_lifetime`` and on CUDA
    ``cuda_peak_mb``."""
    import torch

    out: dict[str, float] = {}
    resettable = reset_peak_rss()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    yield out
    if device == "cuda":
        torch.cuda.synchronize()
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = peak_rss_mb()
    out["rss_peak_is_process_lifetime"] = not resettable


def med(ms: list[dict[str, float]], key: str = "seconds") -> float:
    """Median of ``key`` over measurements."""
    return float(statistics.median(m[key] for m in ms))


def kodak_crops(kodak: Path, size: int, n: int) -> list[np.ndarray]:
    """``n`` square ``size`` crops (images smaller than ``size`` are mirror-padded: timing only).

    Raises:
        InputError: no PNG in ``kodak``.
    """
    out = []
    for _, im in bl.load_images(kodak):
        h, w = im.shape[:2]
        if min(h, w) < size:
            im = np.pad(
                im, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="symmetric"
            )
        out.append(bl.centre_crop(im, size))
        if len(out) == n:
            break
    k = len(out)
    while len(out) < n:  # fewer images than requested: reuse them (timing only)
        out.append(out[len(out) % k])
    return out


# --------------------------------------------------------------------------- benchmarks


def _encoder(model: Any, budget: int, lr: float, iters: int | None = None) -> Any:
    """A frame encoder: unrefined at budget 0, else ``campos`` at exactly ``budget``."""
    from pipeline.codec import FrameEncoder
    from pipeline.config import RefineConfig

    b = budget if iters is None else iters
    cfg = (
        RefineConfig(method="none")
        if b == 0
        else RefineConfig(method="campos", iters=b, lr=lr, tol=0.0)
    )
    return FrameEncoder(model, cfg)


def _f32(imgs: list[np.ndarray]) -> list[np.ndarray]:
    """8-bit RGB frames as float32 in [0, 1] (what the encoder takes)."""
    return [im.astype(np.float32) / 255.0 for im in imgs]


def bench_encode(
    model: Any, device: str, kodak: Path, proto: SpeedProtocol, log: Any
) -> dict[str, Any]:
    """Frames/s per (size, budget); per-iteration cost per size; peak memory.

    Returns ``points`` (per size and budget: seconds per frame, frames/s, peak RSS MiB,
    ``measured`` or projected, time against unrefined), ``seconds_per_iter`` and
    ``seconds_per_iter_per_mp`` per size, ``unrefined_seconds_per_mp`` per size.

    Raises:
        InputError: no PNG in ``kodak``.
    """
    frames = {s: _f32(kodak_crops(kodak, s, 1)) for s in proto.sizes}
    calib = _calibrate(model, device, frames, proto.lr)
    configs = [
        (s, b)
        for s in proto.sizes
        for b in proto.budgets
        if calib[s]["base"] + b * calib[s]["iter"] <= proto.max_seconds
    ]
    skipped = [(s, b) for s in proto.sizes for b in proto.budgets if (s, b) not in configs]
    log(
        f"  encode: {len(configs)} measured points x {proto.repeats} repeats, {len(skipped)} projected"
    )

    def one(cfg: tuple[int, int]) -> dict[str, float]:
        s, b = cfg
        enc = _encoder(model, b, proto.lr)
        with measure(device) as m:
            enc.encode(frames[s], [0], [0])
        m["refine_seconds"] = enc.last_refine.seconds if b else 0.0
        return m

    runs = interleaved(configs, one, proto.repeats)
    return _encode_summary(configs, runs, skipped, calib, device, proto)


def _calibrate(
    model: Any, device: str, frames: dict[int, list[np.ndarray]], lr: float
) -> dict[int, dict[str, float]]:
    """Per size: seconds of an unrefined encode (``base``) and per iteration (``iter``,
    from a 5-iteration encode), to predict each point's cost."""
    calib = {}
    for s, f in frames.items():
        _encoder(model, 0, lr).encode(f, [0], [0])  # warm-up
        with measure(device) as m0:
            _encoder(model, 0, lr).encode(f, [0], [0])
        enc = _encoder(model, 5, lr)
        enc.encode(f, [0], [0])
        calib[s] = {"base": m0["seconds"], "iter": enc.last_refine.seconds / 5}
    return calib


def _encode_summary(
    configs: list[tuple[int, int]],
    runs: list[list[dict[str, float]]],
    skipped: list[tuple[int, int]],
    calib: dict[int, dict[str, float]],
    device: str,
    proto: SpeedProtocol,
) -> dict[str, Any]:
    """The result of :func:`bench_encode` from its measurements ``runs`` (one list per
    (size, budget) of ``configs``); ``skipped`` points are projected."""
    points = []
    per_iter: dict[int, list[float]] = {}
    base: dict[int, float] = {}
    for (s, b), ms in zip(configs, runs, strict=False):
        sec = med(ms)
        p = {
            "size": s,
            "budget": b,
            "measured": True,
            "seconds_per_frame": sec,
            "fps": 1.0 / sec,
            "seconds_all": [m["seconds"] for m in ms],
            "peak_rss_mb": max(m["peak_rss_mb"] for m in ms),
        }
        if device == "cuda":
            p["cuda_peak_mb"] = max(m["cuda_peak_mb"] for m in ms)
        if b:
            per_iter.setdefault(s, []).extend(m["refine_seconds"] / b for m in ms)
        else:
            base[s] = sec
        points.append(p)
    for s in proto.sizes:
        per_iter.setdefault(s, [calib[s]["iter"]])
        base.setdefault(s, calib[s]["base"])
    for s, b in skipped:
        sec = base[s] + b * statistics.median(per_iter[s])
        points.append(
            {"size": s, "budget": b, "measured": False, "seconds_per_frame": sec, "fps": 1.0 / sec}
        )
    # relative cost of each budget against unrefined, per repeat (noise-robust)
    for p in points:
        if p["measured"] and p["budget"]:
            i0 = configs.index((p["size"], 0)) if (p["size"], 0) in configs else None
            if i0 is not None:
                ib = configs.index((p["size"], p["budget"]))
                p["time_ratio_vs_unrefined"] = float(
                    statistics.median(
                        a["seconds"] / z["seconds"]
                        for a, z in zip(runs[ib], runs[i0], strict=False)
                    )
                )
    mp = {s: s * s / 1e6 for s in proto.sizes}
    return {
        "points": sorted(points, key=lambda p: (p["size"], p["budget"])),
        "seconds_per_iter": {str(s): float(statistics.median(v)) for s, v in per_iter.items()},
        "seconds_per_iter_per_mp": {
            str(s): float(statistics.median(v)) / mp[s] for s, v in per_iter.items()
        },
        "unrefined_seconds_per_mp": {str(s): base[s] / mp[s] for s in proto.sizes},
    }


def bench_batches(
    model: Any, device: str, kodak: Path, proto: SpeedProtocol, log: Any
) -> list[dict[str, Any]]:
    """Seconds per refinement iteration per megapixel at each batch size (``crop`` px squares)."""
    c = proto.crop
    crops = _f32(kodak_crops(kodak, c, max(proto.batches)))
    log(f"  batches {proto.batches}: {proto.batch_iters} iterations x {proto.repeats} repeats")

    def one(b: int) -> dict[str, float]:
        enc = _encoder(model, proto.batch_iters, proto.lr)
        with measure(device) as m:
            enc.encode(crops[:b], list(range(b)), list(range(b)))
        m["refine_seconds"] = enc.last_refine.seconds
        m["s_iter_mp"] = enc.last_refine.seconds / (proto.batch_iters * b * c * c / 1e6)
        return m

    runs = interleaved(proto.batches, one, proto.repeats)
    b1 = runs[0]
    return [
        {
            "batch": b,
            "seconds_per_iter_per_mp": med(ms, "s_iter_mp"),
            "all": [m["s_iter_mp"] for m in ms],
            "ratio_vs_batch1": float(
                statistics.median(
                    a["s_iter_mp"] / z["s_iter_mp"] for a, z in zip(ms, b1, strict=False)
                )
            ),
            "peak_rss_mb": max(m["peak_rss_mb"] for m in ms),
        }
        for b, ms in zip(proto.batches, runs, strict=False)
    ]


def _header(model: Any, h: int, w: int, n: int, refine: Any) -> Any:
    """A stream header for ``n`` frames of ``h`` x ``w`` at 25 frames/s (BT.709 full range)."""
    from fractions import Fraction

    from pipeline.codec import make_header
    from pipeline.media import ColorInfo

    info = SimpleNamespace(
        width=w,
        height=h,
        frame_rate=Fraction(25),
        time_base=Fraction(1, 25),
        frame_count=n,
        color=ColorInfo("bt709", "full", "unknown", "unknown", 8),
        pix_fmt="rgb24",
    )
    return make_header(model, info, refine)


def bench_decode(
    model: Any, device: str, kodak: Path, proto: SpeedProtocol, log: Any
) -> dict[str, Any]:
    """Decode frames/s of an unrefined and a refined stream of the same frames, interleaved.

    Returns per stream frames/s, bpp, refined frames and peak RSS (MiB), and the median
    ratio of refined to unrefined decode time (target 1.00 +/- 0.05).

    Raises:
        InputError: no PNG in ``kodak``.
    """
    from pipeline.models import fixed_threads

    n = proto.decode_frames
    streams = _decode_streams(model, kodak, proto)
    log(
        f"  decode: {n} frames per stream x {proto.repeats * 2} repeats, {proto.decode_threads} thread(s)"
    )

    def decode_one(name: str, i: int) -> float:
        s = streams[name]
        if device == "cuda":
            import torch

            torch.cuda.synchronize()
        t0 = time.perf_counter()
        s["decoder"].decode(s["packets"][i])
        if device == "cuda":
            import torch

            torch.cuda.synchronize()
        return time.perf_counter() - t0

    # Frame-level pairing: frame i of both streams is decoded back to back (order
    # alternating), so load changes on the shared machine hit both sides of each pair.
    totals: dict[str, list[float]] = {"unrefined": [], "refined": []}
    pair_ratios: list[float] = []
    peak = {}
    with fixed_threads(proto.decode_threads):
        for i in range(n):  # warm-up
            decode_one("unrefined", i)
            decode_one("refined", i)
        for r in range(proto.repeats * 2):
            acc = {"unrefined": 0.0, "refined": 0.0}
            for i in range(n):
                order = ("unrefined", "refined") if (r + i) % 2 == 0 else ("refined", "unrefined")
                t = {name: decode_one(name, i) for name in order}
                acc["unrefined"] += t["unrefined"]
                acc["refined"] += t["refined"]
                pair_ratios.append(t["refined"] / t["unrefined"])
            for k, v in acc.items():
                totals[k].append(v)
        for name in streams:
            with measure(device) as m:
                for i in range(n):
                    decode_one(name, i)
            peak[name] = m["peak_rss_mb"]
    ratio = float(
        statistics.median(
            r / u for u, r in zip(totals["unrefined"], totals["refined"], strict=True)
        )
    )
    out: dict[str, Any] = {
        "frames": n,
        "size": proto.crop,
        "refined_budget": proto.decode_budget,
        "threads": proto.decode_threads,
        "repeats": proto.repeats * 2,
        "ratio_refined_over_unrefined": ratio,
        "median_per_frame_ratio": float(statistics.median(pair_ratios)),
        "within_target": abs(ratio - 1.0) <= 0.05,
    }
    for name in ("unrefined", "refined"):
        out[name] = {
            "fps": n / float(statistics.median(totals[name])),
            "seconds_all": totals[name],
            "bpp": streams[name]["bpp"],
            "refined_frames": streams[name]["refined_frames"],
            "peak_rss_mb": peak[name],
        }
    return out


def _decode_streams(model: Any, kodak: Path, proto: SpeedProtocol) -> dict[str, dict[str, Any]]:
    """The unrefined and the refined stream of ``proto.decode_frames`` crops: a decoder,
    the packets, mean bpp and the number of refined frames."""
    from pipeline.decoder import FrameDecoder

    n = proto.decode_frames
    crops = _f32(kodak_crops(kodak, proto.crop, n))
    streams = {}
    for name, b in (("unrefined", 0), ("refined", proto.decode_budget)):
        enc = _encoder(model, b, proto.lr)
        encoded = [e for i in range(n) for e in enc.encode([crops[i]], [i], [i])]
        streams[name] = {
            "decoder": FrameDecoder(model, _header(model, proto.crop, proto.crop, n, enc.refine)),
            "packets": [e.packet for e in encoded],
            "bpp": float(np.mean([e.stats.bpp for e in encoded])),
            "refined_frames": sum(e.stats.refined for e in encoded),
        }
    return streams


def flops_per_iter_per_mp(model: Any, kodak: Path, lr: float, size: int = 256) -> float | None:
    """FLOPs of one refinement iteration (forward + backward) per megapixel, counted on a
    256x256 crop as the difference between a 2-iteration and a 1-iteration encode."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    crop = _f32(kodak_crops(kodak, size, 1))
    counts = []
    for it in (1, 2):
        with FlopCounterMode(display=False) as fc:
            _encoder(model, it, lr).encode(crop, [0], [0])
        counts.append(fc.get_total_flops())
    return float(counts[1] - counts[0]) / (size * size / 1e6)


# --------------------------------------------------------------------------- run


def run(
    kodak: Path | None,
    out: Path,
    proto: SpeedProtocol,
    log: Any = print,
    model: Any = None,
    video: Path | None = None,
) -> dict[str, Any]:
    """The speed measurements of ``proto.sections`` with the shipped default model (or
    ``model``, for tests); writes speed.json / speed.md / speed.png / scale.md under ``out``
    (a section not run keeps its numbers from the ``speed.json`` there: :func:`merge_previous`)
    and returns the results. ``video``: the shared clips of the inter section (default
    ``../shared/data/video``; absent clips are skipped).

    Raises:
        InputError: no shipped default model, no PNG in ``kodak`` (the Kodak section), or an
            unknown inter clip label.
        ModelError: the default model does not load.
    """
    import torch

    from pipeline.models import load_cards, load_model

    t0 = time.perf_counter()
    prov = bl.provenance("relatent bench speed", asdict(proto))
    cards = load_cards()
    arch, quality = cards.get("default_arch"), cards.get("default_quality")
    given = model
    if given is not None:
        arch, quality = given.identity.arch, given.identity.quality
    if arch is None:
        raise InputError(
            "no shipped default model", hint="ship a model first (relatent ship --default)"
        )
    results: dict[str, Any] = {
        "provenance": prov,
        "protocol": asdict(proto),
        "model": {"arch": arch, "quality": quality},
        "devices": {},
    }
    loaded: dict[str, Any] = {}

    def model_on(device: str) -> Any:
        if device not in loaded:
            loaded[device] = (
                given.to(device) if given is not None else load_model(arch, quality, device=device)
            )
        m = loaded[device]
        results["model"].update(N=m.N, M=m.M, sha256=m.identity.weights_sha256)
        return m

    devices = [d for d in proto.devices if d != "cuda" or torch.cuda.is_available()]
    if "kodak" in proto.sections:
        if kodak is None:
            raise InputError("the Kodak section needs --kodak", hint="pass --kodak DIR")
        for device in devices:
            m = model_on(device)
            log(f"speed on {device}: {arch} q{quality} (N={m.N}, M={m.M})")
            d: dict[str, Any] = {}
            d["encode"] = bench_encode(m, device, kodak, proto, log)
            d["batches"] = bench_batches(m, device, kodak, proto, log)
            d["decode"] = bench_decode(m, device, kodak, proto, log)
            results["devices"][device] = d
        results["flops_per_iter_per_mp"] = flops_per_iter_per_mp(
            model_on("cpu"), kodak, proto.lr, proto.crop
        )
        results["projection"] = projection(results)
    results["seconds"] = time.perf_counter() - t0  # the Kodak sections'
    if "inter" in proto.sections:
        t1 = time.perf_counter()
        clips = video if video is not None else bl.REPO.parent / "shared" / "data" / "video"
        inter: dict[str, Any] = {
            "provenance": bl.provenance(
                "relatent bench speed (inter section)", asdict(proto.inter)
            ),
            "protocol": asdict(proto.inter),
            "devices": {},
        }
        for device in devices:
            m = model_on(device)
            log(f"speed inter on {device}: {arch} q{quality}, clips under {clips}")
            inter["devices"][device] = bench_inter(m, device, clips, proto.inter, log)
        inter["model"] = dict(results["model"])
        inter["seconds"] = time.perf_counter() - t1
        inter["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        results["inter"] = inter
    results = merge_previous(results, out / "speed.json", proto.sections)
    write_outputs(results, out)
    return results


def merge_previous(results: dict[str, Any], previous: Path, sections: list[str]) -> dict[str, Any]:
    """``results`` of the ``sections`` run, completed from the results file ``previous``
    (when it exists and parses): without ``kodak``, everything but ``inter`` is the previous
    file's (its own provenance, protocol and numbers); without ``inter``, the previous
    ``inter`` section is kept. Nothing is merged when both sections ran."""
    import json

    if "kodak" in sections and "inter" in sections:
        return results
    try:
        prev = json.loads(previous.read_text())
    except (OSError, ValueError):
        return results
    if not isinstance(prev, dict):
        return results
    if "kodak" not in sections and "devices" in prev:
        return {**prev, "inter": results.get("inter")}
    if "inter" not in sections and prev.get("inter"):
        return {**results, "inter": prev["inter"]}
    return results


# --------------------------------------------------------------------------- CLI


def add_args(p: argparse.ArgumentParser, common: bool = True) -> None:
    """The options of ``bench speed``; without ``common`` (``bench all``) no --kodak/--out."""
    d = SpeedProtocol()
    if common:
        p.add_argument(
            "--kodak",
            default="../shared/data/kodak",
            help="folder of the Kodak PNGs (the frames timed)",
        )
        p.add_argument(
            "--out",
            default="docs/benchmarks",
            help="where speed.json / speed.md / speed.png / scale.md go",
        )
        p.add_argument(
            "--video",
            default="../shared/data/video",
            help="folder of the shared clips of the inter section (absent clips are skipped)",
        )
        p.add_argument(
            "--only",
            choices=["kodak", "inter"],
            default=None,
            help="run one section (kodak: encode/batch/decode on Kodak crops and the projection; "
            "inter: the shared clips at --gop 1 and the default GOP); the other section's "
            "numbers are kept from the speed.json in --out",
        )
    p.add_argument(
        "--speed-budgets",
        type=int,
        nargs="+",
        default=d.budgets,
        help="iteration budgets (0 = unrefined)",
    )
    p.add_argument("--sizes", type=int, nargs="+", default=d.sizes, help="square crop sizes")
    p.add_argument(
        "--batches", type=int, nargs="+", default=d.batches, help="batch sizes for s/iteration/MP"
    )
    p.add_argument(
        "--batch-iters", type=int, default=d.batch_iters, help="iterations per batch measurement"
    )
    p.add_argument("--repeats", type=int, default=d.repeats, help="interleaved repeats per point")
    p.add_argument(
        "--max-seconds",
        type=positive_float,
        default=d.max_seconds,
        help="points predicted to take longer per measurement are projected, not run",
    )
    p.add_argument(
        "--decode-frames", type=int, default=d.decode_frames, help="frames per decoded stream"
    )
    p.add_argument(
        "--decode-budget",
        type=int,
        default=d.decode_budget,
        help="iterations of the refined stream",
    )
    p.add_argument(
        "--decode-threads",
        type=int,
        default=d.decode_threads,
        help="torch threads of the decoder (both sections)",
    )
    p.add_argument(
        "--speed-crop",
        type=int,
        default=d.crop,
        help="frame size for the batch, decode and FLOP measurements",
    )
    p.add_argument(
        "--speed-lr", type=positive_float, default=d.lr, help="Adam step size of refinement"
    )
    p.add_argument(
        "--devices", nargs="+", default=["cpu", "cuda"], help="cuda is skipped when absent"
    )
    add_inter_args(p)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``speed`` on the ``bench`` subcommand's subparsers."""
    p = sub.add_parser(
        "speed", help="encode/decode speed, per-iteration cost, memory; scale projection (scale.md)"
    )
    add_args(p)
    p.set_defaults(func=cmd_speed)


def protocol_from_args(a: argparse.Namespace) -> SpeedProtocol:
    """The :class:`SpeedProtocol` of parsed ``bench speed`` (or ``bench all``) options.

    Raises:
        InputError: --repeats or a batch size < 1, or a negative budget; a bad inter
            option (:func:`jobs.bench.speed_inter.inter_protocol_from_args`).
    """
    if a.repeats < 1 or any(b < 0 for b in a.speed_budgets) or any(x < 1 for x in a.batches):
        raise InputError("--repeats and --batches must be >= 1 and --speed-budgets >= 0")
    only = getattr(a, "only", None)
    inter = inter_protocol_from_args(a)
    return SpeedProtocol(
        budgets=a.speed_budgets,
        sizes=a.sizes,
        batches=a.batches,
        batch_iters=a.batch_iters,
        repeats=a.repeats,
        max_seconds=a.max_seconds,
        decode_frames=a.decode_frames,
        decode_budget=a.decode_budget,
        decode_threads=a.decode_threads,
        crop=a.speed_crop,
        lr=a.speed_lr,
        devices=a.devices,
        sections=[only] if only else ["kodak", "inter"],
        inter=inter,
    )


def cmd_speed(a: argparse.Namespace) -> int:
    """``relatent bench speed``: measure and write the files.

    Raises:
        InputError: the --kodak folder does not exist (and the Kodak section runs), or see
            :func:`run`.
    """
    proto = protocol_from_args(a)
    kodak = Path(a.kodak)
    if "kodak" in proto.sections and not kodak.is_dir():
        raise InputError(
            f"--kodak folder {kodak} does not exist",
            hint="pass --kodak DIR with the Kodak PNGs, or --only inter",
        )
    run(kodak, Path(a.out), proto, video=Path(a.video))
    print(f"wrote {Path(a.out) / 'speed.md'} and {Path(a.out) / 'scale.md'}")
    return 0
