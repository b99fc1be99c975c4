"""The projection and the files of ``relatent bench speed``.

:func:`projection` turns the measured CPU cost and the FLOP count into CPU core-hours and
GPU-hours per hour of 1080p video and cluster sizes for a catalog (the GPU side under the
stated assumptions: :data:`GPUS`, :data:`GPU_UTILISATION`); :func:`write_outputs` writes
``speed.json``, ``speed.png``, ``speed.md`` and ``scale.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench import lib as bl
from jobs.bench.speed_inter import inter_markdown, plot_inter

__all__ = [
    "CATALOG_HOURS",
    "FPS_1080P",
    "GPUS",
    "GPU_UTILISATION",
    "MP_1080P",
    "WALL_HOURS",
    "projection",
    "scale_markdown",
    "speed_markdown",
    "write_outputs",
]

# --------------------------------------------------------------------------- GPU assumptions

#: Published peak dense FP32 throughput (no tensor cores; the encoder's deterministic path),
#: from the vendors' datasheets.
GPUS: dict[str, dict[str, Any]] = {
    "T4": {
        "fp32_tflops": 8.1,
        "source": "NVIDIA T4 Tensor Core GPU datasheet (8.1 TFLOPS single precision)",
    },
    "L4": {"fp32_tflops": 30.3, "source": "NVIDIA L4 Tensor Core GPU datasheet (30.3 TFLOPS FP32)"},
    "A100": {
        "fp32_tflops": 19.5,
        "source": "NVIDIA A100 Tensor Core GPU datasheet (19.5 TFLOPS FP32)",
    },
    "H100-SXM": {
        "fp32_tflops": 67.0,
        "source": "NVIDIA H100 Tensor Core GPU datasheet, SXM5 (67 TFLOPS FP32)",
    },
}
#: Fraction of peak FP32 a batch of refinement iterations sustains: an ASSUMPTION (not
#: measured here: no GPU). Small convolution stacks with batch 4-8 of 1080p frames typically
#: reach 20-50% of peak; 30% is the central value, with the range reported.
GPU_UTILISATION = {"low": 0.15, "central": 0.30, "high": 0.50}
#: The 1080p video of the projection: frames per second and megapixels per frame.
FPS_1080P = 30.0
MP_1080P = 1920 * 1080 / 1e6
#: The catalog of the projection: hours of video re-encoded within ``WALL_HOURS``.
CATALOG_HOURS = 10_000
WALL_HOURS = 24.0


# --------------------------------------------------------------------------- projection


def projection(results: dict[str, Any]) -> dict[str, Any]:
    """GPU-hours (and CPU core-hours) per hour of 1080p video, per budget; cluster sizes.

    From the CPU measurements of ``results`` (best batch size's seconds per iteration per
    MP, unrefined seconds per MP at the largest size) and the FLOPs per iteration per MP;
    GPU time per iteration = FLOPs / (peak FP32 x utilisation), see :data:`GPUS` and
    :data:`GPU_UTILISATION`. Empty without a CPU measurement.
    """
    cpu = results["devices"].get("cpu")
    proto = results["protocol"]
    if not cpu:
        return {}
    enc = cpu["encode"]
    size = str(max(int(s) for s in enc["seconds_per_iter_per_mp"]))
    batches = cpu["batches"]
    s_iter_mp_cpu = min(
        (b["seconds_per_iter_per_mp"] for b in batches),
        default=enc["seconds_per_iter_per_mp"][size],
    )
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
    mem = [
        (p["size"] ** 2 / 1e6, p["peak_rss_mb"])
        for p in enc["points"]
        if p.get("measured") and p["budget"] > 0
    ]
    if len({x for x, _ in mem}) >= 2:
        slope, icpt = np.polyfit([x for x, _ in mem], [y for _, y in mem], 1)
        out["rss_mb_per_mp"] = float(slope)
        out["rss_mb_1080p_frame"] = float(icpt + slope * MP_1080P)
    for b in budgets:
        cpu_core_h = mp_per_hour * (base_mp_cpu + b * s_iter_mp_cpu) / 3600
        row: dict[str, Any] = {
            "budget": b,
            "cpu_core_hours_per_video_hour": cpu_core_h,
            "cpu_cores_for_catalog_in_a_day": cpu_core_h * CATALOG_HOURS / WALL_HOURS,
            "gpus": {},
        }
        if flops:
            for g, spec in GPUS.items():
                vals = {}
                for k, u in GPU_UTILISATION.items():
                    s_iter = flops / (spec["fp32_tflops"] * 1e12 * u)
                    gh = mp_per_hour * b * s_iter / 3600
                    vals[k] = {
                        "gpu_hours_per_video_hour": gh,
                        "gpus_for_catalog_in_a_day": gh * CATALOG_HOURS / WALL_HOURS,
                        "speedup_vs_one_cpu_core": s_iter_mp_cpu / s_iter,
                    }
                row["gpus"][g] = vals
        out["rows"].append(row)
    return out


# --------------------------------------------------------------------------- outputs


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """Write ``speed.json``, ``speed.png`` (encode frames/s against budget, cost per batch
    size, decode frames/s, and the inter section's time ratios; with the provenance in PNG
    text chunks), ``speed.md`` and ``scale.md`` under ``out`` (created)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    bl.write_json(out / "speed.json", results)
    cpu = results["devices"].get("cpu") or next(iter(results["devices"].values()), None)
    inter_devs = (results.get("inter") or {}).get("devices", {})
    inter = inter_devs.get("cpu") or next(iter(inter_devs.values()), None)
    inter = inter if inter and inter["clips"] else None
    if cpu or inter:
        n = 3 * bool(cpu) + bool(inter)
        fig, axes = plt.subplots(1, n, figsize=(5.3 * n, 4.5), squeeze=False)
        axes = axes[0]
        if inter:
            plot_inter(axes[-1], inter)
            axes[-1].grid(alpha=0.3)
    if cpu:
        for s in sorted({p["size"] for p in cpu["encode"]["points"]}):
            pts = [p for p in cpu["encode"]["points"] if p["size"] == s]
            xs = [max(p["budget"], 1) for p in pts]
            axes[0].plot(xs, [p["fps"] for p in pts], "-", color="gray", lw=0.8)
            axes[0].scatter(
                [x for x, p in zip(xs, pts, strict=False) if p["measured"]],
                [p["fps"] for p in pts if p["measured"]],
                label=f"{s}x{s} measured",
            )
            axes[0].scatter(
                [x for x, p in zip(xs, pts, strict=False) if not p["measured"]],
                [p["fps"] for p in pts if not p["measured"]],
                marker="x",
                label=f"{s}x{s} projected",
            )
        axes[0].set_xscale("log")
        axes[0].set_yscale("log")
        axes[0].set_xlabel("refinement iterations (0 plotted at 1)")
        axes[0].set_ylabel("encode frames/s (one core)")
        b = cpu["batches"]
        axes[1].bar([str(x["batch"]) for x in b], [x["seconds_per_iter_per_mp"] for x in b])
        axes[1].set_xlabel("batch size")
        axes[1].set_ylabel("s per iteration per megapixel")
        d = cpu["decode"]
        axes[2].bar(
            ["unrefined", "refined"],
            [d["unrefined"]["fps"], d["refined"]["fps"]],
            color=["tab:cyan", "tab:red"],
        )
        axes[2].set_ylabel(f"decode frames/s ({d['size']}x{d['size']})")
        axes[2].set_title(f"ratio refined/unrefined time {d['ratio_refined_over_unrefined']:.3f}")
        for ax in axes[:3]:
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
    if cpu or inter:
        fig.tight_layout()
        fig.savefig(out / "speed.png", dpi=100, metadata=bl.png_metadata(results["provenance"]))
        plt.close(fig)
    (out / "speed.md").write_text(speed_markdown(results))
    (out / "scale.md").write_text(scale_markdown(results))


