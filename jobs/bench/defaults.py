"""``relatent bench defaults``: is the CLI's default refinement the best at its cost?

On the first ``--frames`` consecutive frames (default 16) of each shared clip (long side
``--long-side``, default 256, never upscaled; :func:`jobs.bench.lib.clip_run`), the shipped
default model codes the frames with the CLI's default GOP once per **recipe**: a refinement
method, Adam step size, iterations per frame and (optionally) warm starts. Every other
refinement setting (GOP, ``--window``, ``--warm-threshold``, budget, seed) is the
CLI's default, taken from the encode command's own option definitions
(:func:`jobs.bench.rd_video.cli_configs` parses an empty command line with
:func:`jobs.refine_options.add_refine_options`), and the CLI's default recipe is always
measured and marked; ``--tol`` is the method's command-line default
(:data:`pipeline.config.DEFAULT_TOL`). Recipes are written ``none`` or ``METHOD:LR:ITERS[:warm]``
(``sga:2e-2:50``, ``sga:2e-2:50:warm``, ``campos:1e-3:50``).

Each recipe x clip is one task of the library path of ``relatent encode``
(:func:`pipeline.codec.encode_frames` with a :class:`~pipeline.codec.FrameEncoder`, batch
:data:`jobs.bench.rd_video.BATCH`), in ``--jobs`` worker processes (default: one per core),
each with one torch thread. Reported per recipe and clip, against ``none`` (unrefined inter
coding, always measured):

* RD cost change (%): the frames' summed actual RD cost (bpp of the packet bytes + lambda *
  255^2 * MSE, with the model's lambda for every frame, also an intra frame refined at
  ``ip_ratio ** 2`` times it) over the baseline's;
* bytes change (%), PSNR change (dB; PSNR of the frames' mean MSE), mean iterations per
  frame, encode seconds per frame and the time ratio against the baseline (wall time of the
  whole encode, so the unrefined coding cost is included);

and over the clips: the geometric mean of the RD-cost and bytes ratios and of the time
ratio, the arithmetic mean of the percentages, PSNR changes, iterations and seconds. The
Markdown says where the CLI default stands: its rank, whether another recipe is no slower
(within 10%) and better on most clips, and the Pareto front of (seconds per frame, RD cost).
Writes ``defaults.json``, ``defaults.md`` and ``defaults.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

from jobs.bench import add_clip_io
from jobs.bench import lib as bl
from jobs.bench.gop import CLIPS
from pipeline.config import DEFAULT_TOL
from pipeline.errors import ConfigError, InputError

__all__ = [
    "DEFAULT_RECIPES",
    "NOTES",
    "SLOWER",
    "Recipe",
    "add_parser",
    "cli_default",
    "cmd_defaults",
    "encode_task",
    "fmt_lr",
    "fmt_pct_or_zero",
    "label_of",
    "parse_recipe",
    "recipes_with_default",
    "run",
    "summarize",
    "write_outputs",
]

#: The recipes measured by default: the baseline, the seed's campos (the old CLI default),
#: campos at a larger step, SGA at the paper's step and at 2e-2 (25 and 50 iterations, and
#: with warm starts). The CLI default is added when it is none of these.
DEFAULT_RECIPES = (
    "none",
    "campos:1e-3:50",
    "campos:5e-3:50",
    "sga:5e-3:50",
    "sga:2e-2:25",
    "sga:2e-2:50",
    "sga:2e-2:50:warm",
)
#: What some recipes are, in the Markdown.
NOTES = {"campos:1e-3:50": "the seed's, the old CLI default"}
#: A recipe "no slower" than the default takes at most this factor of its seconds per frame.
SLOWER = 1.10


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One refinement setting under test: its ``label`` (``none``, ``sga:2e-2:50:warm``),
    the full :class:`~pipeline.config.RefineConfig` it runs, and whether it is the CLI's
    default."""

    label: str
    config: Any
    default: bool = False


