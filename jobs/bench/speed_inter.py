"""The inter section of ``relatent bench speed``: what inter-frame coding costs in time.

On the first ``frames`` consecutive frames of each shared clip (``../shared/data/video``;
clips that are absent are skipped; ``long_side`` downscales), coded with the given model
and ``--refine none`` (so the latents, and the decoded pictures, are the same whatever the
GOP: only the coding differs):

* **encode** frames/s at ``--gop 1`` and at ``gop`` (default
  :data:`pipeline.config.DEFAULT_GOP`), frames in memory through
  :func:`pipeline.codec.encode_frames` (the path of ``relatent encode``, without reading the
  source container), interleaved and repeated; the ratio is the median of per-repeat ratios;
* **decode** frames/s of the two streams (written as real ``.rlv`` files) through
  :func:`pipeline.decoder.decode_stream`, the library path of ``relatent decode``, to frames
  in memory (no output container, so writing a video file does not dominate), with the
  decoder's torch threads fixed. The two streams are decoded in lockstep: frame ``i`` of
  both back to back, the order alternating with ``i`` and the repeat, so the shared
  machine's load hits both alike. The decode overhead is the median over repeats of the
  inter stream's total time over the intra stream's (target <= :data:`DECODE_TARGET`);
  the latents alone (entropy decoding without synthesis,
  :meth:`pipeline.decoder.FrameDecoder.advance`) are timed the same way;
* **random access**: ``decode_stream(start, start + span)`` with ``start`` the LAST frame of
  the first GOP (the worst case: the latents of every earlier frame of the GOP are
  entropy-decoded, not synthesised), against the same span of the all-intra stream and
  against decoding the GOP from its start up to the same end;
* the bytes of both streams (packets, and whole files).

Run time of the default protocol (3 clips, 32 frames at most 640 px wide, 3 repeats: six
encodes of each clip dominate): 16.9 min measured on the shared 2-core machine under a load
average of 5-8 (docs/benchmarks/speed.md records each run's time); ``--inter-frames``,
``--inter-clips`` and ``--inter-repeats`` shorten it, ``relatent bench speed --only inter``
runs this section alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.bench import lib as bl
from jobs.bench.gop import CLIPS
from pipeline.config import DEFAULT_GOP
from pipeline.errors import InputError

__all__ = [
    "DECODE_TARGET",
    "InterProtocol",
    "add_inter_args",
    "bench_clip",
    "bench_inter",
    "clip_labels",
    "inter_markdown",
    "inter_protocol_from_args",
    "lockstep",
    "plot_inter",
    "random_access_span",
]

#: The decode time of an inter stream over the all-intra stream of the same frames must
#: stay at or below this (issue 17).
DECODE_TARGET = 1.10


@dataclass
class InterProtocol:
    """The inter section's protocol (recorded in speed.json): the first ``frames``
    consecutive frames of the shared ``clips`` (labels of :data:`jobs.bench.gop.CLIPS`),
    downscaled to ``long_side`` (None: native size), coded at ``--gop 1`` and ``gop``
    (encoder batch ``batch``), ``repeats`` interleaved repeats of each timing, decoded on
    ``threads`` torch threads; random access decodes ``span`` frames."""

    clips: list[str] = field(default_factory=lambda: ["carphone", "bikes", "bigbuckbunny"])
    frames: int = 32
    long_side: int | None = 640
    gop: int = DEFAULT_GOP
    span: int = 4
    repeats: int = 3
    batch: int = 4
    threads: int = 1


def clip_labels() -> list[str]:
    """The labels ``--inter-clips`` accepts."""
    return [label for label, _, _ in CLIPS]


def random_access_span(frames: int, gop: int, span: int) -> tuple[int, int]:
    """``(start, end)`` of the random-access measurement: ``start`` is the last frame of the
    first GOP (the last frame when the clip is shorter than a GOP), ``end`` at most
    ``start + span`` and within the ``frames`` frames."""
    start = min(gop, frames) - 1
    return start, min(frames, start + max(1, span))


def add_inter_args(p: argparse.ArgumentParser) -> None:
    """The ``--inter-*`` options of ``bench speed`` (and ``bench all``)."""
    d = InterProtocol()
    p.add_argument(
        "--inter-clips",
        nargs="+",
        choices=clip_labels(),
        default=d.clips,
        help="shared clips of the inter section",
    )
    p.add_argument(
        "--inter-frames",
        type=int,
        default=d.frames,
        help="consecutive frames per clip (from the first) in the inter section",
    )
    p.add_argument(
        "--inter-long-side",
        type=int,
        default=d.long_side,
        help="downscale the clips so the long side is at most this (0: native size)",
    )
    p.add_argument("--inter-gop", type=int, default=d.gop, help="the GOP timed against --gop 1")
    p.add_argument(
        "--inter-span",
        type=int,
        default=d.span,
        help="frames decoded by the random-access measurement (from a GOP's last frame)",
    )
    p.add_argument(
        "--inter-repeats", type=int, default=d.repeats, help="repeats of each inter timing"
    )


def inter_protocol_from_args(a: argparse.Namespace) -> InterProtocol:
    """The :class:`InterProtocol` of parsed options (threads: ``--decode-threads``).

    Raises:
        InputError: an --inter-* count or --decode-threads below 1, or a negative
            --inter-long-side.
    """
    counts = {
        "--inter-frames": a.inter_frames,
        "--inter-gop": a.inter_gop,
        "--inter-span": a.inter_span,
        "--inter-repeats": a.inter_repeats,
        "--decode-threads": a.decode_threads,
    }
    bad = [f"{k} {v}" for k, v in counts.items() if v < 1]
    if bad:
        raise InputError(f"{', '.join(bad)}: must be at least 1")
    if a.inter_long_side < 0:
        raise InputError(f"--inter-long-side {a.inter_long_side} must be 0 (native size) or more")
    return InterProtocol(
        clips=list(dict.fromkeys(a.inter_clips)),
        frames=a.inter_frames,
        long_side=a.inter_long_side or None,
        gop=a.inter_gop,
        span=a.inter_span,
        repeats=a.inter_repeats,
        threads=a.decode_threads,
    )


# --------------------------------------------------------------------------- coding


def _encode(model: Any, frames: list[Any], gop: int, batch: int) -> tuple[list[Any], float]:
    """Encode ``frames`` (uint8 RGB, in memory) with ``--refine none`` at ``gop``; returns
    the encoded frames and the wall time (s)."""
    from pipeline.codec import FrameEncoder, encode_frames
    from pipeline.config import RefineConfig

    enc = FrameEncoder(model, RefineConfig(method="none", gop=gop))
    t0 = time.perf_counter()
    out = list(encode_frames(enc, ((f, i, i) for i, f in enumerate(frames)), batch))
    return out, time.perf_counter() - t0


def _write_stream(path: Path, model: Any, info: Any, gop: int, encoded: list[Any]) -> None:
    """The ``.rlv`` file of ``encoded`` (as ``relatent encode`` writes it, no carry)."""
    from pipeline.bitstream import StreamWriter
    from pipeline.codec import make_header
    from pipeline.config import RefineConfig

    cfg = RefineConfig(method="none", gop=gop).resolved(model.identity.lmbda)
    with path.open("wb") as f:
        w = StreamWriter(f, make_header(model, info, cfg, frame_count=len(encoded)))
        for e in encoded:
            w.write(e.packet, e.stats)
        w.close()


def _decode_all(src: Path, model: Any, start: int = 0, end: int | None = None) -> float:
    """Seconds to decode frames ``[start, end)`` of ``src`` to memory with
    :func:`pipeline.decoder.decode_stream` (opening the stream included)."""
    from pipeline.decoder import decode_stream

    t0 = time.perf_counter()
    for _ in decode_stream(str(src), start=start, end=end, model=model):
        pass
    return time.perf_counter() - t0


def _latent_steps(src: Path, model: Any) -> Iterator[None]:
    """Entropy-decode ``src``'s frames one per step, without synthesis (what random access
    does with the frames it skips)."""
    from pipeline.bitstream import StreamReader
    from pipeline.decoder import FrameDecoder

    with StreamReader(str(src)) as r:
        dec = FrameDecoder(model, r.header)
        for n in range(len(r)):
            dec.advance(r[n])
            yield None


def _frame_steps(src: Path, model: Any) -> Iterator[Any]:
    """``decode_stream`` over ``src``: one decoded frame per step."""
    from pipeline.decoder import decode_stream

    return decode_stream(str(src), model=model)


def lockstep(
    make: Callable[[str], Iterator[Any]], names: tuple[str, str], repeats: int
) -> dict[str, Any]:
    """Time two step iterators side by side: per repeat, ``make(name)`` for both names, then
    step ``i`` of both back to back, in an order alternating with ``i`` and the repeat (the
    first step includes opening the stream). Returns per name the total seconds of each
    repeat (``seconds_all``) and their median, the median over repeats of the second's total
    over the first's (``ratio``) and the median per-step ratio (``median_step_ratio``)."""
    a, b = names
    totals: dict[str, list[float]] = {a: [], b: []}
    step_ratios: list[float] = []
    for r in range(repeats):
        its = {n: make(n) for n in names}
        acc = {a: 0.0, b: 0.0}
        i = 0
        while True:
            t: dict[str, float] = {}
            done = False
            for n in names if (r + i) % 2 == 0 else names[::-1]:
                t0 = time.perf_counter()
                try:
                    next(its[n])
                except StopIteration:
                    done = True
                t[n] = time.perf_counter() - t0
            acc[a] += t[a]
            acc[b] += t[b]
            if done:
                break
            step_ratios.append(t[b] / max(t[a], 1e-12))
            i += 1
        totals[a].append(acc[a])
        totals[b].append(acc[b])
    return {
        n: {"seconds_all": totals[n], "seconds": float(statistics.median(totals[n]))} for n in names
    } | {
        "ratio": float(statistics.median(y / x for x, y in zip(totals[a], totals[b], strict=True))),
        "median_step_ratio": float(statistics.median(step_ratios)) if step_ratios else 1.0,
    }


