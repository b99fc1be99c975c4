"""Encode one shard (no Ray): decode a frame range straight from the source, code it, write
its packets and then its sidecar to staging.

:class:`ShardEncoder` is what an encoder actor holds (:mod:`cluster.actor` wraps it): one
model, or with a target quality every rate point (:mod:`pipeline.ratecontrol`). A
shard's bytes are ``header`` (shard 0 only) + its packets, exactly as ``relatent encode``
writes them; its *sidecar* (JSON, written after the shard: the completion marker) records
the shard's size and sha256, every packet's ``(frame index, length)``, the frames' footer
statistics (:meth:`pipeline.stats.FrameStats.to_stream` records) and their refinement
seconds. The commit (:mod:`cluster.commit`) builds the stream's tail from sidecars alone.

Idempotence: a staged shard whose sidecar matches the spec and whose bytes match the
sidecar's size and sha256 is reused instead of re-encoded (:func:`validate_staged`). With
``--target-kbps`` the spec's GOP budgets and first-pass rows are part of that match, and
the first pass of a shard's frames (:meth:`ShardEncoder.first_pass`, :mod:`cluster.bitrate`)
is staged and reused the same way.

Importing this module does not load torch (the codec is imported when a shard is encoded).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cluster.bitrate import load_first_pass, needs_first_pass, shard_gops, store_first_pass
from cluster.planning import SIDECAR_FORMAT, ShardSpec, utc_now
from pipeline import media, storage
from pipeline.config import RefineConfig
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
from pipeline.stats import FrameStats

#: What :func:`pipeline.ratecontrol.make_encoder` returns: a ``FrameEncoder`` (one model) or a
#: ``RateController`` (rate points); both have ``refine``, ``models`` and ``encode_groups``.
Encoder = Any

__all__ = [
    "InfoCache",
    "ShardEncoder",
    "ShardOutcome",
    "load_sidecar",
    "open_source",
    "sidecar_stats",
    "validate_staged",
]


@dataclass
class ShardOutcome:
    """What an actor reports for one shard (small: no frame data, no packets).

    ``bytes`` is the staged shard's size, ``refine_seconds`` the refinement wall time of
    its frames, ``seconds`` the wall time of the whole call (both in seconds); ``reused``
    says the staged shard of an earlier attempt was kept.
    """

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
        """Frames in the shard (``end - start``)."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """The outcome as a plain dict (what crosses the object store)."""
        return dict(self.__dict__)


# --------------------------------------------------------------------------- sidecars


def load_sidecar(spec: ShardSpec) -> dict[str, Any] | None:
    """The sidecar of a staged shard if it belongs to exactly this spec (format, source
    version, range, weights, rate points, config and, with ``--target-kbps``, the GOPs'
    budgets and first-pass rows), else ``None``.

    Raises:
        StorageError: staging cannot be read (other than the sidecar being absent).
    """
    try:
        sc = json.loads(storage.read_bytes(spec.sidecar_uri))
    except (ObjectNotFoundError, ValueError):
        return None
    ok = (
        isinstance(sc, dict)
        and sc.get("format") == SIDECAR_FORMAT
        and sc.get("fingerprint") == spec.fingerprint
        and sc.get("start") == spec.start
        and sc.get("end") == spec.end
        and sc.get("model_sha256") == spec.model_sha256
        and tuple(sc.get("rate_sha256", ())) == spec.rate_sha256
        and sc.get("config_hash") == spec.refine.hash()
        and sc.get("gop_bytes", []) == [list(g) for g in spec.gop_bytes]
        and sc.get("first_bytes", []) == [[n, list(r)] for n, r in spec.first_bytes]
        and len(sc.get("packets", ())) == spec.frames
        and len(sc.get("stats", ())) == spec.frames
    )
    return sc if ok else None


def validate_staged(spec: ShardSpec) -> dict[str, Any] | None:
    """A staged shard that is complete and intact (size and sha256 of the bytes match its
    sidecar), or ``None``. Invalid leftovers are removed.

    Raises:
        StorageError: staging cannot be read or cleaned.
    """
    sc = load_sidecar(spec)
    if sc is None:
        return None
    try:
        data = storage.read_bytes(spec.shard_uri)
    except ObjectNotFoundError:
        data = None
    if (
        data is None
        or len(data) != sc.get("size")
        or hashlib.sha256(data).hexdigest() != sc.get("sha256")
    ):
        storage.delete(spec.sidecar_uri)
        return None
    return sc


def sidecar_stats(sidecar: dict[str, Any], name: str = "sidecar") -> list[FrameStats]:
    """The frames' statistics recorded in a sidecar, with their refinement seconds.

    Raises:
        BitstreamError: a record is missing or malformed (``name`` names the sidecar).
    """
    try:
        records, seconds = sidecar["stats"], sidecar["refine_seconds"]
        return [
            replace(FrameStats.from_stream(r), refine_seconds=float(t))
            for r, t in zip(records, seconds, strict=True)
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise BitstreamError(
            f"{name}: frame statistics are malformed ({type(exc).__name__}: {exc})",
            hint="delete the staged shard and rerun the job",
        ) from exc


@dataclass(frozen=True)
class _Written:
    """What writing a shard produced: the header bytes it starts with (shard 0 only), its
    size and sha256, and its packets' ``(frame index, length)`` and frames' stats."""

    prefix_bytes: int
    size: int
    sha256: str
    packets: Sequence[tuple[int, int]]
    stats: Sequence[FrameStats]


def _sidecar(spec: ShardSpec, node: str, w: _Written, seconds: float) -> dict[str, Any]:
    """The sidecar document of a freshly encoded shard (the JSON layout on disk; with a
    target quality, ``rate_sha256``: every rate point's weights, slot order)."""
    doc = {
        "format": SIDECAR_FORMAT,
        "video_id": spec.video_id,
        "source": spec.source,
        "fingerprint": spec.fingerprint,
        "index": spec.index,
        "start": spec.start,
        "end": spec.end,
        "prefix_bytes": w.prefix_bytes,
        "size": w.size,
        "sha256": w.sha256,
        "model_sha256": spec.model_sha256,
        "config_hash": spec.refine.hash(),
        "packets": list(w.packets),
        "stats": [s.to_stream() for s in w.stats],
        "refine_seconds": [float(s.refine_seconds) for s in w.stats],
        "node": node,
        "pid": os.getpid(),
        "encoded_at": utc_now(),
        "seconds": round(seconds, 4),
    }
    if spec.rate_sha256:  # fixed-quality sidecars are as before
        doc["rate_sha256"] = list(spec.rate_sha256)
    if spec.gop_bytes:  # --target-kbps: the shares the shard was coded to
        doc["gop_bytes"] = [list(g) for g in spec.gop_bytes]
        doc["first_bytes"] = [[n, list(r)] for n, r in spec.first_bytes]
    return doc


# --------------------------------------------------------------------------- sources


class InfoCache:
    """The staged probe results (:class:`~pipeline.media.VideoInfo`) of the last ``size``
    source versions an actor encoded, so its shards do not re-read ``probe.json``."""

    def __init__(self, size: int = 8) -> None:
        self._items: OrderedDict[str, media.VideoInfo] = OrderedDict()
        self._size = size

    def get(self, spec: ShardSpec) -> media.VideoInfo:
        """The probe result of ``spec``'s source version.

        Raises:
            StorageError: the probe result is gone from staging.
            InputError: the staged probe is of another source version.
        """
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
        info = media.VideoInfo.from_dict(doc["info"])
        self._items[key] = info
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return info


@contextlib.contextmanager
def open_source(spec: ShardSpec) -> Iterator[Any]:
    """The shard's source, opened for decoding (an S3 reader, or the local path), after
    checking it is still the planned version.

    Raises:
        InputError: the source's ETag differs from the planned one.
        StorageError: the source cannot be read.
    """
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


# --------------------------------------------------------------------------- encoder


class ShardEncoder:
    """Encodes shards with the loaded models an actor holds: one model (fixed quality), or
    for specs with a target quality every rate point (``models``, any order: rate control
    numbers them by ascending lambda; :func:`pipeline.ratecontrol.rate_point_models`).
    ``node`` names the machine in sidecars and outcomes (default: the host name)."""

    def __init__(self, model: LoadedModel | Sequence[LoadedModel], node: str = "") -> None:
        models = [model] if isinstance(model, LoadedModel) else list(model)
        if not models:
            raise ConfigError("a shard encoder needs at least one model")
        #: The models, slot order (ascending lambda); ``model`` is the first (slot 0).
        self.models = sorted(models, key=lambda m: m.identity.lmbda)
        self.model = self.models[0]
        self.node = node or socket.gethostname()
        self._encoders: dict[tuple[str, float], Encoder] = {}
        self._infos = InfoCache()

    def _encoder(self, refine: RefineConfig, frame_rate: float) -> Encoder:
        """The encoder of ``refine`` for a video of ``frame_rate`` frames/s (cached per
        config and rate: ``--max-kbps`` caps GOPs in bytes per second):
        :func:`pipeline.ratecontrol.make_encoder` over every model with a target quality,
        else over the one model."""
        from pipeline.ratecontrol import make_encoder

        key = (refine.hash(), frame_rate)
        if key not in self._encoders:
            models = self.models if refine.target is not None else self.model
            warn = logging.getLogger("relatent.cluster").warning
            self._encoders[key] = make_encoder(models, refine, warn, frame_rate=frame_rate)
        return self._encoders[key]

    def _check_weights(self, spec: ShardSpec) -> None:
        """Refuse a spec planned for other weights (or another set of rate points)."""
        held = tuple(m.identity.weights_sha256 for m in self.models)
        if spec.model_sha256 != self.model.identity.weights_sha256:
            raise WeightsMismatchError(
                f"shard {spec.name} was planned for weights {spec.model_sha256[:12]}…, this "
                f"actor holds {self.model.identity.weights_sha256[:12]}…",
                hint="all actors of a job must load the same checkpoint",
            )
        if spec.refine.target is not None and spec.rate_sha256 != held:
            raise WeightsMismatchError(
                f"shard {spec.name} was planned for {len(spec.rate_sha256)} rate points "
                f"({' '.join(d[:12] for d in spec.rate_sha256)}), this actor holds "
                f"{len(held)} ({' '.join(d[:12] for d in held)})",
                hint="all actors of a targeted job must load every rate point of the same "
                "release (or the same --checkpoint)",
            )

    def _check(self, spec: ShardSpec, enc: Encoder, info: media.VideoInfo) -> None:
        """Refuse a spec this encoder cannot code into the planned bytes."""
        if enc.refine.hash() != spec.refine.hash():
            raise BitstreamError(
                f"shard {spec.name}: refine config resolves differently on this actor",
                hint="pass a resolved RefineConfig in the shard spec",
            )
        grid = enc.refine.cut_grid
        if spec.start % grid or (spec.end % grid and spec.end != spec.frame_count):
            raise ConfigError(
                f"shard {spec.name} does not start and end on the GOP/warm-start/budget grid of {grid} frames",
                hint="plan shards with cluster.planning.plan_ranges(..., grid=refine.cut_grid)",
            )

    def _batch(self, spec: ShardSpec, enc: Encoder, info: media.VideoInfo) -> int:
        """The largest batch up to ``spec.batch`` that fits this actor's memory
        (:func:`pipeline.memory.fit_batch`; the bytes do not depend on the batch).

        Raises:
            InsufficientMemoryError: one frame at a time does not fit either."""
        from pipeline.memory import fit_batch

        models = enc.models  # slot order; one model without a target
        return fit_batch(
            info.width, info.height, spec.batch, enc.refine, channels=models[0].N,
            device=str(models[0].device), name=spec.name,
            warn=logging.getLogger("relatent.cluster").warning,
        )  # fmt: skip

    def first_pass(self, spec: ShardSpec) -> list[tuple[int, list[int]]]:
        """``--target-kbps``: the first pass of the shard's frames (coded unrefined at every
        rate point, :func:`pipeline.ratecontrol.first_pass_rows`), as ``relatent encode``
        runs it over the whole video: each GOP's ``(GOP number, bytes per slot)``, in
        order. Staged (:func:`cluster.bitrate.store_first_pass`) and reused by a rerun;
        nothing else is written.

        Raises:
            WeightsMismatchError: the spec was planned for other rate points.
            ConfigError: the spec has no target bitrate, or is not cut on the GOP grid.
            CorruptSourceError: the range decoded to other frames than planned.
            InsufficientMemoryError, InputError, StorageError: as :meth:`encode`.
        """
        from pipeline.ratecontrol import first_pass_rows

        self._check_weights(spec)
        if not needs_first_pass(spec):
            raise ConfigError(f"shard {spec.name}: a first pass needs --target-kbps")
        staged = load_first_pass(spec)
        if staged is not None:
            return staged
        info = self._infos.get(spec)
        enc = self._encoder(spec.refine, float(info.frame_rate))
        self._check(spec, enc, info)
        batch = self._batch(spec, enc, info)
        first = spec.first
        with open_source(spec) as src:
            read = media.read_frames(src, first + spec.start, first + spec.end, info=info)
            table, count = first_pass_rows(
                enc, ((g.rgb, g.index - first, g.pts) for g in read), batch
            )
        rows = sorted(table.items())
        if count != spec.frames or [n for n, _ in rows] != list(shard_gops(spec)):
            raise CorruptSourceError(
                f"{spec.source}: frames {spec.start}..{spec.end} decoded to {count} frames",
                hint="the file is probably damaged; re-export it",
            )
        store_first_pass(spec, rows)
        return rows

    def encode(self, spec: ShardSpec) -> ShardOutcome:
        """Encode (or reuse) the shard ``spec`` describes; writes the shard, then its
        sidecar, to staging.

        With a target quality, the shard that starts the stream (``spec.start`` 0: the
        span's first frame) first checks the target is within reach on that frame, as
        ``relatent encode`` does (:meth:`pipeline.ratecontrol.RateController.check_reachable`).
        With ``--target-kbps`` the spec carries its GOPs' byte budgets and first-pass rows
        (the driver's first pass and allocation, :mod:`cluster.bitrate`), which the rate
        controller codes to.

        Raises:
            WeightsMismatchError: the spec was planned for other weights (or rate points).
            TargetUnreachableError: the target is above what the best rate point reaches on
                the stream's first frame (a ConfigError: exit 2); nothing is written.
            BitstreamError: the refine config resolves differently here.
            ConfigError: the shard does not start and end on the refine grid, or a
                ``--target-kbps`` spec lacks its GOPs' budgets.
            CorruptSourceError: the range decoded to other frames than planned.
            InsufficientMemoryError: one frame at a time needs more memory than the actor
                has (a larger ``spec.batch`` is made smaller instead).
            InputError: the source changed since it was planned.
            StorageError: the source or staging cannot be read or written.
        """
        t0 = time.perf_counter()
        self._check_weights(spec)
        staged = validate_staged(spec)
        if staged is not None:
            return ShardOutcome(
                spec.video_id, spec.index, spec.start, spec.end, int(staged["size"]),
                float(sum(staged.get("refine_seconds", []))), True, self.node, os.getpid(),
                time.perf_counter() - t0,
            )  # fmt: skip
        info = self._infos.get(spec)
        enc = self._encoder(spec.refine, float(info.frame_rate))
        self._check(spec, enc, info)
        if needs_first_pass(spec):  # the driver's shares of the bitrate (cluster.bitrate)
            gops = list(shard_gops(spec))
            if [n for n, _ in spec.gop_bytes] != gops or [n for n, _ in spec.first_bytes] != gops:
                raise ConfigError(
                    f"shard {spec.name}: --target-kbps and no byte budget for its GOPs",
                    hint="the driver runs the first pass and sets ShardSpec.gop_bytes",
                )
            enc.budgets = dict(spec.gop_bytes)
            enc.first_bytes = {n: list(r) for n, r in spec.first_bytes}
        written = self._write_shard(spec, enc, info)
        elapsed = time.perf_counter() - t0
        sidecar = _sidecar(spec, self.node, written, elapsed)
        # The sidecar is the shard's completion marker: written after the shard itself.
        storage.write_bytes(spec.sidecar_uri, json.dumps(sidecar).encode())
        return ShardOutcome(
            spec.video_id, spec.index, spec.start, spec.end, written.size,
            float(sum(sidecar["refine_seconds"])), False, self.node, os.getpid(), elapsed,
        )  # fmt: skip

    def _write_shard(self, spec: ShardSpec, enc: Encoder, info: media.VideoInfo) -> _Written:
        """Decode, code and write the shard's bytes (header first for shard 0), with the
        largest batch up to ``spec.batch`` that fits this actor's memory
        (:func:`pipeline.memory.fit_batch`; the bytes do not depend on the batch). The
        frames are the source's ``[first + start, first + end)``, numbered from
        ``spec.first`` as ``relatent encode --start`` numbers them. With a target quality,
        shard 0 checks the target on its first frame before anything is written.

        Raises:
            InsufficientMemoryError: one frame at a time does not fit either.
            TargetUnreachableError: the target is out of reach (shard 0 only).
        """
        from pipeline.codec import encode_frames, make_header

        models = enc.models  # slot order; one model without a target
        batch = self._batch(spec, enc, info)

        h = hashlib.sha256()
        packets: list[tuple[int, int]] = []
        stats: list[FrameStats] = []
        prefix = b""
        if spec.start == 0:
            prefix = make_header(
                models[0],
                info,
                enc.refine,
                frame_count=spec.frame_count,
                tags_carried=spec.tags_carried,
                rate_points=models,
            ).to_bytes()
        size = 0
        with open_source(spec) as src:
            first = spec.first
            frames: Iterator[Any] = iter(
                media.read_frames(src, first + spec.start, first + spec.end, info=info)
            )
            if spec.start == 0 and enc.refine.target is not None and not needs_first_pass(spec):
                # as `relatent encode`: the stream's first frame, before anything is written
                # (a bitrate was checked by the driver's allocation instead)
                head = next(frames, None)
                if head is not None:
                    enc.check_reachable(head.rgb, spec.source)
                    frames = itertools.chain([head], frames)
            with storage.open_write(spec.shard_uri) as f:
                if prefix:
                    f.write(prefix)
                    h.update(prefix)
                    size += len(prefix)
                for e in encode_frames(
                    enc, ((g.rgb, g.index - first, g.pts) for g in frames), batch
                ):
                    pb = e.packet.to_bytes()
                    f.write(pb)
                    h.update(pb)
                    size += len(pb)
                    packets.append((e.packet.frame_index, len(pb)))
                    stats.append(e.stats)
                if len(packets) != spec.frames or [p[0] for p in packets] != list(
                    range(spec.start, spec.end)
                ):
                    raise CorruptSourceError(
                        f"{spec.source}: frames {spec.start}..{spec.end} decoded to "
                        f"{len(packets)} frames",
                        hint="the file is probably damaged; re-export it",
                    )
        return _Written(len(prefix), size, h.hexdigest(), packets, stats)
