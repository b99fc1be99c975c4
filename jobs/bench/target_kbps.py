"""The bitrate section of ``relatent bench target`` (:mod:`jobs.bench.target`): does
``relatent encode --target-kbps`` land within 5% of the bitrate, at what quality?

Per clip, three bitrates: the midpoints of the fixed-quality encodes' bitrates (kb/s of the
packet bytes over the frames' duration at the clip's frame rate,
:func:`kbps_of`) of q1/q2, q2/q3 and q3/q4 (:data:`jobs.bench.target.PAIRS`), rounded to
0.1 kb/s (:func:`kbps_targets`). Each is coded with the same config as the quality targets
plus ``target_kbps``, through the path of ``relatent encode``
(:func:`pipeline.ratecontrol.make_encoder` with the clip's frame rate,
:func:`pipeline.ratecontrol.plan_bitrate`, the first pass over every frame, then
:func:`pipeline.codec.encode_frames`): one item is one whole encode (the first pass needs all
of its frames), timed including the first pass (:func:`encode_kbps`).

The analysis (:func:`analyse_kbps`): per stream the achieved kb/s and its error in percent
(the goal: within :data:`TOLERANCE_PCT`; the search aims within :data:`DESIGN_PCT`), the mean RGB
PSNR, the rate points used, trials per GOP, the rate change against the fixed curve at its
PSNR, and the BD-rate of the 3 bitrate points against the 5 fixed points per clip, their
mean and on the pooled curves (per-point means over every frame of every clip).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from jobs.bench import lib as bl

__all__ = [
    "DESIGN_PCT",
    "TOLERANCE_PCT",
    "analyse_kbps",
    "at_words",
    "encode_kbps",
    "kbps_of",
    "kbps_summary",
    "kbps_targets",
    "markdown_kbps",
    "plot_kbps",
]

#: The goal: every stream's bitrate within this many percent of its target.
TOLERANCE_PCT = 5.0
#: The search's own window: each GOP within this many percent of its share
#: (:data:`pipeline.ratecontrol.BUDGET_LOW`, ``BUDGET_HIGH``; not imported: no torch here).
DESIGN_PCT = 4.0
_EPS = 1e-9


def kbps_of(nbytes: float, frames: int, fps: float) -> float:
    """kb/s of ``nbytes`` packet bytes over ``frames`` frames at ``fps`` frames/s."""
    return nbytes * 8.0 / (frames / fps) / 1000.0


def kbps_targets(
    kbps: dict[int, float], pairs: tuple[tuple[int, int], ...] | list[Any], at: float = 0.5
) -> list[dict[str, Any]]:
    """The bitrates of a clip from its fixed encodes' kb/s per rate point (``kbps``:
    quality -> kb/s): ``at`` of the way from the lower to the upper of each pair present
    (0.5: the midpoint), rounded to 0.1 kb/s, as ``{"kbps", "pair"}``."""
    out = []
    for lo, hi in pairs:
        if lo in kbps and hi in kbps:
            k = kbps[lo] + at * (kbps[hi] - kbps[lo])
            out.append({"kbps": round(k, 1), "pair": [lo, hi]})
    return out


def encode_kbps(task: dict[str, Any], models: list[Any]) -> dict[str, Any]:
    """One bitrate item, a whole encode of a clip's frames (``task``: ``clip``, ``kbps``,
    ``pair``, ``fps``, ``config``, ``frames`` from index ``start``, ``batch``, ``gop``) in
    one torch thread, first pass included in its times: per-frame records, every GOP's
    outcome and its traced trials, the GOP budgets."""
    from jobs.bench.target import frame_records, trace_trials
    from pipeline.codec import encode_frames
    from pipeline.models import fixed_threads
    from pipeline.ratecontrol import make_encoder, plan_bitrate

    frames = task["frames"]
    h, w = frames[0].shape[:2]
    with fixed_threads(1):
        t0, c0 = time.perf_counter(), time.process_time()
        cfg = dataclasses.replace(task["config"], target_kbps=task["kbps"])
        enc: Any = make_encoder(models, cfg, frame_rate=task["fps"])
        trace = trace_trials(enc, task["gop"])
        coded = [(f, i, i) for i, f in enumerate(frames, task["start"])]
        budgets = plan_bitrate(enc, coded, task["batch"], task["clip"])
        first_pass = time.perf_counter() - t0
        out = list(encode_frames(enc, coded, task["batch"]))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "clip": task["clip"],
        "kind": "kbps",
        "kbps": task["kbps"],
        "pair": task.get("pair"),
        "fps": task["fps"],
        "start": task["start"],
        "size": [h, w],
        "seconds": seconds,
        "cpu_seconds": cpu,
        "first_pass_seconds": first_pass,
        "budgets": [int(b) for b in budgets],
        "frames": frame_records(out, task, h, w),
        "outcomes": [dataclasses.asdict(o) for o in enc.outcomes],
        "trials": trace,
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def kbps_summary(rec: dict[str, Any], fixed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One bitrate stream against its clip's fixed encodes (``fixed``: quality ->
    :func:`jobs.bench.target_report.fixed_summary`): target and achieved kb/s, error (%),
    its point (mean bpp and PSNR), rate points, trials per GOP, times, the rate change
    against the fixed curve at its PSNR and the CPU time over the fixed encode of the rate
    point that coded most of its frames."""
    from jobs.bench.target_report import fixed_at, main_rate_point
    from pipeline.models import quality_value

    fr = rec["frames"]
    fps, t = float(rec["fps"]), float(rec["kbps"])
    nbytes = sum(int(f["bytes"]) for f in fr)
    achieved = kbps_of(nbytes, len(fr), fps)
    err = 100.0 * (achieved - t) / t
    point = {"bpp": _mean([x["bpp"] for x in fr]), "psnr": _mean([x["psnr"] for x in fr])}
    curve = [{"bpp": v["bpp"], "psnr": v["psnr"]} for v in fixed.values()]
    outs = rec["outcomes"]
    main = main_rate_point(outs) if outs else None
    f = fixed_at(fixed, main)
    cpu = rec.get("cpu_seconds", rec["seconds"])
    budgets = rec.get("budgets") or []
    return {
        "kbps": t,
        "pair": rec.get("pair"),
        "fps": fps,
        "achieved_kbps": achieved,
        "error_pct": err,
        "within": abs(err) <= TOLERANCE_PCT + _EPS,
        "in_design": abs(err) <= DESIGN_PCT + _EPS,
        **point,
        "bytes": nbytes,
        "budget_bytes": sum(budgets) if budgets else None,
        "budgets": budgets,
        "rate_points": sorted({quality_value(o["rate_point"]) for o in outs}),
        "main_rate_point": main,
        "trials_mean": _mean([int(o["trials"]) for o in outs]) if outs else None,
        "trials": [int(o["trials"]) for o in outs],
        "iters": sum(int(o["iters"]) for o in outs),
        "seconds": rec["seconds"],
        "cpu_seconds": cpu,
        "first_pass_seconds": rec.get("first_pass_seconds"),
        "cpu_ratio": cpu / f["cpu_seconds"] if f and f["cpu_seconds"] > 0 else None,
        "rate_change_pct": bl.rate_change_at_quality(curve, point) if len(curve) >= 2 else None,
        "gops": [
            {
                **o,
                "search": [x for x in rec.get("trials", []) if int(x["gop"]) == k],
            }
            for k, o in enumerate(outs)
        ],
    }