def _ratio(runs: list[list[float]]) -> float:
    """Median over repeats of ``runs[1][r] / runs[0][r]``."""
    return float(statistics.median(y / x for x, y in zip(runs[0], runs[1], strict=True)))


# --------------------------------------------------------------------------- one clip


def bench_clip(
    model: Any, path: Path, label: str, proto: InterProtocol, tmp: Path, log: Any
) -> dict[str, Any]:
    """Every inter measurement on one clip (see the module docstring).

    Raises:
        InputError: the clip cannot be opened or decoded.
    """
    import numpy as np

    from pipeline.decoder import decode_stream
    from pipeline.models import fixed_threads

    _, imgs, info = bl.clip_run(path, proto.frames, proto.long_side, start=0)
    h, w = imgs[0].shape[:2]
    info = dataclasses.replace(info, height=h, width=w)
    n, g = len(imgs), proto.gop
    log(f"  inter {label} {w}x{h}, {n} frames: encode gop 1 / {g} x {proto.repeats}")
    enc_runs: list[list[float]] = [[], []]
    streams: dict[str, list[Any]] = {}
    for r in range(proto.repeats):
        for k in (0, 1) if r % 2 == 0 else (1, 0):
            out, sec = _encode(model, imgs, (1, g)[k], proto.batch)
            enc_runs[k].append(sec)
            streams.setdefault(("intra", "inter")[k], out)
    files = {name: tmp / f"{label}-{name}.rlv" for name in ("intra", "inter")}
    for name, gop in (("intra", 1), ("inter", g)):
        _write_stream(files[name], model, info, gop, streams[name])
    with fixed_threads(proto.threads):
        dec = {name: list(decode_stream(str(f), model=model)) for name, f in files.items()}
        same = all(
            x.symbols_crc == y.symbols_crc and np.array_equal(x.rgb, y.rgb)
            for x, y in zip(dec["intra"], dec["inter"], strict=True)
        )
        del dec
        log(f"  inter {label}: decode x {proto.repeats}, latents, random access")
        frames_t = lockstep(
            lambda s: _frame_steps(files[s], model), ("intra", "inter"), proto.repeats
        )
        latents_t = lockstep(
            lambda s: _latent_steps(files[s], model), ("intra", "inter"), proto.repeats
        )
        start, end = random_access_span(n, g, proto.span)
        ra_cases = [("inter", start), ("intra", start), ("inter", start - start % g)]
        ra_runs = bl.interleaved(
            ra_cases,
            lambda c: {"seconds": _decode_all(files[c[0]], model, c[1], end)},
            proto.repeats,
        )
    ra = [[m["seconds"] for m in ms] for ms in ra_runs]
    pbytes = {k: sum(e.stats.bytes for e in v) for k, v in streams.items()}
    res: dict[str, Any] = {
        "file": path.name,
        "size": [h, w],
        "frames": n,
        "gop": g,
        "p_frames": sum(e.stats.frame_type == "P" for e in streams["inter"]),
        "same_pictures": same,
        "bytes": {"intra": pbytes["intra"], "inter": pbytes["inter"]},
        "file_bytes": {k: f.stat().st_size for k, f in files.items()},
        "bytes_ratio": pbytes["inter"] / pbytes["intra"],
        "psnr": float(np.mean([e.stats.psnr for e in streams["inter"]])),
        "encode": {
            "intra": {"seconds_all": enc_runs[0], "fps": n / statistics.median(enc_runs[0])},
            "inter": {"seconds_all": enc_runs[1], "fps": n / statistics.median(enc_runs[1])},
            "ratio": _ratio(enc_runs),
        },
        "decode": {
            "intra": {**frames_t["intra"], "fps": n / frames_t["intra"]["seconds"]},
            "inter": {**frames_t["inter"], "fps": n / frames_t["inter"]["seconds"]},
            "ratio": frames_t["ratio"],
            "median_frame_ratio": frames_t["median_step_ratio"],
            "within_target": frames_t["ratio"] <= DECODE_TARGET,
        },
        "latents": {
            "intra": {**latents_t["intra"], "fps": n / latents_t["intra"]["seconds"]},
            "inter": {**latents_t["inter"], "fps": n / latents_t["inter"]["seconds"]},
            "ratio": latents_t["ratio"],
        },
        "random_access": {
            "start": start,
            "end": end,
            "skipped_frames": start % g,
            "inter_seconds": float(statistics.median(ra[0])),
            "intra_seconds": float(statistics.median(ra[1])),
            "from_gop_start_seconds": float(statistics.median(ra[2])),
            "seconds_all": {"inter": ra[0], "intra": ra[1], "from_gop_start": ra[2]},
            "ratio_vs_intra": _ratio([ra[1], ra[0]]),
            "ratio_vs_from_gop_start": _ratio([ra[2], ra[0]]),
        },
    }
    log(
        f"  inter {label}: bytes x{res['bytes_ratio']:.3f}, encode x{res['encode']['ratio']:.3f}, "
        f"decode x{res['decode']['ratio']:.3f}, random access x{res['random_access']['ratio_vs_intra']:.2f} of intra"
    )
    return res


