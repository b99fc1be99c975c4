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
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.planning import MANIFEST_FORMAT
from pipeline import storage
from pipeline.errors import ObjectNotFoundError, StorageError

SUMMARY_KEY = b"relatent.summary"

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


def manifest_bytes(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> bytes:
    """Serialise per-frame ``rows`` (keys of :data:`SCHEMA`) and the ``summary``."""
    cols = {name: [r[name] for r in rows] for name in SCHEMA.names}
    table = pa.table(cols, schema=SCHEMA)
    meta = {SUMMARY_KEY: json.dumps(summary, sort_keys=True).encode()}
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_summary(uri: str) -> dict[str, Any] | None:
    """The summary of the manifest at ``uri``, or ``None`` if there is none (or it is not
    a readable manifest, which counts as not committed)."""
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
    """Every per-frame row of a manifest (for reports and tests)."""
    with storage.open_read(uri) as f:
        return pq.read_table(f)
