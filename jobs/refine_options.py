"""The refinement options of ``relatent encode`` and ``relatent transcode`` (and every
command that encodes): one definition, so both paths accept the same settings and build the
same :class:`~pipeline.config.RefineConfig` (whose hash goes into the stream header).

Light: imports only the torch-free :mod:`pipeline.config`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.config import AUTOCAST, DEFAULT_GOP, METHODS, RefineConfig
from pipeline.errors import ConfigError

__all__ = ["add_refine_options", "gop_of", "refine_from_args", "refine_kwargs"]


def add_refine_options(p: argparse.ArgumentParser) -> None:
    """Add ``--refine --iters --lr --lambda --tol --window --seed --warm-start --grid
    --warm-threshold --budget-iters-per-frame --probe --autocast`` to ``p``."""
    g = p.add_argument_group("refinement (docs/refinement.md)")
    g.add_argument(
        "--refine", default="campos", choices=list(METHODS), help="method (default campos)"
    )
    g.add_argument(
        "--iters",
        type=int,
        default=50,
        help="iterations per frame (with a budget: the cap of one frame)",
    )
    g.add_argument("--lr", type=float, default=1e-3, help="refinement step size (Adam; sga: 5e-3)")
    g.add_argument(
        "--lambda",
        type=float,
        default=None,
        dest="lmbda",
        help="RD trade-off (default: the model's)",
    )
    g.add_argument(
        "--tol",
        type=float,
        default=1e-3,
        help="per-frame early stop: relative loss improvement over --window (0: run all iterations)",
    )
    g.add_argument("--window", type=int, default=20, help="iterations over which --tol is judged")
    g.add_argument("--seed", type=int, default=0, help="seed of the relaxation noise")
    g.add_argument(
        "--warm-start",
        action="store_true",
        help="start each frame from the previous frame's refinement when the two are close",
    )
    g.add_argument(
        "--gop",
        type=int,
        default=None,
        help="frames per group of pictures: the first is intra, the others are coded against "
        "the previous frame's latents where that saves bits; warm-start chains, budget groups "
        f"and shard cuts follow it (1: all intra; default {DEFAULT_GOP}, docs/benchmarks/gop.md)",
    )
    g.add_argument(
        "--grid",
        type=int,
        default=None,
        help="deprecated: the old name of --gop (chains, budget groups and cuts follow the GOP)",
    )
    g.add_argument(
        "--warm-threshold",
        type=float,
        default=1000.0,
        help="largest MSE (8-bit RGB) of consecutive frames that still warm-starts",
    )
    g.add_argument(
        "--budget-iters-per-frame",
        type=int,
        default=0,
        dest="budget",
        help="adaptive budget: average iterations per frame over each grid group, given where a probe measured most gain (0: off)",
    )
    g.add_argument(
        "--probe",
        type=int,
        default=8,
        help="probe iterations of every frame under --budget-iters-per-frame",
    )
    g.add_argument(
        "--autocast",
        default="none",
        choices=list(AUTOCAST),
        help="run g_s in bfloat16 during refinement (latents and coding stay fp32)",
    )


def gop_of(a: argparse.Namespace) -> int:
    """The GOP the options ask for: ``--gop``, else the deprecated ``--grid`` (with a
    warning on stderr), else :data:`pipeline.config.DEFAULT_GOP`.

    Raises:
        ConfigError: ``--grid`` and ``--gop`` are both given, with different values.
    """
    if a.grid is not None:
        if a.gop is not None and a.gop != a.grid:
            raise ConfigError(
                f"--grid {a.grid} and --gop {a.gop} conflict",
                hint="--grid is the deprecated name of --gop: pass --gop alone",
            )
        print(
            "relatent: warning: --grid is deprecated and now means --gop (warm-start chains, "
            "budget groups and shard cuts follow the GOP); pass --gop instead",
            file=sys.stderr,
        )
        return int(a.grid)
    return DEFAULT_GOP if a.gop is None else int(a.gop)


def refine_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    """The RefineConfig fields the options of :func:`add_refine_options` give.

    Raises:
        ConfigError: conflicting ``--grid``/``--gop`` (:func:`gop_of`).
    """
    return {
        "method": a.refine, "iters": a.iters, "lr": a.lr, "lmbda": a.lmbda, "tol": a.tol, "window": a.window,
        "seed": a.seed, "warm_start": a.warm_start, "warm_threshold": a.warm_threshold,
        "budget": a.budget, "probe": a.probe, "autocast": a.autocast, "gop": gop_of(a),
    }  # fmt: skip


def refine_from_args(a: argparse.Namespace) -> RefineConfig:
    """The validated :class:`~pipeline.config.RefineConfig` of parsed options.

    Raises:
        ConfigError: an option is out of range (:meth:`RefineConfig.validate`), or
            ``--grid`` and ``--gop`` conflict.
    """
    return RefineConfig(**refine_kwargs(a)).validate()