def bench_inter(
    model: Any, device: str, video: Path, proto: InterProtocol, log: Any
) -> dict[str, Any]:
    """The inter section on ``device`` for every clip of ``proto`` found under ``video``:
    per clip :func:`bench_clip`'s results, and over the clips the largest and the
    geometric-mean decode overhead (``skipped`` names what was absent; with no clip at all
    the result holds only ``skipped`` and ``reason``).

    Raises:
        InputError: an unknown clip label, or a clip that cannot be decoded.
    """
    import math

    files = {label: name for label, name, _ in CLIPS}
    unknown = [c for c in proto.clips if c not in files]
    if unknown:
        raise InputError(
            f"--inter-clips {' '.join(unknown)}: unknown clip(s)",
            hint=f"choose among {', '.join(files)}",
        )
    out: dict[str, Any] = {"device": device, "clips": {}, "skipped": []}
    with tempfile.TemporaryDirectory(prefix="relatent-speed-inter-") as tmp:
        for label in proto.clips:
            path = video / files[label]
            if not path.exists():
                log(f"  inter {label}: {path} is absent, skipped")
                out["skipped"].append(label)
                continue
            out["clips"][label] = bench_clip(model, path, label, proto, Path(tmp), log)
    ratios = [c["decode"]["ratio"] for c in out["clips"].values()]
    if not ratios:
        out["reason"] = f"no shared clip under {video}"
        return out
    out["decode_ratio_max"] = max(ratios)
    out["decode_ratio_geomean"] = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    out["within_target"] = max(ratios) <= DECODE_TARGET
    return out


