"""The analysis and the report of ``relatent bench target`` (:mod:`jobs.bench.target`).

:func:`analyse` turns the raw items (per clip: the fixed encodes by rate point, the targeted
encodes by target, each with per-frame records and, for targets, every GOP's outcome) into:

* the fixed curve per clip (mean bpp of the packet bytes, mean RGB PSNR, per GOP too, wall
  time, refinement iterations) and pooled over the clips (per-rate-point means over every
  frame of every clip);
* every targeted GOP (target, achieved mean PSNR, error, rate point, lambda, trials, bytes)
  and the share of GOPs within ``[T, T + WINDOW_DB]`` (:data:`WINDOW_DB`, the goal: at
  least :data:`GOAL_SHARE`) and ``[T, T + TIGHT_DB]`` (the search's own window);
* BD-rate (RGB PSNR, ``bjontegaard`` pchip over the overlapping PSNR range,
  :func:`jobs.bench.lib.bd_rate`) of the clip's target points against its fixed curve, per
  clip, on the pooled curves and averaged over the clips; and each target point's rate
  change against the fixed curve at its PSNR (:func:`jobs.bench.lib.rate_change_at_quality`);
* the search cost of each targeted encode against the fixed encode of the rate point it
  mostly chose (by frames; the same clip, config and run): wall-time ratio, CPU-time ratio
  (the worker's process time: one torch thread, so less sensitive than wall time to a
  shared machine's load), refinement-iteration ratio (geometric means per clip and
  overall), trials per GOP.

:func:`write_outputs` writes ``target.json``, ``target.md`` and ``target.png``.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from jobs.bench import lib as bl
from jobs.bench.target_kbps import analyse_kbps, at_words, markdown_kbps, plot_kbps
from pipeline.models import quality_value

__all__ = [
    "GOAL_SHARE",
    "TIGHT_DB",
    "WINDOW_DB",
    "analyse",
    "bd_summary",
    "fixed_at",
    "fixed_summary",
    "geomean",
    "main_rate_point",
    "markdown",
    "rerender",
    "target_summary",
    "window_shares",
    "write_outputs",
]

#: The issue's window above the target (dB): a GOP is "on target" within [T, T + 0.5].
WINDOW_DB = 0.5
#: The search's own window (:data:`pipeline.ratecontrol.WINDOW_DB`, without importing torch).
TIGHT_DB = 0.3
#: The goal for the share of GOPs within [T, T + WINDOW_DB].
GOAL_SHARE = 0.9
#: Tolerance of the window comparisons (achieved PSNRs are stored to 6 decimals).
_EPS = 1e-9


def geomean(values: list[float]) -> float | None:
    """The geometric mean of positive values; None when there are none."""
    vs = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in vs) / len(vs)) if vs else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _gop_means(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per GOP (frame records' ``gop``): frames, mean bpp, mean PSNR and bytes."""
    by: dict[int, list[dict[str, Any]]] = {}
    for f in frames:
        by.setdefault(int(f["gop"]), []).append(f)
    return [
        {
            "gop": g,
            "frames": len(fs),
            "bpp": _mean([f["bpp"] for f in fs]),
            "psnr": _mean([f["psnr"] for f in fs]),
            "bytes": sum(f["bytes"] for f in fs),
        }
        for g, fs in sorted(by.items())
    ]


