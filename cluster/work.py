"""The work itself, as plain functions (no Ray): prepare (probe) a video, encode a shard,
commit a video. The actor and the Ray tasks in :mod:`cluster.actor` are thin wrappers, so
these run and are tested in-process too.

Idempotence: every function may run twice for the same input (Ray's at-least-once
delivery, driver retries, a rerun after a crash). Writes are atomic and their content is
deterministic, so a second run writes the same bytes; a staged shard whose sidecar
(written after the shard) checks out is reused instead of re-encoded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cluster import manifest as mf
from cluster.planning import (
    MANIFEST_FORMAT,
    SIDECAR_FORMAT,
    ModelIdentityLite,
    OutputPaths,
    ShardSpec,
    VideoPlan,
    carry_uri,
    footer_uri,
    output_key,
    probe_uri,
    shard_uri,
    sidecar_uri,
    source_stem,
    staging_fingerprint,
)
from pipeline import frames as fio
from pipeline import storage
from pipeline.bitstream import VERSION as STREAM_VERSION
from pipeline.bitstream import footer_bytes, index_for, trailer_bytes
from pipeline.codec import FrameEncoder, encode_frames, make_header
from pipeline.errors import (
    BitstreamError,
    ConfigError,
    CorruptSourceError,
    InputError,
    ObjectNotFoundError,
    StorageError,
    WeightsMismatchError,
)
from pipeline.models import LoadedModel
from pipeline.refine import RefineConfig

try:  # the carry section arrived with container version 2
    from pipeline.bitstream import CarryRef, carry_bytes, carry_info_of
    from pipeline.carry import CarryInfo, extract_carry

    HAS_CARRY = True
except ImportError:  # pragma: no cover - a version 1 container
    HAS_CARRY = False

log = logging.getLogger("relatent.cluster")
Warn = Callable[[str], None]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def identity_of(model: LoadedModel) -> ModelIdentityLite:
    i = model.identity
    return ModelIdentityLite(i.arch, i.quality, i.lmbda, i.weights_sha256, i.tables_sha256)


# --------------------------------------------------------------------------- prepare


def summary_matches(
    summary: dict[str, Any] | None,
    etag: str,
    version: str | None,
    ident: ModelIdentityLite,
    refine: RefineConfig,
) -> bool:
    """Whether a committed manifest describes exactly this source version, model and config."""
    if not summary or summary.get("format") != MANIFEST_FORMAT:
        return False
    model = summary.get("model", {})
    return (
        summary.get("source_etag") == etag
        and summary.get("source_version") == version
        and model.get("weights_sha256") == ident.weights_sha256
        and model.get("tables_sha256") == ident.tables_sha256
        and summary.get("config_hash") == refine.hash()
        and summary.get("container_version") == STREAM_VERSION
    )


def _committed(paths: OutputPaths, summary: dict[str, Any] | None) -> bool:
    if summary is None:
        return False
    try:
        return storage.stat(paths.stream).size == summary.get("stream_bytes")
    except ObjectNotFoundError:
        return False


def _probe(source: str, etag: str) -> fio.VideoInfo:
    if storage.is_s3(source):
        with storage.open_read(source) as f:
            if getattr(f, "etag", etag) != etag:
                raise InputError(
                    f"{source} changed while the job was starting",
                    hint="rerun the job once the upload is complete",
                )
            return fio.probe(f)
    return fio.probe(source)


def _carry_section(
    source: str, etag: str, drop_broken: bool = False, warn: Warn | None = None
) -> tuple[bytes, int]:
    """The carry section ``relatent encode`` writes for ``source`` (whole video), and how
    many corrupt streams ``drop_broken`` left out (each reported through ``warn``)."""
    if storage.is_s3(source):
        with storage.open_read(source) as f:
            blob, info = extract_carry(f, drop_broken=drop_broken, warn=warn)
    else:
        blob, info = extract_carry(source, drop_broken=drop_broken, warn=warn)
    broken = sum(d.kind == "broken" for d in info.dropped)
    return carry_bytes(info.to_dict(), blob), broken


def staged_carry_rows(uri: str) -> list[dict[str, Any]]:
    """The manifest rows (:meth:`pipeline.carry.CarryInfo.to_rows`) of the carry section at
    ``uri``. Only the section's info part is read (not the carried streams themselves)."""
    with storage.open_read(uri) as f:
        head = f.read(8)
        if len(head) < 8:
            raise BitstreamError(f"{uri}: the staged carry section is truncated", hint="rerun the job")
        (n,) = struct.unpack_from("<I", head, 4)
        section = head + f.read(n + 4 + 12)
    return CarryInfo.from_dict(carry_info_of(section)).to_rows()


