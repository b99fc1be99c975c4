"""Configuration of a distributed transcode job, and the plain functions that turn it into
Ray resource arguments.

Everything here is a frozen dataclass with validated fields, so a job is a value: it can be
logged, hashed and shipped to Ray workers. No Ray import happens in this module, so the
resource mapping is unit-tested without a cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import RefineConfig
from pipeline.errors import ConfigError

#: File extensions listed as videos by default by a catalog run (case-insensitive).
VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
    ".mxf", ".flv", ".wmv", ".y4m",
)  # fmt: skip

__all__ = [
    "VIDEO_SUFFIXES",
    "ClusterConfig",
    "ModelSpec",
    "TranscodeJob",
    "actor_device",
    "actor_options",
    "helper_task_options",
]


@dataclass(frozen=True)
class ModelSpec:
    """Which model the actors load. ``None`` fields mean the shipped defaults.

    Attributes:
        arch: architecture id (``bmshj2018-factorized``, ...); inferred from a checkpoint.
        quality: rate point of the shipped weights, a midpoint (``2.5``) included (or the
            quality recorded for a checkpoint).
        checkpoint: a CompressAI state dict (path, ``file://`` or ``s3://`` URI).
        weights_sha256: when set, actors refuse weights with another digest (the driver
            fills it in after loading the model once, so every actor provably runs the same
            weights).
        lmbda: the model's training lambda as resolved by the driver.
        rate_points: with a target quality (``--target-psnr``, ``--target-msssim``): the
            weights sha256 of every rate point the actors load, in slot order (ascending
            lambda; :func:`cluster.identity.pin_model` fills it in). The actors then load
            every rate point (:func:`pipeline.ratecontrol.rate_point_models`) and refuse
            other weights. Empty: the one model above (fixed quality).
    """

    arch: str | None = None
    quality: int | float | None = None
    checkpoint: str | None = None
    weights_sha256: str | None = None
    lmbda: float | None = None
    rate_points: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterConfig:
    """How the actor pool is shaped and how hard the driver tries.

    Attributes:
        actors: number of encoder actors (one pool for every video of the job).
        cpus_per_actor: Ray ``num_cpus`` of an actor (one core per actor: the encoder runs
            one torch thread for byte determinism, parallelism comes from actors).
        gpus_per_actor: Ray ``num_gpus`` of an actor; fractions share a GPU (0.25 = four
            actors per GPU). 0 means CPU actors.
        memory_per_actor: Ray ``memory`` reservation in bytes (0: none).
        max_inflight: shard tasks queued on one actor at a time (>= 2 keeps an actor busy
            while the driver hands out the next shard; a small bound keeps memory flat).
        max_attempts: attempts per shard (actor deaths and transient errors) before its
            video fails.
        max_replacements: how many replacement actors the driver may start in total after
            actor deaths (node loss, OOM kills, crashes).
        actor_start_timeout: seconds the driver waits for at least one actor to be ready
            (model loaded) before giving up on the job's remaining videos.
        torch_threads: intra-op threads of an actor's torch (the encoder itself forces 1).
        device: ``auto`` (CUDA when the actor has a GPU), ``cpu`` or ``cuda``.
        prepare_inflight: videos probed concurrently (probe tasks read the source's packets).
        commit_inflight: videos committed concurrently.
    """

    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    memory_per_actor: int = 0
    max_inflight: int = 2
    max_attempts: int = 3
    max_replacements: int = 8
    actor_start_timeout: float = 600.0
    torch_threads: int = 1
    device: str = "auto"
    prepare_inflight: int = 4
    commit_inflight: int = 4

    def validate(self) -> ClusterConfig:
        """``self``, once every field is checked.

        Raises:
            ConfigError: a field is out of range (the message names the option).
        """
        if self.actors < 1:
            raise ConfigError(f"--actors {self.actors} must be at least 1", hint="use 1 or more")
        if self.cpus_per_actor < 0 or self.gpus_per_actor < 0 or self.memory_per_actor < 0:
            raise ConfigError(
                "actor resources must not be negative",
                hint="check --gpus-per-actor / --cpus-per-actor",
            )
        if self.gpus_per_actor > 1 and self.gpus_per_actor != int(self.gpus_per_actor):
            raise ConfigError(
                f"--gpus-per-actor {self.gpus_per_actor}: above 1 it must be a whole number",
                hint="Ray only allows fractional GPUs below 1 (e.g. 0.25, 0.5, 1, 2)",
            )
        if self.max_inflight < 1:
            raise ConfigError(
                f"--max-inflight {self.max_inflight} must be at least 1", hint="2 is a good value"
            )
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts {self.max_attempts} must be at least 1")
        if self.max_replacements < 0 or self.actor_start_timeout <= 0:
            raise ConfigError("max_replacements must be >= 0 and actor_start_timeout > 0")
        if self.torch_threads < 1:
            raise ConfigError(f"torch_threads {self.torch_threads} must be at least 1")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device {self.device!r} is unknown", hint="use auto, cpu or cuda")
        if self.prepare_inflight < 1 or self.commit_inflight < 1:
            raise ConfigError("prepare_inflight and commit_inflight must be at least 1")
        return self

    @property
    def slots(self) -> int:
        """Shard tasks the whole pool holds at once."""
        return self.actors * self.max_inflight


@dataclass(frozen=True)
class TranscodeJob:
    """One distributed transcode: every source in ``sources`` becomes a stream + manifest
    under ``out``.

    Attributes:
        sources: video URIs (local paths, ``file://`` or ``s3://``).
        out: output prefix (local folder, ``file://`` or ``s3://`` prefix).
        model: the model the actors load.
        refine: refinement settings (its resolved form is hashed into the output keys).
        shard_frames: target frames per shard.
        keyframe_slack: a cut may move by up to this fraction of ``shard_frames`` to land on
            a keyframe (so each shard decodes from its own keyframe).
        batch: frames refined together inside an actor (does not change the bytes).
        cluster: the actor pool.
        carry: copy the sources' other streams (audio, subtitles) into each stream's carry
            section, like ``relatent encode`` does by default.
        drop_broken: a corrupt audio stream is left out of the carry section (a warning,
            and a ``dropped_streams`` record in the manifest) instead of failing its video.
        video_stream: the number of each source's video stream to code (``--video-stream``;
            None: the default-flagged, then the largest; the others are named in warnings).
        start: first source frame to code (``--start``), as ``relatent encode``.
        end: end source frame, exclusive (``--end``; None: the last frame). A span
            (``start`` > 0 or ``end`` set) codes source frames ``[start, end)`` renumbered
            from 0, exactly as ``relatent encode --start --end`` does, and enters the output
            key (:func:`cluster.planning.output_key`).
        job_id: free-form label used in logs and metric tags.
        min_psnr: the quality floor (dB, RGB PSNR; ``--min-psnr``): frames below it are
            flagged in the manifest (``below_min_psnr``) and named in a warning. It does not
            change the bytes, so it is not part of the output key.
        strict: with ``min_psnr``, a video with frames below the floor fails
            (:class:`~pipeline.errors.QualityFloorError`, exit 9) and nothing of it is
            committed (``--strict``).
    """

    sources: tuple[str, ...]
    out: str
    model: ModelSpec = field(default_factory=ModelSpec)
    refine: RefineConfig = field(default_factory=RefineConfig)
    shard_frames: int = 32
    keyframe_slack: float = 0.5
    batch: int = 4
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    carry: bool = True
    drop_broken: bool = False
    job_id: str = "transcode"
    video_stream: int | None = None
    start: int = 0
    end: int | None = None
    min_psnr: float | None = None
    strict: bool = False

    def validate(self) -> TranscodeJob:
        """``self``, once every field (the refine and cluster configs too) is checked.

        Raises:
            ConfigError: no sources, a source listed twice (by any spelling,
                :func:`cluster.planning.canonical_source`), an empty ``out``, an empty or
                negative frame range (``start``/``end``, as
                :func:`pipeline.media.check_range` words it), a target quality with a
                fixed ``model.quality``, ``strict`` without ``min_psnr``, or a field out of
                range.
        """
        if not self.sources:
            raise ConfigError("no sources given", hint="pass one or more video paths or URIs")
        from cluster.planning import canonical_source  # planning imports storage

        seen: dict[str, str] = {}
        for src in self.sources:
            canon = canonical_source(src)
            twin = seen.get(canon)
            seen[canon] = src
            if twin is not None:
                raise ConfigError(
                    f"the same source is listed twice ({twin!r} and {src!r})",
                    hint="list every video once per job",
                )
        if not self.out:
            raise ConfigError("--out is empty", hint="pass an output folder or s3:// prefix")
        if self.shard_frames < 1:
            raise ConfigError(
                f"--shard-frames {self.shard_frames} must be at least 1", hint="e.g. 32"
            )
        if not 0 <= self.keyframe_slack < 1:
            raise ConfigError(f"keyframe_slack {self.keyframe_slack} must be in [0, 1)")
        if self.batch < 1:
            raise ConfigError(f"batch {self.batch} must be at least 1")
        if self.video_stream is not None and self.video_stream < 0:
            raise ConfigError(
                f"--video-stream {self.video_stream} must be a stream number (0 or more)"
            )
        if self.start < 0:
            raise ConfigError(
                f"frame range start {self.start} is negative", hint="frame indices start at 0"
            )
        if self.end is not None and self.start >= self.end:
            raise ConfigError(
                f"frame range [{self.start}, {self.end}) is empty",
                hint="start must be smaller than end",
            )
        self.refine.validate()
        self._validate_quality()
        self.cluster.validate()
        return self

    def _validate_quality(self) -> None:
        """The target (quality or bitrate) and floor: as ``relatent encode`` checks them
        (:func:`jobs.refine_options.check_targets`, :meth:`RefineConfig.validate`)."""
        target = self.refine.target
        if target is not None and self.model.quality is not None:
            raise ConfigError(
                f"a target quality and --quality {self.model.quality} both set the rate",
                hint="drop --quality: rate control chooses each GOP's rate point",
            )
        if self.min_psnr is not None and not (
            math.isfinite(self.min_psnr) and 0 < self.min_psnr <= 100
        ):
            raise ConfigError(
                f"--min-psnr {self.min_psnr} must be a number of dB in (0, 100]",
                hint="e.g. --min-psnr 28",
            )
        if self.strict and self.min_psnr is None:
            raise ConfigError(
                "--strict fails a video below the quality floor, and no --min-psnr is given",
                hint="add --min-psnr DB, or drop --strict",
            )


def actor_options(cfg: ClusterConfig) -> dict[str, Any]:
    """Ray ``.options(...)`` of an encoder actor.

    ``max_restarts`` stays 0: the driver replaces dead actors itself (a replacement can land
    on any live node, and in-flight shards are requeued by the driver with bounded
    attempts). ``max_task_retries`` stays 0 for the same reason: retries are the driver's
    decision, not Ray's silent at-least-once. Shard work is idempotent anyway.

    Raises:
        ConfigError: ``cfg`` is invalid.
    """
    cfg.validate()
    opts: dict[str, Any] = {
        "num_cpus": cfg.cpus_per_actor,
        "max_restarts": 0,
        "max_task_retries": 0,
        "max_concurrency": 1,
    }
    if cfg.gpus_per_actor:
        opts["num_gpus"] = cfg.gpus_per_actor
    if cfg.memory_per_actor:
        opts["memory"] = cfg.memory_per_actor
    return opts


def helper_task_options() -> dict[str, Any]:
    """Ray ``.options(...)`` of the probe and commit tasks: I/O-bound, so they take no CPU
    slot (the actors hold the cores) and are retried by Ray if their worker dies (they are
    idempotent)."""
    return {"num_cpus": 0, "max_retries": 2}


def actor_device(cfg: ClusterConfig, cuda_available: bool) -> str:
    """The torch device an actor uses: CUDA only when it reserved a GPU and one is there.

    Raises:
        ConfigError: ``cfg.device`` asks for CUDA and the actor sees none.
    """
    if cfg.device == "cpu":
        return "cpu"
    if cfg.device.startswith("cuda"):
        if not cuda_available:
            raise ConfigError(
                f"device {cfg.device!r} requested but the actor sees no CUDA device",
                hint="use --gpus-per-actor > 0 on a GPU node, or device auto/cpu",
            )
        return cfg.device
    return "cuda" if cfg.gpus_per_actor > 0 and cuda_available else "cpu"