def speed_markdown(results: dict[str, Any]) -> str:
    """``speed.md``: the protocol, then per device encode frames/s, cost per batch size and
    decode speed, and the FLOPs per iteration; then the inter section (its own provenance)."""
    p = results["protocol"]
    m = results["model"]
    L = ["# Speed and efficiency", "", *bl.provenance_md(results["provenance"]), ""]
    if results.get("inter") and results["devices"]:
        L += [
            "The provenance above is that of the Kodak sections; the inter section at the end "
            "states its own (`--only` runs one section and keeps the other's numbers).",
            "",
        ]
    if results["devices"]:
        L += [
            f"Model: {m['arch']} q{m['quality']} (N={m.get('N')}, M={m.get('M')}). Refinement `campos`, lr {p['lr']}, tol 0. "
            f"Each point is the median of {p['repeats']} interleaved repeats (order rotated each repeat) on a shared machine; "
            "ratios are medians of per-repeat ratios. **The CPU encoder is single-threaded by design** (byte determinism): "
            "the numbers are per core; a machine runs one encoder process per core. "
            f"Peak memory is the process's resident set (VmHWM, reset before each measurement). Run time {results['seconds'] / 60:.1f} min.",
            "",
        ]
    for dev, d in results["devices"].items():
        L += _device_md(dev, d, p)
    if not results["devices"]:
        L += ["The Kodak sections (encode, batch sizes, decode, projection) were not run.", ""]
    elif "cuda" not in results["devices"]:
        L += [
            "No CUDA device on this machine: GPU numbers are projections (see [scale.md](scale.md)).",
            "",
        ]
    if results.get("flops_per_iter_per_mp"):
        L += [
            f"One refinement iteration costs {results['flops_per_iter_per_mp'] / 1e9:.2f} GFLOP per megapixel (forward + backward, "
            "torch.utils.flop_counter, convolutions and matrix products).",
            "",
        ]
    if results.get("inter"):
        L += inter_markdown(results["inter"])
    L += ["![speed](speed.png)", ""]
    return "\n".join(L)


