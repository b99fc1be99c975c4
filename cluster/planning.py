"""Shard planning: deterministic output keys, staging layout and frame-range cuts.

Layout under the job's ``out`` prefix (``<id>`` = ``<source stem>-<12 hex key>``)::

    <out>/<id>.rlv                              the committed stream
    <out>/<id>.manifest.parquet                 the commit record (written last)
    <out>/_errors/<id>.json                     why the last attempt at <id> failed
    <out>/_staging/<id>/<fp>/probe.json         VideoInfo of the source (frame pts, keyframes)
    <out>/_staging/<id>/<fp>/shard-<s>-<e>.rlvs packets of frames [s, e) (shard 0: header first)
    <out>/_staging/<id>/<fp>/shard-<s>-<e>.json sidecar: sha256, packet lengths, frame stats
    <out>/_staging/<id>/<fp>/carry.bin          the carry section (the source's other streams)
    <out>/_staging/<id>/<fp>/footer.bin         index + stats + trailer, made at commit

The key is a digest of (the source's canonical identity, model weights and tables, resolved
refine config, carry setting, container version; the frame span, the video stream and,
with a target quality, every rate point's weights only when given), so the same job always
writes the same names, however the source was spelled (:func:`canonical_source`: ``clip.mp4``,
``./clip.mp4``, ``/abs/clip.mp4`` and ``file:///abs/clip.mp4`` are one video). ``fp``
adds the source's ETag/version, so staged shards of an older version of a source are never
reused.

Torch-free and Ray-free: the model enters only as its
:class:`~pipeline.models.ModelIdentity` (:func:`cluster.identity.resolve_model`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any

from pipeline import storage
from pipeline.bitstream import VERSION as STREAM_VERSION
from pipeline.config import RefineConfig
from pipeline.errors import ConfigError, EmptySourceError
from pipeline.models import ModelIdentity

__all__ = [
    "ERRORS_DIR",
    "MANIFEST_FORMAT",
    "MANIFEST_FORMATS",
    "SHARD_SUFFIX",
    "SIDECAR_FORMAT",
    "STAGING_DIR",
    "OutputPaths",
    "ShardSpec",
    "VideoPlan",
    "canonical_source",
    "carry_uri",
    "footer_uri",
    "output_key",
    "plan_ranges",
    "probe_uri",
    "shard_uri",
    "sidecar_uri",
    "source_stem",
    "staging_fingerprint",
    "utc_now",
    "video_id",
]

STAGING_DIR = "_staging"
ERRORS_DIR = "_errors"
SHARD_SUFFIX = ".rlvs"
SIDECAR_FORMAT = "relatent-shard/1"
#: The manifest format written: version 2 added the per-frame columns ``lmbda``,
#: ``rate_point`` and ``below_min_psnr`` and the summary's ``totals.psnr_min``/``kbps``,
#: ``model.rate_points``, ``target`` and ``min_psnr``; version 3 made ``rate_point`` a
#: float (a midpoint rate point is a half step) (docs/operations-distributed.md).
MANIFEST_FORMAT = "relatent-manifest/3"
#: The manifest formats read as commit records: a video committed with an earlier version
#: stays current (its stream is the same; its manifest lacks the new columns or types).
MANIFEST_FORMATS = ("relatent-manifest/1", "relatent-manifest/2", MANIFEST_FORMAT)


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second: the timestamp of every record a job
    writes (sidecars, manifest summaries, error records)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _digest(obj: Any, n: int = 12) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def source_stem(uri: str) -> str:
    """A safe, readable name for a source: its file name without the extension."""
    name = posixpath.basename(uri.rstrip("/")) or "video"
    stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "video"
    return stem[:80]


def canonical_source(uri: str) -> str:
    """The one spelling of a source that names its output: a local path or ``file://`` URI
    becomes the absolute path with symlinks resolved (:func:`os.path.realpath`, relative
    to the current directory); an ``s3://`` URI becomes ``s3://bucket/key`` with a
    lower-case scheme and a normalised key (no ``//``, ``.`` or ``..`` parts). An already
    canonical spelling is returned unchanged, so its output names stay what they were.

    Raises:
        ConfigError: an unsupported scheme, or a ``file://`` URI naming a host.
    """
    if storage.is_s3(uri):
        bucket, _, key = uri[5:].partition("/")
        return f"s3://{bucket}/{posixpath.normpath('/' + key).lstrip('/')}"
    return os.path.realpath(storage.local_path(uri))


def output_key(
    source: str,
    model: ModelIdentity,
    refine: RefineConfig,
    carry: bool = True,
    video_stream: int | None = None,
    start: int = 0,
    end: int | None = None,
) -> str:
    """12 hex digits from (the source's :func:`canonical_source`, model, resolved config,
    carry, container version, the ``--video-stream`` choice when one is made, the frame
    span ``[start, end)`` when one is given: ``start`` > 0 or ``end`` set, and with a
    target quality every rate point's weights and tables, in slot order: ``model`` a
    :class:`cluster.identity.RatePointsIdentity`).

    Raises:
        ConfigError: ``source`` has an unsupported scheme.
    """
    doc: dict[str, object] = {
        "carry": carry,
        "source": canonical_source(source),
        "arch": model.arch,
        "quality": model.quality,
        "lmbda": model.lmbda,
        "weights": model.weights_sha256,
        "tables": model.tables_sha256,
        "refine": refine.hash(),
        "container": STREAM_VERSION,
    }
    if video_stream is not None:  # the default choice keeps the keys of earlier runs
        doc["video_stream"] = video_stream
    if start or end is not None:  # the whole video keeps the keys of earlier runs
        doc["span"] = [start, end]
    points = getattr(model, "rate_points", ())
    if points:  # a fixed model keeps the keys of earlier runs
        doc["rate_points"] = [[p.weights_sha256, p.tables_sha256] for p in points]
    return _digest(doc)


def video_id(
    source: str,
    model: ModelIdentity,
    refine: RefineConfig,
    carry: bool = True,
    video_stream: int | None = None,
    start: int = 0,
    end: int | None = None,
) -> str:
    """The output name of ``source``: ``<source stem>-<output key>`` (the same for every
    spelling of the source, :func:`canonical_source`; a frame span ``[start, end)``
    enters the key only when given, :func:`output_key`).

    Raises:
        ConfigError: ``source`` has an unsupported scheme.
    """
    key = output_key(source, model, refine, carry, video_stream, start, end)
    return f"{source_stem(source)}-{key}"


@dataclass(frozen=True)
class OutputPaths:
    """Where one video's outputs and staging live."""

    video_id: str
    stream: str
    manifest: str
    error: str
    staging_root: str  # every staging object of this video (all source versions)

    @classmethod
    def for_video(cls, out: str, vid: str) -> OutputPaths:
        """The paths of video ``vid`` under the output prefix ``out``."""
        return cls(
            video_id=vid,
            stream=storage.join(out, f"{vid}.rlv"),
            manifest=storage.join(out, f"{vid}.manifest.parquet"),
            error=storage.join(out, ERRORS_DIR, f"{vid}.json"),
            staging_root=storage.join(out, STAGING_DIR, vid) + "/",
        )

    def staging(self, fingerprint: str) -> str:
        """The staging prefix of one source version (``fingerprint``)."""
        return storage.join(self.staging_root, fingerprint) + "/"


def staging_fingerprint(key: str, etag: str, version: str | None) -> str:
    """12 hex digits from the output key and the source's ETag and version id."""
    return _digest({"key": key, "etag": etag, "version": version})


def shard_uri(staging: str, start: int, end: int) -> str:
    """The staged packets of frames ``[start, end)``."""
    return storage.join(staging, f"shard-{start:09d}-{end:09d}{SHARD_SUFFIX}")


def sidecar_uri(staging: str, start: int, end: int) -> str:
    """The sidecar (completion marker) of the shard of frames ``[start, end)``."""
    return storage.join(staging, f"shard-{start:09d}-{end:09d}.json")


def probe_uri(staging: str) -> str:
    """The staged probe result (``VideoInfo``, source ETag, carry section size)."""
    return storage.join(staging, "probe.json")


def carry_uri(staging: str) -> str:
    """The staged carry section (:func:`pipeline.bitstream.carry_bytes`)."""
    return storage.join(staging, "carry.bin")


def footer_uri(staging: str) -> str:
    """The stream's tail (:func:`pipeline.bitstream.stream_tail`), made at commit."""
    return storage.join(staging, "footer.bin")


# --------------------------------------------------------------------------- cuts


def plan_ranges(
    frame_count: int,
    keyframes: Sequence[int],
    shard_frames: int,
    slack: float = 0.5,
    grid: int = 1,
) -> list[tuple[int, int]]:
    """Cut ``[0, frame_count)`` into shards of about ``shard_frames`` frames.

    Each cut aims at ``previous cut + shard_frames``; if a keyframe lies within
    ``slack * shard_frames`` of that target the cut moves to the nearest such keyframe (ties:
    the earlier one), so the shard decodes from its own keyframe. Without a keyframe in
    reach the cut stays on target (the actor then decodes from the previous keyframe and
    discards the frames before its range). The last shard takes the remainder and may be up
    to ``(1 + slack) * shard_frames`` long, so no tiny tail shard is made.

    With ``grid`` K > 1 (warm-start chains or budget groups, :attr:`RefineConfig.uses_grid`)
    every cut is a multiple of K, so no chain or group is split and the bytes do not depend
    on the layout: among the multiples of K within reach, the keyframes nearest the target
    win, then the multiple nearest the target (ties: the earlier); with none in reach, the
    multiple of K nearest the target that lies past the previous cut. Choosing K equal to
    (or a divisor of) the source's GOP length makes every cut a keyframe too.

    Returns ``(start, end)`` frame ranges covering ``[0, frame_count)`` in order.

    Raises:
        EmptySourceError: ``frame_count`` < 1.
        ConfigError: ``shard_frames`` or ``grid`` < 1.
    """
    if frame_count < 1:
        raise EmptySourceError(
            "the video has no frames", hint="check the source; it decodes to zero frames"
        )
    if shard_frames < 1:
        raise ConfigError(f"shard_frames {shard_frames} must be at least 1")
    if grid < 1:
        raise ConfigError(f"grid {grid} must be at least 1")
    kf = sorted({int(k) for k in keyframes if 0 < int(k) < frame_count})
    lo_off = max(1, math.ceil(shard_frames * (1 - slack)))
    hi_off = max(shard_frames, math.floor(shard_frames * (1 + slack)))
    cuts = [0]
    while frame_count - cuts[-1] > hi_off:
        prev = cuts[-1]
        target = prev + shard_frames
        if grid == 1:
            near = [k for k in kf if prev + lo_off <= k <= prev + hi_off]
            cuts.append(min(near, key=lambda k: (abs(k - target), k)) if near else target)
            continue
        first = -(-(prev + lo_off) // grid) * grid
        points = list(range(first, prev + hi_off + 1, grid))
        near = [k for k in points if k in kf] or points
        if near:
            cut = min(near, key=lambda k: (abs(k - target), k))
        else:  # no multiple of K in reach: the one nearest the target past the cut
            below, above = (target // grid) * grid, -(-target // grid) * grid
            cut = below if below > prev and target - below <= above - target else above
        if cut >= frame_count:
            break
        cuts.append(cut)
    cuts.append(frame_count)
    return list(itertools.pairwise(cuts))


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ShardSpec:
    """Everything an actor needs for one shard - and nothing heavy: no frames, no pts list
    (the actor reads the probe result from ``probe``).

    ``start``/``end``/``frame_count`` count the coded frames (from 0); ``first`` is the
    source frame the stream starts at (``--start``), so the shard codes source frames
    ``[first + start, first + end)``."""

    video_id: str
    source: str
    source_etag: str
    source_version: str | None
    probe: str
    staging: str
    fingerprint: str
    index: int
    start: int
    end: int
    frame_count: int
    refine: RefineConfig  # resolved (cluster.identity.job_refine)
    model_sha256: str
    batch: int = 4
    #: Whether the stream carries the source's other streams and tags (``--no-carry``:
    #: False; the header then records the container title itself, as ``relatent encode``).
    tags_carried: bool = True
    #: The source frame that is the stream's frame 0 (``--start``; 0: the whole video).
    first: int = 0
    #: With a target quality: the weights sha256 of every rate point, slot order (the
    #: actor's must be these; ``model_sha256`` is slot 0's). Empty: one model.
    rate_sha256: tuple[str, ...] = ()
    #: With ``--target-kbps``: each GOP of the shard's byte budget, ``(GOP number, bytes)``
    #: (the driver's allocation over the whole video, :mod:`cluster.bitrate`), and its
    #: first-pass bytes at each rate point, ``(GOP number, (bytes per slot))``. Both are
    #: in the shard's sidecar: a staged shard is reused only for the same ones. Empty:
    #: no bitrate target (or not allocated yet).
    gop_bytes: tuple[tuple[int, int], ...] = ()
    first_bytes: tuple[tuple[int, tuple[int, ...]], ...] = ()

    @property
    def frames(self) -> int:
        """Frames in the shard."""
        return self.end - self.start

    @property
    def shard_uri(self) -> str:
        """Where the shard's packets are staged."""
        return shard_uri(self.staging, self.start, self.end)

    @property
    def sidecar_uri(self) -> str:
        """Where the shard's sidecar is staged."""
        return sidecar_uri(self.staging, self.start, self.end)

    @property
    def name(self) -> str:
        """``<video id>[start:end]``, for messages."""
        return f"{self.video_id}[{self.start}:{self.end}]"


@dataclass(frozen=True)
class VideoPlan:
    """What the probe step found about one source, enough to cut and to commit it.

    With a frame span (``--start``/``--end``), ``frame_count`` is the span's and
    ``keyframes`` are the source keyframes inside it, counted from its first frame
    ``first`` (the source frame coded as frame 0)."""

    source: str
    video_id: str
    paths: OutputPaths
    source_etag: str
    source_version: str | None
    source_size: int
    fingerprint: str
    staging: str
    frame_count: int
    keyframes: tuple[int, ...]
    width: int
    height: int
    carry_bytes: int = 0  # size of the staged carry section (0: the stream has none)
    carried: bool = True  # False with --no-carry
    first: int = 0  # the source frame coded as frame 0 (--start)
    frame_rate: Fraction | None = None  # frames per second (the manifest's kbps)
    skipped: bool = False  # a matching committed manifest exists
    summary: dict[str, Any] | None = None  # of the committed manifest when skipped

    def shards(
        self,
        shard_frames: int,
        slack: float,
        refine: RefineConfig,
        model_sha256: str,
        batch: int,
        rate_sha256: Sequence[str] = (),
    ) -> list[ShardSpec]:
        """The video's shards: :func:`plan_ranges` on the refine grid (``refine`` resolved;
        ``model_sha256``: the weights the actors must hold, ``rate_sha256`` every rate
        point's with a target quality; ``batch``: frames refined together).

        Raises:
            ConfigError: ``shard_frames`` < 1.
        """
        return [
            ShardSpec(
                video_id=self.video_id,
                source=self.source,
                source_etag=self.source_etag,
                source_version=self.source_version,
                probe=probe_uri(self.staging),
                staging=self.staging,
                fingerprint=self.fingerprint,
                index=i,
                start=s,
                end=e,
                frame_count=self.frame_count,
                refine=refine,
                model_sha256=model_sha256,
                batch=batch,
                tags_carried=self.carried,
                first=self.first,
                rate_sha256=tuple(rate_sha256),
            )
            for i, (s, e) in enumerate(
                plan_ranges(
                    self.frame_count,
                    self.keyframes,
                    shard_frames,
                    slack,
                    grid=refine.cut_grid,
                )
            )
        ]
