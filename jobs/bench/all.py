"""``relatent bench all``: regenerate every benchmark result under ``docs/benchmarks/``.

Runs, in order, ``bench models`` (shipped models on full-size Kodak vs JPEG), ``bench rd``
(rd.json / rd.md / rd_*.png, and its video section's rd_video.*) and ``bench speed``
(speed.json / speed.md / speed.png / scale.md) with their default protocols, so every
number in the docs comes from one command at one commit. Model cards are left untouched unless ``--update-cards``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from jobs.bench import rd, speed
from jobs.bench.rd_protocol import Protocol
from jobs.bench.speed import SpeedProtocol
from pipeline.errors import InputError

__all__ = ["add_parser", "cmd_all", "run_all"]


def run_all(
    kodak: Path,
    video: Path | None,
    out: Path,
    rd_protocol: Protocol | None = None,
    speed_protocol: SpeedProtocol | None = None,
    *,
    models: bool = True,
    update_cards: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Every benchmark, one after the other (each is internally interleaved/parallel);
    returns each one's results under ``models``, ``rd`` (by section: ``main``, ``video``)
    and ``speed``.

    Raises:
        InputError: unusable inputs or no shipped model (see each benchmark's ``run``).
        ModelError: a shipped model does not load.
    """
    from jobs.bench import models as bench_models

    t0 = time.perf_counter()
    res: dict[str, Any] = {}
    if models:
        log("== bench models")
        res["models"] = bench_models.run(
            kodak, out, [], (rd_protocol or Protocol()).limit, update_cards
        )
    log("== bench rd")
    res["rd"] = rd.run_sections(kodak, video, out, rd_protocol or Protocol())
    log("== bench speed")
    res["speed"] = speed.run(kodak, out, speed_protocol or SpeedProtocol())
    log(f"bench all: {(time.perf_counter() - t0) / 60:.1f} min; results in {out}")
    return res


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``all`` on the ``bench`` subcommand's subparsers (the options of ``rd``
    and ``speed`` together)."""
    p = sub.add_parser(
        "all",
        help="regenerate the long benchmarks in one run: models, rd, speed (and scale); gop, defaults, startup and pipeline run on their own",
    )
    rd.add_args(p)
    speed.add_args(p, common=False)
    p.add_argument("--skip-models", action="store_true", help="do not run bench models")
    p.add_argument(
        "--update-cards",
        action="store_true",
        help="write bench models' Kodak results into the model cards",
    )
    p.set_defaults(func=cmd_all)


def cmd_all(a: argparse.Namespace) -> int:
    """``relatent bench all``: every benchmark with the options' protocols.

    Raises:
        InputError: the --kodak or --video folder does not exist, or see :func:`run_all`.
        ConfigError: an invalid methods recipe (see :func:`jobs.bench.rd.protocol_from_args`).
    """
    kodak = Path(a.kodak)
    video = Path(a.video) if a.video else None
    if not kodak.is_dir():
        raise InputError(
            f"--kodak folder {kodak} does not exist",
            hint="pass --kodak DIR with the 24 Kodak PNGs",
        )
    if video is not None and not video.is_dir():
        raise InputError(
            f"--video folder {video} does not exist",
            hint="pass --video DIR, or --video '' to skip the clips",
        )
    speed_proto = speed.protocol_from_args(a)
    if a.full and a.sizes == SpeedProtocol().sizes:
        speed_proto.sizes = [256, 512, 1024]
    run_all(
        kodak,
        video,
        Path(a.out),
        rd.protocol_from_args(a),
        speed_proto,
        models=not a.skip_models,
        update_cards=a.update_cards,
    )
    return 0