def fmt_lr(lr: float) -> str:
    """A step size in short scientific notation: 0.02 -> ``2e-2``, 0.0015 -> ``1.5e-3``."""
    mant, exp = f"{lr:e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def label_of(cfg: Any) -> str:
    """The recipe label of a config (``none``, ``METHOD:LR:ITERS[:warm]``, plus
    ``:budgetB`` when the config has an adaptive budget)."""
    if not cfg.active:
        return "none"
    label = f"{cfg.method}:{fmt_lr(cfg.lr)}:{cfg.iters}" + (":warm" if cfg.warm_start else "")
    return label + (f":budget{cfg.budget}" if cfg.budget else "")


def cli_default() -> Any:
    """The :class:`~pipeline.config.RefineConfig` of ``relatent encode`` with no options
    (the encode command's own option definitions, parsed from an empty command line).

    Raises:
        ConfigError: the CLI's defaults do not validate (a bug).
    """
    from jobs.bench.rd_video import cli_configs

    return cli_configs()["relatent-inter-refined"]


def parse_recipe(text: str, base: Any) -> Recipe:
    """``none`` or ``METHOD:LR:ITERS[:warm]`` as a :class:`Recipe` whose config is ``base``
    (the CLI default config) with the method, step size, iterations and warm start replaced,
    and ``tol`` the method's command-line default (:data:`pipeline.config.DEFAULT_TOL`).

    Raises:
        ConfigError: the text does not follow the syntax, or the config is invalid
            (an unknown method, a non-positive step size, negative iterations).
    """
    hint = "write recipes as none or METHOD:LR:ITERS[:warm], e.g. sga:2e-2:50 or sga:2e-2:50:warm"
    parts = text.strip().split(":")
    if parts == ["none"]:
        cfg = dataclasses.replace(
            base, method="none", tol=DEFAULT_TOL["none"], warm_start=False, budget=0
        )
    else:
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "warm"):
            raise ConfigError(f"--recipes: {text!r} is not a recipe", hint=hint)
        try:
            lr, iters = float(parts[1]), int(parts[2])
        except ValueError:
            raise ConfigError(
                f"--recipes: {text!r} has a step size or iteration count that is not a number",
                hint=hint,
            ) from None
        if parts[0] == "none":
            raise ConfigError(f"--recipes: {text!r}: method none takes no settings", hint=hint)
        cfg = dataclasses.replace(
            base,
            method=parts[0],
            lr=lr,
            iters=iters,
            tol=DEFAULT_TOL.get(parts[0], base.tol),  # the method's, as the command line's
            warm_start=len(parts) == 4,
        )
    try:
        cfg = cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"--recipes: {text!r}: {e}", hint=hint) from None
    return Recipe(label_of(cfg), cfg)


def recipes_with_default(texts: list[str], base: Any) -> list[Recipe]:
    """The recipes of ``texts`` (duplicates dropped), with ``none`` first (the baseline,
    added when absent) and the CLI default ``base`` marked; appended when it is none of them.

    Raises:
        ConfigError: a recipe is invalid (:func:`parse_recipe`).
    """
    out: list[Recipe] = []
    for r in [parse_recipe("none", base)] + [parse_recipe(t, base) for t in texts]:
        if all(r.config != o.config for o in out):
            out.append(r)
    if not base.active:
        return [dataclasses.replace(r, default=r.label == "none") for r in out]
    marked = [dataclasses.replace(r, default=r.config == base) for r in out]
    if not any(r.default for r in marked):
        marked.append(Recipe(label_of(base), base, default=True))
    return marked


# --------------------------------------------------------------------------- workers

#: The worker's model (each process loads the shipped default once).
_MODEL: list[Any] = []


