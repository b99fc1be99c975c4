"""``relatent bench target``: does ``relatent encode --target-psnr`` hit its targets, at what
rate and what search cost?

On the first ``--frames`` consecutive frames (default 32: two GOPs of the CLI's 16) of each
shared clip (long side ``--long-side``, default 256, never upscaled;
:func:`jobs.bench.lib.clip_run`), with the CLI's default refinement (method, step size,
iterations, ``--tol``, GOP...: :func:`jobs.bench.rd_video.cli_configs` parses the encode
command's own option definitions; ``--iters`` replaces the iterations for quick runs):

1. **fixed quality**: every shipped rate point (q1..q5 of the default architecture) codes
   the frames at its own lambda (:class:`~pipeline.codec.FrameEncoder`), timed: per clip
   and per GOP the mean bpp (packet bytes) and mean RGB PSNR;
2. **targets**: ``--at`` of the way (default :data:`DEFAULT_AT`, a quarter) between the
   clip's fixed mean PSNRs of q1/q2, q2/q3 and q3/q4 (:data:`PAIRS`), rounded to 0.1 dB,
   where lambda has to do the work between rate points (the midpoint rate points sit near
   halfway); each is coded with the same config plus ``target_psnr``
   (:func:`pipeline.ratecontrol.make_encoder` over
   :func:`~pipeline.ratecontrol.rate_point_models`), timed, with every GOP's
   :class:`~pipeline.ratecontrol.GopOutcome` (rate point, lambda, achieved mean PSNR,
   bytes, trials, iterations);
3. **bitrates** (:mod:`jobs.bench.target_kbps`; clips ``--kbps-clips``, default all): as
   far between the fixed encodes' kb/s (at the clip's frame rate) of the same pairs,
   rounded to 0.1 kb/s, each coded with ``target_kbps`` (the first pass, then the encode):
   one item per whole encode, released with the clip's targets.

All go through :func:`pipeline.codec.encode_frames` (the path of ``relatent encode``,
frames in coding order with their own indices, batch :data:`jobs.bench.rd_video.BATCH`).
A fixed or target item is one GOP of one encode (GOPs are coded independently, as a transcode's shards
are, so the bytes are those of the whole encode; its wall time is the sum of its GOPs'),
one item per process (``--jobs``, one torch thread each); a clip's target items start as
soon as the fixed items they need are measured (costliest ready item first). Every
finished item is checkpointed in a JSON cache (``--cache``, default :data:`DEFAULT_CACHE`;
keyed by clip, rate point or target, config hash, GOP span and size), so a rerun resumes
where a crash stopped (``--fresh`` ignores it).

Every trial of the search is recorded too (per GOP: rate point, lambda, mean PSNR, bytes;
by wrapping the controller's private ``_run``, diagnostics only). ``target.json`` keeps
every encode's per-frame records, so ``--report-only`` re-analyses it without encoding.

The analysis and the report (:mod:`jobs.bench.target_report`): the share of GOPs within
``[T, T + 0.5 dB]`` and ``[T, T + 0.3 dB]``, BD-rate of the target points against the fixed
curve (per clip and pooled), and the search cost (wall time, CPU time and refinement
iterations of each targeted encode over the fixed encode of the rate point it mostly
chose, and the trials per GOP). Writes ``target.json``, ``target.md`` and ``target.png`` under ``--out``.

Target and bitrate items' cache keys carry :func:`rate_control_stamp` (the rate-control
version and a hash of the rate-control modules): a changed search never reuses them,
while the fixed items stay valid.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.bench import add_clip_io
from jobs.bench import lib as bl
from jobs.bench.gop import CLIPS
from jobs.refine_options import positive_float
from pipeline.errors import ConfigError, InputError

__all__ = [
    "CACHE_VERSION",
    "DEFAULT_CACHE",
    "DEFAULT_FRAMES",
    "PAIRS",
    "RATE_CONTROL_SOURCES",
    "TRIAL_GUESS",
    "add_parser",
    "base_config",
    "cmd_target",
    "encode_task",
    "frame_records",
    "item_key",
    "load_cache",
    "merge",
    "rate_control_stamp",
    "run",
    "targets_from_fixed",
    "trace_trials",
]

#: Consecutive frames per clip by default: two GOPs of the CLI's default GOP (16).
DEFAULT_FRAMES = 32
#: The rate-point pairs between whose fixed mean PSNRs (and kb/s) the targets are.
PAIRS = ((1, 2), (2, 3), (3, 4))
#: Where the targets sit between a pair's fixed points by default: a quarter of the way up,
#: between the lower shipped rate point and the midpoint rate point (``q + 0.5``), which
#: sits near halfway, so neither is at its own lambda.
DEFAULT_AT = 0.25
#: Where finished items are checkpointed by default.
DEFAULT_CACHE = Path("/tmp/relatent-bench-target-cache.json")
#: The cache's format (a change invalidates older caches).
CACHE_VERSION = 2
#: Trials per GOP assumed when scheduling target items (costliest first) and for the ETA.
TRIAL_GUESS = 2.5


def base_config(iters: int | None = None) -> Any:
    """The :class:`~pipeline.config.RefineConfig` of ``relatent encode`` with no options
    (:func:`jobs.bench.rd_video.cli_configs`), with ``iters`` iterations when given.

    Raises:
        ConfigError: ``iters`` < 1 or the CLI's defaults do not validate.
    """
    from jobs.bench.rd_video import cli_configs

    cfg = cli_configs()["relatent-inter-refined"]
    if iters is not None:
        if iters < 1:
            raise ConfigError(f"--iters {iters} must be at least 1", hint="e.g. 50")
        cfg = dataclasses.replace(cfg, iters=iters).validate()
    return cfg


def targets_from_fixed(
    means: dict[int, float], pairs: tuple[tuple[int, int], ...] = PAIRS, at: float = 0.5
) -> list[dict[str, Any]]:
    """The targets of a clip from its fixed mean PSNR per rate point (``means``: quality ->
    dB): ``at`` of the way from the lower to the upper of each pair present (0.5: the
    midpoint), rounded to 0.1 dB, as ``{"target", "pair"}``."""
    out = []
    for lo, hi in pairs:
        if lo in means and hi in means:
            t = means[lo] + at * (means[hi] - means[lo])
            out.append({"target": round(t, 1), "pair": [lo, hi]})
    return out


#: The modules of ``pipeline/`` whose code decides a targeted encode's trials.
RATE_CONTROL_SOURCES = ("ratecontrol.py", "ratesearch.py", "bitrate.py")


def rate_control_stamp() -> str:
    """What identifies the rate-control code: :data:`pipeline.config.RATE_CONTROL_VERSION`
    and the first 12 hex digits of the sha256 of the sources of :data:`RATE_CONTROL_SOURCES`
    (a change to the search or the allocation invalidates the cached target and bitrate
    items)."""
    global _STAMP
    if _STAMP is None:
        import hashlib

        import pipeline
        from pipeline.config import RATE_CONTROL_VERSION

        h = hashlib.sha256()
        for name in RATE_CONTROL_SOURCES:
            h.update((Path(pipeline.__file__).parent / name).read_bytes())
        _STAMP = f"rc{RATE_CONTROL_VERSION}-{h.hexdigest()[:12]}"
    return _STAMP


_STAMP: str | None = None


def item_key(task: dict[str, Any]) -> str:
    """The cache key of an item: clip, kind, rate point, target or bitrate, config hash, the
    GOP's (or the bitrate encode's) frame range and the frame size (the same key means the
    same encode: GOPs are coded independently of each other, as the shards of a transcode
    are), and for targets and bitrates the :func:`rate_control_stamp` (and the frame
    rate)."""
    kind = task["kind"]
    if kind == "fixed":
        what = f"q{task['quality']}"
    elif kind == "target":
        what = f"t{task['target']:.1f}|{rate_control_stamp()}"
    else:
        what = f"k{task['kbps']:.1f}@{task['fps']:.4f}|{rate_control_stamp()}"
    h, w = task["frames"][0].shape[:2]
    span = f"{task['start']}-{task['start'] + len(task['frames']) - 1}"
    return f"{task['clip']}|{kind}|{what}|{task['config'].hash()}|{span}|{h}x{w}"


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One encode's record from its GOP items' records (:func:`encode_task`): frames and
    outcomes in order, wall seconds summed (the GOPs run one after another in an encode)."""
    parts = sorted(parts, key=lambda r: r["start"])
    drop = ("frames", "outcomes", "trials", "seconds", "cpu_seconds")
    rec = {k: v for k, v in parts[0].items() if k not in drop}
    rec["frames"] = [f for r in parts for f in r["frames"]]
    rec["seconds"] = sum(r["seconds"] for r in parts)
    rec["cpu_seconds"] = sum(r.get("cpu_seconds", r["seconds"]) for r in parts)
    rec["gop_seconds"] = [r["seconds"] for r in parts]
    if "outcomes" in parts[0]:
        rec["outcomes"] = [o for r in parts for o in r["outcomes"]]
        rec["trials"] = [t for r in parts for t in r.get("trials", [])]
    return rec


