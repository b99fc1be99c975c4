"""``relatent bench ipratio``: the intra frame's lambda against its P frames' (``--ip-ratio``).

A GOP's P frames copy and predict from the intra frame's integer latents
(:mod:`pipeline.inter`), so what the intra frame's refinement spends on quality is spent
again by every P frame that copies it; refined at the P frames' lambda it is under-coded.
``--ip-ratio R`` refines the intra frame at ``R ** 2`` times the lambda (x264's
``--ipratio``, a quantizer-step ratio; lambda goes as ``1 / Qstep ** 2``).

On the first ``--frames`` consecutive frames of each shared clip (long side
``--long-side``, never upscaled; one GOP when ``--frames`` is at most the GOP), every
shipped rate point codes the frames once per ratio of ``--ratios`` with the CLI's default
refinement otherwise (:func:`jobs.bench.target.base_config`), through the path of
``relatent encode`` (:func:`pipeline.codec.encode_frames`), in ``--jobs`` worker processes
with one torch thread each. Reported per clip and ratio: BD-rate (RGB PSNR, pchip over the
overlapping range; :func:`jobs.bench.lib.bd_rate`) of the ratio's rate points against those
of ratio 1, with the bytes and PSNR change of each rate point; the mean over the clips; and
which ratio has the best mean. Writes ``ipratio.json``, ``ipratio.md`` and ``ipratio.png``
under ``--out``. bpp = packet bytes per pixel, per frame, averaged; PSNR = RGB PSNR per
frame, averaged.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from jobs.bench import add_clip_io
from jobs.bench import lib as bl
from jobs.bench.gop import CLIPS
from jobs.refine_options import float_option
from pipeline.errors import ConfigError, InputError

__all__ = ["DEFAULT_RATIOS", "add_parser", "cmd_ipratio", "encode_task", "run", "summarize"]

DEFAULT_RATIOS = (1.0, 1.2, 1.4, 1.7)
_MODELS: list[Any] = []


def encode_task(task: dict[str, Any]) -> dict[str, Any]:
    """One rate point at one ratio on one clip's frames (``task``: ``clip``, ``quality``,
    ``ratio``, ``config``, ``frames``, ``batch``), in one torch thread: bytes, mean bpp,
    mean RGB PSNR, the intra frames' share of the bytes and the encode's seconds."""
    import numpy as np

    from pipeline.codec import FrameEncoder, encode_frames
    from pipeline.models import fixed_threads
    from pipeline.ratecontrol import rate_point_models

    if not _MODELS:
        _MODELS.extend(rate_point_models())
    model = next(m for m in _MODELS if m.identity.quality == task["quality"])
    cfg = dataclasses.replace(task["config"], ip_ratio=task["ratio"])
    frames = task["frames"]
    with fixed_threads(1):
        t0 = time.perf_counter()
        enc = FrameEncoder(model, cfg)
        out = list(encode_frames(enc, ((f, i, i) for i, f in enumerate(frames)), task["batch"]))
        seconds = time.perf_counter() - t0
    st = [e.stats for e in out]
    total = sum(s.bytes for s in st)
    return {
        "clip": task["clip"],
        "quality": task["quality"],
        "ratio": task["ratio"],
        "bytes": total,
        "intra_bytes": sum(s.bytes for s in st if s.frame_type == "I"),
        "bpp": float(np.mean([s.bpp for s in st])),
        "psnr": float(np.mean([s.psnr for s in st])),
        "seconds": seconds,
    }


def summarize(raw: list[dict[str, Any]], ratios: list[float]) -> dict[str, Any]:
    """Per clip and ratio: the rate points (``points``), BD-rate against ratio 1
    (``bd_rate``, %) and each rate point's bytes and PSNR change; over the clips: the mean
    BD-rate per ratio and the ratio of the best mean (``best``)."""
    clips: dict[str, Any] = {}
    for rec in raw:
        c = clips.setdefault(rec["clip"], {})
        c.setdefault(f"{rec['ratio']:g}", {"points": []})["points"].append(rec)
    means: dict[str, float | None] = {}
    for c in clips.values():
        anchor = sorted(c["1"]["points"], key=lambda p: p["quality"])
        for key, entry in c.items():
            pts = sorted(entry["points"], key=lambda p: p["quality"])
            entry["points"] = pts
            entry["bd_rate"] = 0.0 if key == "1" else bl.bd_rate(anchor, pts)
            entry["changes"] = [
                {
                    "quality": p["quality"],
                    "bytes_pct": 100.0 * (p["bytes"] / a["bytes"] - 1.0),
                    "psnr_db": p["psnr"] - a["psnr"],
                }
                for a, p in zip(anchor, pts, strict=True)
            ]
    for r in ratios:
        vals = [c[f"{r:g}"]["bd_rate"] for c in clips.values()]
        ok = [v for v in vals if v is not None]
        means[f"{r:g}"] = sum(ok) / len(ok) if ok and len(ok) == len(vals) else None
    valid = {k: v for k, v in means.items() if v is not None}
    best = min(valid, key=lambda k: valid[k]) if valid else None
    return {"per_clip": clips, "mean_bd_rate": means, "best": best}


def run(
    video: Path,
    out: Path,
    frames: int = 16,
    long_side: int | None = 256,
    ratios: list[float] | None = None,
    clips: list[str] | None = None,
    jobs: int | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Measure every ratio at every rate point on every available clip (see the module
    docstring), write the result files and return the results dict.

    Raises:
        ConfigError: ``frames`` < 1, a ratio outside 0.25..4, or an unknown clip label.
        InputError: none of the asked clips is present under ``video``.
    """
    from jobs.bench.rd_encode import pool_map
    from jobs.bench.rd_video import BATCH
    from jobs.bench.target import base_config
    from pipeline.models import load_cards

    if frames < 1:
        raise ConfigError(f"--frames {frames} must be at least 1", hint="e.g. 16")
    rs = sorted({1.0, *(float(r) for r in (ratios or DEFAULT_RATIOS))})
    base = base_config()
    for r in rs:
        dataclasses.replace(base, ip_ratio=r).validate()  # a bad ratio fails before any encode
    labels = [c[0] for c in CLIPS]
    for c in clips or []:
        if c not in labels:
            raise ConfigError(
                f"--clips: unknown clip {c!r}", hint=f"use some of {' '.join(labels)}"
            )
    qualities = sorted(c["quality"] for c in load_cards()["models"])
    jobs = jobs or os.cpu_count() or 1
    tasks, meta = [], {}
    for label, name, kind in CLIPS:
        path = video / name
        if clips and label not in clips:
            continue
        if not path.exists():
            log(f"{label}: {path} is absent, skipped")
            continue
        _, imgs, info = bl.clip_run(path, frames, long_side, start=0)
        h, w = imgs[0].shape[:2]
        meta[label] = {"file": name, "kind": kind, "size": [h, w], "frames": len(imgs)}
        meta[label]["native_size"] = [info.height, info.width]
        for q in qualities:
            for r in rs:
                tasks.append(
                    {"clip": label, "quality": q, "ratio": r, "config": base, "frames": imgs,
                     "batch": BATCH, "cost": h * w * len(imgs)}
                )  # fmt: skip
    if not tasks:
        raise InputError(f"no shared clip under {video}", hint="pass --video ../shared/data/video")
    tasks.sort(key=lambda t: -t["cost"])
    prov = bl.provenance(
        "relatent bench ipratio",
        {"frames": frames, "long_side": long_side, "ratios": rs, "clips": list(meta), "jobs": jobs},
    )
    log(f"bench ipratio: {len(rs)} ratios x {len(qualities)} rate points x {len(meta)} clips")
    raw, t0 = [], time.perf_counter()
    for n, rec in enumerate(pool_map(encode_task, tasks, jobs), 1):
        raw.append(rec)
        log(
            f"  [{n}/{len(tasks)}] {rec['clip']} q{rec['quality']} ratio {rec['ratio']:g}: "
            f"{rec['bytes']} B, {rec['psnr']:.3f} dB ({(time.perf_counter() - t0) / 60:.1f} min)"
        )
    results: dict[str, Any] = {
        "frames": frames,
        "long_side": long_side,
        "gop": base.gop,
        "ratios": rs,
        "config": dataclasses.asdict(base),
        "clips": meta,
        "minutes": (time.perf_counter() - t0) / 60,
        **summarize(raw, rs),
        "provenance": prov,
    }
    write_outputs(results, out)
    return results


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """``ipratio.json``, ``ipratio.md`` and ``ipratio.png`` (each clip's RD curves, one per
    ratio) under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    bl.write_json(out / "ipratio.json", results)
    rs = [f"{r:g}" for r in results["ratios"]]
    per = results["per_clip"]
    prov = results["provenance"]
    lines = ["# The intra frame's lambda: `--ip-ratio`", "", *bl.provenance_md(prov), ""]
    lines += [
        f"Command: `{prov['command']} --frames {results['frames']} --ratios "
        f"{' '.join(rs)} --jobs {prov['args']['jobs']}` ({results['minutes']:.0f} min on "
        "this machine). The "
        f"first {results['frames']} frames of each clip (GOP {results['gop']}, so one GOP "
        "each when the frames are at most a GOP), every shipped rate point, the CLI's default "
        "refinement, the intra frame refined at ratio^2 times the lambda. BD-rate: RGB PSNR, "
        "pchip, against ratio 1 (the same encoder with one lambda); negative = fewer bits at "
        "equal quality. `relatent bench ipratio` (jobs/bench/ipratio.py).",
        "",
        "## BD-rate against ratio 1",
        "",
    ]
    mean = results["mean_bd_rate"]
    rows = [[c, *(bl.fmt_pct(per[c][r]["bd_rate"]) for r in rs)] for c in per]
    rows.append(["**mean of clips**", *(bl.fmt_pct(mean[r]) for r in rs)])
    lines += bl.md_table(["clip", *(f"ratio {r}" for r in rs)], rows)
    lines += ["", f"Best mean: ratio **{results['best']}**.", "", "## Every rate point", ""]
    rows = []
    for c, entry in per.items():
        for r in rs:
            for p, ch in zip(entry[r]["points"], entry[r]["changes"], strict=True):
                rows.append(
                    [c, f"q{p['quality']}", r, p["bytes"], f"{p['intra_bytes'] / p['bytes']:.2f}",
                     f"{p['psnr']:.3f}", f"{ch['bytes_pct']:+.1f}%", f"{ch['psnr_db']:+.3f}",
                     f"{p['seconds']:.0f}"]
                )  # fmt: skip
    lines += bl.md_table(
        ["clip", "rate point", "ratio", "bytes", "intra share", "PSNR (dB)", "bytes vs 1",
         "PSNR vs 1 (dB)", "encode s"],
        rows,
    )  # fmt: skip
    lines += ["", "![RD curves per ratio](ipratio.png)", ""]
    (out / "ipratio.md").write_text("\n".join(lines))
    fig, axes = plt.subplots(1, max(1, len(per)), figsize=(4.2 * max(1, len(per)), 3.6))
    for ax, (c, entry) in zip(list(getattr(axes, "flat", [axes])), per.items(), strict=False):
        for r in rs:
            pts = entry[r]["points"]
            ax.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], "o-", label=f"ratio {r}")
        ax.set(title=c, xlabel="bpp", ylabel="RGB PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ipratio.png", dpi=110, metadata=bl.png_metadata(prov))
    plt.close(fig)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bench ipratio``."""
    p = sub.add_parser(
        "ipratio", help="the intra frame's lambda (--ip-ratio): BD-rate per ratio on the clips"
    )
    add_clip_io(p, "ipratio")
    p.add_argument("--frames", type=int, default=16, help="consecutive frames per clip")
    p.add_argument("--long-side", type=int, default=256, help="downscale to this long side")
    p.add_argument(
        "--ratios",
        type=float_option(0.25, example="1.4"),
        nargs="+",
        default=None,
        help=f"ratios to measure (default: {' '.join(f'{r:g}' for r in DEFAULT_RATIOS)}; 1 always)",
    )
    p.add_argument(
        "--clips", nargs="+", default=None, choices=[c[0] for c in CLIPS], help="default: all"
    )
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.set_defaults(func=cmd_ipratio)


def cmd_ipratio(a: argparse.Namespace) -> int:
    """Run ``bench ipratio`` and print where the results went.

    Raises:
        ConfigError, InputError: see :func:`run`.
    """
    run(a.video, a.out, a.frames, a.long_side, a.ratios, a.clips, a.jobs)
    print(f"wrote {a.out / 'ipratio.md'}")
    return 0