def encode_task(task: dict[str, Any]) -> dict[str, Any]:
    """One recipe on one clip's frames (``task``: ``recipe``, ``config``, ``clip``,
    ``frames``, ``batch``), in one torch thread: per-frame sums and means of the encoder's
    :class:`~pipeline.stats.FrameStats` and the encode's wall time."""
    import numpy as np

    from pipeline.codec import FrameEncoder, encode_frames
    from pipeline.metrics import rd_cost
    from pipeline.models import fixed_threads, load_model

    if not _MODEL:
        _MODEL.append(load_model())
    frames = task["frames"]
    enc = FrameEncoder(_MODEL[0], task["config"])
    with fixed_threads(1):
        t0 = time.perf_counter()
        out = list(encode_frames(enc, ((f, i, i) for i, f in enumerate(frames)), task["batch"]))
        seconds = time.perf_counter() - t0
    st = [e.stats for e in out]
    mse = float(np.mean([10 ** (-s.psnr / 10) for s in st]))
    return {
        "recipe": task["recipe"],
        "clip": task["clip"],
        "frames": len(st),
        "bytes": sum(s.bytes for s in st),
        "rd": sum(rd_cost(s.bpp, 10 ** (-s.psnr / 10), enc.lmbda) for s in st),
        "psnr": -10 * math.log10(mse),
        "iters": float(np.mean([s.iters for s in st])),
        "p_frames": sum(s.frame_type == "P" for s in st),
        "refined": sum(s.refined for s in st),
        "warm": sum(bool(s.warm) for s in st),
        "seconds": seconds,
    }


# --------------------------------------------------------------------------- analysis


def _geo(ratios: list[float]) -> float:
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def summarize(raw: dict[str, dict[str, dict[str, Any]]], recipes: list[Recipe]) -> dict[str, Any]:
    """Per clip and recipe the changes against ``none``; per recipe the means over clips
    (``raw``: clip -> recipe label -> :func:`encode_task` record). Returns ``per_clip``,
    ``summary`` (recipe label -> means), ``default`` (its label) and ``standing``."""
    per_clip: dict[str, dict[str, Any]] = {}
    for clip, recs in raw.items():
        b = recs["none"]
        per_clip[clip] = {}
        for r in recipes:
            x = recs[r.label]
            per_clip[clip][r.label] = {
                **x,
                "rd_ratio": x["rd"] / b["rd"],
                "rd_change_pct": 100 * (x["rd"] / b["rd"] - 1),
                "bytes_ratio": x["bytes"] / b["bytes"],
                "bytes_change_pct": 100 * (x["bytes"] / b["bytes"] - 1),
                "psnr_change_db": x["psnr"] - b["psnr"],
                "seconds_per_frame": x["seconds"] / x["frames"],
                "time_ratio": x["seconds"] / b["seconds"],
            }
    summary: dict[str, dict[str, Any]] = {}
    for r in recipes:
        rows = [per_clip[c][r.label] for c in per_clip]
        summary[r.label] = {
            "default": r.default,
            "config": dataclasses.asdict(r.config),
            "rd_change_pct_geomean": 100 * (_geo([x["rd_ratio"] for x in rows]) - 1),
            "rd_change_pct_mean": sum(x["rd_change_pct"] for x in rows) / len(rows),
            "bytes_change_pct_geomean": 100 * (_geo([x["bytes_ratio"] for x in rows]) - 1),
            "bytes_change_pct_mean": sum(x["bytes_change_pct"] for x in rows) / len(rows),
            "psnr_change_db_mean": sum(x["psnr_change_db"] for x in rows) / len(rows),
            "iters_mean": sum(x["iters"] for x in rows) / len(rows),
            "seconds_per_frame_mean": sum(x["seconds_per_frame"] for x in rows) / len(rows),
            "time_ratio_geomean": _geo([x["time_ratio"] for x in rows]),
        }
    default = next(r.label for r in recipes if r.default)
    return {
        "per_clip": per_clip,
        "summary": summary,
        "default": default,
        "standing": _standing(per_clip, summary, default),
    }


