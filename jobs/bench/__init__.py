"""``relatent bench``: the benchmarks that write the result files under ``docs/benchmarks/``.

One module per benchmark, each with its ``add_parser`` and command function:

* :mod:`~jobs.bench.models`: the shipped models on Kodak against JPEG, training curves.
* :mod:`~jobs.bench.rd`: rate-distortion against the unrefined model and classic codecs
  (with :mod:`~jobs.bench.rd_protocol`, :mod:`~jobs.bench.rd_encode`,
  :mod:`~jobs.bench.rd_analysis` and :mod:`~jobs.bench.rd_report`).
* :mod:`~jobs.bench.speed`: encode / decode speed, memory, FLOPs, and the projection to
  scale (:mod:`~jobs.bench.speed_report`).
* :mod:`~jobs.bench.pipeline`: the distributed pipeline's efficiency, scaling and driver
  memory (worker processes: :mod:`~jobs.bench.pipeline_standalone`,
  :mod:`~jobs.bench.pipeline_rss`, run with ``python -m``).
* :mod:`~jobs.bench.all`: models, rd and speed in one run.
* :mod:`~jobs.bench.defaults`: refinement recipes and the CLI's default on the shared clips
  with inter coding: RD cost against encode time.
* :mod:`~jobs.bench.target`: rate control (``--target-psnr``) against the fixed rate points
  on the shared clips: targets hit, BD-rate, search cost (:mod:`~jobs.bench.target_report`).
* :mod:`~jobs.bench.ipratio`: the intra frame's lambda (``--ip-ratio``): BD-rate per ratio.
* :mod:`~jobs.bench.startup`: how long ``relatent --help`` and ``relatent info`` take to
  start, in this checkout and others.

Shared helpers (provenance, inputs, classic codecs, BD-rate, Markdown) are in
:mod:`~jobs.bench.lib`. Importing these modules loads neither torch nor ray (the CLI builds
every parser for ``--help``); each benchmark imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_clip_io", "add_parser"]


def add_clip_io(p: argparse.ArgumentParser, name: str) -> None:
    """Add ``--video`` (the shared clips' folder) and ``--out`` (where ``NAME.json`` /
    ``NAME.md`` / ``NAME.png`` go) to the parser ``p`` of ``bench NAME``."""
    repo = Path(__file__).resolve().parents[2]  # = jobs.bench.lib.REPO
    p.add_argument(
        "--video",
        type=Path,
        default=repo.parent / "shared" / "data" / "video",
        help="folder of the shared clips (default: ../shared/data/video)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=repo / "docs" / "benchmarks",
        help=f"where {name}.json / {name}.md / {name}.png go (default: docs/benchmarks)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bench`` and every benchmark under it on the CLI's subcommands ``sub``."""
    from jobs.bench import all as bench_all
    from jobs.bench import defaults, gop, ipratio, models, pipeline, rd, speed, startup, target

    p = sub.add_parser(
        "bench", help="benchmarks that write JSON, Markdown and plots to docs/benchmarks"
    )
    bsub = p.add_subparsers(dest="bench", required=True)
    models.add_parser(bsub)
    pipeline.add_parser(bsub)
    rd.add_parser(bsub)
    speed.add_parser(bsub)
    bench_all.add_parser(bsub)
    startup.add_parser(bsub)
    gop.add_parser(bsub)
    defaults.add_parser(bsub)
    target.add_parser(bsub)
    ipratio.add_parser(bsub)
