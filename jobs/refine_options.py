"""The refinement options of ``relatent encode`` and ``relatent transcode`` (and every
command that encodes): one definition, so both paths accept the same settings and build the
same :class:`~pipeline.config.RefineConfig` (whose hash goes into the stream header).

Light: imports only the torch-free :mod:`pipeline.config`.

It also holds the argparse ``type=`` functions of every float option of the CLI
(:func:`finite_float`, :func:`positive_float`, :func:`non_negative_float`): ``inf``, ``nan``
or an out-of-range value is refused while the command line is parsed (exit 2, the option
named, nothing read or written), never as a traceback later.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

from pipeline.config import (
    AUTOCAST,
    DEFAULT_GOP,
    DEFAULT_IP_RATIO,
    DEFAULT_ITERS,
    DEFAULT_LR,
    DEFAULT_METHOD,
    DEFAULT_TOL,
    METHODS,
    RefineConfig,
)
from pipeline.errors import ConfigError

__all__ = [
    "add_refine_options",
    "add_target_options",
    "finite_float",
    "float_option",
    "gop_of",
    "lr_of",
    "non_negative_float",
    "positive_float",
    "rate_point_number",
    "refine_from_args",
    "refine_kwargs",
]


def float_option(
    minimum: float | None = None, *, strict: bool = False, example: str = "1"
) -> Callable[[str], float]:
    """An argparse ``type=`` function for a float option: the text must be a finite number
    (not ``inf``/``nan``, which Python's ``float`` accepts) and, with ``minimum``, at least
    ``minimum`` (``strict``: above it). argparse reports a refusal as ``argument --NAME:
    <why>; <the fix>`` and exits 2 before the command runs. ``example`` is a valid value
    quoted in the fix.

    Raises (from the returned function):
        argparse.ArgumentTypeError: the text is not a number, not finite, or out of range.
    """
    if minimum is None:
        want = "a finite number"
    else:
        want = f"a finite number {'>' if strict else '>='} {minimum:g}"

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number; use {want}, e.g. {example}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite; use {want}, e.g. {example}")
        if minimum is not None and (value <= minimum if strict else value < minimum):
            raise argparse.ArgumentTypeError(f"{text} is out of range; use {want}, e.g. {example}")
        return value

    convert.__name__ = "float"  # argparse names the type in some messages
    return convert


#: ``type=`` of a float option that may take any finite value.
finite_float = float_option()
#: ``type=`` of a step size, lambda, timeout...: finite and > 0.
positive_float = float_option(0.0, strict=True, example="1e-3")
#: ``type=`` of a tolerance, threshold, resource share...: finite and >= 0.
non_negative_float = float_option(0.0, example="0")


def rate_point_number(text: str) -> int | float:
    """``type=`` of ``--quality``: a shipped quality (a whole number, e.g. ``3``) or the
    midpoint between two neighbouring ones (a half step, e.g. ``2.5``: their weights
    averaged, :func:`pipeline.models.load_midpoint`); whole numbers come back as ``int``.
    Whether the weights exist is checked when the model loads (exit 5).

    Raises:
        argparse.ArgumentTypeError: not a finite number >= 1 in whole or half steps."""
    fix = "use a shipped quality (e.g. 3) or a midpoint between two (e.g. 2.5)"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; {fix}") from None
    if not math.isfinite(value) or value < 1 or not (2 * value).is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate point; {fix}")
    return int(value) if value.is_integer() else value


def add_refine_options(p: argparse.ArgumentParser) -> None:
    """Add ``--refine --iters --lr --lambda --tol --window --seed --warm-start --grid
    --warm-threshold --budget-iters-per-frame --probe --autocast`` to ``p``."""
    g = p.add_argument_group("refinement (docs/refinement.md)")
    g.add_argument(
        "--refine",
        default=DEFAULT_METHOD,
        choices=list(METHODS),
        help=f"method (default {DEFAULT_METHOD}; docs/refinement.md#defaults)",
    )
    g.add_argument(
        "--iters",
        type=int,
        default=DEFAULT_ITERS,
        help=f"iterations per frame (with a budget: the cap of one frame; default {DEFAULT_ITERS})",
    )
    g.add_argument(
        "--lr",
        type=float_option(0.0, strict=True, example="2e-2"),
        default=None,
        help=f"refinement step size (Adam; default {DEFAULT_LR['sga']:g} for sga, "
        f"{DEFAULT_LR['campos']:g} for campos: the measured best)",
    )
    g.add_argument(
        "--lambda",
        type=float_option(0.0, strict=True, example="0.0067"),
        default=None,
        dest="lmbda",
        help="RD trade-off (default: the model's)",
    )
    g.add_argument(
        "--tol",
        type=float_option(0.0, example="1e-3"),
        default=None,
        help="per-frame early stop: relative loss improvement over --window (0: run all "
        f"iterations; default {DEFAULT_TOL['campos']:g} for campos, {DEFAULT_TOL['sga']:g} for "
        "sga, whose loss falls only once its temperature falls)",
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
        "--ip-ratio",
        type=float_option(0.25, example="1.4"),
        default=DEFAULT_IP_RATIO,
        help="quantizer-step ratio of a GOP's P frames to its intra frame, as x264's "
        "--ipratio: with --gop > 1 and refinement, each GOP's intra frame is refined at "
        "ratio^2 times the lambda (1: one lambda; docs/benchmarks/ipratio.md)",
    )
    g.add_argument(
        "--grid",
        type=int,
        default=None,
        help="deprecated: the old name of --gop (chains, budget groups and cuts follow the GOP)",
    )
    g.add_argument(
        "--warm-threshold",
        type=float_option(0.0, example="1000"),
        default=1000.0,
        help="largest MSE (8-bit RGB) of consecutive frames that still warm-starts",
    )
    g.add_argument(
        "--budget-iters-per-frame",
        type=int,
        default=0,
        dest="budget",
        help="adaptive budget: average iterations per frame over each GOP, given where a probe measured most gain (0: off)",
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


def add_target_options(p: argparse.ArgumentParser) -> None:
    """Add ``--target-psnr --target-msssim --target-kbps --max-kbps --min-psnr --strict`` (rate control,
    :mod:`pipeline.ratecontrol`, and the quality floor) to ``p``."""
    g = p.add_argument_group("quality targets (docs/ratecontrol.md)")
    g.add_argument(
        "--target-psnr",
        type=float_option(0.0, strict=True, example="31"),
        default=None,
        metavar="DB",
        help="constant quality: each GOP's mean RGB PSNR at least DB (and at most about 0.3 dB "
        "above), at the fewest bits; a rate point and a lambda are chosen per GOP (default: "
        "off, the fixed --quality)",
    )
    g.add_argument(
        "--target-msssim",
        type=float_option(0.0, strict=True, example="0.95"),
        default=None,
        metavar="V",
        help="constant quality on each GOP's mean MS-SSIM (0.5 <= V < 1) (default: off)",
    )
    g.add_argument(
        "--target-kbps",
        type=float_option(0.0, strict=True, example="500"),
        default=None,
        metavar="K",
        help="average bitrate in kb/s (packet bytes over the frames' duration): a first pass "
        "shares the bits out among the GOPs where the RD slope is best, and each GOP lands "
        "within 5%% below its share (default: off)",
    )
    g.add_argument(
        "--max-kbps",
        type=float_option(0.0, strict=True, example="1000"),
        default=None,
        metavar="K",
        help="no GOP above K kb/s (a cap on any of the targets) (default: none)",
    )
    g.add_argument(
        "--min-psnr",
        type=float_option(0.0, strict=True, example="28"),
        default=None,
        metavar="DB",
        help="quality floor: frames below DB (RGB PSNR) are named in a warning and flagged in "
        "the manifest (default: none)",
    )
    g.add_argument(
        "--strict",
        action="store_true",
        help="with --min-psnr: a video with frames below the floor fails (exit 9) and nothing "
        "of it is written",
    )


def check_targets(a: argparse.Namespace) -> None:
    """Refuse options that set the rate twice: a target quality with ``--lambda`` or
    ``--quality``, or ``--strict`` without ``--min-psnr``.

    Raises:
        ConfigError: such a combination (exit 2)."""
    target = next(
        (
            flag
            for flag, key in (
                ("--target-psnr", "target_psnr"),
                ("--target-msssim", "target_msssim"),
                ("--target-kbps", "target_kbps"),
            )
            if getattr(a, key, None) is not None
        ),
        None,
    )
    if target is not None:
        if getattr(a, "lmbda", None) is not None:
            raise ConfigError(
                f"{target} and --lambda {a.lmbda} both set the rate",
                hint="drop --lambda: rate control chooses each GOP's lambda",
            )
        if getattr(a, "quality", None) is not None:
            raise ConfigError(
                f"{target} and --quality {a.quality} both set the rate",
                hint="drop --quality: rate control chooses each GOP's rate point",
            )
    if getattr(a, "strict", False) and hasattr(a, "min_psnr") and a.min_psnr is None:
        raise ConfigError(
            "--strict fails a video below the quality floor, and no --min-psnr is given",
            hint="add --min-psnr DB, or drop --strict",
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


def lr_of(a: argparse.Namespace) -> float:
    """``--lr``, else the measured default of the method (:data:`pipeline.config.DEFAULT_LR`)."""
    return float(a.lr) if a.lr is not None else DEFAULT_LR[a.refine]


def tol_of(a: argparse.Namespace) -> float:
    """``--tol``, else the method's default (:data:`pipeline.config.DEFAULT_TOL`: 0 for sga)."""
    return float(a.tol) if a.tol is not None else DEFAULT_TOL[a.refine]


def refine_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    """The RefineConfig fields the options of :func:`add_refine_options` give.

    Raises:
        ConfigError: conflicting ``--grid``/``--gop`` (:func:`gop_of`), or a target quality
            with ``--lambda`` or ``--quality`` (:func:`check_targets`).
    """
    check_targets(a)
    return {
        "method": a.refine, "iters": a.iters, "lr": lr_of(a), "lmbda": a.lmbda, "tol": tol_of(a), "window": a.window,
        "seed": a.seed, "warm_start": a.warm_start, "warm_threshold": a.warm_threshold,
        "budget": a.budget, "probe": a.probe, "autocast": a.autocast, "gop": gop_of(a),
        "ip_ratio": a.ip_ratio,
        "target_psnr": getattr(a, "target_psnr", None),
        "target_msssim": getattr(a, "target_msssim", None),
        "target_kbps": getattr(a, "target_kbps", None),
        "max_kbps": getattr(a, "max_kbps", None),
    }  # fmt: skip


def refine_from_args(a: argparse.Namespace) -> RefineConfig:
    """The validated :class:`~pipeline.config.RefineConfig` of parsed options.

    Raises:
        ConfigError: an option is out of range (:meth:`RefineConfig.validate`), or
            ``--grid`` and ``--gop`` conflict.
    """
    return RefineConfig(**refine_kwargs(a)).validate()