def _standing(
    per_clip: dict[str, dict[str, Any]], summary: dict[str, dict[str, Any]], default: str
) -> dict[str, Any]:
    """The default's rank by RD-cost change (geometric mean; 1 = best), the recipes that are
    no slower (<= SLOWER x its seconds per frame) and better on most clips, and the Pareto
    front of (seconds per frame, RD-cost change)."""
    by_rd = sorted(summary, key=lambda k: summary[k]["rd_change_pct_geomean"])
    d = summary[default]
    beats = []
    for k, s in summary.items():
        if k == default or s["seconds_per_frame_mean"] > SLOWER * d["seconds_per_frame_mean"]:
            continue
        wins = sum(
            per_clip[c][k]["rd_change_pct"] < per_clip[c][default]["rd_change_pct"]
            for c in per_clip
        )
        if wins * 2 > len(per_clip):
            beats.append(k)
    front = [
        k
        for k, s in summary.items()
        if not any(
            o["seconds_per_frame_mean"] <= s["seconds_per_frame_mean"]
            and o["rd_change_pct_geomean"] < s["rd_change_pct_geomean"]
            for j, o in summary.items()
            if j != k
        )
    ]
    return {
        "rank": by_rd.index(default) + 1,
        "of": len(by_rd),
        "best": by_rd[0],
        "better_and_no_slower": beats,
        "pareto_front": sorted(front, key=lambda k: summary[k]["seconds_per_frame_mean"]),
        "on_pareto_front": default in front,
    }


# --------------------------------------------------------------------------- run


