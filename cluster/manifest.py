"""Parquet manifests: the commit record of one transcoded video.

One file per video, ``<out>/<id>.manifest.parquet``, written LAST (after the stream is
complete), so its presence means the stream next to it is whole. It holds

* one row per frame (:data:`SCHEMA`): where the frame's packet sits in the stream and what
  the encoder measured for it (with a target quality, the lambda and rate point rate
  control chose; with ``--min-psnr``, whether it is below the floor), plus which shard and
  node produced it;
* a per-video summary as JSON in the Parquet key-value metadata under ``relatent.summary``
  (source URI/ETag/version, model identity and sha256, refine config and its hash,
  totals). Reading the summary touches only the Parquet footer
  (:func:`read_summary`), so checking "already done?" is cheap even for long videos.

DuckDB reads the rows directly: ``SELECT avg(psnr) FROM 'out/*.manifest.parquet'``.

The rows and the summary are built here from the frames' :class:`pipeline.stats.FrameStats`
(:func:`frame_rows`, :func:`video_summary`; means from :func:`pipeline.stats.summarize`), so
the commit (:mod:`cluster.commit`) only gathers the inputs.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.identity import header_rate_points, rate_points_of
from cluster.planning import MANIFEST_FORMAT, MANIFEST_FORMATS, VideoPlan, utc_now
from pipeline import storage
from pipeline.bitstream import IndexEntry, has_midpoint, version_for
from pipeline.config import RefineConfig
from pipeline.errors import ObjectNotFoundError, StorageError
from pipeline.models import ModelIdentity
from pipeline.stats import FrameStats, summarize

__all__ = [
    "SCHEMA",
    "SUMMARY_KEY",
    "frame_rows",
    "manifest_bytes",
    "rate_point_digests",
    "read_rows",
    "read_summary",
    "totals",
    "video_summary",
]

#: The Parquet key-value metadata key of the per-video summary.
SUMMARY_KEY = b"relatent.summary"

#: The per-frame rows (units: :mod:`pipeline.stats`; byte offsets from the stream's start).
#: Format 2 (:data:`~cluster.planning.MANIFEST_FORMAT`) appended ``lmbda`` (the lambda rate
#: control chose for the frame's GOP; null without a target quality), ``rate_point`` (the
#: quality of the model that coded the frame: the header's for a fixed-quality stream; a
#: midpoint rate point is a half step, so the column is a float since format 3) and ``below_min_psnr`` (RGB PSNR below ``--min-psnr``; null without a floor).
SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("frame_index", pa.int64()),
        ("pts", pa.int64()),
        ("byte_offset", pa.int64()),
        ("byte_length", pa.int64()),
        ("bpp", pa.float64()),
        ("psnr", pa.float64()),
        ("psnr_y", pa.float64()),
        ("ms_ssim", pa.float64()),
        ("rd_before", pa.float64()),
        ("rd_after", pa.float64()),
        ("iters", pa.int32()),
        ("refined", pa.bool_()),
        ("refine_seconds", pa.float64()),
        ("shard", pa.int32()),
        ("node", pa.string()),
        ("lmbda", pa.float64()),
        ("rate_point", pa.float64()),
        ("below_min_psnr", pa.bool_()),
    ]
)


def frame_rows(
    video_id: str,
    entries: Sequence[IndexEntry],
    stats: Sequence[FrameStats],
    origins: Sequence[tuple[int, str]],
    *,
    quality: int | float | None = None,
    min_psnr: float | None = None,
) -> list[dict[str, Any]]:
    """One :data:`SCHEMA` row per frame, in stream order: where its packet sits in the
    stream (``entries``: byte offset and length), what the encoder measured (``stats``,
    ``refine_seconds`` and, with a target quality, ``lmbda`` and ``rate_point`` included)
    and where it was encoded (``origins``: shard index and node). The three sequences are
    parallel. ``quality``: the rate point of frames whose stats name none (the header's
    model); ``min_psnr``: the floor (dB) ``below_min_psnr`` compares with (None: null).

    Raises:
        ValueError: the sequences differ in length.
    """
    return [
        {
            "video_id": video_id,
            "frame_index": e.frame_index,
            "pts": int(s.pts),
            "byte_offset": e.offset,
            "byte_length": e.length,
            "bpp": float(s.bpp),
            "psnr": float(s.psnr),
            "psnr_y": float(s.psnr_y),
            "ms_ssim": float(s.ms_ssim),
            "rd_before": float(s.rd_before),
            "rd_after": float(s.rd_after),
            "iters": int(s.iters),
            "refined": bool(s.refined),
            "refine_seconds": float(s.refine_seconds),
            "shard": shard,
            "node": node,
            "lmbda": None if s.lmbda is None else float(s.lmbda),
            "rate_point": quality if s.rate_point is None else s.rate_point,
            "below_min_psnr": None if min_psnr is None else bool(s.psnr < min_psnr),
        }
        for e, s, (shard, node) in zip(entries, stats, origins, strict=True)
    ]


def totals(
    stats: Sequence[FrameStats], packet_bytes: int, frame_rate: Any = None
) -> dict[str, Any]:
    """The summary's ``totals``: ``packet_bytes`` (the stream's packet bytes, headers of the
    packets included), unweighted per-frame means of ``bpp``, ``psnr``, ``ms_ssim``,
    ``rd_before``, ``rd_after`` and ``iters_per_frame`` (:func:`pipeline.stats.summarize`),
    ``psnr_min`` (the lowest frame's RGB PSNR, dB), ``kbps`` (packet bits per second of
    video at ``frame_rate`` frames/s, /1000, as ``relatent encode`` prints it; 0.0 when the
    rate is unknown), ``refined_frames`` and the sums of ``iters`` and ``refine_seconds``
    (seconds)."""
    s = summarize(stats)
    seconds = len(stats) / float(frame_rate) if stats and frame_rate else 0.0
    return {
        "packet_bytes": packet_bytes,
        "bpp": s.bpp,
        "psnr": s.psnr,
        "psnr_min": min((float(f.psnr) for f in stats), default=0.0),
        "kbps": 8 * packet_bytes / seconds / 1000 if seconds > 0 else 0.0,
        "ms_ssim": s.ms_ssim,
        "rd_before": s.rd_before,
        "rd_after": s.rd_after,
        "refined_frames": s.refined,
        "iters": s.iters,
        "iters_per_frame": s.iters_per_frame,
        "refine_seconds": s.refine_seconds,
    }


def video_summary(
    plan: VideoPlan,
    *,
    ident: ModelIdentity,
    refine: RefineConfig,
    stream_bytes: int,
    header_bytes: int,
    packet_bytes: int,
    stats: Sequence[FrameStats],
    carry_rows: Sequence[dict[str, Any]],
    shards: int,
    job_id: str,
    min_psnr: float | None = None,
) -> dict[str, Any]:
    """The per-video summary stored under :data:`SUMMARY_KEY`: the source version, the
    stream (sizes in bytes; ``carry_rows`` from :meth:`pipeline.media.CarryInfo.to_rows`
    split into carried and dropped streams), the model identity (with a target quality,
    ``rate_points``: every rate point's, slot order), the resolved refine config and its
    hash, the shard count, the :func:`totals` and the commit time; with a target quality,
    ``target`` (:func:`target_summary`); with a floor, ``min_psnr`` (dB) and
    ``below_min_psnr`` (how many frames are below it)."""
    points = header_rate_points(ident)
    summary = {
        "format": MANIFEST_FORMAT,
        "video_id": plan.video_id,
        "source": plan.source,
        "source_etag": plan.source_etag,
        "source_version": plan.source_version,
        "source_size": plan.source_size,
        "stream": plan.paths.stream,
        "stream_bytes": stream_bytes,
        "header_bytes": header_bytes,
        "carry_bytes": plan.carry_bytes,
        "carried_streams": [r for r in carry_rows if r["status"] == "carried"],
        "dropped_streams": [r for r in carry_rows if r["status"] != "carried"],
        "container_version": version_for(refine.gop, len(points), has_midpoint(points)),
        "frames": plan.frame_count,
        "width": plan.width,
        "height": plan.height,
        "model": {
            "arch": ident.arch,
            "quality": ident.quality,
            "lmbda": ident.lmbda,
            "weights_sha256": ident.weights_sha256,
            "tables_sha256": ident.tables_sha256,
        },
        "refine": refine.to_json(),
        "config_hash": refine.hash(),
        "shards": shards,
        "totals": totals(stats, packet_bytes, plan.frame_rate),
        "job_id": job_id,
        "committed_at": utc_now(),
    }
    points = rate_points_of(ident)
    if points:
        summary["model"]["rate_points"] = [
            {"quality": p.quality, "lmbda": p.lmbda, "weights_sha256": p.weights_sha256,
             "tables_sha256": p.tables_sha256}
            for p in points
        ]  # fmt: skip
    if refine.target is not None:
        summary["target"] = target_summary(refine, stats)
    if min_psnr is not None:
        summary["min_psnr"] = float(min_psnr)
        summary["below_min_psnr"] = sum(1 for s in stats if s.psnr < min_psnr)
    return summary


def target_summary(refine: RefineConfig, stats: Sequence[FrameStats]) -> dict[str, Any]:
    """What a targeted video reached (``refine.target`` set): ``metric`` (``psnr`` or
    ``ms_ssim``) and ``value`` (the target), ``achieved`` (the per-frame mean of the metric)
    and ``min`` (its lowest frame), ``gops`` and ``gops_met`` (GOPs whose mean is at least
    the target; GOPs of ``refine.grid`` frames, as rate control decides them)."""
    assert refine.target is not None
    metric, value = refine.target
    vals = {int(s.index): float(s.psnr if metric == "psnr" else s.ms_ssim) for s in stats}
    gop = max(1, refine.grid)
    gops: dict[int, list[float]] = {}
    for i, v in vals.items():
        gops.setdefault(i // gop, []).append(v)
    return {
        "metric": metric,
        "value": value,
        "achieved": sum(vals.values()) / len(vals) if vals else 0.0,
        "min": min(vals.values(), default=0.0),
        "gops": len(gops),
        "gops_met": sum(1 for g in gops.values() if sum(g) / len(g) >= value),
    }


def rate_point_digests(model: dict[str, Any]) -> list[list[str]]:
    """A summary's ``model`` rate points as ``[weights_sha256, tables_sha256]`` pairs, slot
    order (``[]`` for a fixed-quality video)."""
    return [
        [str(p.get("weights_sha256")), str(p.get("tables_sha256"))]
        for p in model.get("rate_points", []) or []
    ]


def manifest_bytes(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> bytes:
    """Serialise per-frame ``rows`` (keys of :data:`SCHEMA`) and the ``summary`` as one
    zstd-compressed Parquet file."""
    cols = {name: [r[name] for r in rows] for name in SCHEMA.names}
    table = pa.table(cols, schema=SCHEMA)
    meta = {SUMMARY_KEY: json.dumps(summary, sort_keys=True).encode()}
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_summary(uri: str) -> dict[str, Any] | None:
    """The summary of the manifest at ``uri`` (any of :data:`~cluster.planning.MANIFEST_FORMATS`),
    or ``None`` if there is none (or it is not a readable manifest, which counts as not
    committed).

    Raises:
        StorageError: the storage cannot be read (other than the manifest being absent).
    """
    try:
        with storage.open_read(uri) as f:
            meta = pq.ParquetFile(f).schema_arrow.metadata or {}
    except ObjectNotFoundError:
        return None
    except StorageError:
        raise
    except Exception:  # a torn or foreign file is not a commit record
        return None
    raw = meta.get(SUMMARY_KEY)
    if raw is None:
        return None
    try:
        summary = json.loads(raw)
    except ValueError:
        return None
    return summary if summary.get("format") in MANIFEST_FORMATS else None


def read_rows(uri: str) -> pa.Table:
    """Every per-frame row of a manifest (for reports and tests).

    Raises:
        ObjectNotFoundError: no manifest at ``uri``.
        StorageError: it cannot be read.
    """
    with storage.open_read(uri) as f:
        return pq.read_table(f)