def load_cache(path: Path | None) -> dict[str, Any]:
    """The items of a cache file (key -> record); empty when absent, unreadable or of
    another :data:`CACHE_VERSION`."""
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    return dict(data.get("items", {}))


# --------------------------------------------------------------------------- workers

#: The worker's rate points (each process loads them once).
_MODELS: list[Any] = []


def encode_task(task: dict[str, Any]) -> dict[str, Any]:
    """One item, one GOP of a clip, in one torch thread (``task``: ``kind`` fixed or
    target, ``clip``, ``quality`` or ``target``, ``config``, ``frames`` (the GOP's, from
    frame index ``start``), ``batch``, ``gop``): the encode's wall time, its per-frame
    records (bytes, bpp, RGB PSNR, frame type, iterations, rate point, lambda) and, for a
    target, the GOP's outcome."""
    from pipeline.codec import FrameEncoder, encode_frames
    from pipeline.models import fixed_threads
    from pipeline.ratecontrol import make_encoder, rate_point_models

    if not _MODELS:
        _MODELS.extend(rate_point_models())
    if task["kind"] == "kbps":
        from jobs.bench.target_kbps import encode_kbps

        return encode_kbps(task, _MODELS)
    frames = task["frames"]
    h, w = frames[0].shape[:2]
    trace: list[dict[str, Any]] = []
    with fixed_threads(1):
        t0, c0 = time.perf_counter(), time.process_time()
        if task["kind"] == "fixed":
            model = next(m for m in _MODELS if m.identity.quality == task["quality"])
            enc: Any = FrameEncoder(model, task["config"])
        else:
            cfg = dataclasses.replace(task["config"], target_psnr=task["target"])
            enc = make_encoder(_MODELS, cfg)
            trace = trace_trials(enc, task["gop"])
        coded = ((f, i, i) for i, f in enumerate(frames, task["start"]))
        out = list(encode_frames(enc, coded, task["batch"]))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    rec = {
        "clip": task["clip"],
        "kind": task["kind"],
        "quality": task.get("quality"),
        "target": task.get("target"),
        "pair": task.get("pair"),
        "start": task["start"],
        "size": [h, w],
        "seconds": seconds,
        "cpu_seconds": cpu,
        "frames": frame_records(out, task, h, w),
    }
    if task["kind"] == "target":
        rec["outcomes"] = [dataclasses.asdict(o) for o in enc.outcomes]
        rec["trials"] = trace
    return rec


