"""Torch-free configuration of the per-frame refinement.

:class:`RefineConfig` says how latents are refined (method, budget, step size, warm starts,
adaptive budget). It lives apart from :mod:`pipeline.refine` (which needs torch) so that the
CLI parser, the cluster planner and the catalog can build, validate and hash configs without
importing torch. Its :meth:`RefineConfig.hash` goes into every stream header and manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from pipeline.errors import ConfigError

__all__ = [
    "AUTOCAST",
    "DEFAULT_GOP",
    "DEFAULT_IP_RATIO",
    "DEFAULT_ITERS",
    "DEFAULT_LR",
    "DEFAULT_METHOD",
    "DEFAULT_TOL",
    "METHODS",
    "RATE_CONTROL_VERSION",
    "RefineConfig",
]

METHODS = ("none", "campos", "sga")
#: The command line's GOP when none is given (``relatent encode/transcode/catalog``); the
#: library's :class:`RefineConfig` defaults to all-intra (``gop`` 1). Chosen by
#: ``relatent bench gop`` (docs/benchmarks/gop.md).
DEFAULT_GOP = 16
#: The command line's ``--ip-ratio`` when none is given: a GOP's intra frame is refined at
#: ``ip_ratio ** 2`` times the lambda of its P frames (x264's ``--ipratio``, whose default
#: is also 1.4). Measured by ``relatent bench ipratio`` (docs/benchmarks/ipratio.md).
DEFAULT_IP_RATIO = 1.4
#: The command line's refinement when none is given: method, iterations per frame and the
#: Adam step size of each method. Measured on the shipped weights with inter coding
#: (docs/refinement.md#defaults): SGA at 2e-2 and 50 iterations lowers the RD cost of the
#: first 16 frames of three shared clips by 8-13% against unrefined inter coding, where
#: the seed's campos at 1e-3 bought 1.5-2.3%. The library's :class:`RefineConfig` keeps
#: the seed's settings.
DEFAULT_METHOD = "sga"
DEFAULT_ITERS = 50
DEFAULT_LR = {"campos": 5e-3, "sga": 2e-2, "none": 1e-3}
#: The command line's ``--tol`` of each method. SGA's relaxed loss first rises above its
#: starting value (the first steps push the latents off the grid while the temperature of
#: :func:`pipeline.refine.sga_tau` is still high) and falls below it only as the temperature
#: falls, so a window without improvement comes before the descent, not at convergence.
#: SGA therefore runs all its iterations (measured, 8 frames of bikes at long side 256, q3:
#: the intra frame stopped at iteration 21 of 50 with 1e-3; run to 50, the 8 frames code
#: 0.28 dB more PSNR for 2% more bytes; docs/refinement.md).
#: ``none`` refines nothing; its 1e-3 only keeps earlier streams' config hash.
DEFAULT_TOL = {"campos": 1e-3, "sga": 0.0, "none": 1e-3}
AUTOCAST = ("none", "bf16")
#: The version of rate control's rules (:mod:`pipeline.ratecontrol`), in the hash of every
#: config with a target: a change of the rules re-encodes a catalog's targeted streams.
#: 2: the rate points include the midpoints between shipped ones (``rate_point_qualities``).
#: 3: a landing near its own lambda is tried from the rate point above, lowered, and the
#: other side's lambda moves on to the aim while it is as good (docs/ratecontrol.md).
RATE_CONTROL_VERSION = 3


@dataclass(frozen=True)
class RefineConfig:
    """How latents are refined. Frozen; its :meth:`hash` goes into every stream header.

    Attributes:
        method: ``none`` (plain CompressAI coding), ``campos`` (gradient descent on the
            latents under uniform noise, the seed's method) or ``sga`` (stochastic Gumbel
            annealing; the paper uses lr 5e-3).
        iters: iteration budget per frame (with ``budget``: the cap of one frame).
        lr: Adam step size (the seed uses 1e-3).
        lmbda: rate-distortion trade-off; ``None`` means the checkpoint's training lambda.
        tol: convergence tolerance: a frame stops once its relaxed loss has not improved
            by a relative ``tol`` over ``window`` iterations. 0 disables early stopping.
            Meant for ``campos`` (stationary noise); ``sga``'s loss first rises and falls
            only as its temperature falls, so the command line runs it with 0
            (:data:`DEFAULT_TOL`).
        window: iterations over which ``tol`` is judged.
        seed: seed of the relaxation noise.
        warm_start: start frame t from frame t-1's refinement offset when the two frames
            are close (MSE of their 8-bit RGB <= ``warm_threshold``).
        grid: K: warm-start chains and budget groups restart at frame indices that are
            multiples of K (shard cuts of the distributed encoder fall on this grid).
        warm_threshold: largest MSE (8-bit RGB, 0-255 scale) of two consecutive frames
            for which the later one is warm-started.
        budget: average iterations per frame over each grid group; 0 = off (every frame
            gets ``iters``). Needs ``probe <= budget <= iters``.
        probe: iterations every frame runs before the group's budget is shared out.
        autocast: ``bf16`` runs g_s (forward and backward) under bfloat16 autocast; the
            latents, the bits and the final coding stay fp32.
        gop: frames per group of pictures. The first frame of each group (indices that
            are multiples of ``gop``) is intra-coded; the others may be coded conditionally
            on the previous frame's integer latents (:mod:`pipeline.inter`) where that
            costs fewer bits. 1 = all-intra. With ``gop`` > 1, warm-start chains and budget
            groups follow the GOP (``grid`` becomes ``gop``) and shard cuts fall on it.
        target_psnr: constant quality: each GOP's mean RGB PSNR (dB) is brought to at least
            this, at the fewest bits rate control finds (:mod:`pipeline.ratecontrol`: a
            rate point and a lambda per GOP). ``lmbda`` must then be None.
        target_msssim: the same on each GOP's mean MS-SSIM (in (0, 1)).
        target_kbps: average bitrate (kb/s of packet bytes over the frames' duration): a
            first pass shares the bits out among the GOPs (equal RD slope), and each GOP
            is brought within [0.96, 1.04] of its share.
        max_kbps: no GOP above this bitrate (kb/s; a cap on any of the targets).
        ip_ratio: quantizer-step ratio between a GOP's P frames and its intra frame, as
            x264's ``--ipratio``: the intra frame is refined (and its refined latents kept
            or not, by the actual-bits guard) at ``lmbda * ip_ratio ** 2``, since lambda
            (weighting distortion) goes as ``1 / Qstep ** 2`` (Sullivan and Wiegand 1998,
            "Rate-distortion optimization for video compression"). The P frames copy and
            predict from the intra frame's latents, so its quality is spent again by each
            of them. 1 = one lambda for every frame; only refined GOPs (``gop`` > 1) use it.
    """

    method: Literal["none", "campos", "sga"] = "campos"
    iters: int = 50
    lr: float = 1e-3
    lmbda: float | None = None
    tol: float = 1e-3
    window: int = 20
    seed: int = 0
    warm_start: bool = False
    grid: int = 16
    warm_threshold: float = 1000.0
    budget: int = 0
    probe: int = 8
    autocast: Literal["none", "bf16"] = "none"
    gop: int = 1
    target_psnr: float | None = None
    target_msssim: float | None = None
    target_kbps: float | None = None
    max_kbps: float | None = None
    ip_ratio: float = 1.0

    def validate(self) -> RefineConfig:
        """Check every field's range (see the attributes above); returns ``self``.

        Raises:
            ConfigError: an unknown method or autocast mode, a negative ``iters``,
                ``budget`` or ``tol``, a non-positive ``lr`` or ``lmbda``, ``window`` or
                ``grid`` < 1, a negative ``warm_threshold``, a non-finite (``inf``/``nan``)
                ``lr``, ``lmbda``, ``tol``, ``warm_threshold`` or ``ip_ratio``, an
                ``ip_ratio`` outside 0.25..4, or (with a budget)
                ``probe`` < 2 or not ``probe <= budget <= iters``.
        """
        for flag, value in (
            ("--lr", self.lr),
            ("--lambda", self.lmbda),
            ("--target-psnr", self.target_psnr),
            ("--target-msssim", self.target_msssim),
            ("--target-kbps", self.target_kbps),
            ("--max-kbps", self.max_kbps),
            ("--tol", self.tol),
            ("--warm-threshold", self.warm_threshold),
        ):
            if value is not None and not (isinstance(value, int | float) and math.isfinite(value)):
                raise ConfigError(
                    f"{flag} {value} is not a finite number",
                    hint="use a finite value (inf and nan cannot be refined with)",
                )
        if self.method not in METHODS:
            raise ConfigError(
                f"unknown refinement method {self.method!r}",
                hint=f"use one of {', '.join(METHODS)}",
            )
        if self.iters < 0:
            raise ConfigError(f"--iters {self.iters} is negative", hint="use 0 or more iterations")
        if not self.lr > 0:
            raise ConfigError(f"--lr {self.lr} must be positive", hint="the seed uses 1e-3")
        if self.lmbda is not None and not self.lmbda > 0:
            raise ConfigError(
                f"--lambda {self.lmbda} must be positive",
                hint="omit it to use the model's training lambda",
            )
        self._validate_ip_ratio()
        if self.tol < 0 or self.window < 1:
            raise ConfigError("--tol must be >= 0 and --window >= 1")
        if not 1 <= self.gop <= 100_000:
            raise ConfigError(
                f"--gop {self.gop} must be between 1 (all intra) and 100000",
                hint="frames per group of pictures, e.g. 16 or 32",
            )
        if self.grid < 1:
            raise ConfigError(
                f"--grid {self.grid} must be at least 1", hint="e.g. the source's GOP length"
            )
        if not self.warm_threshold >= 0:
            raise ConfigError(f"--warm-threshold {self.warm_threshold} must be >= 0")
        if self.budget < 0:
            raise ConfigError(
                f"--budget-iters-per-frame {self.budget} is negative",
                hint="0 turns the adaptive budget off",
            )
        if self.budget > 0 and self.method != "none":
            if self.probe < 2:
                raise ConfigError(
                    f"--probe {self.probe} must be at least 2 (the gain is measured between probe iterations)"
                )
            if not self.probe <= self.budget <= self.iters:
                raise ConfigError(
                    f"--budget-iters-per-frame {self.budget} must lie between the probe ({self.probe}) and --iters ({self.iters})",
                    hint="--iters is the cap of one frame under an adaptive budget, e.g. 4x the average",
                )
        self._validate_target()
        if self.autocast not in AUTOCAST:
            raise ConfigError(
                f"unknown --autocast {self.autocast!r}", hint=f"use one of {', '.join(AUTOCAST)}"
            )
        return self

    def _validate_ip_ratio(self) -> None:
        if not (
            isinstance(self.ip_ratio, int | float)
            and math.isfinite(self.ip_ratio)
            and 0.25 <= self.ip_ratio <= 4.0
        ):
            raise ConfigError(
                f"--ip-ratio {self.ip_ratio} is not a finite number in 0.25..4",
                hint="e.g. 1.4 (the intra frame at about twice the P frames' lambda); 1 = none",
            )

    def _validate_target(self) -> None:
        given = [
            f"{flag} {v:g}"
            for flag, v in (
                ("--target-psnr", self.target_psnr),
                ("--target-msssim", self.target_msssim),
                ("--target-kbps", self.target_kbps),
            )
            if v is not None
        ]
        if len(given) > 1:
            raise ConfigError(
                f"{' and '.join(given)} conflict: each sets the rate",
                hint="give one target (--max-kbps caps any of them)",
            )
        for flag, v in (("--target-kbps", self.target_kbps), ("--max-kbps", self.max_kbps)):
            if v is not None and not 1.0 <= v <= 1e6:
                raise ConfigError(
                    f"{flag} {v:g} is outside 1..1000000 kb/s", hint="give kilobits per second"
                )
        if (
            self.max_kbps is not None
            and self.target_kbps is not None
            and self.max_kbps < self.target_kbps
        ):
            raise ConfigError(
                f"--max-kbps {self.max_kbps:g} is below --target-kbps {self.target_kbps:g}",
                hint="the cap must be at least the average",
            )
        if self.max_kbps is not None and not given:
            raise ConfigError(
                f"--max-kbps {self.max_kbps:g} caps a target, and none is given",
                hint="add --target-psnr, --target-msssim or --target-kbps",
            )
        if self.target_psnr is not None and not 10.0 <= self.target_psnr <= 60.0:
            raise ConfigError(
                f"--target-psnr {self.target_psnr} dB is outside 10..60 dB",
                hint="give the mean RGB PSNR wanted, e.g. 32 (the shipped rate points reach "
                "about 27-33 dB; relatent info shows a stream's)",
            )
        if self.target_msssim is not None and not 0.5 <= self.target_msssim < 1.0:
            raise ConfigError(
                f"--target-msssim {self.target_msssim} is outside [0.5, 1)",
                hint="give the mean MS-SSIM wanted, e.g. 0.95",
            )

    @property
    def target(self) -> tuple[str, float] | None:
        """``("psnr", dB)``, ``("ms_ssim", value)`` or ``("kbps", kb/s)`` when rate control
        runs, else None."""
        if self.target_psnr is not None:
            return ("psnr", float(self.target_psnr))
        if self.target_msssim is not None:
            return ("ms_ssim", float(self.target_msssim))
        if self.target_kbps is not None:
            return ("kbps", float(self.target_kbps))
        return None

    @property
    def active(self) -> bool:
        """Whether any refinement runs."""
        return self.method != "none" and self.iters > 0

    @property
    def cut_grid(self) -> int:
        """The frame-index multiple shard cuts must fall on (1: anywhere): the GOP when
        frames are inter-coded, else the grid when frames are coded in grid groups."""
        if self.gop > 1:
            return self.gop
        return self.grid if self.uses_grid else 1

    @property
    def uses_grid(self) -> bool:
        """Whether frames are coded in grid groups (warm-start chains, budget groups, or
        refined P frames, whose rate depends on the previous frame's coded latents): then
        the bytes of a frame depend on the other frames of its group, and shard cuts must
        fall on the grid."""
        if self.target is not None:  # rate control decides per GOP (per grid group)
            return True
        return self.active and (self.warm_start or self.budget > 0 or self.gop > 1)

    def frame_lmbda(self, frame_index: int, lmbda: float | None = None) -> float:
        """The lambda frame ``frame_index`` is refined and guarded at: ``lmbda`` (a GOP's
        own, from rate control; default: the config's), times ``ip_ratio ** 2`` for a
        GOP's intra frame (``gop`` > 1 and ``frame_index`` a multiple of it)."""
        base = self.lmbda if lmbda is None else lmbda
        assert base is not None, "resolve the RefineConfig first"
        if self.gop > 1 and self.ip_ratio != 1.0 and frame_index % self.gop == 0:
            return float(base) * self.ip_ratio**2
        return float(base)

    def resolved(self, model_lmbda: float) -> RefineConfig:
        """The config with ``lmbda`` filled in (what actually runs and is hashed). Method
        ``none`` gets ``iters=0``, and a config that refines nothing has warm starts, the
        budget and autocast turned off; ``ip_ratio`` is 1 unless a refined GOP uses it.

        Raises:
            ConfigError: the result fails :meth:`validate`.
        """
        self._validate_ip_ratio()  # before it is reset where unused
        cfg = self if self.lmbda is not None else replace(self, lmbda=model_lmbda)
        if cfg.method == "none":
            cfg = replace(cfg, iters=0)
        if not cfg.active:
            cfg = replace(cfg, warm_start=False, budget=0, autocast="none")
        if (not cfg.active or cfg.gop == 1) and cfg.ip_ratio != 1.0:
            cfg = replace(cfg, ip_ratio=1.0)  # only refined GOPs have an intra lambda
        if cfg.gop > 1 and cfg.grid != cfg.gop:
            cfg = replace(cfg, grid=cfg.gop)  # chains and budget groups follow the GOP
        return cfg.validate()

    def to_json(self) -> dict[str, Any]:
        """Canonical form: float fields are floats whether given as 0 or 0.0. Settings that
        are off are left out (so configs from before they existed keep their hash)."""
        d = asdict(self)
        for k in ("lr", "lmbda", "tol", "warm_threshold"):
            if d[k] is not None:
                d[k] = float(d[k])
        if not self.warm_start:
            del d["warm_start"], d["warm_threshold"]
        if self.budget <= 0:
            del d["budget"], d["probe"]
        if not (self.warm_start or self.budget > 0):
            del d["grid"]
        if self.autocast == "none":
            del d["autocast"]
        if self.gop == 1:
            del d["gop"]
        if self.ip_ratio == 1.0:
            del d["ip_ratio"]
        else:
            d["ip_ratio"] = float(d["ip_ratio"])
        for k in ("target_psnr", "target_msssim", "target_kbps", "max_kbps"):
            if d[k] is None:
                del d[k]
            else:
                d[k] = float(d[k])
        if self.target is not None:  # the search's rules are part of what made the bytes
            d["rate_control"] = RATE_CONTROL_VERSION
        return d

    def hash(self) -> str:
        """The first 16 hex digits of the sha256 of :meth:`to_json` (sorted keys, compact
        separators): the ``refine_hash`` of stream headers and manifests."""
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