def prepare_video(
    source: str,
    out: str,
    ident: ModelIdentityLite,
    refine: RefineConfig,
    carry: bool = True,
    drop_broken: bool = False,
    warn: Warn | None = None,
) -> VideoPlan:
    """Probe one source (packets only, no decoding) and decide what to do with it.

    Returns a :class:`VideoPlan`; ``skipped=True`` when a committed manifest already
    matches this source version, model and config. The probe result goes to staging so the
    actors read frame timestamps from there instead of probing again; with ``carry`` the
    source's other streams (audio, subtitles) are copied into the staged carry section.
    A corrupt audio stream fails the video (:class:`CorruptSourceError` naming the stream),
    or with ``drop_broken`` is left out; every stream left out is reported through ``warn``
    (again when a rerun reuses the staged section) and recorded in the section's info.
    """
    carry = carry and HAS_CARRY
    st = storage.stat(source)
    key = output_key(source, ident, refine, carry)
    vid = f"{source_stem(source)}-{key}"
    paths = OutputPaths.for_video(out, vid)
    fp = staging_fingerprint(key, st.etag, st.version)
    staging = paths.staging(fp)
    summary = mf.read_summary(paths.manifest)
    base = {
        "source": source,
        "video_id": vid,
        "paths": paths,
        "source_etag": st.etag,
        "source_version": st.version,
        "source_size": st.size,
        "fingerprint": fp,
        "staging": staging,
    }
    if summary_matches(summary, st.etag, st.version, ident, refine) and _committed(paths, summary):
        assert summary is not None
        return VideoPlan(
            **base,
            frame_count=int(summary["frames"]),
            keyframes=(),
            width=int(summary.get("width", 0)),
            height=int(summary.get("height", 0)),
            skipped=True,
            summary=summary,
        )
    puri = probe_uri(staging)
    info = None
    carry_size = 0
    with contextlib.suppress(ObjectNotFoundError, ValueError, KeyError, TypeError):
        doc = json.loads(storage.read_bytes(puri))
        if (
            doc.get("etag") == st.etag
            and doc.get("carry_bytes", 0) == (storage.stat(carry_uri(staging)).size if carry else 0)
            # a section that left a corrupt stream out is only reused with drop_broken
            and (drop_broken or not doc.get("carry_broken", 0))
        ):
            info = fio.VideoInfo.from_dict(doc["info"])
            carry_size = int(doc.get("carry_bytes", 0))
            for msg in doc.get("carry_warnings", []):
                (warn or log.warning)(msg)
    if info is None:
        info = _probe(source, st.etag)
        if info.frame_count < 1:
            raise CorruptSourceError(f"{source}: no decodable frames", hint="check the source")
        warnings: list[str] = []
        broken = 0

        def note(msg: str) -> None:
            warnings.append(msg)
            (warn or log.warning)(msg)

        if carry:  # written before probe.json, which marks the prepare step complete
            section, broken = _carry_section(source, st.etag, drop_broken, note)
            storage.write_bytes(carry_uri(staging), section)
            carry_size = len(section)
        doc = {
            "etag": st.etag,
            "info": info.to_dict(),
            "carry_bytes": carry_size,
            "carry_broken": broken,
            "carry_warnings": warnings,
        }
        storage.write_bytes(puri, json.dumps(doc).encode())
    return VideoPlan(
        **base,
        carry_bytes=carry_size,
        frame_count=info.frame_count,
        keyframes=tuple(info.keyframes),
        width=info.width,
        height=info.height,
    )


# --------------------------------------------------------------------------- encode


