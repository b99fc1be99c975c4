"""Commit one video (no Ray): assemble its stream from the staged shards, write its
manifest, clean its staging; and the checks that say a video is already committed.

Stream = shard 0 (header + packets) + the other shards in frame order + the staged carry
section + the tail. The tail (footer: index, per-frame stats, carry reference; trailer) is
made by :func:`pipeline.bitstream.stream_tail` from the sidecars alone, never by parsing
shard bytes; the concatenation is :func:`pipeline.storage.copy_concat` (server-side on S3
when part sizes allow). The manifest, written last, is the commit record.

Idempotence: a commit may run twice (a retried task, a rerun): a video whose manifest
already matches is only cleaned up, and a second assembly writes the same bytes.

The quality floor (``--min-psnr``) is applied here, where every frame's statistics meet:
frames below it are flagged in the manifest, or with ``--strict`` the video fails
(:class:`~pipeline.errors.QualityFloorError`, exit 9) before anything is assembled.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cluster import manifest as mf
from cluster.identity import header_rate_points, rate_points_of
from cluster.planning import (
    MANIFEST_FORMATS,
    OutputPaths,
    VideoPlan,
    carry_uri,
    footer_uri,
    shard_uri,
    sidecar_uri,
    utc_now,
)
from cluster.shard import sidecar_stats
from pipeline import media, storage
from pipeline.bitstream import (
    MAGIC,
    IndexEntry,
    has_midpoint,
    read_carry_info,
    stream_tail,
    version_for,
)
from pipeline.config import RefineConfig
from pipeline.errors import BitstreamError, ObjectNotFoundError, StorageError
from pipeline.models import ModelIdentity
from pipeline.stats import FrameStats, check_floor

__all__ = [
    "CommitSpec",
    "clean_staging",
    "commit_video",
    "container_version",
    "is_committed",
    "record_error",
    "staged_carry_rows",
    "summary_matches",
]


@dataclass(frozen=True)
class CommitSpec:
    """What the commit task needs: the video's plan, its shards' ``(start, end)`` frame
    ranges in order, the model identity and resolved refine config the shards were made
    with, the job's label (recorded in the manifest) and its quality floor (``min_psnr``,
    dB; ``strict``: fail the video below it)."""

    plan: VideoPlan
    ranges: tuple[tuple[int, int], ...]
    ident: ModelIdentity
    refine: RefineConfig
    job_id: str = "transcode"
    min_psnr: float | None = None
    strict: bool = False


# --------------------------------------------------------------------------- checks


def summary_matches(
    summary: dict[str, Any] | None,
    etag: str,
    version: str | None,
    ident: ModelIdentity,
    refine: RefineConfig,
) -> bool:
    """Whether a committed manifest's ``summary`` (any of
    :data:`~cluster.planning.MANIFEST_FORMATS`) describes exactly this source version
    (``etag``, ``version``), model (weights and entropy tables; with a target quality,
    every rate point's), resolved config and container version."""
    if not summary or summary.get("format") not in MANIFEST_FORMATS:
        return False
    model = summary.get("model", {})
    return (
        summary.get("source_etag") == etag
        and summary.get("source_version") == version
        and model.get("weights_sha256") == ident.weights_sha256
        and model.get("tables_sha256") == ident.tables_sha256
        and mf.rate_point_digests(model) == _digests(ident)
        and summary.get("config_hash") == refine.hash()
        and summary.get("container_version") == container_version(ident, refine)
    )


def _digests(ident: ModelIdentity) -> list[list[str]]:
    return [[p.weights_sha256, p.tables_sha256] for p in rate_points_of(ident)]


def container_version(ident: ModelIdentity, refine: RefineConfig) -> int:
    """The ``.rlv`` format version of a stream coded with ``ident`` and ``refine``
    (:func:`pipeline.bitstream.version_for`: 4 with several rate points, 5 with a midpoint)."""
    points = header_rate_points(ident)
    return version_for(refine.gop, len(points), has_midpoint(points))


def is_committed(paths: OutputPaths, summary: dict[str, Any] | None) -> bool:
    """Whether the stream a manifest's ``summary`` describes is whole: present, with the
    recorded size in bytes.

    Raises:
        StorageError: the output cannot be read (other than the stream being absent).
    """
    if summary is None:
        return False
    try:
        return storage.stat(paths.stream).size == summary.get("stream_bytes")
    except ObjectNotFoundError:
        return False


# --------------------------------------------------------------------------- staging


def clean_staging(paths: OutputPaths) -> int:
    """Delete every staging object of a video (every source version). Returns the count.

    Raises:
        StorageError: staging cannot be listed or deleted.
    """
    objs = storage.list_prefix(paths.staging_root)
    for o in objs:
        storage.delete(o.uri)
    if not storage.is_s3(paths.staging_root):
        # Remove what killed writers left (never a live writer's file) and the emptied
        # local directories (S3 has none).
        root = storage.local_path(paths.staging_root)
        storage.remove_stale_temps(root, recursive=True)
        for d in sorted(root.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
    return len(objs)


def staged_carry_rows(uri: str) -> list[dict[str, Any]]:
    """The manifest rows (:meth:`pipeline.media.CarryInfo.to_rows`) of the carry section at
    ``uri``. Only the section's info part is read (not the carried streams themselves).

    Raises:
        BitstreamError: the section is truncated or damaged.
        StorageError: it cannot be read.
    """
    with storage.open_read(uri) as f:
        info = read_carry_info(f, uri)
    return media.CarryInfo.from_dict(info).to_rows()


def _load_sidecars(spec: CommitSpec) -> list[dict[str, Any]]:
    """The sidecars of the video's shards, in frame order, checked to cover every frame
    once and to belong to this source version.

    Raises:
        BitstreamError: a gap, a foreign sidecar or missing frames.
        ObjectNotFoundError: a sidecar is missing.
    """
    plan = spec.plan
    sidecars = []
    expect = 0
    for start, end in spec.ranges:
        if start != expect:
            raise BitstreamError(
                f"{plan.video_id}: shard ranges leave a gap at frame {expect}",
                hint="this is a bug in the planner",
            )
        sc = json.loads(storage.read_bytes(sidecar_uri(plan.staging, start, end)))
        if sc.get("fingerprint") != plan.fingerprint:
            raise BitstreamError(
                f"{plan.video_id}: staged shard {start}..{end} belongs to another job",
                hint="rerun the job",
            )
        sidecars.append(sc)
        expect = end
    if expect != plan.frame_count:
        raise BitstreamError(f"{plan.video_id}: shards cover {expect} of {plan.frame_count} frames")
    return sidecars


@dataclass(frozen=True)
class _Assembled:
    """The committed stream: its size, header size and packet bytes, index and stats."""

    stream_bytes: int
    header_bytes: int
    packet_bytes: int
    entries: list[IndexEntry]
    stats: list[FrameStats]


def _check_staged_version(uri: str, version: int, video_id: str) -> None:
    """The header an actor staged (the first shard's first bytes: magic, then the format
    version, u16 little-endian) is of the ``version`` the driver writes the tail in; a
    stream of mixed versions would be committed unreadable.

    Raises:
        BitstreamError: another version, or no stream header."""
    with storage.open_read(uri) as f:
        head = f.read(len(MAGIC) + 2)
    staged = int.from_bytes(head[len(MAGIC) :], "little") if head.startswith(MAGIC) else None
    if staged != version:
        raise BitstreamError(
            f"{video_id}: the staged header is format version {staged}, the index and stats "
            f"would be version {version}",
            hint="the actors and the driver disagree on the stream's rate points: run both "
            "on one release of relatent, then rerun the job",
        )


def _assemble(spec: CommitSpec, sidecars: Sequence[dict[str, Any]]) -> _Assembled:
    """Write the tail to staging, then the stream: shards + carry section + tail.

    Raises:
        StorageError: the assembled stream has an unexpected size (staging changed).
        BitstreamError: a sidecar's stats are malformed, or the staged header is of another
            format version than the tail (:func:`_check_staged_version`).
    """
    plan, paths = spec.plan, spec.plan.paths
    header_size = int(sidecars[0]["prefix_bytes"])
    version = container_version(spec.ident, spec.refine)
    _check_staged_version(shard_uri(plan.staging, *spec.ranges[0]), version, plan.video_id)
    lengths = [(int(fi), int(ln)) for sc in sidecars for fi, ln in sc["packets"]]
    stats = [
        s
        for sc, (start, end) in zip(sidecars, spec.ranges, strict=True)
        for s in sidecar_stats(sc, sidecar_uri(plan.staging, start, end))
    ]
    entries, tail = stream_tail(
        header_size, lengths, stats, plan.carry_bytes, version=version
    )  # fmt: skip
    packet_bytes = sum(ln for _, ln in lengths)
    srcs = [shard_uri(plan.staging, s, e) for s, e in spec.ranges]
    if plan.carry_bytes:
        srcs.append(carry_uri(plan.staging))
    furi = footer_uri(plan.staging)
    storage.write_bytes(furi, tail)
    srcs.append(furi)
    # Un-commit an older version first, so a manifest never describes a stream it does not match.
    storage.delete(paths.manifest)
    storage.copy_concat(paths.stream, srcs)
    size = storage.stat(paths.stream).size
    expected = header_size + packet_bytes + plan.carry_bytes + len(tail)
    if size != expected:
        raise StorageError(
            f"{paths.stream}: assembled {size} bytes, expected {expected}",
            hint="the staged shards changed during the commit; rerun the job",
        )
    return _Assembled(size, header_size, packet_bytes, entries, stats)


# --------------------------------------------------------------------------- commit


def commit_video(spec: CommitSpec) -> dict[str, Any]:
    """Assemble the stream from staged shards, then write the manifest (the commit record),
    then clean staging. Returns the manifest summary (:func:`cluster.manifest.video_summary`).
    With ``spec.min_psnr``, frames below the floor are flagged in the manifest
    (``below_min_psnr``), or with ``spec.strict`` the video fails first.

    Raises:
        QualityFloorError: frames are below ``spec.min_psnr`` and ``spec.strict`` is set
            (exit 9): nothing is assembled or committed (the staged shards stay).
        BitstreamError: the staged shards do not form the planned stream.
        StorageError: staging or the output cannot be read or written.
    """
    plan, paths = spec.plan, spec.plan.paths
    existing = mf.read_summary(paths.manifest)
    if summary_matches(
        existing, plan.source_etag, plan.source_version, spec.ident, spec.refine
    ) and is_committed(paths, existing):
        clean_staging(paths)  # a retry after the manifest was written
        assert existing is not None
        return existing
    sidecars = _load_sidecars(spec)
    stats = [
        s
        for sc, (start, end) in zip(sidecars, spec.ranges, strict=True)
        for s in sidecar_stats(sc, sidecar_uri(plan.staging, start, end))
    ]
    # before anything is assembled: a strict floor commits nothing of the video
    check_floor(stats, spec.min_psnr, spec.strict, plan.source)
    carry_rows = staged_carry_rows(carry_uri(plan.staging)) if plan.carry_bytes else []
    stream = _assemble(spec, sidecars)
    origins = [(k, sc.get("node", "")) for k, sc in enumerate(sidecars) for _ in sc["stats"]]
    rows = mf.frame_rows(
        plan.video_id, stream.entries, stream.stats, origins, quality=spec.ident.quality,
        min_psnr=spec.min_psnr,
    )  # fmt: skip
    summary = mf.video_summary(
        plan, ident=spec.ident, refine=spec.refine, stream_bytes=stream.stream_bytes,
        header_bytes=stream.header_bytes, packet_bytes=stream.packet_bytes, stats=stream.stats,
        carry_rows=carry_rows, shards=len(spec.ranges), job_id=spec.job_id,
        min_psnr=spec.min_psnr,
    )  # fmt: skip
    storage.write_bytes(paths.manifest, mf.manifest_bytes(rows, summary))
    storage.delete(paths.error)
    clean_staging(paths)
    return summary


def record_error(paths: OutputPaths, source: str, error: BaseException | str, job_id: str) -> None:
    """Write ``_errors/<id>.json`` for a failed video (best effort: never raises)."""
    doc = {
        "video_id": paths.video_id,
        "source": source,
        "error": str(error),
        "type": type(error).__name__ if isinstance(error, BaseException) else "Error",
        "hint": getattr(error, "hint", None),
        "job_id": job_id,
        "at": utc_now(),
    }
    with contextlib.suppress(Exception):
        storage.write_bytes(paths.error, json.dumps(doc, indent=1).encode())
