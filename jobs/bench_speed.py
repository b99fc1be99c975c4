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
* FLOPs per refinement iteration per megapixel (``torch.utils.flop_counter``).

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
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from jobs import benchlib as bl
from pipeline.errors import InputError

# --------------------------------------------------------------------------- GPU assumptions

#: Published peak dense FP32 throughput (no tensor cores; the encoder's deterministic path),
#: from the vendors' datasheets.
GPUS: dict[str, dict[str, Any]] = {
    "T4": {"fp32_tflops": 8.1, "source": "NVIDIA T4 Tensor Core GPU datasheet (8.1 TFLOPS single precision)"},
    "L4": {"fp32_tflops": 30.3, "source": "NVIDIA L4 Tensor Core GPU datasheet (30.3 TFLOPS FP32)"},
    "A100": {"fp32_tflops": 19.5, "source": "NVIDIA A100 Tensor Core GPU datasheet (19.5 TFLOPS FP32)"},
    "H100-SXM": {"fp32_tflops": 67.0, "source": "NVIDIA H100 Tensor Core GPU datasheet, SXM5 (67 TFLOPS FP32)"},
}
#: Fraction of peak FP32 a batch of refinement iterations sustains: an ASSUMPTION (not
#: measured here: no GPU). Small convolution stacks with batch 4-8 of 1080p frames typically
#: reach 20-50% of peak; 30% is the central value, with the range reported.
GPU_UTILISATION = {"low": 0.15, "central": 0.30, "high": 0.50}
FPS_1080P = 30.0
MP_1080P = 1920 * 1080 / 1e6
CATALOG_HOURS = 10_000
WALL_HOURS = 24.0


@dataclass
class SpeedProtocol:
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


# --------------------------------------------------------------------------- measurement tools