def _device_md(dev: str, d: dict[str, Any], p: dict[str, Any]) -> list[str]:
    """The sections of one device in ``speed.md``: encode, batch sizes, decode."""
    L = [f"## {dev}: encode frames/s", ""]
    rows = [
        [
            f"{q['size']}x{q['size']}",
            q["budget"],
            f"{q['fps']:.3f}",
            f"{q['seconds_per_frame']:.2f}",
            "yes" if q["measured"] else "projected",
            f"{q['time_ratio_vs_unrefined']:.1f}x" if "time_ratio_vs_unrefined" in q else "",
            f"{q['peak_rss_mb']:.0f}" if "peak_rss_mb" in q else "",
        ]
        for q in d["encode"]["points"]
    ]
    L += [
        *bl.md_table(
            [
                "size",
                "iterations",
                "frames/s",
                "s/frame",
                "measured",
                "time vs unrefined",
                "peak RSS MB",
            ],
            rows,
        ),
        "",
    ]
    L += [
        "Seconds per refinement iteration per megapixel (batch 1): "
        + ", ".join(f"{s}x{s}: {v:.3f}" for s, v in d["encode"]["seconds_per_iter_per_mp"].items())
        + ".",
        "",
    ]
    L += [
        f"## {dev}: refinement cost per batch size ({p['crop']}x{p['crop']} crops, {p['batch_iters']} iterations)",
        "",
    ]
    L += [
        *bl.md_table(
            ["batch", "s / iteration / MP", "vs batch 1", "peak RSS MB"],
            [
                [
                    b["batch"],
                    f"{b['seconds_per_iter_per_mp']:.3f}",
                    f"{b['ratio_vs_batch1']:.2f}",
                    f"{b['peak_rss_mb']:.0f}",
                ]
                for b in d["batches"]
            ],
        ),
        "",
    ]
    L += _decode_md(dev, d["decode"])
    return L


def _decode_md(dev: str, dd: dict[str, Any]) -> list[str]:
    """The decode section of one device in ``speed.md``."""
    L: list[str] = []
    L += [
        f"## {dev}: decode",
        "",
        f"{dd['frames']} frames of {dd['size']}x{dd['size']}, refined stream at {dd['refined_budget']} iterations, {dd['threads']} decode thread(s).",
        "",
    ]
    L += [
        *bl.md_table(
            ["stream", "decode frames/s", "bpp", "refined frames", "peak RSS MB"],
            [
                [
                    k,
                    f"{dd[k]['fps']:.2f}",
                    f"{dd[k]['bpp']:.4f}",
                    dd[k]["refined_frames"],
                    f"{dd[k]['peak_rss_mb']:.0f}",
                ]
                for k in ("unrefined", "refined")
            ],
        ),
        "",
    ]
    verdict = "within" if dd["within_target"] else "OUTSIDE"
    L += [
        f"Decode time ratio refined / unrefined: **{dd['ratio_refined_over_unrefined']:.3f}** ({verdict} the 1.00 +/- 0.05 target; "
        f"median of {dd['repeats']} repeats, each frame decoded from both streams back to back in alternating order; "
        f"median per-frame ratio {dd['median_per_frame_ratio']:.3f}).",
        "",
    ]
    return L


def scale_markdown(results: dict[str, Any]) -> str:
    """``scale.md``: every assumption of the projection, then CPU core-hours and (with a
    FLOP count) GPU-hours per hour of 1080p and cluster sizes for the catalog."""
    pr = results.get("projection") or {}
    L = [
        "# Projection to scale: re-encoding a catalog with refinement",
        "",
        *bl.provenance_md(results["provenance"]),
        "",
    ]
    if not pr:
        return "\n".join([*L, "No CPU measurement: nothing to project from.", ""])
    L += _assumptions_md(pr)
    L += ["## CPU (measured cost, one core per encoder)", ""]
    L += [
        *bl.md_table(
            [
                "iterations / frame",
                "core-hours per hour of 1080p",
                f"cores for {CATALOG_HOURS:,} h in {WALL_HOURS:.0f} h",
            ],
            [
                [
                    r["budget"],
                    f"{r['cpu_core_hours_per_video_hour']:,.0f}",
                    f"{r['cpu_cores_for_catalog_in_a_day']:,.0f}",
                ]
                for r in pr["rows"]
            ],
        ),
        "",
    ]
    if pr.get("flops_per_iter_per_mp"):
        L += _gpu_md(pr)
    return "\n".join(L)


