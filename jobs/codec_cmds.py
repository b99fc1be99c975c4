"""``relatent encode``, ``decode`` and ``info``: one stream on one machine.

Each command parses, sets process-wide state, calls one library function
(:func:`pipeline.codec.encode_video`, :func:`pipeline.decoder.decode_video`,
:class:`pipeline.bitstream.StreamReader`) and prints. Errors propagate to
:func:`jobs.cli.main`, the one place that turns them into exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jobs.console import count, progress_bar, set_threads, warn_printer
from jobs.refine_options import add_refine_options, add_target_options, rate_point_number
from pipeline.errors import RelatentError

__all__ = [
    "add_model_options",
    "add_parsers",
    "add_video_stream_option",
    "cmd_decode",
    "cmd_encode",
    "cmd_info",
    "stream_uris",
]


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model --quality --checkpoint --device``: which weights code the stream."""
    p.add_argument("--model", default=None, help="architecture id (default: the shipped default)")
    p.add_argument(
        "--quality",
        type=rate_point_number,
        default=None,
        help="rate point: a shipped quality, or a midpoint between two (e.g. 2.5: their "
        "weights averaged; docs/ratecontrol.md) (default: the shipped default)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="CompressAI state dict: path, file:// or s3:// URI (default: the shipped weights)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")


def add_video_stream_option(p: argparse.ArgumentParser) -> None:
    """``--video-stream N``: which of a source's video streams is coded."""
    p.add_argument(
        "--video-stream",
        type=int,
        default=None,
        metavar="N",
        help="code the source's stream number N (as ffprobe numbers them; default: the "
        "default-flagged video stream, else the largest; the others are named in a warning)",
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``encode``, ``decode`` and ``info`` on the subcommand set ``sub``."""
    p = sub.add_parser("encode", help="encode a video or image to an .rlv stream")
    p.add_argument("src", help="video or still image (path or URI)")
    p.add_argument("dst", help="output .rlv stream")
    add_model_options(p)
    add_refine_options(p)
    add_target_options(p)
    p.add_argument(
        "--batch",
        type=int,
        default=4,
        help="frames refined together (with a GOP, --warm-start or a budget: that many GOPs in lockstep)",
    )
    p.add_argument("--start", type=int, default=0, help="first frame to code")
    p.add_argument(
        "--end", type=int, default=None, help="end frame, exclusive (default: the last frame)"
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="refuse frames larger than this many pixels (default: 8192x4352)",
    )
    p.add_argument(
        "--no-carry",
        action="store_true",
        help="code the video only; do not carry audio, subtitles, chapters and metadata",
    )
    p.add_argument(
        "--drop-broken-streams",
        action="store_true",
        help="leave corrupt audio tracks out (with a warning) instead of failing",
    )
    add_video_stream_option(p)
    p.add_argument(
        "--vmaf",
        action="store_true",
        help="also print the VMAF of the coded frames against the source (mean, lowest; "
        "libvmaf through imageio-ffmpeg, offline: relatent vmaf)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none is drawn when stderr is not a terminal)",
    )
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser(
        "decode", help="decode an .rlv stream to .y4m (exact), .mp4/.mkv (viewing) or a PNG folder"
    )
    p.add_argument("src", help="input .rlv stream")
    p.add_argument("dst", help="out.y4m, out.mp4, out.mkv, or a folder for PNG frames")
    p.add_argument("--checkpoint", default=None, help="weights the stream needs, when not shipped")
    p.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present), cpu or cuda[:N]; latents decode identically on any",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads of the decoder (default: torch's)"
    )
    p.add_argument(
        "--video-only",
        action="store_true",
        help="write the video alone, without the carried audio/subtitles",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail if the output cannot hold a carried stream (default: skip it with a warning; .y4m/PNG hold none)",
    )
    p.add_argument(
        "--start",
        type=int,
        default=0,
        help="first frame to decode (random access: the latents are entropy-decoded from its "
        "GOP's first frame; no other frame is synthesised)",
    )
    p.add_argument(
        "--end",
        type=int,
        default=None,
        help="end frame, exclusive (default: the last); a span is written video-only, from time 0",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none is drawn when stderr is not a terminal)",
    )
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="show a stream's header, size and quality summary")
    p.add_argument(
        "src",
        nargs="+",
        help=".rlv streams (paths, file:// or s3:// URIs) or folders/s3:// prefixes ending in / "
        "(every .rlv under them, e.g. a transcode's --out)",
    )
    p.add_argument("--frames", action="store_true", help="print the per-frame table")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)


def cmd_encode(a: argparse.Namespace) -> int:
    """Encode ``a.src`` to ``a.dst`` and print the stream's summary."""
    from jobs.refine_options import refine_from_args
    from pipeline import storage
    from pipeline.codec import check_stream_output, encode_video
    from pipeline.media import DEFAULT_MAX_PIXELS, probe
    from pipeline.models import load_model

    check_stream_output(a.dst, a.src)  # before the source is even probed
    refine = refine_from_args(a)
    if refine.target is not None:
        from pipeline.ratecontrol import rate_point_models

        models = rate_point_models(a.model, a.checkpoint, device=a.device)
    else:
        models = [load_model(a.model, a.quality, a.checkpoint, device=a.device)]
    bar = None
    if not a.no_progress and sys.stderr.isatty():  # the bar's length: probe a local source
        if a.end is not None:
            total: int | None = a.end - a.start
        elif storage.is_s3(a.src):
            total = None  # probing would download the object once more
        else:
            total = probe(a.src, video_stream=a.video_stream).frame_count - a.start
        bar = progress_bar(total, "encode", a.no_progress)
    summary = encode_video(
        a.src, a.dst, models, refine, batch=a.batch, start=a.start, end=a.end,
        max_pixels=a.max_pixels or DEFAULT_MAX_PIXELS,
        on_frame=lambda s: bar.update(1) if bar else None,
        carry=not a.no_carry, drop_broken=a.drop_broken_streams, warn=warn_printer("encode"),
        video_stream=a.video_stream, min_psnr=a.min_psnr, strict=a.strict,
    )  # fmt: skip
    if bar:
        bar.close()
    t = summary.totals
    file_bytes = storage.stat(a.dst).size
    print(
        f"{a.dst}: {count(t.frames, 'frame')}, {file_bytes} file bytes ({t.bytes} packet bytes), "
        f"{t.bpp:.4f} bpp from packet bytes, {t.psnr:.2f} dB PSNR, "
        f"{t.refined}/{t.frames} refined, {t.iters_per_frame:.1f} iterations/frame, "
        f"{summary.seconds:.1f} s ({_models_line(models)})"
    )
    if refine.target is not None:
        print(target_line(refine, summary.frames, summary.header))
    if a.vmaf:
        from pipeline.vmaf import stream_vmaf

        v = stream_vmaf(a.dst, a.src, device=a.device)
        print(
            f"vmaf        mean {v.mean:.2f}, lowest {v.min:.2f} (frame {v.min_frame}), vmaf_v0.6.1"
        )
    if summary.carry is not None:
        c = summary.carry
        print(
            f"carried     {len(c.streams)} stream(s), {c.total_bytes} payload bytes, {len(c.chapters)} chapter(s)"
            + (f"; dropped {len(c.dropped)}" if c.dropped else "")
        )
    return 0


def _models_line(models: list[Any]) -> str:
    if len(models) == 1:
        return str(models[0].identity.describe())
    first = models[0].identity
    return f"{first.arch} rate points " + " ".join(f"q{m.identity.quality}" for m in models)


def target_line(refine: Any, frames: list[Any], header: Any) -> str:
    """The summary of a targeted encode: the target, the achieved mean and minimum (per
    frame), the GOPs that reached it and the bitrate (kb/s over the coded frames' duration
    at the header's frame rate; packet bytes)."""
    from pipeline.stats import summarize

    metric, value = refine.target
    key = "ms_ssim" if metric == "ms_ssim" else "psnr"
    t = summarize(frames)
    gop = max(1, refine.grid)
    gops: dict[int, list[float]] = {}
    for f in frames:
        gops.setdefault(f.index // gop, []).append(getattr(f, key))
    met = sum(1 for v in gops.values() if sum(v) / len(v) >= value)
    seconds = len(frames) / float(header.frame_rate) if header.frame_rate else 0.0
    kbps = 8 * t.bytes / seconds / 1000 if seconds > 0 else 0.0
    low = min(getattr(f, key) for f in frames) if frames else 0.0
    if metric == "kbps":
        return (
            f"target      {value:g} kb/s: achieved {kbps:.1f} kb/s ({100 * (kbps / value - 1):+.1f}%), "
            f"PSNR mean {t.psnr:.2f} dB, frame minimum {low:.2f} dB"
        )
    unit = " dB PSNR" if metric == "psnr" else " MS-SSIM"
    return (
        f"target      {value:g}{unit}: achieved mean {getattr(t, key):.4g}, frame minimum "
        f"{low:.4g}, {met}/{len(gops)} GOPs at or above the target, {kbps:.1f} kb/s"
    )


def cmd_decode(a: argparse.Namespace) -> int:
    """Decode ``a.src`` to ``a.dst`` (its suffix picks the output kind) and print a line."""
    from pipeline.bitstream import StreamReader
    from pipeline.decoder import decode_video

    set_threads(a.threads)
    with StreamReader(a.src) as r:
        header = r.header
    bar = progress_bar((a.end or header.frame_count) - a.start, "decode", a.no_progress)
    summary = decode_video(
        a.src, a.dst, a.checkpoint, a.device, video_only=a.video_only, strict=a.strict,
        warn=warn_printer("decode"), on_frame=lambda d: bar.update(1) if bar else None,
        start=a.start, end=a.end,
    )  # fmt: skip
    if bar:
        bar.close()
    print(
        f"{a.dst}: {count(summary.frames, 'frame')} {header.width}x{header.height} @ {header.frame_rate} fps"
    )
    if summary.carried or summary.skipped:
        print(
            f"carried     {', '.join(c.describe() for c in summary.carried) or 'nothing'}"
            + (f"; skipped {len(summary.skipped)}" if summary.skipped else "")
        )
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    """Print each stream's header, byte counts, totals, carried streams and (``--frames``)
    per-frame table, streams separated by a blank line; ``--json`` prints the same as one
    JSON document (one stream named by itself) or a list of them (several, or a folder).

    Raises:
        SourceNotFoundError: a folder holds no ``.rlv`` stream.
        BitstreamError: a stream is damaged.
        StorageError: a stream or folder cannot be read.
    """
    uris = stream_uris(a.src)
    single = len(a.src) == 1 and uris == list(a.src)
    docs = []
    failed: list[RelatentError] = []
    for n, uri in enumerate(uris):
        if n and not a.json:
            print()
        if single:
            docs.append(_info_one(uri, a))
            continue
        try:  # several streams: a damaged one is reported, and the others still shown
            docs.append(_info_one(uri, a))
        except RelatentError as exc:
            print(f"relatent info: error: {exc}", file=sys.stderr)
            failed.append(exc)
    if a.json:
        print(json.dumps(docs[0] if single else docs, indent=2))
    if failed:
        print(
            f"relatent info: {len(failed)} of {len(uris)} streams could not be read",
            file=sys.stderr,
        )
        return failed[0].exit_code  # the exit code of the first error (jobs.cli's table)
    return 0


def _fields(d: Any) -> str:
    """A header object as ``key value, ...`` (nested objects in braces), or as is."""
    if not isinstance(d, dict):
        return str(d)
    return ", ".join(
        f"{k} {{{_fields(v)}}}" if isinstance(v, dict) else f"{k} {v}" for k, v in d.items()
    )


def stream_uris(sources: list[str]) -> list[str]:
    """The streams ``sources`` name: each stream as given, and for a local folder or an
    ``s3://`` prefix ending in ``/`` every ``.rlv`` under it, sorted (the committed streams
    of a transcode's ``--out``; staged shards are ``.rlvs`` and are not listed).

    Raises:
        SourceNotFoundError: a folder or prefix holds no ``.rlv`` stream.
        StorageError: the listing failed.
    """
    from pipeline import storage
    from pipeline.bitstream import STREAM_SUFFIX
    from pipeline.errors import SourceNotFoundError

    out: list[str] = []
    for src in sources:
        folder = src.endswith("/") if storage.is_s3(src) else storage.local_path(src).is_dir()
        if not folder:
            out.append(src)
            continue
        found = [o.uri for o in storage.list_prefix(src, suffixes=(STREAM_SUFFIX,))]
        if not found:
            raise SourceNotFoundError(
                f"{src}: no {STREAM_SUFFIX} stream in this folder",
                hint="name a stream, or the --out folder of a finished encode or transcode",
            )
        out.extend(found)
    return out


def _info_one(src: str, a: argparse.Namespace) -> dict[str, Any]:
    """Print (text) or return (``a.json``) what ``relatent info`` shows of one stream."""
    from pipeline import storage
    from pipeline.bitstream import StreamReader
    from pipeline.media import CarryInfo
    from pipeline.media.display import stream_display
    from pipeline.stats import summarize

    with StreamReader(src) as r:
        h = r.header
        stats = r.stats
        version = r.version
        carry_dict = r.carry_info()
        sizes = _byte_counts(r, storage.stat(src).size)
    carry = CarryInfo.from_dict(carry_dict) if carry_dict is not None else None
    display = stream_display(h.display, carry_dict)
    t = summarize(stats)
    psnr_min = min((s.psnr for s in stats), default=0.0)
    seconds = t.frames / float(h.frame_rate) if h.frame_rate else 0.0
    kbps = (
        8 * t.bytes / seconds / 1000 if seconds > 0 else 0.0
    )  # packet bytes over the frames' duration
    summary = {
        "frames": t.frames, "bytes": t.bytes, "packet_bytes": t.bytes,
        "file_bytes": sizes["file"], "bpp": t.bpp, "psnr": t.psnr, "psnr_min": psnr_min,
        "psnr_y": t.psnr_y, "ms_ssim": t.ms_ssim, "refined": t.refined, "kbps": kbps,
    }  # fmt: skip
    if a.json:
        out: dict[str, Any] = {
            "stream": src, "header": h.to_json(), "summary": summary, "version": version, "sizes": sizes,
            "carry": carry.to_dict() if carry else None,
            "carried_streams": carry.to_rows() if carry else [],
            "display": _display_json(display, h),
        }  # fmt: skip
        if a.frames:
            out["frames"] = [{**s.to_stream(), "type": s.frame_type} for s in stats]
        return out
    print(f"stream      {src} (format version {version})")
    print(
        f"size        {sizes['file']} file bytes = {sizes['header']} header + {sizes['packets']} "
        f"packet + {sizes['carry']} carry + {sizes['footer']} index/footer"
    )
    print(f"model       {_model_line(h)}")
    print(
        f"video       {h.width}x{h.height} (coded {h.padded_width}x{h.padded_height}), {h.frame_rate} fps, time base {h.time_base}"
    )
    print(f"frames      {h.frame_count}")
    print(f"color       {_fields(h.color)}")
    print(f"display     {_display_line(display, h)}")
    print(f"refinement  {_fields(h.refine)} (hash {h.refine_hash})")
    print(
        f"summary     {t.bytes} packet bytes, {t.bpp:.4f} bpp from packet bytes, {kbps:.1f} kb/s, "
        f"PSNR {t.psnr:.2f} dB (Y {t.psnr_y:.2f}; lowest frame {psnr_min:.2f}), "
        f"MS-SSIM {t.ms_ssim:.4f}, {t.refined}/{t.frames} refined"
    )
    _print_carry(carry)
    if a.frames:
        rated = bool(h.rate_points)  # a column with each frame's rate point (quality)
        lams = any(s.lmbda is not None for s in stats)  # rate control chose each GOP's lambda
        print(
            f"{'frame':>6} {'type':>4}"
            + (f" {'rate':>4}" if rated else "")
            + (f" {'lambda':>9}" if lams else "")
            + f" {'pts':>8} {'pkt_bytes':>9} {'bpp':>8} {'psnr':>8} {'psnr_y':>8} {'ms_ssim':>8} {'rd_before':>10} {'rd_after':>10} {'iters':>6} refined"
        )
        for s in stats:
            rate = "" if not rated else f" {'-' if s.rate_point is None else f'q{s.rate_point}':>4}"
            lam = "" if not lams else f" {'-' if s.lmbda is None else f'{s.lmbda:.6f}':>9}"
            print(
                f"{s.index:>6} {s.frame_type:>4}{rate}{lam} {s.pts:>8} {s.bytes:>9} {s.bpp:>8.4f} {s.psnr:>8.3f} {s.psnr_y:>8.3f} {s.ms_ssim:>8.5f} "
                f"{s.rd_before:>10.5f} {s.rd_after:>10.5f} {s.iters:>6} {s.refined}"
            )
    return {}


def _model_line(h: Any) -> str:
    """``info``'s model line of the header ``h``: the arch, quality, lambda and weights, or
    for a stream coded with rate points (format version 4, or 5 with midpoints) each rate
    point's (lambdas to 4 significant digits: a midpoint's is a geometric mean)."""
    if not h.rate_points:
        return f"{h.arch} q{h.quality} lambda {h.lmbda} weights sha256 {h.weights_sha256[:16]}…"
    points = " ".join(f"q{rp['quality']}" for rp in h.rate_points)
    lambdas = " ".join(f"{rp['lmbda']:.4g}" for rp in h.rate_points)
    shas = " ".join(f"{rp['weights_sha256'][:12]}…" for rp in h.rate_points)
    return f"{h.arch} rate points {points} (lambda {lambdas}; weights sha256 {shas})"


def _display_line(display: Any, h: Any) -> str:
    """How the frames display (a ``DisplayInfo``) and the source's bit depth, colour tags."""
    c = h.color or {}
    depth = f"{c.get('bit_depth', 8)}-bit source" if c else "source depth unknown"
    tags = f"primaries {c.get('primaries', 'unknown')}, transfer {c.get('transfer', 'unknown')}"
    return f"{display.describe(h.width, h.height)}; {depth}, {tags}"


def _display_json(display: Any, h: Any) -> dict[str, Any]:
    """``info --json``'s ``display``: every display field, defaults included."""
    sar = display.sar or 1
    dar = display.display_aspect(h.width, h.height)
    return {
        "rotation": display.rotation, "hflip": display.hflip,
        "matrix": list(display.matrix) if display.matrix is not None else None,
        "sar": f"{sar.numerator}:{sar.denominator}", "dar": f"{dar.numerator}:{dar.denominator}",
        "field_order": display.field_order, "title": display.title,
        "bit_depth": (h.color or {}).get("bit_depth"),
    }  # fmt: skip


def _byte_counts(r: Any, file_bytes: int) -> dict[str, int]:
    """The byte counts of an open :class:`~pipeline.bitstream.StreamReader`'s file of
    ``file_bytes`` bytes, named as everywhere in relatent: ``file`` (the file's size) =
    ``header`` + ``packets`` (the frames' packets, packet headers included: what bpp is
    computed from) + ``carry`` (the carried streams' section) + ``footer`` (index, stats
    and trailer)."""
    return {
        "file": file_bytes,
        "header": r.header_size,
        "packets": sum(e.length for e in r.index),
        "carry": r.carry.length if r.carry is not None else 0,
        "footer": file_bytes - r.footer_offset,
    }


def _print_carry(carry: Any) -> None:
    if carry is None:
        print("carried     none (video only)")
        return
    print(
        f"carried     {len(carry.streams)} stream(s), {carry.total_bytes} payload bytes, {len(carry.chapters)} chapter(s)"
        + (f", stored as {carry.format}" if carry.format else "")
    )
    rows = carry.to_rows()
    if rows:
        print(
            f"{'#':>4} {'type':<10} {'codec':<10} {'lang':<5} {'duration':>9} {'bytes':>10} {'status':<11} title/reason"
        )
    for r in rows:
        print(
            f"{r['index']:>4} {r['type']:<10} {r['codec']:<10} {r['language'] or 'und':<5} {r['duration']:>8.3f}s "
            f"{r['bytes']:>10} {r['status']:<11} {r['title'] or r['reason']}"
        )
