"""The numbers of ``relatent bench rd`` from its per-frame records: RD curves (per-frame
means), BD-rate tables against the unrefined model and x265, BD-rate against the
refinement budget, per-frame refinement gains, and the methods comparison (BD-rate
against realised iterations per frame, its Pareto front and targets).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from jobs.bench import lib as bl
from jobs.bench.rd_protocol import ANCHOR_BUDGET

__all__ = [
    "ANCHOR_CLASSIC",
    "CLASSIC_LABELS",
    "analyse",
    "bd_table",
    "curve_label",
    "curves",
    "gains",
    "is_model",
    "method_analysis",
    "method_targets",
]

#: The classic codec every curve is also compared with.
ANCHOR_CLASSIC = "x265-intra-420"
#: Curve labels of the classic codecs (JPEG, then every PyAV codec); all others are relatent's.
CLASSIC_LABELS = ("jpeg-420", *bl.AV_CODECS)


def is_model(label: str) -> bool:
    """Whether a curve label is one of relatent's (not a classic codec's)."""
    return label not in CLASSIC_LABELS


def curve_label(rec: dict[str, Any]) -> str:
    """The curve a record belongs to: ``<arch> unrefined``, ``<arch> <method> <budget>``
    or the classic codec's label."""
    if rec["codec"].startswith("relatent-"):
        return (
            f"{rec['codec'][9:]} unrefined"
            if rec["budget"] == 0
            else f"{rec['codec'][9:]} {rec.get('method', 'campos')} {rec['budget']}"
        )
    return rec["codec"]