def pooled_points(frames: dict[Any, list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """One RD point per key (sorted): the mean bpp and mean PSNR over every frame of every
    clip coded with it (the pooled curve)."""
    return [
        {key: k, "bpp": _mean([f["bpp"] for f in fs]), "psnr": _mean([f["psnr"] for f in fs])}
        for k, fs in sorted(frames.items())
    ]


def fixed_summary(rec: dict[str, Any]) -> dict[str, Any]:
    """One fixed encode: mean bpp and PSNR over its frames, bytes, refinement iterations,
    P frames, wall and CPU seconds, and the means per GOP."""
    fr = rec["frames"]
    return {
        "quality": rec["quality"],
        "bpp": _mean([f["bpp"] for f in fr]),
        "psnr": _mean([f["psnr"] for f in fr]),
        "bytes": sum(f["bytes"] for f in fr),
        "iters": sum(f["iters"] for f in fr),
        "p_frames": sum(f["frame_type"] == "P" for f in fr),
        "seconds": rec["seconds"],
        "cpu_seconds": rec.get("cpu_seconds", rec["seconds"]),
        "gops": _gop_means(fr),
    }


def main_rate_point(gops: list[dict[str, Any]]) -> int | float:
    """The rate point that coded most frames of a targeted encode (ties: the lowest)."""
    c: Counter[int | float] = Counter()
    for g in gops:
        c[quality_value(g["rate_point"])] += int(g["frames"])
    best = max(c.values())
    return min(q for q, n in c.items() if n == best)


def fixed_at(fixed: dict[int, dict[str, Any]], q: float | None) -> dict[str, Any] | None:
    """The fixed encode a targeted one's cost is compared with: that of rate point ``q``,
    or for a midpoint (no fixed encode) the mean of its two neighbours' times and
    iterations; None when absent."""
    if q is None:
        return None
    if float(q).is_integer():
        return fixed.get(int(q))
    both = [fixed[k] for k in (int(q - 0.5), int(q + 0.5)) if k in fixed]
    if not both:
        return None
    return {k: sum(f[k] for f in both) / len(both) for k in ("seconds", "cpu_seconds", "iters")}


def target_summary(rec: dict[str, Any], fixed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One targeted encode against its clip's fixed encodes (``fixed``: quality ->
    :func:`fixed_summary`): its point (mean bpp and PSNR), every GOP's outcome with its
    error and window flags, the rate point it mostly chose, and the search cost against
    the fixed encode of that rate point (:func:`fixed_at`; wall-time and iteration ratios,
    trials)."""
    t = float(rec["target"])
    fr = rec["frames"]
    bpp_of = {g["gop"]: g["bpp"] for g in _gop_means(fr)}
    first = {int(f["index"]): int(f["gop"]) for f in fr}
    gops = []
    for o in rec["outcomes"]:
        s = float(o["score"])
        gops.append(
            {
                **o,
                "gop": first.get(int(o["first"]), len(gops)),
                "target": t,
                "error_db": s - t,
                "in_window": t - _EPS <= s <= t + WINDOW_DB + _EPS,
                "in_tight": t - _EPS <= s <= t + TIGHT_DB + _EPS,
                "bpp": bpp_of.get(first.get(int(o["first"]), -1)),
            }
        )
    for g in gops:  # the search's trials (when the run traced them), in order
        g["search"] = [x for x in rec.get("trials", []) if int(x["gop"]) == g["gop"]]
    main = main_rate_point(gops)
    iters = sum(int(o["iters"]) for o in rec["outcomes"])
    cpu = rec.get("cpu_seconds", rec["seconds"])
    f = fixed_at(fixed, main)
    point = {"bpp": _mean([x["bpp"] for x in fr]), "psnr": _mean([x["psnr"] for x in fr])}
    curve = [{"bpp": v["bpp"], "psnr": v["psnr"]} for v in fixed.values()]
    return {
        "target": t,
        "pair": rec.get("pair"),
        **point,
        "bytes": sum(x["bytes"] for x in fr),
        "seconds": rec["seconds"],
        "cpu_seconds": cpu,
        "iters": iters,
        "trials_mean": _mean([int(o["trials"]) for o in rec["outcomes"]]),
        "main_rate_point": main,
        "rate_points": sorted({quality_value(g["rate_point"]) for g in gops}),
        "time_ratio": rec["seconds"] / f["seconds"] if f and f["seconds"] > 0 else None,
        "cpu_ratio": cpu / f["cpu_seconds"] if f and f["cpu_seconds"] > 0 else None,
        "iters_ratio": iters / f["iters"] if f and f["iters"] > 0 else None,
        "rate_change_pct": bl.rate_change_at_quality(curve, point) if len(curve) >= 2 else None,
        "gops": gops,
    }


def window_shares(gops: list[dict[str, Any]]) -> dict[str, Any]:
    """Over targeted GOPs: how many, the share within [T, T + WINDOW_DB], within
    [T, T + TIGHT_DB], at or above T, and the mean / max absolute error (dB)."""
    n = len(gops)
    if not n:
        return {
            "gops": 0, "in_window": 0, "in_tight": 0, "met": 0, "share_window": None,
            "share_tight": None, "share_met": None, "error_db_mean": None,
            "error_db_max_abs": None, "trials_mean": None, "trials": {}, "goal_met": False,
        }  # fmt: skip
    return {
        "gops": n,
        "in_window": sum(g["in_window"] for g in gops),
        "in_tight": sum(g["in_tight"] for g in gops),
        "met": sum(bool(g["met"]) for g in gops),
        "share_window": sum(g["in_window"] for g in gops) / n,
        "share_tight": sum(g["in_tight"] for g in gops) / n,
        "share_met": sum(bool(g["met"]) for g in gops) / n,
        "error_db_mean": _mean([g["error_db"] for g in gops]),
        "error_db_max_abs": max(abs(g["error_db"]) for g in gops),
        "trials_mean": _mean([int(g["trials"]) for g in gops]),
        "trials": dict(sorted(Counter(int(g["trials"]) for g in gops).items())),
        "goal_met": sum(g["in_window"] for g in gops) / n >= GOAL_SHARE,
    }


def bd_summary(
    per_clip: dict[str, dict[str, Any]],
    pooled_fixed: list[dict[str, Any]],
    pooled_target: list[dict[str, Any]],
) -> dict[str, Any]:
    """BD-rate (%) of the target points against the fixed curve: per clip (``bd_rate`` of
    each clip's summary), their mean, and on the pooled curves."""
    per = {c: v["bd_rate_pct"] for c, v in per_clip.items()}
    vals = [v for v in per.values() if v is not None]
    return {
        "per_clip": per,
        "mean_over_clips": _mean(vals) if vals else None,
        "pooled": bl.bd_rate(pooled_fixed, pooled_target),
    }


def analyse(raw: dict[str, dict[str, Any]], gop: int) -> dict[str, Any]:
    """The results of a run (``raw``: clip -> ``fixed`` (quality -> record) and ``target``
    (target label -> record), records of :func:`jobs.bench.target.encode_task`): see the
    module docstring. Returns ``per_clip``, ``pooled``, ``windows`` (overall and per clip),
    ``bd_rate``, ``search_cost`` and ``kbps`` (the bitrate streams of ``raw``'s ``kbps``:
    :func:`jobs.bench.target_kbps.analyse_kbps`)."""
    per_clip: dict[str, dict[str, Any]] = {}
    frames_fixed: dict[int, list[dict[str, Any]]] = {}
    frames_target: dict[int, list[dict[str, Any]]] = {}
    all_gops: list[dict[str, Any]] = []
    for clip, r in raw.items():
        fixed = {
            int(q): fixed_summary(rec)
            for q, rec in sorted(r["fixed"].items(), key=lambda kv: int(kv[0]))
        }
        recs = sorted(r["target"].values(), key=lambda x: float(x["target"]))
        targets = [target_summary(rec, fixed) for rec in recs]
        for q, rec in r["fixed"].items():
            frames_fixed.setdefault(int(q), []).extend(rec["frames"])
        for k, rec in enumerate(recs):
            frames_target.setdefault(k, []).extend(rec["frames"])
        gops = [g | {"clip": clip} for t in targets for g in t["gops"]]
        all_gops += gops
        curve = [{"bpp": v["bpp"], "psnr": v["psnr"]} for v in fixed.values()]
        pts = [{"bpp": t["bpp"], "psnr": t["psnr"]} for t in targets]
        per_clip[clip] = {
            "fixed": fixed,
            "targets": targets,
            "windows": window_shares(gops),
            "bd_rate_pct": bl.bd_rate(curve, pts),
            "time_ratio_geomean": geomean([t["time_ratio"] for t in targets]),
            "cpu_ratio_geomean": geomean([t["cpu_ratio"] for t in targets]),
            "iters_ratio_geomean": geomean([t["iters_ratio"] for t in targets]),
        }
    pooled_fixed = pooled_points(frames_fixed, "quality")
    pooled_target = pooled_points(frames_target, "point")
    encodes = [t for v in per_clip.values() for t in v["targets"]]
    return {
        "per_clip": per_clip,
        "pooled": {"fixed": pooled_fixed, "target": pooled_target},
        "windows": window_shares(all_gops),
        "bd_rate": bd_summary(per_clip, pooled_fixed, pooled_target),
        "search_cost": {
            "time_ratio_geomean": geomean([t["time_ratio"] for t in encodes]),
            "time_ratio_per_clip": {c: v["time_ratio_geomean"] for c, v in per_clip.items()},
            "cpu_ratio_geomean": geomean([t["cpu_ratio"] for t in encodes]),
            "cpu_ratio_per_clip": {c: v["cpu_ratio_geomean"] for c, v in per_clip.items()},
            "iters_ratio_geomean": geomean([t["iters_ratio"] for t in encodes]),
            "iters_ratio_mean": _mean([t["iters_ratio"] for t in encodes if t["iters_ratio"]])
            if any(t["iters_ratio"] for t in encodes)
            else None,
            "trials_per_gop_mean": _mean([int(g["trials"]) for g in all_gops])
            if all_gops
            else None,
        },
        "kbps": analyse_kbps(raw, {c: v["fixed"] for c, v in per_clip.items()}),
        "gop_size": gop,
    }


# --------------------------------------------------------------------------- outputs


def _f(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def _search(trials: list[dict[str, Any]], target: float) -> str:
    """A GOP's trials in order, ``q3 0.0067 +0.65 9880B``, ``*`` marking a restart from the
    previous trial's latents; empty when the run did not trace them."""
    return " -> ".join(
        f"q{x['rate_point']} {x['lmbda']:.4g}{'*' if x.get('restart') else ''} "
        f"{x['psnr'] - target:+.2f} {x['bytes']}B"
        for x in trials
    )


def _reduced(results: dict[str, Any]) -> list[str]:
    """A paragraph (and a blank line) when the run coded fewer than two full GOPs per clip
    (the issue's protocol: 32 frames, two GOPs of 16), else nothing."""
    n, gop = int(results["frames"]), int(results["gop"])
    if n >= 2 * gop:
        return []
    gops = -(-n // gop)
    return [
        f"**Reduced run**: {n} frames per clip, not the protocol's {2 * gop} (two GOPs of "
        f"{gop}): {gops} GOP{'s' if gops > 1 else ''} of at most {min(n, gop)} frames per clip, "
        f"so {gops * len(results['per_clip']) * len(results['pairs'])} targeted GOPs in all, "
        "to fit the time of a shared 2-core machine (`--frames` sets it; the targets' GOPs "
        "are then shorter than the CLI's, as the last GOP of a video may be).",
        "",
    ]


def markdown(results: dict[str, Any]) -> str:
    """``target.md``: what was measured and how, the exact command, the headline numbers,
    and tables (fixed curve, targeted encodes, every GOP, BD-rates)."""
    w, bd, sc = results["windows"], results["bd_rate"], results["search_cost"]
    cfg = results["config"]
    per = results["per_clip"]
    kbps_head, kbps_lines = markdown_kbps(results)
    lines = ["# Rate control: `relatent encode --target-psnr` and `--target-kbps`", ""]
    lines += [*bl.provenance_md(results["provenance"]), ""]
    lines += [
        f"Command: `{results['command']}` ({results['minutes']:.0f} min on this machine"
        + (
            f"; {results['cached_items']} of {results['items']} items came from the checkpoint "
            f"cache of an earlier run, whose encode seconds they keep"
            if results.get("cached_items")
            else ""
        )
        + ").",
        "",
        f"What: the first {results['frames']} consecutive frames of each shared clip (long side "
        f"{results['long_side']}, never upscaled), GOP {results['gop']}, the CLI's default "
        f"refinement (`{cfg['method']}`, lr {cfg['lr']:g}, {cfg['iters']} iterations"
        + (" set by `--iters`" if results.get("iters_option") is not None else "")
        + ", "
        f"`--tol {cfg['tol']:g} --window {cfg['window']}`), batch {results['batch']}, through "
        "`pipeline.codec.encode_frames` (the path of `relatent encode`), one process per "
        "encode with one torch thread. **Fixed quality**: every shipped rate point "
        f"({', '.join(f'q{q}' for q in results['qualities'])}) at its own lambda. **Targets**: "
        f"per clip, {at_words(results)} between the fixed mean PSNRs of "
        + ", ".join(f"q{a}/q{b}" for a, b in results["pairs"])
        + ", rounded to 0.1 dB (between rate points: lambda has to do the work), each coded "
        "with the same config plus `target_psnr` (`make_encoder(rate_point_models(), cfg)`; "
        "rate control's rate points: "
        + ", ".join(f"q{q}" for q in results.get("rate_points", results["qualities"]))
        + "). "
        "bpp = packet bytes per pixel, per frame, averaged; PSNR = RGB PSNR per frame, "
        "averaged (the GOP's mean is what rate control targets). BD-rate: `bjontegaard` pchip "
        "over the overlapping PSNR range of the clip's 3 target points against its 5 fixed "
        "points (`jobs.bench.lib.bd_rate`); pooled = per-point means over every frame of every "
        "clip. Search cost: each targeted encode's wall time, CPU time (the worker's process "
        "time, one torch thread) and refinement iterations over those of the fixed encode "
        "(same clip and run) at the rate point it mostly chose; the machine is shared and "
        "loaded by other jobs, so wall-time ratios are noisy, CPU-time ratios much less so, "
        "iteration ratios are exact. Each GOP is one work item (GOPs are coded independently, "
        "as a transcode's shards are; an encode's times are the sums over its GOPs).",
        "",
        *_reduced(results),
        "## Headline",
        "",
        f"* GOPs within [T, T+{WINDOW_DB} dB]: **{w['in_window']} of {w['gops']} "
        f"({_pct(w['share_window'])})** (goal >= {GOAL_SHARE:.0%}: "
        f"{'met' if w['goal_met'] else 'not met'}); within [T, T+{TIGHT_DB}]: "
        f"{w['in_tight']} of {w['gops']} ({_pct(w['share_tight'])}); at or above T: "
        f"{w['met']} ({_pct(w['share_met'])}). Mean error {_f(w['error_db_mean'], '+.3f')} dB, "
        f"largest {_f(w['error_db_max_abs'], '.3f')} dB.",
        f"* BD-rate of target mode against the fixed rate points (RGB PSNR): pooled "
        f"**{bl.fmt_pct(bd['pooled'])}**, mean over clips {bl.fmt_pct(bd['mean_over_clips'])} ("
        + ", ".join(f"{c} {bl.fmt_pct(v)}" for c, v in bd["per_clip"].items())
        + "); negative = fewer bits at equal PSNR.",
        f"* Search cost: CPU time **{_f(sc.get('cpu_ratio_geomean'), '.2f')}x** the fixed "
        "encode (geometric mean; per clip "
        + ", ".join(f"{c} {_f(v, '.2f')}x" for c, v in sc.get("cpu_ratio_per_clip", {}).items())
        + f"), wall time {_f(sc['time_ratio_geomean'], '.2f')}x, refinement iterations {_f(sc['iters_ratio_geomean'], '.2f')}x (geometric mean), "
        f"{_f(sc['trials_per_gop_mean'], '.2f')} trials per GOP on average (count of GOPs by "
        f"trials: {', '.join(f'{k}: {v}' for k, v in w['trials'].items())}).",
        *kbps_head,
        "",
        "## Fixed quality (every shipped rate point)",
        "",
    ]
    rows = []
    for c, v in per.items():
        size = results["clips"][c]["size"]
        for q, f in v["fixed"].items():
            rows.append([
                f"{c} ({size[1]}x{size[0]})", f"q{q}", f"{f['bpp']:.4f}", f"{f['psnr']:.2f}",
                " / ".join(f"{g['psnr']:.2f}" for g in f["gops"]),
                " / ".join(f"{g['bpp']:.4f}" for g in f["gops"]),
                f"{f['iters'] / sum(g['frames'] for g in f['gops']):.1f}", f"{f['seconds']:.0f} ({f['cpu_seconds']:.0f})",
            ])  # fmt: skip
    lines += bl.md_table(
        ["clip", "rate point", "bpp", "PSNR (dB)", "PSNR per GOP", "bpp per GOP",
         "iterations/frame", "encode s (CPU s)"],
        rows,
    )  # fmt: skip
    lines += ["", "## Targeted encodes", ""]
    rows = []
    for c, v in per.items():
        for t in v["targets"]:
            rows.append([
                c, f"{t['target']:.1f} (q{t['pair'][0]}/q{t['pair'][1]})" if t["pair"] else f"{t['target']:.1f}",
                f"{t['psnr']:.2f}", f"{t['bpp']:.4f}", bl.fmt_pct(t["rate_change_pct"]),
                "+".join(f"q{q}" for q in t["rate_points"]), f"q{t['main_rate_point']}",
                f"{t['trials_mean']:.1f}", f"{t['seconds']:.0f} ({t['cpu_seconds']:.0f})", f"{_f(t.get('cpu_ratio'), '.2f')}x",
                f"{_f(t['time_ratio'], '.2f')}x", f"{_f(t['iters_ratio'], '.2f')}x",
            ])  # fmt: skip
    lines += bl.md_table(
        ["clip", "target dB (between)", "PSNR (dB)", "bpp", "rate vs fixed curve at its PSNR",
         "rate points", "mostly", "trials/GOP", "encode s (CPU s)", "CPU vs fixed", "wall vs fixed",
         "iterations vs fixed"],
        rows,
    )  # fmt: skip
    lines += ["", "## Every GOP", ""]
    traced = any(g.get("search") for v in per.values() for t in v["targets"] for g in t["gops"])
    rows = []
    for c, v in per.items():
        for t in v["targets"]:
            for g in t["gops"]:
                rows.append([
                    c, f"{t['target']:.1f}", f"{g['first']}-{g['first'] + g['frames'] - 1}",
                    f"{g['score']:.3f}", f"{g['error_db']:+.3f}", f"q{g['rate_point']}",
                    f"{g['lmbda']:.5f}", g["trials"], g["bytes"], g["iters"],
                    "yes" if g["in_window"] else "**no**", "yes" if g["in_tight"] else "no",
                ] + ([_search(g.get("search", []), t["target"])] if traced else []))  # fmt: skip
    lines += bl.md_table(
        ["clip", "target", "frames", "achieved (dB)", "error", "rate point", "lambda", "trials",
         "bytes", "iterations", f"in [T, T+{WINDOW_DB}]", f"in [T, T+{TIGHT_DB}]"]
        + (["trials: rate point, lambda (* restart), error (dB), bytes"] if traced else []),
        rows,
    )  # fmt: skip
    lines += ["", "## Windows and BD-rate per clip", ""]
    rows = [
        [
            c, f"{v['windows']['in_window']}/{v['windows']['gops']}",
            f"{v['windows']['in_tight']}/{v['windows']['gops']}", bl.fmt_pct(v["bd_rate_pct"]),
            f"{_f(v.get('cpu_ratio_geomean'), '.2f')}x", f"{_f(v['time_ratio_geomean'], '.2f')}x",
            f"{_f(v['iters_ratio_geomean'], '.2f')}x",
        ]
        for c, v in per.items()
        if v["windows"]["gops"]
    ]  # fmt: skip
    rows.append([
        "**all**", f"{w['in_window']}/{w['gops']}", f"{w['in_tight']}/{w['gops']}",
        f"{bl.fmt_pct(bd['pooled'])} (pooled)", f"{_f(sc.get('cpu_ratio_geomean'), '.2f')}x",
        f"{_f(sc['time_ratio_geomean'], '.2f')}x", f"{_f(sc['iters_ratio_geomean'], '.2f')}x",
    ])  # fmt: skip
    lines += bl.md_table(
        ["clip", f"GOPs in [T, T+{WINDOW_DB}]", f"GOPs in [T, T+{TIGHT_DB}]", "BD-rate",
         "CPU vs fixed (geo)", "wall vs fixed (geo)", "iterations vs fixed (geo)"],
        rows,
    )  # fmt: skip
    lines += ["", *kbps_lines]
    lines += [
        "![Fixed RD curves with the target and bitrate points, and each GOP's error](target.png)",
        "",
    ]
    return "\n".join(lines)


def rerender(out: Path) -> dict[str, Any]:
    """Re-analyse the encodes stored in ``out/target.json`` (its ``raw``) with this code and
    rewrite ``target.json``, ``target.md`` and ``target.png``: no encoding.

    Raises:
        InputError: ``out/target.json`` is absent or holds no encodes.
    """
    import json

    from pipeline.errors import InputError

    path = out / "target.json"
    if not path.exists():
        raise InputError(f"no {path}", hint="run relatent bench target first")
    results = json.loads(path.read_text())
    if not results.get("raw"):
        raise InputError(f"{path} holds no encodes ('raw')", hint="rerun relatent bench target")
    results.update(analyse(results["raw"], int(results["gop"])))
    write_outputs(results, out)
    return results


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """``target.json``, ``target.md`` (:func:`markdown`) and ``target.png``: per clip the
    fixed RD curve with the target points (top) and each GOP's achieved minus target PSNR
    with the windows (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    bl.write_json(out / "target.json", results)
    (out / "target.md").write_text(markdown(results))
    per = results["per_clip"]
    n = max(1, len(per))
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 6.4), squeeze=False)
    for k, (c, v) in enumerate(per.items()):
        ax = axes[0][k]
        fx = list(v["fixed"].items())
        ax.plot(
            [f["bpp"] for _, f in fx],
            [f["psnr"] for _, f in fx],
            "o-",
            color="C0",
            label="fixed q1..q5",
        )
        for q, f in fx:
            ax.annotate(
                f"q{q}",
                (f["bpp"], f["psnr"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
        ts = v["targets"]
        ax.plot(
            [t["bpp"] for t in ts],
            [t["psnr"] for t in ts],
            "*",
            color="C3",
            ms=11,
            label="--target-psnr",
        )
        for t in ts:
            ax.axhline(t["target"], color="C3", lw=0.5, ls=":")
        plot_kbps(ax, (results.get("kbps") or {}).get("per_clip", {}).get(c))
        ax.set_title(f"{c} (BD-rate {bl.fmt_pct(v['bd_rate_pct'])})", fontsize=9)
        ax.set_xlabel("bpp (packet bytes)")
        ax.grid(alpha=0.3)
        if k == 0:
            ax.set_ylabel("RGB PSNR (dB)")
            ax.legend(fontsize=7, loc="lower right")
        ax = axes[1][k]
        ax.axhspan(0, WINDOW_DB, color="C2", alpha=0.12, label=f"[T, T+{WINDOW_DB}]")
        ax.axhline(TIGHT_DB, color="C2", lw=0.7, ls="--", label=f"T+{TIGHT_DB}")
        ax.axhline(0, color="k", lw=0.7)
        for t in ts:
            for g in t["gops"]:
                x = t["target"] + 0.06 * int(g["gop"])  # the GOPs of one target side by side
                ax.plot(x, g["error_db"], "o", color=f"C{int(g['rate_point'])}", ms=6)
                ax.annotate(
                    f"q{g['rate_point']}",
                    (x, g["error_db"]),
                    textcoords="offset points",
                    xytext=(4, 0),
                    fontsize=6,
                )
        lo, hi = ax.get_ylim()
        ax.set_ylim(min(lo, -0.2), max(hi, WINDOW_DB + 0.2))
        ax.set_xlabel("target (dB; a target's GOPs side by side)")
        ax.grid(alpha=0.3)
        if k == 0:
            ax.set_ylabel("achieved GOP mean - target (dB)")
            ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"--target-psnr on {results['frames']} frames per clip: "
        f"{results['windows'].get('in_window', 0)}/{results['windows'].get('gops', 0)} GOPs in "
        f"[T, T+{WINDOW_DB}], pooled BD-rate {bl.fmt_pct(results['bd_rate']['pooled'])}"
        + (
            f"; --target-kbps: {k['within']}/{k['streams']} streams within ±5%, pooled BD-rate "
            f"{bl.fmt_pct(k['bd_rate']['pooled'])}"
            if (k := results.get("kbps")) and k.get("streams")
            else ""
        ),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out / "target.png", dpi=120, metadata=bl.png_metadata(results["provenance"]))
    plt.close(fig)