@dataclass
class ShardOutcome:
    """What an actor reports for one shard (small: no frame data, no packets)."""

    video_id: str
    index: int
    start: int
    end: int
    bytes: int
    refine_seconds: float
    reused: bool
    node: str
    pid: int
    seconds: float

    @property
    def frames(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_sidecar(spec: ShardSpec) -> dict[str, Any] | None:
    """The sidecar of a staged shard if it belongs to exactly this spec, else ``None``."""
    try:
        sc = json.loads(storage.read_bytes(spec.sidecar_uri))
    except ObjectNotFoundError:
        return None
    except ValueError:
        return None
    ok = (
        isinstance(sc, dict)
        and sc.get("format") == SIDECAR_FORMAT
        and sc.get("fingerprint") == spec.fingerprint
        and sc.get("start") == spec.start
        and sc.get("end") == spec.end
        and sc.get("model_sha256") == spec.model_sha256
        and sc.get("config_hash") == spec.refine.hash()
        and len(sc.get("packets", ())) == spec.frames
        and len(sc.get("stats", ())) == spec.frames
    )
    return sc if ok else None


def validate_staged(spec: ShardSpec) -> dict[str, Any] | None:
    """A staged shard that is complete and intact (size and sha256 of the bytes match its
    sidecar), or ``None``. Invalid leftovers are removed."""
    sc = load_sidecar(spec)
    if sc is None:
        return None
    try:
        data = storage.read_bytes(spec.shard_uri)
    except ObjectNotFoundError:
        data = None
    if data is None or len(data) != sc.get("size") or _sha256(data) != sc.get("sha256"):
        storage.delete(spec.sidecar_uri)
        return None
    return sc


class _InfoCache:
    def __init__(self, size: int = 8) -> None:
        self._items: OrderedDict[str, fio.VideoInfo] = OrderedDict()
        self._size = size

    def get(self, spec: ShardSpec) -> fio.VideoInfo:
        key = f"{spec.probe}#{spec.source_etag}"
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        try:
            doc = json.loads(storage.read_bytes(spec.probe))
        except ObjectNotFoundError:
            raise StorageError(
                f"{spec.probe}: the probe result of {spec.source} vanished from staging",
                hint="another job may have cleaned the staging prefix; rerun the job",
            ) from None
        if doc.get("etag") != spec.source_etag:
            raise InputError(
                f"{spec.source} changed during the job (probe is of another version)",
                hint="rerun the job once the source is stable",
            )
        info = fio.VideoInfo.from_dict(doc["info"])
        self._items[key] = info
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return info


@contextlib.contextmanager
def _open_source(spec: ShardSpec) -> Iterator[Any]:
    changed = InputError(
        f"{spec.source} changed during the job (ETag differs from the planned version)",
        hint="rerun the job once the source is stable",
    )
    if storage.is_s3(spec.source):
        with storage.open_read(spec.source) as f:
            if getattr(f, "etag", spec.source_etag) != spec.source_etag:
                raise changed
            yield f
        return
    if storage.stat(spec.source).etag != spec.source_etag:
        raise changed
    yield spec.source


class ShardEncoder:
    """Encodes shards with one loaded model (what an actor holds)."""

    def __init__(self, model: LoadedModel, node: str = "") -> None:
        self.model = model
        self.node = node or socket.gethostname()
        self._encoders: dict[str, FrameEncoder] = {}
        self._infos = _InfoCache()

    def _encoder(self, refine: RefineConfig) -> FrameEncoder:
        key = refine.hash()
        if key not in self._encoders:
            self._encoders[key] = FrameEncoder(self.model, refine)
        return self._encoders[key]

    def encode(self, spec: ShardSpec) -> ShardOutcome:
        t0 = time.perf_counter()
        if spec.model_sha256 != self.model.identity.weights_sha256:
            raise WeightsMismatchError(
                f"shard {spec.name} was planned for weights {spec.model_sha256[:12]}…, this "
                f"actor holds {self.model.identity.weights_sha256[:12]}…",
                hint="all actors of a job must load the same checkpoint",
            )
        staged = validate_staged(spec)
        if staged is not None:
            return ShardOutcome(
                spec.video_id, spec.index, spec.start, spec.end, int(staged["size"]),
                float(sum(staged.get("refine_seconds", []))), True, self.node, os.getpid(),
                time.perf_counter() - t0,
            )  # fmt: skip
        enc = self._encoder(spec.refine)
        if enc.refine.hash() != spec.refine.hash():
            raise BitstreamError(
                f"shard {spec.name}: refine config resolves differently on this actor",
                hint="pass a resolved RefineConfig in the shard spec",
            )
        info = self._infos.get(spec)
        grid = enc.refine.grid if enc.refine.uses_grid else 1
        if spec.start % grid or (spec.end % grid and spec.end != info.frame_count):
            raise ConfigError(
                f"shard {spec.name} does not start and end on the warm-start/budget grid of {grid} frames",
                hint="plan shards with cluster.planning.plan_ranges(..., grid=refine.grid)",
            )
        h = hashlib.sha256()
        packets: list[tuple[int, int]] = []
        stats: list[dict[str, Any]] = []
        seconds: list[float] = []
        prefix = b""
        if spec.start == 0:
            prefix = make_header(
                self.model, info, enc.refine, frame_count=info.frame_count
            ).to_bytes()
        size = 0
        with _open_source(spec) as src, storage.open_write(spec.shard_uri) as f:
            if prefix:
                f.write(prefix)
                h.update(prefix)
                size += len(prefix)
            frames = fio.read_frames(src, spec.start, spec.end, info=info)
            for e in encode_frames(enc, ((g.rgb, g.index, g.pts) for g in frames), spec.batch):
                pb = e.packet.to_bytes()
                f.write(pb)
                h.update(pb)
                size += len(pb)
                packets.append((e.packet.frame_index, len(pb)))
                stats.append(e.stream_stats())
                seconds.append(float(e.stats["refine_seconds"]))
            if len(packets) != spec.frames or [p[0] for p in packets] != list(
                range(spec.start, spec.end)
            ):
                raise CorruptSourceError(
                    f"{spec.source}: frames {spec.start}..{spec.end} decoded to "
                    f"{len(packets)} frames",
                    hint="the file is probably damaged; re-export it",
                )
        elapsed = time.perf_counter() - t0
        sidecar = {
            "format": SIDECAR_FORMAT,
            "video_id": spec.video_id,
            "source": spec.source,
            "fingerprint": spec.fingerprint,
            "index": spec.index,
            "start": spec.start,
            "end": spec.end,
            "prefix_bytes": len(prefix),
            "size": size,
            "sha256": h.hexdigest(),
            "model_sha256": spec.model_sha256,
            "config_hash": spec.refine.hash(),
            "packets": packets,
            "stats": stats,
            "refine_seconds": seconds,
            "node": self.node,
            "pid": os.getpid(),
            "encoded_at": _now(),
            "seconds": round(elapsed, 4),
        }
        # The sidecar is the shard's completion marker: written after the shard itself.
        storage.write_bytes(spec.sidecar_uri, json.dumps(sidecar).encode())
        return ShardOutcome(
            spec.video_id, spec.index, spec.start, spec.end, size, float(sum(seconds)), False,
            self.node, os.getpid(), elapsed,
        )  # fmt: skip


# --------------------------------------------------------------------------- commit


@dataclass(frozen=True)
class CommitSpec:
    plan: VideoPlan
    ranges: tuple[tuple[int, int], ...]
    ident: ModelIdentityLite
    refine: RefineConfig
    job_id: str = "transcode"


def clean_staging(paths: OutputPaths) -> int:
    """Delete every staging object of a video (every source version). Returns the count."""
    objs = storage.list_prefix(paths.staging_root)
    for o in objs:
        storage.delete(o.uri)
    if not storage.is_s3(paths.staging_root):
        # Remove the emptied local directories too (S3 has none).
        root = storage.local_path(paths.staging_root)
        for d in sorted(root.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
    return len(objs)


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def commit_video(spec: CommitSpec) -> dict[str, Any]:
    """Assemble the stream from staged shards, then write the manifest (the commit record),
    then clean staging. Returns the manifest summary.

    Stream = shard 0 (header + packets) + shards in frame order + footer. The footer (index
    and per-frame stats) is computed from the sidecars alone; the concatenation is
    :func:`pipeline.storage.copy_concat` (server-side on S3 when part sizes allow).
    """
    plan, paths = spec.plan, spec.plan.paths
    existing = mf.read_summary(paths.manifest)
    if summary_matches(
        existing, plan.source_etag, plan.source_version, spec.ident, spec.refine
    ) and _committed(paths, existing):
        clean_staging(paths)  # a retry after the manifest was written
        assert existing is not None
        return existing
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
    header_size = int(sidecars[0]["prefix_bytes"])
    lengths = [(int(fi), int(ln)) for sc in sidecars for fi, ln in sc["packets"]]
    stats = [st for sc in sidecars for st in sc["stats"]]
    entries = index_for(header_size, lengths)
    body_end = header_size + sum(ln for _, ln in lengths)
    srcs = [shard_uri(plan.staging, s, e) for s, e in spec.ranges]
    carry_rows: list[dict[str, Any]] = []
    if plan.carry_bytes:
        carry_rows = staged_carry_rows(carry_uri(plan.staging))
        srcs.append(carry_uri(plan.staging))
        ref = CarryRef(body_end, plan.carry_bytes)
        tail = footer_bytes(entries, stats, ref) + trailer_bytes(body_end + plan.carry_bytes)
    else:
        tail = footer_bytes(entries, stats) + trailer_bytes(body_end)
    furi = footer_uri(plan.staging)
    storage.write_bytes(furi, tail)
    srcs.append(furi)
    # Un-commit an older version first, so a manifest never describes a stream it does not match.
    storage.delete(paths.manifest)
    storage.copy_concat(paths.stream, srcs)
    size = storage.stat(paths.stream).size
    if size != body_end + plan.carry_bytes + len(tail):
        raise StorageError(
            f"{paths.stream}: assembled {size} bytes, expected "
            f"{body_end + plan.carry_bytes + len(tail)}",
            hint="the staged shards changed during the commit; rerun the job",
        )
    rows = []
    for k, (sc, _) in enumerate(zip(sidecars, spec.ranges, strict=True)):
        for j, st in enumerate(sc["stats"]):
            rows.append(
                {
                    "shard": k,
                    "node": sc.get("node", ""),
                    "refine_seconds": sc["refine_seconds"][j],
                    "st": st,
                }
            )
    frame_rows = []
    for e, r in zip(entries, rows, strict=True):
        st = r["st"]
        frame_rows.append(
            {
                "video_id": plan.video_id,
                "frame_index": e.frame_index,
                "pts": int(st["pts"]),
                "byte_offset": e.offset,
                "byte_length": e.length,
                "bpp": float(st["bpp"]),
                "psnr": float(st["psnr"]),
                "psnr_y": float(st["psnr_y"]),
                "ms_ssim": float(st["ms_ssim"]),
                "rd_before": float(st["rd_before"]),
                "rd_after": float(st["rd_after"]),
                "iters": int(st["iters"]),
                "refined": bool(st["refined"]),
                "refine_seconds": float(r["refine_seconds"]),
                "shard": r["shard"],
                "node": r["node"],
            }
        )
    ident = spec.ident
    summary = {
        "format": MANIFEST_FORMAT,
        "video_id": plan.video_id,
        "source": plan.source,
        "source_etag": plan.source_etag,
        "source_version": plan.source_version,
        "source_size": plan.source_size,
        "stream": paths.stream,
        "stream_bytes": size,
        "header_bytes": header_size,
        "carry_bytes": plan.carry_bytes,
        "carried_streams": [r for r in carry_rows if r["status"] == "carried"],
        "dropped_streams": [r for r in carry_rows if r["status"] != "carried"],
        "container_version": STREAM_VERSION,
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
        "refine": spec.refine.to_json(),
        "config_hash": spec.refine.hash(),
        "shards": len(spec.ranges),
        "totals": {
            "packet_bytes": body_end - header_size,
            "bpp": _mean([r["bpp"] for r in frame_rows]),
            "psnr": _mean([r["psnr"] for r in frame_rows]),
            "ms_ssim": _mean([r["ms_ssim"] for r in frame_rows]),
            "rd_before": _mean([r["rd_before"] for r in frame_rows]),
            "rd_after": _mean([r["rd_after"] for r in frame_rows]),
            "refined_frames": sum(r["refined"] for r in frame_rows),
            "iters": sum(r["iters"] for r in frame_rows),
            "iters_per_frame": _mean([r["iters"] for r in frame_rows]),
            "refine_seconds": float(sum(r["refine_seconds"] for r in frame_rows)),
        },
        "job_id": spec.job_id,
        "committed_at": _now(),
    }
    storage.write_bytes(paths.manifest, mf.manifest_bytes(frame_rows, summary))
    storage.delete(paths.error)
    clean_staging(paths)
    return summary


def record_error(paths: OutputPaths, source: str, error: BaseException | str, job_id: str) -> None:
    """Write ``_errors/<id>.json`` for a failed video (best effort)."""
    doc = {
        "video_id": paths.video_id,
        "source": source,
        "error": str(error),
        "type": type(error).__name__ if isinstance(error, BaseException) else "Error",
        "hint": getattr(error, "hint", None),
        "job_id": job_id,
        "at": _now(),
    }
    with contextlib.suppress(Exception):
        storage.write_bytes(paths.error, json.dumps(doc, indent=1).encode())
