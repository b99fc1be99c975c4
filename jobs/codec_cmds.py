"""``relatent encode``, ``decode`` and ``info``: one stream on one machine.

Each command parses, sets process-wide state, calls one library function
(:func:`pipeline.codec.encode_video`, :func:`pipeline.decoder.decode_video`,
:class:`pipeline.bitstream.StreamReader`) and prints. Errors propagate to
:func:`jobs.cli.main`, the one place that turns them into exit codes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from jobs.console import progress_bar, set_threads, warn_printer
from jobs.refine_options import add_refine_options

__all__ = [
    "add_model_options",
    "add_parsers",
    "add_video_stream_option",
    "cmd_decode",
    "cmd_encode",
    "cmd_info",
]


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model --quality --checkpoint --device``: which weights code the stream."""
    p.add_argument("--model", default=None, help="architecture id (default: the shipped default)")
    p.add_argument("--quality", type=int, default=None, help="rate point of the shipped weights")
    p.add_argument(
        "--checkpoint", default=None, help="CompressAI state dict: path, file:// or s3:// URI"
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
    p.add_argument(
        "--batch",
        type=int,
        default=4,
        help="frames refined together (with a GOP, --warm-start or a budget: that many GOPs in lockstep)",
    )
    p.add_argument("--start", type=int, default=0, help="first frame")
    p.add_argument("--end", type=int, default=None, help="end frame (exclusive)")
    p.add_argument(
        "--max-pixels", type=int, default=None, help="refuse frames larger than this many pixels"
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
    p.add_argument("src")
    p.add_argument("--frames", action="store_true", help="print the per-frame table")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)


def cmd_encode(a: argparse.Namespace) -> int:
    """Encode ``a.src`` to ``a.dst`` and print the stream's summary."""
    from jobs.refine_options import refine_from_args
    from pipeline.codec import check_stream_output, encode_video
    from pipeline.media import DEFAULT_MAX_PIXELS, probe
    from pipeline.models import load_model

    check_stream_output(a.dst, a.src)  # before the source is even probed
    refine = refine_from_args(a)
    model = load_model(a.model, a.quality, a.checkpoint, device=a.device)
    info = probe(a.src, video_stream=a.video_stream)
    total = (info.frame_count if a.end is None else a.end) - a.start
    bar = progress_bar(total, "encode", a.no_progress)
    summary = encode_video(
        a.src, a.dst, model, refine, batch=a.batch, start=a.start, end=a.end,
        max_pixels=a.max_pixels or DEFAULT_MAX_PIXELS,
        on_frame=lambda s: bar.update(1) if bar else None,
        carry=not a.no_carry, drop_broken=a.drop_broken_streams, warn=warn_printer("encode"),
        video_stream=a.video_stream,
    )  # fmt: skip
    if bar:
        bar.close()
    t = summary.totals
    print(
        f"{a.dst}: {t.frames} frames, {t.bytes} packet bytes, {t.bpp:.4f} bpp, {t.psnr:.2f} dB PSNR, "
        f"{t.refined}/{t.frames} refined, {t.iters_per_frame:.1f} iterations/frame, "
        f"{summary.seconds:.1f} s ({model.identity.describe()})"
    )
    if summary.carry is not None:
        c = summary.carry
        print(
            f"carried     {len(c.streams)} stream(s), {c.total_bytes} bytes, {len(c.chapters)} chapter(s)"
            + (f"; dropped {len(c.dropped)}" if c.dropped else "")
        )
    return 0


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
        f"{a.dst}: {summary.frames} frames {header.width}x{header.height} @ {header.frame_rate} fps"
    )
    if summary.carried or summary.skipped:
        print(
            f"carried     {', '.join(c.describe() for c in summary.carried) or 'nothing'}"
            + (f"; skipped {len(summary.skipped)}" if summary.skipped else "")
        )
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    """Print a stream's header, totals, carried streams and (``--frames``) per-frame table;
    ``--json`` prints the same as one JSON document."""
    from pipeline.bitstream import StreamReader
    from pipeline.media import CarryInfo
    from pipeline.stats import summarize

    with StreamReader(a.src) as r:
        h = r.header
        stats = r.stats
        size = r.footer_offset
        version = r.version
        carry_dict = r.carry_info()
    carry = CarryInfo.from_dict(carry_dict) if carry_dict is not None else None
    t = summarize(stats)
    summary = {
        "frames": t.frames, "bytes": t.bytes, "bpp": t.bpp, "psnr": t.psnr, "psnr_y": t.psnr_y,
        "ms_ssim": t.ms_ssim, "refined": t.refined,
    }  # fmt: skip
    if a.json:
        out: dict[str, Any] = {
            "header": h.to_json(), "summary": summary, "version": version,
            "carry": carry.to_dict() if carry else None,
            "carried_streams": carry.to_rows() if carry else [],
        }  # fmt: skip
        if a.frames:
            out["frames"] = [{**s.to_stream(), "type": s.frame_type} for s in stats]
        print(json.dumps(out, indent=2))
        return 0
    print(f"stream      {a.src} ({size} bytes before the index, format version {version})")
    print(
        f"model       {h.arch} q{h.quality} lambda {h.lmbda} weights sha256 {h.weights_sha256[:16]}…"
    )
    print(
        f"video       {h.width}x{h.height} (coded {h.padded_width}x{h.padded_height}), {h.frame_rate} fps, time base {h.time_base}"
    )
    print(f"frames      {h.frame_count}")
    print(f"color       {h.color}")
    print(f"refinement  {h.refine} (hash {h.refine_hash})")
    print(
        f"summary     {t.bytes} packet bytes, {t.bpp:.4f} bpp, PSNR {t.psnr:.2f} dB "
        f"(Y {t.psnr_y:.2f}), MS-SSIM {t.ms_ssim:.4f}, {t.refined}/{t.frames} refined"
    )
    _print_carry(carry)
    if a.frames:
        print(
            f"{'frame':>6} {'type':>4} {'pts':>8} {'bytes':>8} {'bpp':>8} {'psnr':>8} {'ms_ssim':>8} {'rd_before':>10} {'rd_after':>10} {'iters':>6} refined"
        )
        for s in stats:
            print(
                f"{s.index:>6} {s.frame_type:>4} {s.pts:>8} {s.bytes:>8} {s.bpp:>8.4f} {s.psnr:>8.3f} {s.ms_ssim:>8.5f} "
                f"{s.rd_before:>10.5f} {s.rd_after:>10.5f} {s.iters:>6} {s.refined}"
            )
    return 0


def _print_carry(carry: Any) -> None:
    if carry is None:
        print("carried     none (video only)")
        return
    print(
        f"carried     {len(carry.streams)} stream(s), {carry.total_bytes} bytes, {len(carry.chapters)} chapter(s)"
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