def analyse_kbps(
    raw: dict[str, dict[str, Any]], fixed_of: dict[str, dict[int, dict[str, Any]]]
) -> dict[str, Any]:
    """The bitrate section of a run (``raw``: clip -> ``kbps`` (label -> record of
    :func:`encode_kbps`); ``fixed_of``: clip -> quality -> fixed summary): per clip the
    streams and the BD-rate of their points against the fixed curve; overall the streams
    within :data:`TOLERANCE_PCT`, the errors, and the BD-rate per clip, mean and pooled."""
    from jobs.bench.target_report import geomean, pooled_points

    per_clip: dict[str, dict[str, Any]] = {}
    frames_fixed: dict[int, list[dict[str, Any]]] = {}
    frames_kbps: dict[int, list[dict[str, Any]]] = {}
    for clip, r in raw.items():
        recs = sorted((r.get("kbps") or {}).values(), key=lambda x: float(x["kbps"]))
        if not recs:
            continue
        fixed = fixed_of[clip]
        streams = [kbps_summary(rec, fixed) for rec in recs]
        for q, rec in r["fixed"].items():
            frames_fixed.setdefault(int(q), []).extend(rec["frames"])
        for k, rec in enumerate(recs):
            frames_kbps.setdefault(k, []).extend(rec["frames"])
        curve = [{"bpp": v["bpp"], "psnr": v["psnr"]} for v in fixed.values()]
        pts = [{"bpp": s["bpp"], "psnr": s["psnr"]} for s in streams]
        per_clip[clip] = {
            "fixed_kbps": {
                q: kbps_of(v["bytes"], sum(g["frames"] for g in v["gops"]), streams[0]["fps"])
                for q, v in fixed.items()
            },
            "streams": streams,
            "bd_rate_pct": bl.bd_rate(curve, pts),
            "within": sum(s["within"] for s in streams),
        }
    pooled_fixed = pooled_points(frames_fixed, "quality")
    pooled = pooled_points(frames_kbps, "point")
    streams = [s for v in per_clip.values() for s in v["streams"]]
    errs = [s["error_pct"] for s in streams]
    per_bd = {c: v["bd_rate_pct"] for c, v in per_clip.items()}
    vals = [v for v in per_bd.values() if v is not None]
    gops = [g for s in streams for g in s["gops"]]
    return {
        "per_clip": per_clip,
        "streams": len(streams),
        "within": sum(s["within"] for s in streams),
        "in_design": sum(s["in_design"] for s in streams),
        "error_pct_mean": _mean(errs) if errs else None,
        "error_pct_max_abs": max(abs(e) for e in errs) if errs else None,
        "goal_met": bool(streams) and all(s["within"] for s in streams),
        "bd_rate": {
            "per_clip": per_bd,
            "mean_over_clips": _mean(vals) if vals else None,
            "pooled": bl.bd_rate(pooled_fixed, pooled) if pooled else None,
        },
        "pooled": {"fixed": pooled_fixed, "kbps": pooled},
        "trials_per_gop_mean": _mean([int(g["trials"]) for g in gops]) if gops else None,
        "cpu_ratio_geomean": geomean([s["cpu_ratio"] for s in streams]),
    }