def curves(records: list[dict[str, Any]], frames: set[str]) -> dict[str, list[dict[str, Any]]]:
    """label -> points (one per setting, per-frame means over ``frames``); a curve is kept
    only when it covers every frame of ``frames`` at each of its settings."""
    groups: dict[str, dict[Any, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["frame"] in frames:
            groups[curve_label(r)][r["setting"]].append(r)
    out = {}
    for label, by_setting in groups.items():
        pts = []
        for setting, rs in by_setting.items():
            if {r["frame"] for r in rs} != frames:
                continue
            p = bl.mean_point([{k: r[k] for k in bl.METRIC_KEYS} for r in rs])
            p.update(setting=setting, frames=len(rs))
            pts.append(p)
        if pts:
            out[label] = sorted(pts, key=lambda p: p["bpp"])
    return out


def bd_table(
    cv: dict[str, list[dict[str, Any]]], model_anchor: str | None
) -> dict[str, dict[str, Any]]:
    """BD-rate (%, RGB PSNR, Y PSNR, MS-SSIM) of every curve against ``model_anchor`` (the
    unrefined model's curve) and :data:`ANCHOR_CLASSIC`; None where undefined."""
    table = {}
    for label, pts in cv.items():
        row: dict[str, Any] = {"points": len(pts)}
        for aname, akey in (("unrefined", model_anchor), ("x265_intra", ANCHOR_CLASSIC)):
            anchor = cv.get(akey) if akey else None
            for key in ("psnr", "psnr_y", "ms_ssim"):
                row[f"vs_{aname}_{key}"] = (
                    None if anchor is None or label == akey else bl.bd_rate(anchor, pts, key)
                )
        table[label] = row
    return table


def gains(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per frame, rate point and budget: what refinement changed against the unrefined encode."""
    base = {
        (r["dataset"], r["frame"], r["codec"], r["setting"]): r
        for r in records
        if r["codec"].startswith("relatent-") and r["budget"] == 0
    }
    out = []
    for r in records:
        if (
            not r["codec"].startswith("relatent-")
            or r["budget"] == 0
            or r.get("sweep") == "methods"
        ):
            continue
        b = base.get((r["dataset"], r["frame"], r["codec"], r["setting"]))
        if b is None:
            continue
        out.append(
            {
                "dataset": r["dataset"],
                "frame": r["frame"],
                "codec": r["codec"],
                "quality": r["setting"],
                "budget": r["budget"],
                "rd_gain_pct": 100.0 * (r["rd_after"] - r["rd_before"]) / r["rd_before"],
                "d_bpp_pct": 100.0 * (r["bpp"] - b["bpp"]) / b["bpp"],
                "d_psnr": r["psnr"] - b["psnr"],
                "unrefined_bpp": b["bpp"],
                "refined": r["refined"],
            }
        )
    return out


def analyse(
    records: list[dict[str, Any]],
    sets: dict[str, list[str]],
    budgets_by_set: dict[str, list[int]],
    default_arch: str | None,
) -> dict[str, Any]:
    """Curves, BD tables, BD-rate against budget and gain summaries for each frame set."""
    res: dict[str, Any] = {"curves": {}, "bd": {}, "budget_curve": {}, "gain_summary": {}}
    g = gains(records)
    for name, frames in sets.items():
        fs = set(frames)
        cv = curves(records, fs)
        if not cv:
            continue
        archs = sorted({lab.split(" ")[0] for lab in cv if lab.endswith(" unrefined")})
        arch = default_arch if default_arch in archs else (archs[0] if archs else None)
        anchor = f"{arch} unrefined" if arch else None
        res["curves"][name] = cv
        res["bd"][name] = bd_table(cv, anchor)
        res.setdefault("equal_quality", {})[name] = [
            {
                "curve": lab,
                "setting": pt["setting"],
                "bpp": pt["bpp"],
                **{
                    f"{c}_{key}": bl.rate_change_at_quality(cv[c], pt, key)
                    for c in cv
                    if not is_model(c)
                    for key in ("psnr", "ms_ssim")
                },
            }
            for lab, pts in cv.items()
            if is_model(lab)
            for pt in pts
        ]
        rows = []
        for b in budgets_by_set.get(name, []):
            lab = f"{arch} campos {b}"
            gs = [
                x["rd_gain_pct"]
                for x in g
                if x["frame"] in fs and x["budget"] == b and x["codec"] == f"relatent-{arch}"
            ]
            if lab not in cv and not gs:
                continue
            rows.append(
                {
                    "budget": b,
                    "bd_rate_psnr": bl.bd_rate(cv[anchor], cv[lab])
                    if anchor in cv and lab in cv
                    else None,
                    "bd_rate_ms_ssim": bl.bd_rate(cv[anchor], cv[lab], "ms_ssim")
                    if anchor in cv and lab in cv
                    else None,
                    "mean_rd_gain_pct": float(np.mean(gs)) if gs else None,
                    "median_rd_gain_pct": float(np.median(gs)) if gs else None,
                }
            )
        if rows:
            res["budget_curve"][name] = rows
    by: dict[tuple[str, int], list[float]] = defaultdict(list)
    for x in g:
        by[(x["frame"], x["budget"])].append(x["rd_gain_pct"])
    res["gain_per_frame"] = [
        {"frame": f, "budget": b, "mean_rd_gain_pct": float(np.mean(v)), "rate_points": len(v)}
        for (f, b), v in sorted(by.items())
    ]
    res["gains"] = g
    return res


def method_analysis(
    records: list[dict[str, Any]],
    res: dict[str, Any],
    method_sets: list[str],
    default_arch: str | None,
    anchor_budget: int = ANCHOR_BUDGET,
) -> dict[str, Any]:
    """BD-rate (against the unrefined model on the same frames) against the realised mean
    iterations per frame, per recipe and budget; the Pareto front; the targets of
    :func:`method_targets`."""
    out: dict[str, Any] = {}
    for name in method_sets:
        cv = res["curves"].get(name, {})
        frames = set(res["sets"][name]) if "sets" in res else set()
        recs = [
            r
            for r in records
            if r.get("sweep") == "methods" and r["frame"] in frames and r["budget"] > 0
        ]
        archs = sorted({r["arch"] for r in recs})
        arch = default_arch if default_arch in archs else (archs[0] if archs else None)
        anchor = cv.get(f"{arch} unrefined")
        by: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for r in recs:
            if r["arch"] == arch:
                by[(r["method"], r["budget"])].append(r)
        pts = []
        for (method, budget), rs in sorted(by.items()):
            lab = f"{arch} {method} {budget}"
            have = anchor is not None and lab in cv
            pts.append(
                {
                    "method": method,
                    "budget": budget,
                    "frames": len(rs),
                    "iters_per_frame": float(np.mean([r["iters"] for r in rs])),
                    "bd_rate_psnr": bl.bd_rate(anchor, cv[lab]) if have else None,
                    "bd_rate_ms_ssim": bl.bd_rate(anchor, cv[lab], "ms_ssim") if have else None,
                    "mean_rd_gain_pct": float(
                        np.mean(
                            [100.0 * (r["rd_after"] - r["rd_before"]) / r["rd_before"] for r in rs]
                        )
                    ),
                    "warm_frames_pct": 100.0 * float(np.mean([r.get("warm", False) for r in rs])),
                    "refine_seconds_per_frame": float(np.mean([r["refine_seconds"] for r in rs])),
                }
            )
        if not pts:
            continue
        key = (
            "bd_rate_psnr"
            if all(p["bd_rate_psnr"] is not None for p in pts)
            else "mean_rd_gain_pct"
        )
        front, best = [], math.inf
        for p in sorted(pts, key=lambda p: (p["iters_per_frame"], p[key])):
            if p[key] < best:
                front.append(
                    {
                        "method": p["method"],
                        "budget": p["budget"],
                        "iters_per_frame": p["iters_per_frame"],
                        key: p[key],
                    }
                )
                best = p[key]
        out[name] = {
            "points": pts,
            "pareto": front,
            "pareto_metric": key,
            "targets": method_targets(pts, anchor_budget),
        }
    return out


def method_targets(pts: list[dict[str, Any]], anchor_budget: int = ANCHOR_BUDGET) -> dict[str, Any]:
    """The methods-comparison targets on BD-rate (RGB PSNR): >= 80% of the gain of
    ``campos`` at ``anchor_budget`` within 40 iterations/frame, ``sga`` >= 2 points better
    than ``campos`` at equal budgets, best method <= -15% within 400 iterations/frame
    (docs/refinement.md); ``met`` None when not measurable."""
    bd = {(p["method"], p["budget"]): p["bd_rate_psnr"] for p in pts}
    t: dict[str, Any] = {}
    ref = bd.get(("campos", anchor_budget))
    cheap = [p for p in pts if p["iters_per_frame"] <= 40 and p["bd_rate_psnr"] is not None]
    if ref is not None and ref < 0 and cheap:
        b = min(cheap, key=lambda p: p["bd_rate_psnr"])
        share = b["bd_rate_psnr"] / ref
        t["gain_share_at_40"] = {
            "met": share >= 0.8,
            "share": share,
            "best": f"{b['method']} {b['budget']}",
            "bd_rate": b["bd_rate_psnr"],
            "iters_per_frame": b["iters_per_frame"],
            "anchor_bd_rate": ref,
        }
    else:
        t["gain_share_at_40"] = {"met": None}
    diffs = {
        b: bd[("sga", b)] - bd[("campos", b)]
        for (m, b) in bd
        if m == "sga" and bd.get(("campos", b)) is not None and bd[("sga", b)] is not None
    }
    t["sga_vs_campos"] = {
        "met": all(d <= -2.0 for d in diffs.values()) if diffs else None,
        "points": {str(b): d for b, d in sorted(diffs.items())},
    }
    upto = [p for p in pts if p["iters_per_frame"] <= 400 and p["bd_rate_psnr"] is not None]
    if upto:
        b = min(upto, key=lambda p: p["bd_rate_psnr"])
        t["best_at_400"] = {
            "met": b["bd_rate_psnr"] <= -15.0,
            "best": f"{b['method']} {b['budget']}",
            "bd_rate": b["bd_rate_psnr"],
            "iters_per_frame": b["iters_per_frame"],
        }
    else:
        t["best_at_400"] = {"met": None}
    return t
