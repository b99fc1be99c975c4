"""Parquet manifests: the commit record of one transcoded video.

One file per video, ``<out>/<id>.manifest.parquet``, written LAST (after the stream is
complete), so its presence means the stream next to it is whole. It holds

* one row per frame (:data:`SCHEMA`): where the frame's packet sits in the stream and what
  the encoder measured for it, plus which shard and node produced it;
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

from cluster.planning import MANIFEST_FORMAT, VideoPlan, utc_now
from pipeline import storage
from pipeline.bitstream import IndexEntry, version_for
from pipeline.config import RefineConfig
from pipeline.errors import ObjectNotFoundError, StorageError
from pipeline.models import ModelIdentity
from pipeline.stats import FrameStats, summarize

__all__ = [
    "SCHEMA",
    "SUMMARY_KEY",
    "frame_rows",
    "manifest_bytes",
    "read_rows",
    "read_summary",
    "totals",
    "video_summary",
]

#: The Parquet key-value metadata key of the per-video summary.
SUMMARY_KEY = b"relatent.summary"

#: The per-frame rows (units: :mod:`pipeline.stats`; byte offsets from the stream's start).
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
    ]
)


def frame_rows(
    video_id: str,
    entries: Sequence[IndexEntry],
    stats: Sequence[FrameStats],
    origins: Sequence[tuple[int, str]],
) -> list[dict[str, Any]]:
    """One :data:`SCHEMA` row per frame, in stream order: where its packet sits in the
    stream (``entries``: byte offset and length), what the encoder measured (``stats``,
    ``refine_seconds`` included) and where it was encoded (``origins``: shard index and
    node). The three sequences are parallel.

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
        }
        for e, s, (shard, node) in zip(entries, stats, origins, strict=True)
    ]


def totals(stats: Sequence[FrameStats], packet_bytes: int) -> dict[str, Any]:
    """The summary's ``totals``: ``packet_bytes`` (the stream's packet bytes, headers of the
    packets included), unweighted per-frame means of ``bpp``, ``psnr``, ``ms_ssim``,
    ``rd_before``, ``rd_after`` and ``iters_per_frame`` (:func:`pipeline.stats.summarize`),
    ``refined_frames`` and the sums of ``iters`` and ``refine_seconds`` (seconds)."""
    s = summarize(stats)
    return {
        "packet_bytes": packet_bytes,
        "bpp": s.bpp,
        "psnr": s.psnr,
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
) -> dict[str, Any]:
    """The per-video summary stored under :data:`SUMMARY_KEY`: the source version, the
    stream (sizes in bytes; ``carry_rows`` from :meth:`pipeline.media.CarryInfo.to_rows`
    split into carried and dropped streams), the model identity, the resolved refine
    config and its hash, the shard count, the :func:`totals` and the commit time."""
    return {
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
        "container_version": version_for(refine.gop),
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
        "totals": totals(stats, packet_bytes),
        "job_id": job_id,
        "committed_at": utc_now(),
    }


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
    """The summary of the manifest at ``uri``, or ``None`` if there is none (or it is not
    a readable manifest, which counts as not committed).

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
    return summary if summary.get("format") == MANIFEST_FORMAT else None


def read_rows(uri: str) -> pa.Table:
    """Every per-frame row of a manifest (for reports and tests).

    Raises:
        ObjectNotFoundError: no manifest at ``uri``.
        StorageError: it cannot be read.
    """
    with storage.open_read(uri) as f:
        return pq.read_table(f)