def run(
    video: Path,
    out: Path,
    frames: int = 16,
    long_side: int | None = 256,
    recipes: list[str] | None = None,
    clips: list[str] | None = None,
    jobs: int | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Measure every recipe on every available clip (see the module docstring), write the
    result files and return the results dict.

    Raises:
        ConfigError: a recipe is invalid, an unknown clip label, or ``frames`` < 1.
        InputError: none of the asked clips is present under ``video``.
    """
    from jobs.bench.rd_encode import pool_map
    from jobs.bench.rd_video import BATCH

    if frames < 1:
        raise ConfigError(f"--frames {frames} must be at least 1", hint="e.g. 16")
    labels = [c[0] for c in CLIPS]
    for c in clips or []:
        if c not in labels:
            raise ConfigError(
                f"--clips: unknown clip {c!r}", hint=f"use some of {' '.join(labels)}"
            )
    base = cli_default()
    rs = recipes_with_default(list(DEFAULT_RECIPES if recipes is None else recipes), base)
    jobs = jobs or os.cpu_count() or 1
    tasks, meta = [], {}
    for label, name, kind in CLIPS:
        if clips and label not in clips:
            continue
        path = video / name
        if not path.exists():
            log(f"{label}: {path} is absent, skipped")
            continue
        _, imgs, info = bl.clip_run(path, frames, long_side, start=0)
        h, w = imgs[0].shape[:2]
        meta[label] = {"file": name, "kind": kind, "size": [h, w], "frames": len(imgs)}
        meta[label]["native_size"] = [info.height, info.width]
        for r in rs:
            cost = (r.config.iters if r.config.active else 1) * h * w * len(imgs)
            tasks.append(
                {
                    "recipe": r.label,
                    "config": r.config,
                    "clip": label,
                    "frames": imgs,
                    "batch": BATCH,
                    "cost": cost,
                }
            )
    if not tasks:
        raise InputError(f"no shared clip under {video}", hint="pass --video ../shared/data/video")
    tasks.sort(key=lambda t: -t["cost"])
    # recorded before the encodes: the code that runs is the code of this moment
    prov = bl.provenance(
        "relatent bench defaults",
        {
            "frames": frames,
            "long_side": long_side,
            "recipes": [r.label for r in rs],
            "clips": list(meta),
            "jobs": jobs,
        },
    )
    log(
        f"bench defaults: {len(rs)} recipes x {len(meta)} clips on {min(jobs, len(tasks))} processes"
    )
    raw: dict[str, dict[str, Any]] = {c: {} for c in meta}
    t0 = time.perf_counter()
    for n, rec in enumerate(pool_map(encode_task, tasks, jobs), 1):
        raw[rec["clip"]][rec["recipe"]] = rec
        log(
            f"  [{n}/{len(tasks)}] {rec['clip']} {rec['recipe']}: {rec['bytes']} B, "
            f"{rec['psnr']:.2f} dB, RD {rec['rd']:.4f}, {rec['iters']:.1f} it, "
            f"{rec['seconds'] / rec['frames']:.2f} s/frame ({(time.perf_counter() - t0) / 60:.1f} min)"
        )
    results: dict[str, Any] = {
        "frames": frames,
        "long_side": long_side,
        "gop": base.gop,
        "cli_default": dataclasses.asdict(base),
        "recipes": [r.label for r in rs],
        "clips": meta,
        "minutes": (time.perf_counter() - t0) / 60,
        **summarize(raw, rs),
    }
    results["provenance"] = prov
    write_outputs(results, out)
    return results


# --------------------------------------------------------------------------- outputs


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """``defaults.json``, ``defaults.md`` (tables and where the default stands) and
    ``defaults.png`` (RD-cost change against encode seconds per frame, one point per recipe)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    bl.write_json(out / "defaults.json", results)
    summ, per, st, d = (
        results["summary"],
        results["per_clip"],
        results["standing"],
        results["default"],
    )
    clips = list(per)

    def name(k: str) -> str:
        if k == d:
            return f"**{k}** (CLI default)"
        return k + (f" ({NOTES[k]})" if k in NOTES else "")

    cfg = results["cli_default"]
    lines = ["# Refinement defaults: RD cost against encode time", ""]
    lines += [*bl.provenance_md(results["provenance"]), ""]
    lines += [
        f"The shipped default model, the first {results['frames']} consecutive frames of each "
        f"clip (long side {results['long_side']}), GOP {results['gop']} (the CLI's), "
        f"`--window {cfg['window']}`, `--tol` the method's (0 for sga, 1e-3 for campos) and "
        "every other option at the CLI's default; one process per core, one torch thread "
        "each. Changes are against `none` (unrefined inter coding) on the same frames; RD "
        "cost = the frames' summed actual cost (bpp of the packet bytes + lambda x 255^2 x "
        "MSE). Time is the whole encode's "
        f"wall time per frame (on a shared machine: compare ratios). {results['minutes']:.0f} min in all.",
        "",
        f"**The CLI default is `{d}`** (`relatent encode` with no refinement options). "
        f"It ranks {st['rank']} of {st['of']} by RD-cost change "
        f"({summ[d]['rd_change_pct_geomean']:+.1f}% geometric mean; best: `{st['best']}`, "
        f"{summ[st['best']]['rd_change_pct_geomean']:+.1f}%), "
        + (
            "and is on the Pareto front of time per frame and RD cost. "
            if st["on_pareto_front"]
            else "and is **not** on the Pareto front of time per frame and RD cost. "
        )
        + (
            "Recipes no slower (within 10%) that beat it on most clips: "
            + ", ".join(
                f"`{k}` ({summ[k]['rd_change_pct_geomean']:+.1f}%, "
                f"{summ[k]['seconds_per_frame_mean']:.2f} s/frame)"
                for k in st["better_and_no_slower"]
            )
            + "."
            if st["better_and_no_slower"]
            else "No recipe that is no slower (within 10%) beats it on most clips."
        ),
        "",
        "Pareto front (fastest first): " + ", ".join(f"`{k}`" for k in st["pareto_front"]) + ".",
        "",
        "## Over the clips",
        "",
    ]
    lines += bl.md_table(
        [
            "recipe", "RD cost (geo / mean)", "bytes (geo)", "PSNR (dB)", "iterations",
            "s/frame", "time ratio (geo)", "clips better than default",
        ],
        [
            [
                name(k), f"{s['rd_change_pct_geomean']:+.1f}% / {s['rd_change_pct_mean']:+.1f}%",
                f"{s['bytes_change_pct_geomean']:+.1f}%", f"{s['psnr_change_db_mean']:+.3f}",
                f"{s['iters_mean']:.1f}", f"{s['seconds_per_frame_mean']:.2f}",
                f"{s['time_ratio_geomean']:.1f}x",
                "" if k == d else str(sum(per[c][k]["rd_change_pct"] < per[c][d]["rd_change_pct"] for c in clips)),
            ]
            for k, s in summ.items()
        ],
    )  # fmt: skip
    lines += ["", "## Per clip", ""]
    rows = []
    for c in clips:
        size = results["clips"][c]["size"]
        for k in summ:
            x = per[c][k]
            rows.append([
                f"{c} ({size[1]}x{size[0]})", name(k), fmt_pct_or_zero(x["rd_change_pct"]),
                fmt_pct_or_zero(x["bytes_change_pct"]), f"{x['psnr_change_db']:+.3f}",
                f"{x['iters']:.1f}", x["refined"], x["warm"], x["p_frames"],
                f"{x['seconds_per_frame']:.2f}", f"{x['time_ratio']:.1f}x",
            ])  # fmt: skip
    lines += bl.md_table(
        ["clip", "recipe", "RD cost", "bytes", "PSNR (dB)", "iterations", "refined frames",
         "warm frames", "P frames", "s/frame", "time ratio"],
        rows,
    )  # fmt: skip
    lines += ["", "![RD-cost change against encode time per frame](defaults.png)", ""]
    (out / "defaults.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [s["seconds_per_frame_mean"] for s in summ.values()]
    ys = [s["rd_change_pct_geomean"] for s in summ.values()]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float]] = []
    for k, s in summ.items():
        x, y = s["seconds_per_frame_mean"], s["rd_change_pct_geomean"]
        ax.plot(
            x, y, "*" if k == d else "o", color="C3" if k == d else "C0", ms=14 if k == d else 7
        )
        # labels of near points (within 5% of the axes) stack downwards instead of overlapping
        near = sum(abs(x - a) < 0.05 * span_x and abs(y - b) < 0.05 * span_y for a, b in placed)
        placed.append((x, y))
        ax.annotate(
            k + (" (CLI default)" if k == d else ""),
            (x, y),
            textcoords="offset points",
            xytext=(6, 4 - 12 * near),
            fontsize=8,
        )
    front = st["pareto_front"]
    ax.plot(
        [summ[k]["seconds_per_frame_mean"] for k in front],
        [summ[k]["rd_change_pct_geomean"] for k in front],
        "k--",
        lw=0.8,
        label="Pareto front",
    )
    ax.set_xlabel("encode seconds per frame (mean over clips, one core)")
    ax.set_ylabel("RD cost vs unrefined inter (%, geometric mean)")
    ax.set_title(f"Refinement recipes, {len(clips)} clips x {results['frames']} frames")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "defaults.png", dpi=120, metadata=bl.png_metadata(results["provenance"]))
    plt.close(fig)