def frame_records(out: list[Any], task: dict[str, Any], h: int, w: int) -> list[dict[str, Any]]:
    """The per-frame records of an encode's frames ``out`` (``task``: its ``gop`` and, for a
    fixed encode, ``quality``): index, GOP, bytes, bpp, RGB PSNR, frame type, iterations,
    rate point and lambda."""
    return [
        {
            "index": int(e.stats.index),
            "gop": int(e.stats.index) // task["gop"],
            "bytes": int(e.stats.bytes),
            "bpp": 8.0 * int(e.stats.bytes) / (h * w),  # unrounded (the stats round bpp)
            "psnr": float(e.stats.psnr),
            "frame_type": e.stats.frame_type,
            "iters": int(e.stats.iters),
            "rate_point": e.stats.rate_point
            if e.stats.rate_point is not None
            else task.get("quality"),
            "lmbda": e.stats.lmbda,
        }
        for e in out
    ]


def trace_trials(enc: Any, gop: int) -> list[dict[str, Any]]:
    """Record every trial of a :class:`~pipeline.ratecontrol.RateController` (per GOP: rate
    point, lambda, mean RGB PSNR, bytes, iterations) by wrapping its private ``_run`` (the
    one call that codes a trial); an empty list, and nothing wrapped, when it has none.
    Diagnostics only: the outcome does not depend on it."""
    trace: list[dict[str, Any]] = []
    run_trial = getattr(enc, "_run", None)
    if run_trial is None:
        return trace

    def traced(slot: int, positions: Any, rgbs: Any, fidx: Any, *rest: Any) -> Any:
        out = run_trial(slot, positions, rgbs, fidx, *rest)
        try:
            inits = rest[2]
            by: dict[int, list[tuple[Any, Any]]] = {}
            for i, f in zip(positions, out, strict=True):
                by.setdefault(int(fidx[i]) // gop, []).append((inits[i], f.stats))
            for g, fs in sorted(by.items()):
                trace.append(
                    {
                        "gop": g,
                        "trial": sum(t["gop"] == g for t in trace),
                        "rate_point": enc.encoders[slot].model.identity.quality,
                        "lmbda": float(fs[0][0].lmbda),
                        "restart": fs[0][0].offset is not None,
                        "psnr": sum(st.psnr for _, st in fs) / len(fs),
                        "bytes": sum(int(st.bytes) for _, st in fs),
                        "iters": sum(int(st.iters) for _, st in fs),
                    }
                )
        except (AttributeError, IndexError, TypeError, ValueError):
            pass  # another _run signature: no trace
        return out

    enc._run = traced
    return trace


# --------------------------------------------------------------------------- scheduling


def _cost(task: dict[str, Any]) -> float:
    """Relative cost of an item: pixels x (iterations + 1), times :data:`TRIAL_GUESS` for a
    target or a bitrate (its trials) plus its unrefined passes at every rate point."""
    h, w = task["frames"][0].shape[:2]
    px = len(task["frames"]) * h * w
    it = (task["config"].iters if task["config"].active else 0) + 1
    searched = task["kind"] != "fixed"
    return px * it * (TRIAL_GUESS if searched else 1.0) + (5 * px if searched else 0)


def _schedule(
    fixed: list[dict[str, Any]],
    targets_of: Callable[[str], list[dict[str, Any]]],
    needs: dict[str, set[tuple[int, int]]],
    cache: dict[str, Any],
    jobs: int,
    done: Callable[[dict[str, Any], dict[str, Any], bool], None],
) -> None:
    """Run the ``fixed`` items, and each clip's target items (``targets_of(clip)``) once the
    fixed items it ``needs`` (clip -> (rate point, GOP start) pairs) are measured, over ``jobs`` processes (inline when 1), costliest
    ready item first. Cached items are not run. ``done(task, record, cached)`` is called
    for every item, in the main process.
    """
    from jobs.bench.rd_encode import init_worker

    ready: list[dict[str, Any]] = []
    have: dict[str, set[tuple[int, int]]] = {}
    released: set[str] = set()
    results: queue.Queue[Any] = queue.Queue()

    def finish(task: dict[str, Any], rec: dict[str, Any], cached: bool) -> None:
        done(task, rec, cached)
        if task["kind"] != "fixed":
            return
        have.setdefault(task["clip"], set()).add((task["quality"], task["start"]))
        if task["clip"] not in released and needs[task["clip"]] <= have[task["clip"]]:
            released.add(task["clip"])
            add(targets_of(task["clip"]))

    def add(tasks: list[dict[str, Any]]) -> None:
        for t in tasks:
            key = item_key(t)
            if key in cache:
                finish(t, cache[key], True)
            else:
                ready.append(t)

    add(fixed)
    pool = None
    if jobs > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(jobs, initializer=init_worker)
    else:
        init_worker()
    try:
        flight = 0
        while ready or flight:
            while ready and flight < max(1, jobs):
                ready.sort(key=_cost)
                t = ready.pop()
                if pool is None:
                    results.put((t, encode_task(t), None))
                else:
                    pool.apply_async(
                        encode_task,
                        (t,),
                        callback=lambda r, t=t: results.put((t, r, None)),
                        error_callback=lambda e, t=t: results.put((t, None, e)),
                    )
                flight += 1
            t, rec, err = results.get()
            flight -= 1
            if err is not None:
                raise err
            finish(t, rec, False)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


# --------------------------------------------------------------------------- run


def run(
    video: Path,
    out: Path,
    frames: int = DEFAULT_FRAMES,
    long_side: int | None = 256,
    clips: list[str] | None = None,
    jobs: int | None = None,
    iters: int | None = None,
    cache: Path | None = DEFAULT_CACHE,
    fresh: bool = False,
    log: Any = print,
    kbps_clips: list[str] | None = None,
    at: float = DEFAULT_AT,
) -> dict[str, Any] | None:
    """Measure every available clip (see the module docstring), write the result files and
    return the results dict; None (nothing written) when no shared clip is present.

    ``at``: where the targets sit between each pair's fixed points (0 < at < 1).

    ``kbps_clips``: the clips of the bitrate section (default None: every clip measured;
    an empty list: none).

    Raises:
        ConfigError: ``frames`` or ``iters`` < 1, or an unknown clip label.
        InputError: a clip cannot be decoded; no shipped rate points.
    """
    from jobs.bench.rd_video import BATCH
    from pipeline.models import load_cards, rate_point_qualities

    if frames < 1:
        raise ConfigError(f"--frames {frames} must be at least 1", hint="e.g. 32")
    if not 0 < at < 1:
        raise ConfigError(f"--at {at} is not between 0 and 1", hint=f"e.g. {DEFAULT_AT}")
    labels = [c[0] for c in CLIPS]
    for c in [*(clips or []), *(kbps_clips or [])]:
        if c not in labels:
            raise ConfigError(
                f"--clips: unknown clip {c!r}", hint=f"use some of {' '.join(labels)}"
            )
    base = base_config(iters)
    cards = load_cards()
    arch = cards.get("default_arch")
    qualities = sorted(int(c["quality"]) for c in cards["models"] if c["arch"] == arch)
    if not qualities:
        raise InputError("no shipped rate points", hint="ship weights with relatent ship")
    pairs = tuple(p for p in PAIRS if p[0] in qualities and p[1] in qualities)
    jobs = jobs or os.cpu_count() or 1
    meta: dict[str, Any] = {}
    imgs_of: dict[str, list[Any]] = {}
    for label, name, kind in CLIPS:
        if clips and label not in clips:
            continue
        path = video / name
        if not path.exists():
            log(f"{label}: {path} is absent, skipped")
            continue
        _, imgs, info = bl.clip_run(path, frames, long_side, start=0)
        imgs_of[label] = imgs
        h, w = imgs[0].shape[:2]
        meta[label] = {
            "file": name,
            "kind": kind,
            "size": [h, w],
            "native_size": [info.height, info.width],
            "frames": len(imgs),
            "fps": float(info.frame_rate),
        }
    if not meta:
        log(f"bench target: no shared clip under {video}; nothing measured")
        return None

    starts = {c: list(range(0, meta[c]["frames"], base.gop)) for c in meta}

    def tasks(clip: str, kind: str, **kw: Any) -> list[dict[str, Any]]:
        """One item per GOP of the clip."""
        return [
            {
                "clip": clip,
                "kind": kind,
                "config": base,
                "start": s,
                "frames": imgs_of[clip][s : s + base.gop],
                "batch": BATCH,
                "gop": base.gop,
                **kw,
            }
            for s in starts[clip]
        ]

    # clip -> ("fixed", quality) / ("target", label) -> GOP records
    parts: dict[str, dict[tuple[str, Any], list[dict[str, Any]]]] = {c: {} for c in meta}

    def targets_of(clip: str) -> list[dict[str, Any]]:
        means = {}
        for (kind, q), recs in parts[clip].items():
            fr = [f for r in recs for f in r["frames"]]
            if kind == "fixed":
                means[q] = sum(f["psnr"] for f in fr) / len(fr)
        out = [x for t in targets_from_fixed(means, pairs, at) for x in tasks(clip, "target", **t)]
        if clip in kbps_set:
            out += kbps_tasks(clip)
        return out

    def kbps_tasks(clip: str) -> list[dict[str, Any]]:
        """One item per bitrate: the whole encode (its first pass needs every frame)."""
        from jobs.bench.target_kbps import kbps_of, kbps_targets

        fps = meta[clip]["fps"]
        rates = {}
        for (kind, q), recs in parts[clip].items():
            fr = [f for r in recs for f in r["frames"]]
            if kind == "fixed":
                rates[q] = kbps_of(sum(f["bytes"] for f in fr), len(fr), fps)
        return [
            {
                "clip": clip,
                "kind": "kbps",
                "config": base,
                "start": 0,
                "frames": imgs_of[clip],
                "batch": BATCH,
                "gop": base.gop,
                "fps": fps,
                **t,
            }
            for t in kbps_targets(rates, pairs, at)
        ]

    kbps_set = [c for c in meta if kbps_clips is None or c in kbps_clips]
    args = {
        "frames": frames,
        "long_side": long_side,
        "clips": list(meta),
        "kbps_clips": kbps_set,
        "jobs": jobs,
        "iters": base.iters,
        "pairs": [list(p) for p in pairs],
        "at": at,
    }
    prov = bl.provenance("relatent bench target", args)
    items = {} if fresh else load_cache(cache)
    fixed = [t for c in meta for q in qualities for t in tasks(c, "fixed", quality=q)]
    total = sum(_cost(t) for t in fixed) + sum(
        _cost(t) * len(pairs) for c in meta for t in tasks(c, "target", target=30.0)
    )
    total += sum(
        _cost({"kind": "kbps", "config": base, "frames": imgs_of[c]}) * len(pairs) for c in kbps_set
    )
    log(
        f"bench target: {len(meta)} clips x {frames} frames (GOP {base.gop}), "
        f"{len(qualities)} rate points + {len(pairs)} targets each"
        f" + {len(pairs)} bitrates on {len(kbps_set)} clips, {base.method} "
        f"{base.iters} it, {jobs} processes"
        + (f"; {len(items)} cached items in {cache}" if items else "")
    )
    t0 = time.perf_counter()
    spent = [0.0]
    n_items, n_cached = [0], [0]

    def done(t: dict[str, Any], rec: dict[str, Any], cached: bool) -> None:
        key = item_key(t)
        label = {
            "fixed": lambda: t["quality"],
            "target": lambda: f"{t['target']:.1f}",
            "kbps": lambda: f"{t['kbps']:.1f}",
        }[t["kind"]]()
        parts[t["clip"]].setdefault((t["kind"], label), []).append(rec)
        spent[0] += _cost(t)
        n_items[0] += 1
        n_cached[0] += cached
        if not cached and cache is not None:
            items[key] = rec
            bl.write_json(cache, {"version": CACHE_VERSION, "items": items})
        el = time.perf_counter() - t0
        what = {
            "fixed": lambda: f"q{t['quality']}",
            "target": lambda: f"target {t['target']:.1f} dB",
            "kbps": lambda: f"target {t['kbps']:.1f} kb/s",
        }[t["kind"]]()
        n = len(rec["frames"])
        extra = ""
        if t["kind"] == "kbps":
            from jobs.bench.target_kbps import kbps_of

            got = kbps_of(sum(f["bytes"] for f in rec["frames"]), n, t["fps"])
            extra = f" | {got:.2f} kb/s ({100 * (got / t['kbps'] - 1):+.2f}%), " + ", ".join(
                f"q{o['rate_point']} {o['trials']} trials" for o in rec["outcomes"]
            )
        elif t["kind"] == "target":
            extra = " | " + ", ".join(
                f"q{o['rate_point']} lambda {o['lmbda']:.4g} {o['score']:.2f} dB, "
                f"{o['trials']} trials"
                for o in rec["outcomes"]
            )
        log(
            f"  {t['clip']} frames {t['start']}-{t['start'] + n - 1} {what}: "
            f"{sum(f['bpp'] for f in rec['frames']) / n:.4f} bpp "
            f"{sum(f['psnr'] for f in rec['frames']) / n:.2f} dB, {rec['seconds']:.0f} s"
            + (" (cached)" if cached else "")
            + extra
            + f" (elapsed {el / 60:.1f} min, ~{100 * spent[0] / total:.0f}% of the work)"
        )

    needed = {q for p in pairs for q in p}
    needs = {c: {(q, s) for q in needed for s in starts[c]} for c in meta}
    _schedule(fixed, targets_of, needs, items, jobs, done)
    from jobs.bench.target_report import analyse, write_outputs  # after the encodes

    raw: dict[str, dict[str, Any]] = {
        c: {
            "fixed": {q: merge(r) for (k, q), r in ps.items() if k == "fixed"},
            "target": {q: merge(r) for (k, q), r in ps.items() if k == "target"},
            "kbps": {q: r[0] for (k, q), r in ps.items() if k == "kbps"},
        }
        for c, ps in parts.items()
    }
    results: dict[str, Any] = {
        "frames": frames,
        "long_side": long_side,
        "gop": base.gop,
        "batch": BATCH,
        "config": dataclasses.asdict(base),
        "config_hash": base.hash(),
        "arch": arch,
        "qualities": qualities,
        "rate_points": rate_point_qualities(arch),
        "pairs": [list(p) for p in pairs],
        "at": at,
        "rate_control": rate_control_stamp(),
        "kbps_clips": kbps_set,
        "clips": meta,
        "jobs": jobs,
        "minutes": (time.perf_counter() - t0) / 60,
        "items": n_items[0],
        "cached_items": n_cached[0],
        "iters_option": iters,
        "command": _command(frames, long_side, clips, jobs, iters, kbps_clips, at),
        **analyse(raw, base.gop),
    }
    results["provenance"] = prov
    results["raw"] = raw  # every encode's per-frame records and GOP outcomes (re-analysis)
    write_outputs(results, out)
    return results


def _command(
    frames: int,
    long_side: int | None,
    clips: list[str] | None,
    jobs: int,
    iters: int | None,
    kbps_clips: list[str] | None = None,
    at: float = DEFAULT_AT,
) -> str:
    """The ``relatent bench target`` command line of a run (options that differ from their
    defaults, and ``--jobs``)."""
    parts = ["relatent bench target"]
    if frames != DEFAULT_FRAMES:
        parts.append(f"--frames {frames}")
    if long_side != 256:
        parts.append(f"--long-side {long_side}")
    if clips:
        parts.append("--clips " + " ".join(clips))
    if iters is not None:
        parts.append(f"--iters {iters}")
    if kbps_clips is not None:
        parts.append("--kbps-clips" + "".join(f" {c}" for c in kbps_clips))
    if at != DEFAULT_AT:
        parts.append(f"--at {at:g}")
    parts.append(f"--jobs {jobs}")
    return " ".join(parts)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bench target``."""
    p = sub.add_parser(
        "target",
        help="rate control (--target-psnr) on the shared clips: targets hit, BD-rate against "
        "the fixed rate points, search cost",
    )
    add_clip_io(p, "target")
    p.add_argument(
        "--frames",
        type=int,
        default=DEFAULT_FRAMES,
        help=f"consecutive frames per clip, from the start (default {DEFAULT_FRAMES}: two GOPs)",
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
        "--iters",
        type=int,
        default=None,
        help="refinement iterations per frame (default: the CLI's; fewer for a quick look)",
    )
    p.add_argument(
        "--kbps-clips",
        nargs="*",
        default=None,
        choices=[c[0] for c in CLIPS],
        help="clips of the bitrate (--target-kbps) section (default: every clip run; "
        "none: no bitrate section)",
    )
    p.add_argument(
        "--at",
        type=positive_float,
        default=DEFAULT_AT,
        help="where the targets sit between each pair's fixed points, from the lower (0) to "
        f"the upper (1) (default {DEFAULT_AT}: between a shipped rate point and the midpoint "
        "one above it, the farthest from both)",
    )
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"JSON checkpoint of finished items, reused by a rerun (default: {DEFAULT_CACHE})",
    )
    p.add_argument("--fresh", action="store_true", help="ignore the cache's items (rerun all)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="no encoding: re-analyse the encodes stored in --out's target.json and rewrite "
        "its report files",
    )
    p.set_defaults(func=cmd_target)


def cmd_target(a: argparse.Namespace) -> int:
    """Run ``bench target`` and print where the results went.

    Raises:
        ConfigError, InputError: see :func:`run`.
    """
    if a.report_only:
        from jobs.bench.target_report import rerender

        rerender(a.out)
        print(f"wrote {a.out / 'target.md'}")
        return 0
    res = run(
        a.video,
        a.out,
        a.frames,
        a.long_side,
        a.clips,
        a.jobs,
        a.iters,
        a.cache,
        a.fresh,
        kbps_clips=a.kbps_clips,
        at=a.at,
    )
    if res is not None:
        print(f"wrote {a.out / 'target.md'}")
    return 0
