"""``relatent bench all``: regenerate every benchmark result under ``docs/benchmarks/``.

Runs, in order, ``bench models`` (shipped models on full-size Kodak vs JPEG), ``bench rd``
(rd.json / rd.md / rd_*.png) and ``bench speed`` (speed.json / speed.md / speed.png /
scale.md) with their default protocols, so every number in the docs comes from one
command at one commit. Model cards are left untouched unless ``--update-cards``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from jobs import bench_rd, bench_speed
from pipeline.errors import InputError


def run_all(
    kodak: Path,
    video: Path | None,
    out: Path,
    rd_protocol: bench_rd.Protocol | None = None,
    speed_protocol: bench_speed.SpeedProtocol | None = None,
    *,
    models: bool = True,
    update_cards: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Every benchmark, one after the other (each is internally interleaved/parallel)."""
    from jobs import bench_models

    t0 = time.perf_counter()
    res: dict[str, Any] = {}
    if models:
        log("== bench models")
        res["models"] = bench_models.run(kodak, out, [], (rd_protocol or bench_rd.Protocol()).limit, update_cards)
    log("== bench rd")
    res["rd"] = bench_rd.run(kodak, video, out, rd_protocol or bench_rd.Protocol())
    log("== bench speed")
    res["speed"] = bench_speed.run(kodak, out, speed_protocol or bench_speed.SpeedProtocol())
    log(f"bench all: {(time.perf_counter() - t0) / 60:.1f} min; results in {out}")
    return res


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("all", help="regenerate every benchmark (models, rd, speed, scale) in one run")
    bench_rd.add_args(p)
    bench_speed.add_args(p, common=False)
    p.add_argument("--skip-models", action="store_true", help="do not run bench models")
    p.add_argument("--update-cards", action="store_true", help="write bench models' Kodak results into the model cards")
    p.set_defaults(func=_cmd)


def _cmd(a: argparse.Namespace) -> int:
    kodak = Path(a.kodak)
    video = Path(a.video) if a.video else None
    if not kodak.is_dir():
        raise InputError(f"--kodak folder {kodak} does not exist", hint="pass --kodak DIR with the 24 Kodak PNGs")
    if video is not None and not video.is_dir():
        raise InputError(f"--video folder {video} does not exist", hint="pass --video DIR, or --video '' to skip the clips")
    speed = bench_speed.protocol_from_args(a)
    if a.full and a.sizes == bench_speed.SpeedProtocol().sizes:
        speed.sizes = [256, 512, 1024]
    run_all(kodak, video, Path(a.out), bench_rd.protocol_from_args(a), speed,
            models=not a.skip_models, update_cards=a.update_cards)
    return 0
