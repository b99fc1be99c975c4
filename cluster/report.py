"""The run report of a catalog run: ``<out>/_runs/<UTC time>-<run id>.json``.

One JSON document per :func:`cluster.catalog.run_catalog` (dry runs write none), written
create-only (a second report of the same run id and second never overwrites the first)
and atomically (a reader sees the whole document or nothing). Format
``relatent-catalog-run/1``: the run id, ``src`` and ``out``, start and end times (UTC, ISO
8601), durations (seconds), the model identity, the refinement config and its hash, the
carry setting, ``counts`` (see :func:`count_items`), bytes listed and written, the driver
job's statistics (``null`` when nothing was encoded), the failures, the leases taken over
or lost, the run-level ``error`` (``null`` when none) and every video's plan and outcome.

``sha256`` is the digest of the canonical JSON (sorted keys) of every other field;
:func:`verify_report` checks it and the format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pipeline import storage

if TYPE_CHECKING:
    from cluster.catalog import CatalogItem
    from cluster.results import JobReport
    from pipeline.config import RefineConfig
    from pipeline.models import ModelIdentity

__all__ = [
    "REPORT_FORMAT",
    "RUNS_DIR",
    "build_report",
    "count_items",
    "encode_report",
    "report_uri",
    "utc_iso",
    "verify_report",
    "write_report",
]

#: The folder of the run reports, under the output prefix.
RUNS_DIR = "_runs"
#: The ``format`` field of every run report.
REPORT_FORMAT = "relatent-catalog-run/1"

#: The statuses a catalog item can end a run with (``planned``: dry run).
_STATUSES = ("current", "encoded", "failed", "leased", "done-elsewhere", "planned")


def utc_iso(t: float) -> str:
    """``t`` (seconds since the epoch) as an ISO 8601 UTC time to the second."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def count_items(items: Sequence[CatalogItem]) -> dict[str, int]:
    """The report's ``counts``: videos listed, stale (planned for encoding), skipped
    (current + done by another run), and each final status."""
    by = {s: sum(i.status == s for i in items) for s in _STATUSES}
    return {
        "listed": len(items),
        "stale": sum(i.action == "encode" for i in items),
        "skipped": by["current"] + by["done-elsewhere"],
        "current": by["current"],
        "done_elsewhere": by["done-elsewhere"],
        "encoded": by["encoded"],
        "failed": by["failed"],
        "leased": by["leased"],
    }


def _digest(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def encode_report(doc: dict[str, Any]) -> bytes:
    """``doc`` as the stored report: indented JSON with sorted keys and its ``sha256``."""
    return json.dumps(
        {**doc, "sha256": _digest(doc)}, indent=1, sort_keys=True, default=str
    ).encode()


def verify_report(data: bytes) -> dict[str, Any]:
    """A stored run report parsed and checked (format and checksum), without ``sha256``.

    Raises:
        ValueError: ``data`` is not JSON, not a ``relatent-catalog-run/1`` report, or its
            checksum does not match.
    """
    doc = json.loads(data)
    digest = doc.pop("sha256", None)
    if doc.get("format") != REPORT_FORMAT:
        raise ValueError(f"not a {REPORT_FORMAT} report")
    if digest != _digest(doc):
        raise ValueError("run report checksum mismatch")
    return doc


def report_uri(out: str, run_id: str, started: float) -> str:
    """Where the report of run ``run_id`` started at ``started`` (seconds since the epoch)
    goes: ``<out>/_runs/<YYYYmmddTHHMMSSZ>-<run id>.json``."""
    stamp = datetime.fromtimestamp(started, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return storage.join(out, RUNS_DIR, f"{stamp}-{run_id}.json")


def write_report(out: str, report: dict[str, Any], started: float) -> str:
    """Write ``report`` (a ``relatent-catalog-run/1`` document with its ``run_id``) under
    ``out``, atomically and create-only; returns its URI (:func:`report_uri`).

    Raises:
        PreconditionFailedError: a report of the same run id and second already exists.
        StorageError: the report cannot be written.
    """
    uri = report_uri(out, str(report["run_id"]), started)
    storage.write_bytes(uri, encode_report(report), if_none_match=True)
    return uri


def _job_stats(job: JobReport | None) -> dict[str, Any] | None:
    """The driver's :class:`cluster.driver.JobReport` statistics (``None``: no driver run)."""
    if job is None:
        return None
    return {
        "job_id": job.job_id, "seconds": round(job.seconds, 3), "fps": job.fps,
        "shards_encoded": job.shards_encoded, "shards_reused": job.shards_reused,
        "shard_retries": job.shard_retries, "actor_deaths": job.actor_deaths,
        "actors_started": job.actors_started,
    }  # fmt: skip


def build_report(
    *,
    run_id: str,
    src: str,
    out: str,
    times: Sequence[float],
    ident: ModelIdentity,
    refine: RefineConfig,
    carry: bool,
    items: Sequence[CatalogItem],
    job: JobReport | None,
    leases: dict[str, Any],
    error: BaseException | None,
) -> dict[str, Any]:
    """The ``relatent-catalog-run/1`` document of one run (see the module doc).

    Args:
        times: ``(started, planned, encode_started, finished)``, seconds since the epoch.
        job: the driver's :class:`cluster.driver.JobReport`, ``None`` when nothing was
            encoded.
        leases: ``{"ttl", "taken_over", "lost"}`` (seconds; the leases replaced; the video
            ids whose lease another run took over).
        error: the run-level error (``None``: none).
    """
    t0, t_plan, t_enc, t_end = times
    model: dict[str, Any] = {
        "arch": ident.arch, "quality": ident.quality, "lmbda": ident.lmbda,
        "weights_sha256": ident.weights_sha256, "tables_sha256": ident.tables_sha256,
    }  # fmt: skip
    points = getattr(ident, "rate_points", ())
    if points:  # a target quality: the rate points it chose from (slot order)
        model["rate_points"] = [p.quality for p in points]
    return {
        "format": REPORT_FORMAT,
        "run_id": run_id,
        "src": src,
        "out": out,
        "started_at": utc_iso(t0),
        "finished_at": utc_iso(t_end),
        "seconds": round(t_end - t0, 3),
        "plan_seconds": round(t_plan - t0, 3),
        "encode_seconds": round(t_end - t_enc, 3) if job is not None else 0.0,
        "model": model,
        "config_hash": refine.hash(),
        "refine": refine.to_json(),
        "carry": carry,
        "counts": count_items(items),
        "bytes": {
            "source_listed": sum(i.source_bytes for i in items),
            "source_encoded": sum(i.source_bytes for i in items if i.status == "encoded"),
            "stream_encoded": sum(i.stream_bytes for i in items if i.status == "encoded"),
        },
        "frames_encoded": job.frames_encoded if job is not None else 0,
        "failures": [{"source": i.source, "video_id": i.video_id, "error": i.error}
                     for i in items if i.status == "failed"],
        "leases": leases,
        "job": _job_stats(job),
        "error": None if error is None else {"type": type(error).__name__, "message": str(error)},
        "videos": [i.to_dict() for i in items],
    }  # fmt: skip
