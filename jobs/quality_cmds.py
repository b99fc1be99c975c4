"""``relatent vmaf``: a stream's VMAF against its source.

Parses, calls :func:`pipeline.vmaf.stream_vmaf` (Netflix VMAF, libvmaf's model
``vmaf_v0.6.1``, 0..100 per frame; measured by the ffmpeg that ``imageio-ffmpeg`` bundles:
``pip install 'relatent[vmaf]'``) and prints the mean and the minimum. Errors propagate to
:func:`jobs.cli.main`, which turns them into exit codes. Building the parser imports nothing
heavy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jobs.console import count, progress_bar, set_threads
from jobs.refine_options import positive_float

__all__ = ["add_parsers", "cmd_vmaf"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``vmaf`` on the subcommand set ``sub``."""
    p = sub.add_parser(
        "vmaf",
        help="VMAF (Netflix, model vmaf_v0.6.1, 0..100 per frame) of a stream against its source",
        description="Decode an .rlv stream and measure each frame's VMAF against the source "
        "frames it was coded from (found by timestamp; an `encode --start S` stream starts at "
        "source frame S), on yuv420p BT.709 with libvmaf's model vmaf_v0.6.1. Needs "
        "`pip install 'relatent[vmaf]'` (imageio-ffmpeg's ffmpeg, built with libvmaf).",
    )
    p.add_argument("stream", help="the .rlv stream (path, file:// or s3:// URI)")
    p.add_argument("source", help="the video it was coded from (path, file:// or s3:// URI)")
    p.add_argument("--start", type=int, default=0, help="first stream frame to measure")
    p.add_argument(
        "--end", type=int, default=None, help="end stream frame, exclusive (default: the last)"
    )
    p.add_argument(
        "--source-start",
        type=int,
        default=None,
        metavar="N",
        help="the source frame of stream frame --start (default: found by the stream's "
        "timestamps; give it when the source's timestamps differ from the stream's)",
    )
    p.add_argument("--checkpoint", default=None, help="weights the stream needs, when not shipped")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="libvmaf threads, and torch threads of the decoder (default: libvmaf the CPUs, "
        "at most 8; torch its own)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=None,
        help="seconds ffmpeg may run (default: 120 plus 1 per frame per megapixel)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable, with per-frame scores")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none is drawn when stderr is not a terminal)",
    )
    p.set_defaults(func=cmd_vmaf)


def cmd_vmaf(a: argparse.Namespace) -> int:
    """Print the VMAF mean and minimum of ``a.stream`` against ``a.source`` (``--json``: one
    JSON document with the per-frame scores too).

    Raises:
        ConfigError: a bad option, span or source (exit 2). ResourceError: imageio-ffmpeg
            is missing (exit 8). InputError, BitstreamError, ModelError, StorageError: as
            :func:`pipeline.vmaf.stream_vmaf`. RelatentError: ffmpeg failed (exit 1).
    """
    from pipeline.bitstream import StreamReader
    from pipeline.errors import ConfigError
    from pipeline.vmaf import MATRIX, MODEL, PIX_FMT, stream_vmaf

    threads = a.threads if a.threads is not None else min(8, os.cpu_count() or 1)
    if threads < 1:
        raise ConfigError(f"--threads {threads} must be at least 1")
    if a.threads is not None:
        set_threads(a.threads)
    bar = None
    if not a.no_progress and sys.stderr.isatty():  # the bar's length: the stream's header
        with StreamReader(a.stream) as r:
            total = (a.end if a.end is not None else r.header.frame_count) - a.start
        bar = progress_bar(total, "vmaf", a.no_progress)
    result = stream_vmaf(
        a.stream, a.source, start=a.start, end=a.end, source_start=a.source_start,
        checkpoint=a.checkpoint, device=a.device, threads=threads, timeout=a.timeout,
        on_frame=lambda n: bar.update(1) if bar else None,
    )  # fmt: skip
    if bar:
        bar.close()
    if a.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    r = result
    print(
        f"{r.stream}: VMAF mean {r.mean:.2f}, min {r.min:.2f} (frame {r.min_frame}) over "
        f"{count(len(r.scores), 'frame')} {r.start}..{r.end - 1} against {r.source} frames "
        f"{r.source_start}..{r.source_start + len(r.scores) - 1} "
        f"({MODEL}, {PIX_FMT} {MATRIX}, 0..100)"
    )
    return 0