def _assumptions_md(pr: dict[str, Any]) -> list[str]:
    """The assumptions of the projection ``pr``, and its measured memory and FLOPs."""
    L = [
        "Generated by `relatent bench speed` from the measurements in [speed.md](speed.md). Only the per-iteration cost, the "
        "unrefined encode cost and the FLOP count are measured; everything else below is an assumption, listed here.",
        "",
        "## Assumptions",
        "",
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
        + "; ".join(f"{g} {s['fp32_tflops']} TFLOPS ({s['source']})" for g, s in GPUS.items())
        + ".",
        f"5. Utilisation of peak FP32: **assumed** {GPU_UTILISATION['central']:.0%} (range {GPU_UTILISATION['low']:.0%}-"
        f"{GPU_UTILISATION['high']:.0%}); not measured (no GPU here). Small convolution stacks at batch 4-8 rarely exceed "
        "50% of peak; a GPU run of `relatent bench speed` replaces this assumption with a measurement. For measured CPU and "
        'GPU run times of CompressAI-family models see "Comprehensive Complexity Assessment of Emerging '
        'Learned Image Compression on CPU and GPU", ICASSP 2023 (arXiv 2212.05466).',
        "6. GPU-hours count refinement iterations only: analysis, synthesis and entropy coding (rANS runs on the host CPU, "
        "overlapped with the next batch) are taken as hidden behind refinement. At budget 0 a GPU is not needed.",
        f"7. Catalog: {CATALOG_HOURS:,} hours of 1080p re-encoded within {WALL_HOURS:.0f} wall-clock hours, perfect packing "
        "(no idle time, no retries, no decode/IO bottleneck; real clusters need headroom on top, e.g. +20-30%).",
        "",
    ]
    if pr.get("flops_per_iter_per_mp"):
        if pr.get("rss_mb_1080p_frame"):
            L += [
                f"Memory: refinement's peak RSS grows by {pr['rss_mb_per_mp']:.0f} MB per MP of frame (fit over the measured sizes); "
                f"one 1080p frame at batch 1 projects to {pr['rss_mb_1080p_frame']:,.0f} MB of process RSS (GPU memory similar "
                "for the activations; batch b multiplies the per-MP part by b).",
                "",
            ]
        L += [
            f"Measured: {pr['flops_per_iter_per_mp'] / 1e9:.2f} GFLOP per iteration per MP; the CPU core sustains "
            f"{pr['cpu_achieved_gflops']:.1f} GFLOP/s on it.",
            "",
        ]
    return L


def _gpu_md(pr: dict[str, Any]) -> list[str]:
    """GPU-hours per video-hour and GPUs for the catalog, per budget and GPU."""
    L = [
        f"## GPU (projected; utilisation {GPU_UTILISATION['central']:.0%}, range in brackets for "
        f"{GPU_UTILISATION['high']:.0%} / {GPU_UTILISATION['low']:.0%})",
        "",
    ]
    hdr = (
        ["iterations / frame"]
        + [f"{g}: GPU-h per video-h" for g in GPUS]
        + [f"{g}: GPUs for catalog/day" for g in GPUS]
    )
    rows = []
    for r in pr["rows"]:
        gh = [
            f"{r['gpus'][g]['central']['gpu_hours_per_video_hour']:.2f} ({r['gpus'][g]['high']['gpu_hours_per_video_hour']:.2f}-"
            f"{r['gpus'][g]['low']['gpu_hours_per_video_hour']:.2f})"
            for g in GPUS
        ]
        gc = [
            f"{r['gpus'][g]['central']['gpus_for_catalog_in_a_day']:,.0f} ({r['gpus'][g]['high']['gpus_for_catalog_in_a_day']:,.0f}-"
            f"{r['gpus'][g]['low']['gpus_for_catalog_in_a_day']:,.0f})"
            for g in GPUS
        ]
        rows.append([r["budget"], *gh, *gc])
    L += [*bl.md_table(hdr, rows), ""]
    r0 = pr["rows"][0]
    L += [
        "Implied speed-up of one GPU over one CPU core at the central utilisation: "
        + ", ".join(
            f"{g} {r0['gpus'][g]['central']['speedup_vs_one_cpu_core']:,.0f}x" for g in GPUS
        )
        + ".",
        "",
    ]
    return L
