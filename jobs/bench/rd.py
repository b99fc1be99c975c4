"""``relatent bench rd``: rate-distortion of relatent (unrefined and refined) against classic codecs.

Default protocol (sized to finish within an hour on a 2-core CPU machine):

* **Kodak**: the 24 images as 256x256 centre crops. Every shipped rate point (whatever
  ``cards.json`` lists) unrefined, JPEG, x264 / x265 all-intra (keyint 1) in 4:2:0 and
  4:4:4, SVT-AV1 all-intra (4:2:0 only; SVT-AV1 has no 4:4:4).
* **Refinement** (``campos``, Adam, ``tol=0`` so every budget is exact, lr 5e-3 by default)
  at each iteration budget (default 25, 100, 400) on a fixed subset of 8 crops,
  :data:`REFINE_SUBSET`, chosen once for varied content (textures, faces, smooth skies,
  fine detail) and never changed so runs stay comparable.
* **Clips** (``../shared/data/video``): 8 evenly spaced frames per clip, downscaled so the
  long side is 256 px (never upscaled; sizes rounded to even). The same codecs, plus x265
  in its default GOP mode on the clip's frames as one sequence (meaningless on Kodak, so
  only here). Refinement at ``--clip-budgets`` (default 100) on all clip frames.

* **Methods** (docs/refinement.md): BD-rate against the *realised* average
  iterations per frame, one curve per recipe (``--methods``: ``campos``, ``sga``,
  ``campos+warm``, ``campos+es``, ``campos+budget``; modifiers ``warm``, ``es``, ``budget``,
  ``bf16`` combine, e.g. ``sga+warm+es``) at ``--method-budgets`` (default 10, 40, 160;
  ``campos`` also at the 400-iteration anchor), and the Pareto front over all of them. They
  run on sequences coded as streams are (:func:`pipeline.codec.encode_frames`): the Kodak
  refinement subset as one pseudo-sequence (unrelated images: the warm-start criterion
  cold-starts them, the budget is shared among them) and ``--seq-frames`` consecutive frames
  from the middle of the ``--seq-clips`` (downscaled like the clip frames).

``--full`` (for GPU machines; days on this CPU): full-size Kodak, refinement on all 24
images at budgets 100, 400, 1000, 2000, clip frames at their native size, all budgets on
the clips, method budgets 25, 100, 400, 1000 on sequences of every clip.

Measurement rules: bpp from actual bytes (relatent: each frame's whole packet; JPEG: the
file; video codecs: each frame's packet in all-intra mode, the stream total / frames in GOP
mode; x264/x265 SEI messages, which carry only the encoder's option string, are excluded
and reported separately). PSNR in RGB (and BT.601 Y, MS-SSIM) on 8-bit RGB after
converting back with the same matrix the codec was fed (BT.601 full range). Points of a
curve are per-frame means. BD-rate: ``bjontegaard`` pchip over the overlapping range.

Work is spread over ``--jobs`` processes (default: all cores); each encoder is
single-threaded (the encoder's determinism contract), as in production.

The run is split over modules: :mod:`~jobs.bench.rd_protocol` (what defines a run),
:mod:`~jobs.bench.rd_encode` (the encodes, in worker processes), this module (inputs,
orchestration, CLI), :mod:`~jobs.bench.rd_analysis` (curves, BD-rates, targets) and
:mod:`~jobs.bench.rd_report` (rd.json, plots, rd.md).

* **Video** (``--sections video``; part of the default run): the first ``--video-frames``
  consecutive frames of each clip coded as video: relatent intra, inter and inter refined at
  the CLI's default settings, against x264 / x265 with their default GOP and x265 all-intra
  (:mod:`~jobs.bench.rd_video`). It writes its own files, ``rd_video.json`` / ``rd_video.md``
  / ``rd_video.png`` (linked from rd.md), so running it alone keeps rd.json as it was.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench import lib as bl
from jobs.bench import rd_encode
from jobs.bench.rd_analysis import analyse, method_analysis
from jobs.bench.rd_encode import (
    classic_task,
    classic_tasks,
    encode_sequence_item,
    estimate_minutes,
    padded_px,
    pool_map,
    run_items,
)
from jobs.bench.rd_protocol import (
    ANCHOR_BUDGET,
    DEFAULT_BUDGETS,
    DEFAULT_METHOD_BUDGETS,
    DEFAULT_METHODS,
    DEFAULT_VIDEO_FRAMES,
    MODIFIERS,
    SECTIONS,
    SEQ_CLIPS,
    Protocol,
    clip_entry,
    method_plan,
    recipe,
)
from jobs.bench.rd_report import write_outputs
from jobs.refine_options import non_negative_float, positive_float
from pipeline.errors import InputError

__all__ = [
    "RdInputs",
    "add_args",
    "add_method_args",
    "add_parser",
    "cmd_rd",
    "frame_items",
    "kodak_frames",
    "load_inputs",
    "protocol_from_args",
    "refine_subset",
    "run",
    "run_classic",
    "run_methods",
    "run_sections",
    "run_sequences",
    "sequence_sets",
    "shipped_cards",
    "video_sets",
]

# --------------------------------------------------------------------------- inputs


def kodak_frames(kodak: Path, proto: Protocol) -> list[tuple[str, np.ndarray]]:
    """The Kodak images of ``proto`` (the first ``limit``; centre crops of ``crop``) as
    (file name, HxWx3 uint8) pairs.

    Raises:
        InputError: no PNG in ``kodak`` or an image smaller than the crop.
    """
    imgs = bl.load_images(kodak, proto.limit)
    if proto.crop:
        imgs = [(n, bl.centre_crop(im, proto.crop)) for n, im in imgs]
    return imgs


def refine_subset(names: list[str], proto: Protocol) -> list[str]:
    """The documented subset, restricted to the loaded images; all images when empty
    (``--full``), or the first loaded ones when none of the subset is loaded (smoke runs)."""
    if not proto.subset:
        return list(names)
    sub = [n for n in proto.subset if n in names]
    return sub or names[: len(proto.subset)]


def video_sets(video: Path, proto: Protocol) -> dict[str, dict[str, Any]]:
    """The clip frame sets: clip stem -> evenly spaced frames (named ``stem#index``), source,
    indices, size, native size and content description.

    Raises:
        InputError: a clip cannot be opened or decoded.
    """
    files = sorted(video.glob("*.mp4"))[: proto.clips] if proto.clips != 0 else []
    out = {}
    for f in files:
        idx, frames, info = bl.clip_frames(f, proto.frames, proto.long_side)
        out[f.stem] = clip_entry(f, idx, frames, info)
    return out


# --------------------------------------------------------------------------- run


def sequence_sets(
    kframes: list[tuple[str, np.ndarray]], sub: list[str], video: Path | None, proto: Protocol
) -> dict[str, dict[str, Any]]:
    """The sequences of the methods comparison: name -> frames, names, description."""
    seqs: dict[str, dict[str, Any]] = {}
    if not proto.methods:
        return seqs
    ks = [(n, im) for n, im in kframes if n in sub]
    if ks and len({im.shape for _, im in ks}) == 1:
        seqs["kodak"] = {
            "rgbs": [im for _, im in ks],
            "names": [f"seq:{n}" for n, _ in ks],
            "about": "the Kodak refinement subset as one pseudo-sequence",
        }
    if video is not None and proto.clips != 0:
        files = sorted(video.glob("*.mp4"))
        if proto.seq_clips is not None:
            files = [f for f in files if f.stem in proto.seq_clips]
        for f in files[: proto.clips]:
            idx, frames, _ = bl.clip_run(f, proto.seq_frames, proto.long_side)
            seqs[f.stem] = {
                "rgbs": frames,
                "names": [f"seq:{f.stem}#{i}" for i in idx],
                "indices": idx,
                "about": f"{len(idx)} consecutive frames {idx[0]}-{idx[-1]}, {frames[0].shape[1]}x{frames[0].shape[0]}",
            }
    return seqs


def run_sequences(
    seqs: dict[str, dict[str, Any]],
    cards: list[dict[str, Any]],
    proto: Protocol,
    per_iter: dict[str, float],
    log: Any = print,
) -> list[dict[str, Any]]:
    """Every sequence x rate point x (unrefined + every recipe and budget), over ``jobs`` processes."""
    items = []
    for c in cards:
        for name, sq in seqs.items():
            common = {
                "dataset": f"seq:{name}",
                "names": sq["names"],
                "rgbs": sq["rgbs"],
                "arch": c["arch"],
                "quality": int(c["quality"]),
                "device": proto.device,
                "batch": 4,
            }
            items.append({**common, "method": "none", "budget": 0})
            for m, b in method_plan(proto):
                items.append({**common, "method": m, "budget": b, "config": recipe(m, b, proto)})

    def cost(it: dict[str, Any]) -> float:
        h, w = it["rgbs"][0].shape[:2]
        return (
            len(it["rgbs"])
            * (it["budget"] + 1)
            * padded_px(h, w)
            / 65536
            * per_iter.get(f"{it['arch']} q{it['quality']}", 0.1)
        )

    items.sort(key=lambda it: -cost(it))
    log(
        f"bench rd: methods comparison, {len(items)} sequence encodes; at most {sum(map(cost, items)) / max(1, proto.jobs) / 60:.0f} min"
    )
    out: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for k, recs in enumerate(pool_map(encode_sequence_item, items, proto.jobs), 1):
        out += recs
        r = recs[0]
        log(
            f"  [{k}/{len(items)}] {r['dataset']} q{r['quality']} {r['method']} {r['budget']}: "
            f"{np.mean([x['iters'] for x in recs]):.1f} it/frame, J {np.mean([100 * (x['rd_after'] - x['rd_before']) / x['rd_before'] for x in recs]):+.2f}% "
            f"(elapsed {(time.perf_counter() - t0) / 60:.1f} min)"
        )
    return out


@dataclass
class RdInputs:
    """The frames of a run and what is done with them: ``items`` (one relatent encode each,
    see :func:`jobs.bench.rd_encode.encode_item`), the frame ``sets`` (name -> frame names)
    with their refinement budgets, the ``datasets`` description recorded in ``rd.json``,
    the Kodak frames (``kframes``, HxWx3 uint8) with their refinement subset ``sub``, and
    the clip frame sets ``vsets`` (from :func:`video_sets`)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    sets: dict[str, list[str]] = field(default_factory=dict)
    budgets_by_set: dict[str, list[int]] = field(default_factory=dict)
    datasets: dict[str, Any] = field(default_factory=dict)
    kframes: list[tuple[str, np.ndarray]] = field(default_factory=list)
    sub: list[str] = field(default_factory=list)
    vsets: dict[str, dict[str, Any]] = field(default_factory=dict)


def frame_items(
    cards: list[dict[str, Any]],
    dataset: str,
    frames: list[tuple[str, np.ndarray]],
    refine_names: set[str],
    budgets: list[int],
    proto: Protocol,
) -> list[dict[str, Any]]:
    """The encode items of one frame set: every rate point x frame x (unrefined, plus
    every budget for the frames in ``refine_names``)."""
    items = []
    for c in cards:
        for k, (n, im) in enumerate(frames):
            for b in [0, *(budgets if n in refine_names else [])]:
                items.append(
                    {
                        "dataset": dataset,
                        "frame": n,
                        "index": k,
                        "arch": c["arch"],
                        "quality": int(c["quality"]),
                        "budget": b,
                        "method": proto.method,
                        "lr": proto.lr,
                        "seed": proto.seed,
                        "rgb": im,
                        "device": proto.device,
                    }
                )
    return items


def load_inputs(
    kodak: Path | None, video: Path | None, proto: Protocol, cards: list[dict[str, Any]]
) -> RdInputs:
    """Load the Kodak crops and clip frames of ``proto`` and plan their encodes.

    Raises:
        InputError: no PNG in ``kodak``, a crop larger than an image, or an unreadable clip.
    """
    inp = RdInputs()
    if kodak is not None:
        inp.kframes = kodak_frames(kodak, proto)
        names = [n for n, _ in inp.kframes]
        inp.sub = refine_subset(names, proto)
        inp.sets["kodak"] = names
        inp.sets["kodak-refine-subset"] = inp.sub
        inp.budgets_by_set["kodak-refine-subset"] = proto.budgets
        inp.datasets["kodak"] = {
            "images": names,
            "refine_subset": inp.sub,
            "size": "full" if not proto.crop else f"{proto.crop}x{proto.crop} centre crops",
        }
        inp.items += frame_items(cards, "kodak", inp.kframes, set(inp.sub), proto.budgets, proto)
    inp.vsets = video_sets(video, proto) if video is not None else {}
    for clip, v in inp.vsets.items():
        names = [n for n, _ in v["frames"]]
        inp.sets[clip] = names
        inp.budgets_by_set[clip] = proto.clip_budgets
        inp.items += frame_items(cards, clip, v["frames"], set(names), proto.clip_budgets, proto)
        inp.datasets[clip] = {k: v[k] for k in ("source", "indices", "size", "native", "content")}
    if inp.vsets:
        inp.sets["clips"] = [n for v in inp.vsets.values() for n, _ in v["frames"]]
        inp.budgets_by_set["clips"] = proto.clip_budgets
    return inp


def run_methods(
    inp: RdInputs,
    video: Path | None,
    cards: list[dict[str, Any]],
    proto: Protocol,
    per_iter: dict[str, float],
    log: Any = print,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The methods comparison: its records and the names of its frame sets (added to
    ``inp.sets`` and ``inp.datasets``); nothing when ``proto.methods`` is empty."""
    seqs = sequence_sets(inp.kframes, inp.sub, video, proto)
    if not seqs:
        return [], []
    records = run_sequences(seqs, cards, proto, per_iter, log)
    for name, sq in seqs.items():
        inp.sets[f"methods-{name}"] = sq["names"]
        inp.datasets[f"seq:{name}"] = {k: v for k, v in sq.items() if k not in ("rgbs",)}
    method_sets = [f"methods-{n}" for n in seqs]
    if len(seqs) > 1:
        inp.sets["methods-all"] = [n for sq in seqs.values() for n in sq["names"]]
        method_sets.append("methods-all")
    return records, method_sets


def run_classic(inp: RdInputs, proto: Protocol, log: Any = print) -> list[dict[str, Any]]:
    """Every classic codec's sweep on the Kodak crops and each clip (GOP mode on clips only).

    Raises:
        InputError: an unknown codec in ``proto.codecs``.
    """
    tasks = classic_tasks("kodak", inp.kframes, proto.codecs, gop=False) if inp.kframes else []
    for clip, v in inp.vsets.items():
        tasks += classic_tasks(clip, v["frames"], proto.codecs, gop=True)
    records: list[dict[str, Any]] = []
    for dataset, label, secs, recs in pool_map(classic_task, tasks, proto.jobs):
        records += recs
        log(f"  {dataset} {label}: {len({r['setting'] for r in recs})} points in {secs:.1f} s")
    return records


def shipped_cards(proto: Protocol) -> list[dict[str, Any]]:
    """The shipped rate points the run measures (``proto.qualities`` only, when given).

    Raises:
        InputError: no shipped rate point (with those qualities).
    """
    cards = bl.model_cards()
    if proto.qualities:
        cards = [c for c in cards if int(c["quality"]) in proto.qualities]
    if not cards:
        raise InputError(
            "no shipped models in cards.json"
            + (f" with quality {proto.qualities}" if proto.qualities else ""),
            hint="ship at least one rate point (relatent ship), or pick shipped --qualities",
        )
    return cards


def run(
    kodak: Path | None, video: Path | None, out: Path, proto: Protocol, log: Any = print
) -> dict[str, Any]:
    """The whole ``bench rd`` run: relatent encodes (frames, then methods sequences), the
    classic codecs, the analysis, and ``rd.json`` / ``rd.md`` / ``rd_*.png`` under ``out``.
    ``kodak`` / ``video`` None skip those inputs. Returns the results written to rd.json.

    Raises:
        InputError: no shipped model, unusable inputs or an unknown codec.
        ModelError: a shipped model does not load.
    """
    from pipeline.models import load_cards

    t0 = time.perf_counter()
    prov = bl.provenance("relatent bench rd" + (" --full" if proto.full else ""), asdict(proto))
    cards = shipped_cards(proto)
    default_arch = load_cards().get("default_arch")
    inp = load_inputs(kodak, video, proto, cards)

    est = estimate_minutes(inp.items, proto, cards)
    log(
        f"bench rd: {len(inp.items)} relatent encodes on {proto.jobs} process(es); "
        f"estimated {est['minutes']:.0f} min for them (calibrated s/iteration at 256x256: {est['seconds_per_iter_256']})"
    )
    if est["minutes"] > 50 and not proto.full:
        log(
            "WARNING: the default protocol is sized for an idle 2-core machine (< 60 min); this one is slower or busier. "
            "Results stay valid, only slower; --clip-budgets (none) or fewer --budgets shorten it."
        )
    records = run_items(inp.items, proto.jobs, log)
    method_records, method_sets = run_methods(
        inp, video, cards, proto, est["seconds_per_iter_256"], log
    )
    records += method_records
    t_model = time.perf_counter() - t0
    log(f"relatent encodes done in {t_model / 60:.1f} min; classic codecs ...")
    records += run_classic(inp, proto, log)

    results: dict[str, Any] = {
        "provenance": prov,
        "protocol": asdict(proto),
        "datasets": inp.datasets,
        "sets": inp.sets,
        "settings": {
            "jpeg_qualities": list(rd_encode.JPEG_QUALITIES),
            "crf": {k: list(v) for k, v in rd_encode.CRF_SWEEPS.items()},
            "codecs": {
                k: {**v, "options_example": bl.codec_options(v["codec"], 27, v["intra"])}
                for k, v in bl.AV_CODECS.items()
            },
            "color": "BT.601 full-range YCbCr (JFIF); 4:2:0 = 2x2 box average down, triangle-filter up",
        },
        "estimate": est,
        "records": sorted(
            records,
            key=lambda r: (r["dataset"], r["frame"], r["codec"], r["budget"], str(r["setting"])),
        ),
    }
    results.update(analyse(records, inp.sets, inp.budgets_by_set, default_arch))
    results["method_curve"] = method_analysis(
        records, results, method_sets, default_arch, proto.anchor_budget
    )
    results["seconds"] = {"total": time.perf_counter() - t0, "relatent": t_model}
    write_outputs(results, out)
    return results


def run_sections(
    kodak: Path | None, video: Path | None, out: Path, proto: Protocol, log: Any = print
) -> dict[str, Any]:
    """The sections of ``proto.sections``: ``main`` (:func:`run`: rd.json / rd.md) and
    ``video`` (:func:`jobs.bench.rd_video.run`: rd_video.json / rd_video.md; skipped when
    ``video`` is None or holds no clip). Returns each section's results by name (None for a
    skipped video section).

    Raises:
        InputError: no shipped model, unusable inputs or an unknown codec.
        ModelError: a shipped model does not load.
    """
    res: dict[str, Any] = {}
    if "main" in proto.sections:
        res["main"] = run(kodak, video, out, proto, log)
    if "video" in proto.sections:
        from jobs.bench import rd_video

        res["video"] = rd_video.run(video, out, proto, log) if video is not None else None
    return res


# --------------------------------------------------------------------------- CLI


def add_args(p: argparse.ArgumentParser) -> None:
    """The options of ``bench rd`` (also taken by ``bench all``)."""
    p.add_argument(
        "--kodak", default="../shared/data/kodak", help="folder of the Kodak PNGs ('' to skip)"
    )
    p.add_argument(
        "--video", default="../shared/data/video", help="folder of the clips ('' to skip)"
    )
    p.add_argument("--out", default="docs/benchmarks", help="where rd.json / rd.md / PNGs go")
    p.add_argument(
        "--full", action="store_true", help="full-size protocol for GPU machines (days on this CPU)"
    )
    p.add_argument(
        "--limit", type=int, default=None, help="only the first N Kodak images (smoke runs)"
    )
    p.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=None,
        help=f"refinement budgets on Kodak (default {list(DEFAULT_BUDGETS)})",
    )
    p.add_argument(
        "--clip-budgets",
        type=int,
        nargs="*",
        default=None,
        help="refinement budgets on the clips (default 100)",
    )
    p.add_argument(
        "--subset",
        nargs="*",
        default=None,
        help="Kodak files to refine (default: the documented 8)",
    )
    p.add_argument(
        "--lr",
        type=positive_float,
        default=5e-3,
        help="Adam step size of refinement (default 5e-3)",
    )
    p.add_argument("--clips", type=int, default=None, help="only the first N clips (0 = none)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (evenly spaced)")
    p.add_argument(
        "--sections",
        nargs="+",
        choices=list(SECTIONS),
        default=None,
        help="what to run (default: both): main = Kodak crops, spaced clip frames, refinement "
        "budgets, methods (rd.json/rd.md); video = consecutive clip frames coded as video "
        "against x264/x265 with their default GOP (rd_video.json/rd_video.md)",
    )
    p.add_argument(
        "--video-frames",
        type=int,
        default=None,
        help=f"consecutive frames per clip of the video section, from the first "
        f"(default {DEFAULT_VIDEO_FRAMES})",
    )
    p.add_argument(
        "--long-side",
        type=int,
        default=None,
        help="downscale clip frames to this long side (default 256)",
    )
    p.add_argument(
        "--codecs",
        nargs="*",
        default=None,
        help=f"classic codecs (default: jpeg {' '.join(bl.AV_CODECS)})",
    )
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: cpu; --full: auto)")
    p.add_argument(
        "--qualities",
        type=int,
        nargs="*",
        default=None,
        help="only these shipped rate points (default: all)",
    )
    add_method_args(p)


def add_method_args(p: argparse.ArgumentParser) -> None:
    """The options of the methods comparison (an argument group of ``bench rd``)."""
    m = p.add_argument_group("methods comparison (docs/refinement.md)")
    m.add_argument(
        "--methods",
        nargs="*",
        default=None,
        help=f"recipes: campos|sga plus +{'/+'.join(MODIFIERS)} (default {' '.join(DEFAULT_METHODS)}; none given: skip)",
    )
    m.add_argument(
        "--method-budgets",
        type=int,
        nargs="+",
        default=None,
        help=f"average iterations per frame (default {list(DEFAULT_METHOD_BUDGETS)})",
    )
    m.add_argument(
        "--anchor-budget",
        type=int,
        default=None,
        help=f"campos reference budget of the 80%% target (default {ANCHOR_BUDGET}; 0: none)",
    )
    m.add_argument(
        "--seq-clips",
        nargs="*",
        default=None,
        help=f"clip stems for the sequences (default {' '.join(SEQ_CLIPS)}; --full: all)",
    )
    m.add_argument(
        "--seq-frames",
        type=int,
        default=None,
        help="consecutive frames per clip sequence (default 8)",
    )
    m.add_argument("--grid", type=int, default=None, help="warm-start/budget grid K (default 16)")
    m.add_argument(
        "--warm-threshold",
        type=non_negative_float,
        default=None,
        help="warm-start MSE threshold (default 1000)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``rd`` on the ``bench`` subcommand's subparsers."""
    p = sub.add_parser(
        "rd", help="rate-distortion vs unrefined model and JPEG/x264/x265/SVT-AV1; BD-rate tables"
    )
    add_args(p)
    p.set_defaults(func=cmd_rd)


def protocol_from_args(a: argparse.Namespace) -> Protocol:
    """The :class:`Protocol` of parsed ``bench rd`` (or ``bench all``) options, every
    methods recipe validated before any work.

    Raises:
        ConfigError: an unknown recipe or a budget the recipe cannot run.
        InputError: a budget < 1, a non-positive --lr, --seq-frames, --grid or
            --video-frames < 1, or a negative --anchor-budget.
    """
    proto = Protocol.full_protocol() if a.full else Protocol()
    if a.budgets is not None:
        proto.budgets = a.budgets
    if a.clip_budgets is not None:
        proto.clip_budgets = a.clip_budgets
    if a.subset is not None:
        proto.subset = a.subset
    if a.long_side is not None:
        proto.long_side = a.long_side
    if a.codecs is not None:
        proto.codecs = a.codecs
    proto.limit, proto.lr, proto.clips, proto.frames = a.limit, a.lr, a.clips, a.frames
    for opt, attr in (
        ("methods", "methods"),
        ("method_budgets", "method_budgets"),
        ("anchor_budget", "anchor_budget"),
        ("seq_clips", "seq_clips"),
        ("seq_frames", "seq_frames"),
        ("grid", "grid"),
        ("warm_threshold", "warm_threshold"),
        ("qualities", "qualities"),
        ("sections", "sections"),
        ("video_frames", "video_frames"),
    ):
        if getattr(a, opt, None) is not None:
            setattr(proto, attr, getattr(a, opt))
    from pipeline.config import RefineConfig

    # unknown recipes and impossible budgets fail here, before any work
    for name, b in method_plan(proto):
        RefineConfig(**recipe(name, b, proto)).validate()
    proto.jobs = a.jobs or os.cpu_count() or 1
    if a.device is not None:
        proto.device = a.device
    if (
        any(b < 1 for b in [*proto.budgets, *proto.clip_budgets, *proto.method_budgets])
        or not math.isfinite(proto.lr)
        or proto.lr <= 0
    ):
        raise InputError("budgets must be >= 1 and --lr positive")
    if proto.seq_frames < 1 or proto.grid < 1 or proto.anchor_budget < 0:
        raise InputError("--seq-frames and --grid must be >= 1, --anchor-budget >= 0")
    if proto.video_frames < 1:
        raise InputError(
            f"--video-frames {proto.video_frames} must be >= 1",
            hint=f"e.g. {DEFAULT_VIDEO_FRAMES}",
        )
    return proto


def cmd_rd(a: argparse.Namespace) -> int:
    """``relatent bench rd``: run the protocol of the options and write its files.

    Raises:
        InputError: a --kodak or --video folder that does not exist, or see :func:`run`.
        ConfigError: see :func:`protocol_from_args`.
    """
    kodak = Path(a.kodak) if a.kodak else None
    video = Path(a.video) if a.video else None
    for d, what in ((kodak, "--kodak"), (video, "--video")):
        if d is not None and not d.is_dir():
            raise InputError(
                f"{what} folder {d} does not exist",
                hint=f"pass {what} DIR, or {what} '' to skip it",
            )
    res = run_sections(kodak, video, Path(a.out), protocol_from_args(a))
    for name, md in (("main", "rd.md"), ("video", "rd_video.md")):
        if res.get(name) is not None:
            print(f"wrote {Path(a.out) / md}")
    return 0