def reset_peak_rss() -> bool:
    try:
        with Path("/proc/self/clear_refs").open("w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def measure(device: str) -> Iterator[dict[str, float]]:
    """Wall time and peak memory of the block (CUDA synchronised)."""
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


def interleaved(configs: list[Any], fn: Callable[[Any], dict[str, float]], repeats: int) -> list[list[dict[str, float]]]:
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


def med(ms: list[dict[str, float]], key: str = "seconds") -> float:
    return float(statistics.median(m[key] for m in ms))


def kodak_crops(kodak: Path, size: int, n: int) -> list[np.ndarray]:
    """``n`` square ``size`` crops (images smaller than ``size`` are mirror-padded: timing only)."""
    out = []
    for _, im in bl.load_images(kodak):
        h, w = im.shape[:2]
        if min(h, w) < size:
            im = np.pad(im, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="symmetric")
        out.append(bl.centre_crop(im, size))
        if len(out) == n:
            break
    k = len(out)
    while len(out) < n:  # fewer images than requested: reuse them (timing only)
        out.append(out[len(out) % k])
    return out


# --------------------------------------------------------------------------- benchmarks


def _encoder(model: Any, budget: int, lr: float, iters: int | None = None) -> Any:
    from pipeline.codec import FrameEncoder
    from pipeline.refine import RefineConfig

    b = budget if iters is None else iters
    cfg = RefineConfig(method="none") if b == 0 else RefineConfig(method="campos", iters=b, lr=lr, tol=0.0)
    return FrameEncoder(model, cfg)


def _f32(imgs: list[np.ndarray]) -> list[np.ndarray]:
    return [im.astype(np.float32) / 255.0 for im in imgs]


def bench_encode(model: Any, device: str, kodak: Path, proto: SpeedProtocol, log: Any) -> dict[str, Any]:
    """Frames/s per (size, budget); per-iteration cost per size; peak memory."""
    frames = {s: _f32(kodak_crops(kodak, s, 1)) for s in proto.sizes}
    # calibrate: unrefined and a few iterations, to predict each point's cost
    calib = {}
    for s in proto.sizes:
        _encoder(model, 0, proto.lr).encode(frames[s], [0], [0])  # warm-up
        with measure(device) as m0:
            _encoder(model, 0, proto.lr).encode(frames[s], [0], [0])
        enc = _encoder(model, 5, proto.lr)
        enc.encode(frames[s], [0], [0])
        calib[s] = {"base": m0["seconds"], "iter": enc.last_refine.seconds / 5}
    configs = [(s, b) for s in proto.sizes for b in proto.budgets
               if calib[s]["base"] + b * calib[s]["iter"] <= proto.max_seconds]
    skipped = [(s, b) for s in proto.sizes for b in proto.budgets if (s, b) not in configs]
    log(f"  encode: {len(configs)} measured points x {proto.repeats} repeats, {len(skipped)} projected")

    def one(cfg: tuple[int, int]) -> dict[str, float]:
        s, b = cfg
        enc = _encoder(model, b, proto.lr)
        with measure(device) as m:
            enc.encode(frames[s], [0], [0])
        m["refine_seconds"] = enc.last_refine.seconds if b else 0.0
        return m

    runs = interleaved(configs, one, proto.repeats)
    points = []
    per_iter: dict[int, list[float]] = {}
    base: dict[int, float] = {}
    for (s, b), ms in zip(configs, runs, strict=False):
        sec = med(ms)
        p = {"size": s, "budget": b, "measured": True, "seconds_per_frame": sec, "fps": 1.0 / sec,
             "seconds_all": [m["seconds"] for m in ms], "peak_rss_mb": max(m["peak_rss_mb"] for m in ms)}
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
        points.append({"size": s, "budget": b, "measured": False, "seconds_per_frame": sec, "fps": 1.0 / sec})
    # relative cost of each budget against unrefined, per repeat (noise-robust)
    for p in points:
        if p["measured"] and p["budget"]:
            i0 = configs.index((p["size"], 0)) if (p["size"], 0) in configs else None
            if i0 is not None:
                ib = configs.index((p["size"], p["budget"]))
                p["time_ratio_vs_unrefined"] = float(statistics.median(
                    a["seconds"] / z["seconds"] for a, z in zip(runs[ib], runs[i0], strict=False)))
    mp = {s: s * s / 1e6 for s in proto.sizes}
    return {
        "points": sorted(points, key=lambda p: (p["size"], p["budget"])),
        "seconds_per_iter": {str(s): float(statistics.median(v)) for s, v in per_iter.items()},
        "seconds_per_iter_per_mp": {str(s): float(statistics.median(v)) / mp[s] for s, v in per_iter.items()},
        "unrefined_seconds_per_mp": {str(s): base[s] / mp[s] for s in proto.sizes},
    }


def bench_batches(model: Any, device: str, kodak: Path, proto: SpeedProtocol, log: Any) -> list[dict[str, Any]]:
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
    return [{"batch": b, "seconds_per_iter_per_mp": med(ms, "s_iter_mp"), "all": [m["s_iter_mp"] for m in ms],
             "ratio_vs_batch1": float(statistics.median(a["s_iter_mp"] / z["s_iter_mp"] for a, z in zip(ms, b1, strict=False))),
             "peak_rss_mb": max(m["peak_rss_mb"] for m in ms)} for b, ms in zip(proto.batches, runs, strict=False)]


def _header(model: Any, h: int, w: int, n: int, refine: Any) -> Any:
    from fractions import Fraction

    from pipeline.codec import make_header
    from pipeline.frames import ColorInfo

    info = SimpleNamespace(width=w, height=h, frame_rate=Fraction(25), time_base=Fraction(1, 25), frame_count=n,
                           color=ColorInfo("bt709", "full", "unknown", "unknown", 8), pix_fmt="rgb24")
    return make_header(model, info, refine)


def bench_decode(model: Any, device: str, kodak: Path, proto: SpeedProtocol, log: Any) -> dict[str, Any]:
    """Decode frames/s of an unrefined and a refined stream of the same frames, interleaved."""
    from pipeline.codec import FrameDecoder
    from pipeline.entropy import fixed_threads

    n = proto.decode_frames
    crops = _f32(kodak_crops(kodak, proto.crop, n))
    streams = {}
    for name, b in (("unrefined", 0), ("refined", proto.decode_budget)):
        enc = _encoder(model, b, proto.lr)
        encoded = [e for i in range(n) for e in enc.encode([crops[i]], [i], [i])]
        streams[name] = {"decoder": FrameDecoder(model, _header(model, proto.crop, proto.crop, n, enc.refine)),
                         "packets": [e.packet for e in encoded],
                         "bpp": float(np.mean([e.stats["bpp"] for e in encoded])),
                         "refined_frames": sum(e.stats["refined"] for e in encoded)}
    log(f"  decode: {n} frames per stream x {proto.repeats * 2} repeats, {proto.decode_threads} thread(s)")

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
    ratio = float(statistics.median(r / u for u, r in zip(totals["unrefined"], totals["refined"], strict=True)))
    out: dict[str, Any] = {"frames": n, "size": proto.crop, "refined_budget": proto.decode_budget, "threads": proto.decode_threads,
                           "repeats": proto.repeats * 2, "ratio_refined_over_unrefined": ratio,
                           "median_per_frame_ratio": float(statistics.median(pair_ratios)),
                           "within_target": abs(ratio - 1.0) <= 0.05}
    for name in ("unrefined", "refined"):
        out[name] = {"fps": n / float(statistics.median(totals[name])), "seconds_all": totals[name], "bpp": streams[name]["bpp"],
                     "refined_frames": streams[name]["refined_frames"], "peak_rss_mb": peak[name]}
    return out


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


def run(kodak: Path, out: Path, proto: SpeedProtocol, log: Any = print, model: Any = None) -> dict[str, Any]:
    """All speed measurements with the shipped default model (or ``model``, for tests)."""
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
        raise InputError("no shipped default model", hint="ship a model first (relatent ship --default)")
    results: dict[str, Any] = {"provenance": prov, "protocol": asdict(proto),
                               "model": {"arch": arch, "quality": quality}, "devices": {}}
    for device in proto.devices:
        if device == "cuda" and not torch.cuda.is_available():
            continue
        model = given.to(device) if given is not None else load_model(arch, quality, device=device)
        results["model"].update(N=model.N, M=model.M, sha256=model.identity.weights_sha256)
        log(f"speed on {device}: {arch} q{quality} (N={model.N}, M={model.M})")
        d: dict[str, Any] = {}
        d["encode"] = bench_encode(model, device, kodak, proto, log)
        d["batches"] = bench_batches(model, device, kodak, proto, log)
        d["decode"] = bench_decode(model, device, kodak, proto, log)
        results["devices"][device] = d
    cpu_model = given.to("cpu") if given is not None else load_model(arch, quality, device="cpu")
    results["flops_per_iter_per_mp"] = flops_per_iter_per_mp(cpu_model, kodak, proto.lr, proto.crop)
    results["projection"] = projection(results)
    results["seconds"] = time.perf_counter() - t0
    write_outputs(results, out)
    return results


# --------------------------------------------------------------------------- projection


def projection(results: dict[str, Any]) -> dict[str, Any]:
    """GPU-hours (and CPU core-hours) per hour of 1080p video, per budget; cluster sizes."""
    cpu = results["devices"].get("cpu")
    proto = results["protocol"]
    if not cpu:
        return {}
    enc = cpu["encode"]
    size = str(max(int(s) for s in enc["seconds_per_iter_per_mp"]))
    batches = cpu["batches"]
    s_iter_mp_cpu = min((b["seconds_per_iter_per_mp"] for b in batches), default=enc["seconds_per_iter_per_mp"][size])
    base_mp_cpu = enc["unrefined_seconds_per_mp"][size]
    frames_per_hour = FPS_1080P * 3600
    mp_per_hour = frames_per_hour * MP_1080P
    flops = results.get("flops_per_iter_per_mp")
    budgets = sorted({b for b in proto["budgets"] if b > 0} | {25, 100, 400, 1000, 2000})
    out: dict[str, Any] = {
        "cpu_seconds_per_iter_per_mp": s_iter_mp_cpu,
        "cpu_unrefined_seconds_per_mp": base_mp_cpu,
        "cpu_size_used": int(size),
        "flops_per_iter_per_mp": flops,
        "cpu_achieved_gflops": (flops / s_iter_mp_cpu / 1e9) if flops else None,
        "mp_per_video_hour": mp_per_hour,
        "rows": [],
    }
    # peak RSS of refinement against frame area (linear fit over the measured sizes)
    mem = [(p["size"] ** 2 / 1e6, p["peak_rss_mb"]) for p in enc["points"] if p.get("measured") and p["budget"] > 0]
    if len({x for x, _ in mem}) >= 2:
        slope, icpt = np.polyfit([x for x, _ in mem], [y for _, y in mem], 1)
        out["rss_mb_per_mp"] = float(slope)
        out["rss_mb_1080p_frame"] = float(icpt + slope * MP_1080P)
    for b in budgets:
        cpu_core_h = mp_per_hour * (base_mp_cpu + b * s_iter_mp_cpu) / 3600
        row: dict[str, Any] = {"budget": b, "cpu_core_hours_per_video_hour": cpu_core_h,
                               "cpu_cores_for_catalog_in_a_day": cpu_core_h * CATALOG_HOURS / WALL_HOURS, "gpus": {}}
        if flops:
            for g, spec in GPUS.items():
                vals = {}
                for k, u in GPU_UTILISATION.items():
                    s_iter = flops / (spec["fp32_tflops"] * 1e12 * u)
                    gh = mp_per_hour * b * s_iter / 3600
                    vals[k] = {"gpu_hours_per_video_hour": gh, "gpus_for_catalog_in_a_day": gh * CATALOG_HOURS / WALL_HOURS,
                               "speedup_vs_one_cpu_core": s_iter_mp_cpu / s_iter}
                row["gpus"][g] = vals
        out["rows"].append(row)
    return out


# --------------------------------------------------------------------------- outputs


def write_outputs(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    bl.write_json(out / "speed.json", results)
    cpu = results["devices"].get("cpu") or next(iter(results["devices"].values()), None)
    if cpu:
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        for s in sorted({p["size"] for p in cpu["encode"]["points"]}):
            pts = [p for p in cpu["encode"]["points"] if p["size"] == s]
            xs = [max(p["budget"], 1) for p in pts]
            axes[0].plot(xs, [p["fps"] for p in pts], "-", color="gray", lw=0.8)
            axes[0].scatter([x for x, p in zip(xs, pts, strict=False) if p["measured"]], [p["fps"] for p in pts if p["measured"]],
                            label=f"{s}x{s} measured")
            axes[0].scatter([x for x, p in zip(xs, pts, strict=False) if not p["measured"]], [p["fps"] for p in pts if not p["measured"]],
                            marker="x", label=f"{s}x{s} projected")
        axes[0].set_xscale("log")
        axes[0].set_yscale("log")
        axes[0].set_xlabel("refinement iterations (0 plotted at 1)")
        axes[0].set_ylabel("encode frames/s (one core)")
        b = cpu["batches"]
        axes[1].bar([str(x["batch"]) for x in b], [x["seconds_per_iter_per_mp"] for x in b])
        axes[1].set_xlabel("batch size")
        axes[1].set_ylabel("s per iteration per megapixel")
        d = cpu["decode"]
        axes[2].bar(["unrefined", "refined"], [d["unrefined"]["fps"], d["refined"]["fps"]], color=["tab:cyan", "tab:red"])
        axes[2].set_ylabel(f"decode frames/s ({d['size']}x{d['size']})")
        axes[2].set_title(f"ratio refined/unrefined time {d['ratio_refined_over_unrefined']:.3f}")
        for ax in axes:
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "speed.png", dpi=100, metadata=bl.png_metadata(results["provenance"]))
        plt.close(fig)
    (out / "speed.md").write_text(speed_markdown(results))
    (out / "scale.md").write_text(scale_markdown(results))


def speed_markdown(results: dict[str, Any]) -> str:
    p = results["protocol"]
    m = results["model"]
    L = ["# Speed and efficiency", "", *bl.provenance_md(results["provenance"]), ""]
    L += [f"Model: {m['arch']} q{m['quality']} (N={m.get('N')}, M={m.get('M')}). Refinement `campos`, lr {p['lr']}, tol 0. "
          f"Each point is the median of {p['repeats']} interleaved repeats (order rotated each repeat) on a shared machine; "
          "ratios are medians of per-repeat ratios. **The CPU encoder is single-threaded by design** (byte determinism): "
          "the numbers are per core; a machine runs one encoder process per core. "
          f"Peak memory is the process's resident set (VmHWM, reset before each measurement). Run time {results['seconds'] / 60:.1f} min.", ""]
    for dev, d in results["devices"].items():
        L += [f"## {dev}: encode frames/s", ""]
        rows = [[f"{q['size']}x{q['size']}", q["budget"], f"{q['fps']:.3f}", f"{q['seconds_per_frame']:.2f}",
                 "yes" if q["measured"] else "projected", f"{q['time_ratio_vs_unrefined']:.1f}x" if "time_ratio_vs_unrefined" in q else "",
                 f"{q['peak_rss_mb']:.0f}" if "peak_rss_mb" in q else ""] for q in d["encode"]["points"]]
        L += [*bl.md_table(["size", "iterations", "frames/s", "s/frame", "measured", "time vs unrefined", "peak RSS MB"], rows), ""]
        L += ["Seconds per refinement iteration per megapixel (batch 1): "
              + ", ".join(f"{s}x{s}: {v:.3f}" for s, v in d["encode"]["seconds_per_iter_per_mp"].items()) + ".", ""]
        L += [f"## {dev}: refinement cost per batch size ({p['crop']}x{p['crop']} crops, {p['batch_iters']} iterations)", ""]
        L += [*bl.md_table(["batch", "s / iteration / MP", "vs batch 1", "peak RSS MB"], [[b["batch"], f"{b['seconds_per_iter_per_mp']:.3f}", f"{b['ratio_vs_batch1']:.2f}", f"{b['peak_rss_mb']:.0f}"] for b in d["batches"]]), ""]
        dd = d["decode"]
        L += [f"## {dev}: decode", "",
              f"{dd['frames']} frames of {dd['size']}x{dd['size']}, refined stream at {dd['refined_budget']} iterations, {dd['threads']} decode thread(s).", ""]
        L += [*bl.md_table(["stream", "decode frames/s", "bpp", "refined frames", "peak RSS MB"], [[k, f"{dd[k]['fps']:.2f}", f"{dd[k]['bpp']:.4f}", dd[k]["refined_frames"], f"{dd[k]['peak_rss_mb']:.0f}"] for k in ("unrefined", "refined")]), ""]
        verdict = "within" if dd["within_target"] else "OUTSIDE"
        L += [f"Decode time ratio refined / unrefined: **{dd['ratio_refined_over_unrefined']:.3f}** ({verdict} the 1.00 +/- 0.05 target; "
              f"median of {dd['repeats']} repeats, each frame decoded from both streams back to back in alternating order; "
              f"median per-frame ratio {dd['median_per_frame_ratio']:.3f}).", ""]
    if "cuda" not in results["devices"]:
        L += ["No CUDA device on this machine: GPU numbers are projections (see [scale.md](scale.md)).", ""]
    if results.get("flops_per_iter_per_mp"):
        L += [f"One refinement iteration costs {results['flops_per_iter_per_mp'] / 1e9:.2f} GFLOP per megapixel (forward + backward, "
              "torch.utils.flop_counter, convolutions and matrix products).", ""]
    L += ["![speed](speed.png)", ""]
    return "\n".join(L)


def scale_markdown(results: dict[str, Any]) -> str:
    pr = results["projection"]
    L = ["# Projection to scale: re-encoding a catalog with refinement", "", *bl.provenance_md(results["provenance"]), ""]
    if not pr:
        return "\n".join([*L, "No CPU measurement: nothing to project from.", ""])
    L += [
        "Generated by `relatent bench speed` from the measurements in [speed.md](speed.md). Only the per-iteration cost, the "
        "unrefined encode cost and the FLOP count are measured; everything else below is an assumption, listed here.", "",
        "## Assumptions", "",
        f"1. 1080p = 1920x1080 = {MP_1080P:.3f} MP per frame; {FPS_1080P:.0f} frames/s, so one hour of video = "
        f"{FPS_1080P * 3600:,.0f} frames = {pr['mp_per_video_hour']:,.0f} MP.",
        "2. Cost is linear in pixels (the networks are fully convolutional) and in iterations (`tol=0`: every frame runs "
        "its whole budget; early stopping would only lower these numbers). Measured on "
        f"{pr['cpu_size_used']}x{pr['cpu_size_used']} crops; 1080p activations fit in memory at batch 1.",
        f"3. CPU: the measured single-core cost ({pr['cpu_seconds_per_iter_per_mp']:.3f} s per iteration per MP, best batch size; "
        f"{pr['cpu_unrefined_seconds_per_mp']:.3f} s per MP for the unrefined encode incl. entropy coding and metrics), one encoder "
        "process per core, perfect scaling across cores and machines (the Ray layer shards frames; no shared state).",
        "4. GPU: time per iteration = FLOPs per iteration / (peak FP32 throughput x utilisation). Peak FP32 (no tensor "
        "cores, since the deterministic path runs FP32): "
        + "; ".join(f"{g} {s['fp32_tflops']} TFLOPS ({s['source']})" for g, s in GPUS.items()) + ".",
        f"5. Utilisation of peak FP32: **assumed** {GPU_UTILISATION['central']:.0%} (range {GPU_UTILISATION['low']:.0%}-"
        f"{GPU_UTILISATION['high']:.0%}); not measured (no GPU here). Small convolution stacks at batch 4-8 rarely exceed "
        "50% of peak; a GPU run of `relatent bench speed` replaces this assumption with a measurement. For measured CPU and "
        "GPU run times of CompressAI-family models see \"Comprehensive Complexity Assessment of Emerging "
        "Learned Image Compression on CPU and GPU\", ICASSP 2023 (arXiv 2212.05466).",
        "6. GPU-hours count refinement iterations only: analysis, synthesis and entropy coding (rANS runs on the host CPU, "
        "overlapped with the next batch) are taken as hidden behind refinement. At budget 0 a GPU is not needed.",
        f"7. Catalog: {CATALOG_HOURS:,} hours of 1080p re-encoded within {WALL_HOURS:.0f} wall-clock hours, perfect packing "
        "(no idle time, no retries, no decode/IO bottleneck; real clusters need headroom on top, e.g. +20-30%).", "",
    ]
    if pr.get("flops_per_iter_per_mp"):
        if pr.get("rss_mb_1080p_frame"):
            L += [f"Memory: refinement's peak RSS grows by {pr['rss_mb_per_mp']:.0f} MB per MP of frame (fit over the measured sizes); "
                  f"one 1080p frame at batch 1 projects to {pr['rss_mb_1080p_frame']:,.0f} MB of process RSS (GPU memory similar "
                  "for the activations; batch b multiplies the per-MP part by b).", ""]
        L += [f"Measured: {pr['flops_per_iter_per_mp'] / 1e9:.2f} GFLOP per iteration per MP; the CPU core sustains "
              f"{pr['cpu_achieved_gflops']:.1f} GFLOP/s on it.", ""]
    L += ["## CPU (measured cost, one core per encoder)", ""]
    L += [*bl.md_table(["iterations / frame", "core-hours per hour of 1080p", f"cores for {CATALOG_HOURS:,} h in {WALL_HOURS:.0f} h"], [[r["budget"], f"{r['cpu_core_hours_per_video_hour']:,.0f}", f"{r['cpu_cores_for_catalog_in_a_day']:,.0f}"] for r in pr["rows"]]), ""]
    if pr.get("flops_per_iter_per_mp"):
        L += [f"## GPU (projected; utilisation {GPU_UTILISATION['central']:.0%}, range in brackets for "
              f"{GPU_UTILISATION['high']:.0%} / {GPU_UTILISATION['low']:.0%})", ""]
        hdr = ["iterations / frame"] + [f"{g}: GPU-h per video-h" for g in GPUS] + [f"{g}: GPUs for catalog/day" for g in GPUS]
        rows = []
        for r in pr["rows"]:
            gh = [f"{r['gpus'][g]['central']['gpu_hours_per_video_hour']:.2f} ({r['gpus'][g]['high']['gpu_hours_per_video_hour']:.2f}-"
                  f"{r['gpus'][g]['low']['gpu_hours_per_video_hour']:.2f})" for g in GPUS]
            gc = [f"{r['gpus'][g]['central']['gpus_for_catalog_in_a_day']:,.0f} ({r['gpus'][g]['high']['gpus_for_catalog_in_a_day']:,.0f}-"
                  f"{r['gpus'][g]['low']['gpus_for_catalog_in_a_day']:,.0f})" for g in GPUS]
            rows.append([r["budget"], *gh, *gc])
        L += [*bl.md_table(hdr, rows), ""]
        r0 = pr["rows"][0]
        L += ["Implied speed-up of one GPU over one CPU core at the central utilisation: "
              + ", ".join(f"{g} {r0['gpus'][g]['central']['speedup_vs_one_cpu_core']:,.0f}x" for g in GPUS) + ".", ""]
    return "\n".join(L)


# --------------------------------------------------------------------------- CLI


def add_args(p: argparse.ArgumentParser, common: bool = True) -> None:
    d = SpeedProtocol()
    if common:
        p.add_argument("--kodak", default="../shared/data/kodak", help="folder of the Kodak PNGs (the frames timed)")
        p.add_argument("--out", default="docs/benchmarks", help="where speed.json / speed.md / speed.png / scale.md go")
    p.add_argument("--speed-budgets", type=int, nargs="+", default=d.budgets, help="iteration budgets (0 = unrefined)")
    p.add_argument("--sizes", type=int, nargs="+", default=d.sizes, help="square crop sizes")
    p.add_argument("--batches", type=int, nargs="+", default=d.batches, help="batch sizes for s/iteration/MP")
    p.add_argument("--batch-iters", type=int, default=d.batch_iters, help="iterations per batch measurement")
    p.add_argument("--repeats", type=int, default=d.repeats, help="interleaved repeats per point")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help="points predicted to take longer per measurement are projected, not run")
    p.add_argument("--decode-frames", type=int, default=d.decode_frames)
    p.add_argument("--decode-budget", type=int, default=d.decode_budget, help="iterations of the refined stream")
    p.add_argument("--decode-threads", type=int, default=d.decode_threads)
    p.add_argument("--speed-crop", type=int, default=d.crop, help="frame size for the batch, decode and FLOP measurements")
    p.add_argument("--speed-lr", type=float, default=d.lr)
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"], help="cuda is skipped when absent")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("speed", help="encode/decode speed, per-iteration cost, memory; scale projection (scale.md)")
    add_args(p)
    p.set_defaults(func=_cmd)


def protocol_from_args(a: argparse.Namespace) -> SpeedProtocol:
    if a.repeats < 1 or any(b < 0 for b in a.speed_budgets) or any(x < 1 for x in a.batches):
        raise InputError("--repeats and --batches must be >= 1 and --speed-budgets >= 0")
    return SpeedProtocol(budgets=a.speed_budgets, sizes=a.sizes, batches=a.batches, batch_iters=a.batch_iters,
                         repeats=a.repeats, max_seconds=a.max_seconds, decode_frames=a.decode_frames, decode_budget=a.decode_budget,
                         decode_threads=a.decode_threads, crop=a.speed_crop, lr=a.speed_lr, devices=a.devices)


def _cmd(a: argparse.Namespace) -> int:
    kodak = Path(a.kodak)
    if not kodak.is_dir():
        raise InputError(f"--kodak folder {kodak} does not exist", hint="pass --kodak DIR with the Kodak PNGs")
    run(kodak, Path(a.out), protocol_from_args(a))
    print(f"wrote {Path(a.out) / 'speed.md'} and {Path(a.out) / 'scale.md'}")
    return 0