# --------------------------------------------------------------------------- outputs


def at_words(results: dict[str, Any]) -> str:
    """Where a run's targets sit between their pair's fixed points, in words."""
    at = results.get("at", 0.5)
    return "halfway" if at == 0.5 else f"{at:g} of the way from the lower to the upper"


def _f(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def markdown_kbps(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The bitrate section of ``target.md``: (headline bullets, section lines); both empty
    when the run coded no bitrate."""
    k = results.get("kbps")
    if not k or not k.get("streams"):
        return [], []
    bd = k["bd_rate"]
    errs = ", ".join(
        f"{c} " + " / ".join(f"{s['error_pct']:+.1f}%" for s in v["streams"])
        for c, v in k["per_clip"].items()
    )
    head = [
        f"* Bitrate (`--target-kbps`): streams within ±{TOLERANCE_PCT:g}%: **{k['within']} of "
        f"{k['streams']}** ({'met' if k['goal_met'] else 'not met'}; in the design's "
        f"±{DESIGN_PCT:g}%: {k['in_design']}); errors {errs}; mean "
        f"{_f(k['error_pct_mean'], '+.2f')}%, largest {_f(k['error_pct_max_abs'], '.2f')}%. "
        f"BD-rate against the fixed rate points: pooled **{bl.fmt_pct(bd['pooled'])}**, mean "
        f"over clips {bl.fmt_pct(bd['mean_over_clips'])} ("
        + ", ".join(f"{c} {bl.fmt_pct(v)}" for c, v in bd["per_clip"].items())
        + f"); {_f(k['trials_per_gop_mean'], '.2f')} trials per GOP, CPU time "
        f"{_f(k['cpu_ratio_geomean'], '.2f')}x the fixed encode (geometric mean, first pass "
        "included).",
    ]
    lines = [
        "## Bitrate targets (`--target-kbps`)",
        "",
        f"Per clip, the bitrates {at_words(results)} of the fixed encodes' bitrates (kb/s = packet "
        "bytes x 8 / (frames / fps) / 1000 at the clip's frame rate) of "
        + ", ".join(f"q{a}/q{b}" for a, b in results["pairs"])
        + ", rounded to 0.1 kb/s, each coded with the same config plus `target_kbps` "
        "(`make_encoder(rate_point_models(), cfg, frame_rate=fps)`, `plan_bitrate` (the first "
        "pass over every frame), then `encode_frames`): one item is one whole encode, its "
        "times include the first pass. Error = achieved / target - 1 (goal: within "
        f"±{TOLERANCE_PCT:g}%; the search aims within ±{DESIGN_PCT:g}%). Rate vs fixed "
        "curve and BD-rate as for the quality targets (bpp and RGB PSNR), the 3 bitrate "
        "points against the 5 fixed points.",
        "",
    ]
    rows = []
    for c, v in k["per_clip"].items():
        for s in v["streams"]:
            pair = f" (q{s['pair'][0]}/q{s['pair'][1]})" if s["pair"] else ""
            rows.append([
                c, f"{s['kbps']:.1f}{pair}", f"{s['achieved_kbps']:.2f}",
                f"{s['error_pct']:+.2f}%" + ("" if s["within"] else " **out**"),
                f"{s['psnr']:.2f}", f"{s['bpp']:.4f}", bl.fmt_pct(s["rate_change_pct"]),
                "+".join(f"q{q}" for q in s["rate_points"]),
                " / ".join(str(t) for t in s["trials"]),
                f"{s['seconds']:.0f} ({s['cpu_seconds']:.0f}; first pass "
                f"{_f(s['first_pass_seconds'], '.0f')})",
                f"{_f(s['cpu_ratio'], '.2f')}x",
                _trials(s),
            ])  # fmt: skip
    lines += bl.md_table(
        ["clip", "target kb/s (between)", "achieved kb/s", "error", "PSNR (dB)", "bpp",
         "rate vs fixed curve at its PSNR", "rate points", "trials per GOP",
         "encode s (CPU s; first pass wall s)", "CPU vs fixed",
         "GOP budget: trials (rate point, lambda, bytes)"],
        rows,
    )  # fmt: skip
    lines += ["", "Fixed encodes' bitrates and the BD-rate per clip:", ""]
    rows = [
        [
            c, f"{v['streams'][0]['fps']:.3f}",
            " / ".join(f"{x:.1f}" for x in v["fixed_kbps"].values()),
            f"{v['within']}/{len(v['streams'])}", bl.fmt_pct(v["bd_rate_pct"]),
        ]
        for c, v in k["per_clip"].items()
    ]  # fmt: skip
    rows.append(["**all**", "", "", f"{k['within']}/{k['streams']}",
                 f"{bl.fmt_pct(bd['pooled'])} (pooled)"])  # fmt: skip
    lines += bl.md_table(
        ["clip", "fps", "fixed kb/s q1..q5", f"within ±{TOLERANCE_PCT:g}%", "BD-rate"], rows
    )
    return head, [*lines, ""]


def _trials(s: dict[str, Any]) -> str:
    """A stream's GOPs: each one's byte budget and its trials in order, ``q3 0.0067 3800B``
    (empty trials when the run did not trace them)."""
    budgets = s.get("budgets") or []
    return "; ".join(
        (f"{budgets[k]}B: " if k < len(budgets) else "")
        + " -> ".join(f"q{x['rate_point']} {x['lmbda']:.4g} {x['bytes']}B" for x in g["search"])
        for k, g in enumerate(s["gops"])
    )


def plot_kbps(ax: Any, clip_kbps: dict[str, Any] | None) -> None:
    """Add a clip's bitrate streams to its RD plot (diamonds)."""
    if not clip_kbps:
        return
    ss = clip_kbps["streams"]
    ax.plot(
        [s["bpp"] for s in ss],
        [s["psnr"] for s in ss],
        "D",
        color="C4",
        ms=6,
        mfc="none",
        label="--target-kbps",
    )
    for s in ss:
        ax.annotate(
            f"{s['error_pct']:+.1f}%",
            (s["bpp"], s["psnr"]),
            textcoords="offset points",
            xytext=(-6, 6),
            fontsize=6,
            color="C4",
        )