# --------------------------------------------------------------------------- report


def inter_markdown(inter: dict[str, Any]) -> list[str]:
    """The inter section of ``speed.md`` (its own provenance, protocol and tables)."""
    p, m = inter["protocol"], inter["model"]
    scale = "native size" if p["long_side"] is None else f"long side at most {p['long_side']} px"
    L = ["## Inter against intra: encode, decode and random access on the shared clips", ""]
    L += [*bl.provenance_md(inter["provenance"]), ""]
    L += [
        f"The first {p['frames']} consecutive frames of each clip ({scale}), coded with {m['arch']} q{m['quality']} "
        f"(N={m.get('N')}, M={m.get('M')}, sha256 `{str(m.get('sha256'))[:12]}`) and "
        f"`--refine none` at `--gop 1` and `--gop {p['gop']}` (same latents, same pictures: only the coding differs). "
        f"Encode: frames in memory through `encode_frames` (batch {p['batch']}, the encoder is single-threaded), "
        "source decoding excluded. Decode: the `.rlv` files through `decode_stream`, the library path of "
        "`relatent decode`, to frames in memory (no output container is written, so muxing does not dominate), "
        f"{p['threads']} decoder thread(s); both streams in lockstep, frame i of both back to back in alternating order. "
        f"Each time is the median of {p['repeats']} repeats; ratios are medians of per-repeat ratios. "
        f"Run time {inter['seconds'] / 60:.1f} min"
        + (
            f" (load average at the end {inter['load_average_end']})"
            if "load_average_end" in inter
            else ""
        )
        + ".",
        "",
    ]
    for dev, d in inter["devices"].items():
        if not d["clips"]:
            L += [f"{dev}: not measured ({d.get('reason', 'no clip')}).", ""]
            continue
        L += [f"### {dev}: frames/s and bytes", ""]
        rows = []
        for label, c in d["clips"].items():
            e, dd = c["encode"], c["decode"]
            rows.append([
                label, f"{c['size'][1]}x{c['size'][0]}", c["frames"], f"{c['p_frames']}",
                f"{c['bytes']['intra']:,} / {c['bytes']['inter']:,}", f"{c['bytes_ratio']:.3f}",
                f"{e['intra']['fps']:.2f} / {e['inter']['fps']:.2f}", f"{e['ratio']:.3f}",
                f"{dd['intra']['fps']:.2f} / {dd['inter']['fps']:.2f}", f"**{dd['ratio']:.3f}**",
                f"{c['latents']['intra']['fps']:.1f} / {c['latents']['inter']['fps']:.1f}",
                "yes" if c["same_pictures"] else "NO",
            ])  # fmt: skip
        L += bl.md_table(
            ["clip", "size", "frames", "P frames", "bytes intra / inter", "bytes ratio",
             "encode fps intra / inter", "encode time ratio", "decode fps intra / inter",
             "decode time ratio", "latents-only fps intra / inter", "same pictures"],
            rows,
        )  # fmt: skip
        verdict = "within" if d["within_target"] else "OUTSIDE"
        L += [
            "",
            f"Decode time inter / intra: at most **{d['decode_ratio_max']:.3f}**, geometric mean "
            f"{d['decode_ratio_geomean']:.3f} ({verdict} the <= {DECODE_TARGET:.2f} target). "
            "Latents-only: entropy decoding without synthesis (what random access does with skipped frames).",
            "",
            f"### {dev}: random access (`decode_stream(start, end)`)",
            "",
        ]
        rows = []
        for label, c in d["clips"].items():
            ra = c["random_access"]
            rows.append([
                label, f"{ra['start']}..{ra['end'] - 1}", ra["skipped_frames"],
                f"{ra['inter_seconds'] * 1e3:.0f}", f"{ra['intra_seconds'] * 1e3:.0f}",
                f"{ra['ratio_vs_intra']:.2f}", f"{ra['from_gop_start_seconds'] * 1e3:.0f}",
                f"{ra['ratio_vs_from_gop_start']:.2f}",
            ])  # fmt: skip
        L += bl.md_table(
            ["clip", "frames decoded", "latents entropy-decoded first", "inter ms",
             "intra ms", "inter / intra", "inter from GOP start ms", "inter / from GOP start"],
            rows,
        )  # fmt: skip
        L += [
            "",
            "The span starts at the last frame of the first GOP (the worst case): the inter stream entropy-decodes the "
            "latents of the GOP's earlier frames without synthesising them; *from GOP start* decodes and synthesises "
            "every frame from the GOP's first to the span's end. Times include opening the stream.",
            "",
        ]
        if d["skipped"]:
            L += [f"Absent clips, skipped: {', '.join(d['skipped'])}.", ""]
    return L


def plot_inter(ax: Any, d: dict[str, Any]) -> None:
    """Bars of the encode and decode time ratios (inter / intra) per clip, with the target."""
    import numpy as np

    labels = list(d["clips"])
    x = np.arange(len(labels))
    enc = [d["clips"][c]["encode"]["ratio"] for c in labels]
    dec = [d["clips"][c]["decode"]["ratio"] for c in labels]
    ax.bar(x - 0.2, enc, 0.4, label="encode", color="tab:blue")
    ax.bar(x + 0.2, dec, 0.4, label="decode", color="tab:orange")
    ax.axhline(DECODE_TARGET, color="red", ls="--", lw=1, label=f"decode target {DECODE_TARGET}")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, max(1.3, *enc, *dec) * 1.3)
    ax.set_ylabel("time inter / intra")
    ax.set_title("inter-frame coding: time against all-intra")
    ax.legend(fontsize=7, loc="upper right", ncols=3)
