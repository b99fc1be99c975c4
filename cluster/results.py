"""What a distributed job reports: one :class:`VideoResult` per source, the
:class:`JobReport` with its summary table, and how a failure is classified (retry or fail)
and worded. Plain data, no Ray: the driver (:mod:`cluster.driver`) fills these in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.errors import RelatentError, StorageError

__all__ = ["JobReport", "VideoResult", "error_message", "is_deterministic", "root_cause"]


@dataclass
class VideoResult:
    """The outcome of one source (the rows of the final summary table).

    ``status`` is one of pending, encoding, committing, committed, skipped, failed;
    ``stream_bytes`` is the committed stream's size, ``bpp``/``psnr`` its per-frame means
    (manifest totals), ``refine_seconds`` and ``seconds`` are wall times in seconds.
    """

    source: str
    video_id: str
    status: str = "pending"  # pending, encoding, committing, committed, skipped, failed
    frames: int = 0
    shards: int = 0
    shards_done: int = 0
    shards_reused: int = 0
    frames_encoded: int = 0
    retries: int = 0
    stream_bytes: int = 0
    bpp: float = 0.0
    psnr: float = 0.0
    refine_seconds: float = 0.0
    stream: str = ""
    manifest: str = ""
    error: str | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass
class JobReport:
    """The outcome of one job: every video's result and the job's counters (``seconds``:
    wall time of the run)."""

    job_id: str
    videos: list[VideoResult]
    seconds: float = 0.0
    frames_encoded: int = 0
    frames_reused: int = 0
    shards_encoded: int = 0
    shards_reused: int = 0
    shard_retries: int = 0
    actor_deaths: int = 0
    actors_started: int = 0

    @property
    def ok(self) -> bool:
        """Every video was committed or already was."""
        return all(v.status in ("committed", "skipped") for v in self.videos)

    @property
    def failed(self) -> list[VideoResult]:
        """The videos that failed."""
        return [v for v in self.videos if v.status == "failed"]

    @property
    def fps(self) -> float:
        """Frames encoded per second of the job's wall time (0.0 before it ran)."""
        return self.frames_encoded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values, ``ok`` and ``fps`` included."""
        d = asdict(self)
        d["ok"] = self.ok
        d["fps"] = self.fps
        return d

    def table(self) -> str:
        """The final summary table (plain text). ``file bytes`` is the committed stream's
        size; ``bpp`` is the per-frame mean computed from the frames' packet bytes (the
        header, carry section and footer excluded), as ``relatent info`` shows them."""
        head = [
            "video",
            "status",
            "frames",
            "shards",
            "reused",
            "retries",
            "file bytes",
            "bpp",
            "PSNR",
            "s",
        ]
        rows = [head]
        for v in self.videos:
            rows.append([
                v.video_id, v.status, str(v.frames), str(v.shards), str(v.shards_reused),
                str(v.retries), str(v.stream_bytes), f"{v.bpp:.4f}", f"{v.psnr:.2f}",
                f"{v.seconds:.1f}",
            ])  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        ok = sum(v.status in ("committed", "skipped") for v in self.videos)
        lines.append(
            f"{ok}/{len(self.videos)} videos done, {len(self.failed)} failed; "
            f"{self.frames_encoded} frames encoded ({self.fps:.2f} frames/s), "
            f"{self.frames_reused} reused from staging; {self.shard_retries} shard retries, "
            f"{self.actor_deaths} actor deaths; {self.seconds:.1f} s "
            "(file bytes: each stream's size; bpp: from its frames' packet bytes)"
        )
        for v in self.failed:
            lines.append(f"FAILED {v.video_id} ({v.source}): {v.error}")
        for v in self.videos:
            lines.extend(f"WARNING {v.video_id}: {w}" for w in v.warnings)
        return "\n".join(lines)


# --------------------------------------------------------------------------- failures


def root_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task or actor raised (``RayTaskError.cause``), or ``exc``."""
    return getattr(exc, "cause", None) or exc


def is_deterministic(exc: BaseException) -> bool:
    """Errors that a retry cannot fix: bad input, model, config or bitstream (any
    :class:`~pipeline.errors.RelatentError` but a storage error)."""
    cause = root_cause(exc)
    return isinstance(cause, RelatentError) and not isinstance(cause, StorageError)


def error_message(exc: BaseException) -> str:
    """One line for a report: a relatent error's own message (with its hint), else the
    exception's type and the last line of its text (a Ray traceback's summary)."""
    cause = root_cause(exc)
    if isinstance(cause, RelatentError):
        return str(cause)
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"
