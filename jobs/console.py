"""Console helpers the commands share: warnings on stderr, progress bars, thread counts.

These are the CLI's process-wide settings and output conventions; library code never
prints (it takes a ``warn`` callback instead).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["count", "progress_bar", "set_threads", "warn_printer"]


def warn_printer(command: str) -> Callable[[str], None]:
    """A ``warn`` callback that prints ``relatent <command>: warning: <msg>`` on stderr."""

    def warn(msg: str) -> None:
        print(f"relatent {command}: warning: {msg}", file=sys.stderr)

    return warn


def progress_bar(total: int | None, desc: str, disabled: bool) -> Any:
    """A tqdm bar of ``total`` frames (None: unknown, a counter) on stderr, or None when
    ``disabled`` or stderr is not a terminal (logs and pipes get no bar)."""
    if disabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True)


def set_threads(n: int | None) -> None:
    """Set torch's intra-op thread count for this process (``None``/0: leave the default)."""
    if n:
        import torch

        torch.set_num_threads(n)


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 (``count(1, "frame")`` is ``1 frame``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