def fmt_pct_or_zero(v: float) -> str:
    """A signed percentage with one decimal; exactly zero prints as ``0.0%``."""
    return "0.0%" if v == 0 else bl.fmt_pct(v)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bench defaults``."""
    p = sub.add_parser(
        "defaults",
        help="refinement recipes (and the CLI's default) on the shared clips: RD cost against encode time",
    )
    add_clip_io(p, "defaults")
    p.add_argument(
        "--frames", type=int, default=16, help="consecutive frames per clip, from the start"
    )
    p.add_argument(
        "--long-side", type=int, default=256, help="downscale so the long side is at most this"
    )
    p.add_argument(
        "--clips",
        nargs="+",
        default=None,
        choices=[c[0] for c in CLIPS],
        help="clips to run (default: every shared clip present)",
    )
    p.add_argument(
        "--recipes",
        nargs="+",
        default=None,
        help="none or METHOD:LR:ITERS[:warm] (default: "
        + " ".join(DEFAULT_RECIPES)
        + "); none and the CLI default are always measured",
    )
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.set_defaults(func=cmd_defaults)


def cmd_defaults(a: argparse.Namespace) -> int:
    """Run ``bench defaults`` and print where the results went.

    Raises:
        ConfigError, InputError: see :func:`run`.
    """
    run(a.video, a.out, a.frames, a.long_side, a.recipes, a.clips, a.jobs)
    print(f"wrote {a.out / 'defaults.md'}")
    return 0
