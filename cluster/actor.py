"""Ray wrappers: the encoder actor and the prepare/commit tasks.

The actor loads the model once in ``__init__`` (with a target quality every rate point of
the job, :attr:`cluster.config.ModelSpec.rate_points`) and warms it up, then encodes shards
with :class:`cluster.shard.ShardEncoder`. It opens the source itself and writes the shard
to staging; only a :class:`~cluster.shard.ShardOutcome` (a few numbers) travels back. With
``--target-kbps`` it also runs the first pass of a shard's frames before any shard of the
video is encoded (:mod:`cluster.bitrate`); only each GOP's bytes per rate point travel back. The
tasks wrap :func:`cluster.prepare.prepare_video` and :func:`cluster.commit.commit_video`.
Every piece of work is a plain function or class of those modules, tested without Ray.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import ray

from cluster.commit import CommitSpec, commit_video
from cluster.config import ClusterConfig, ModelSpec, actor_device
from cluster.identity import check_rate_points, slot_order
from cluster.planning import ShardSpec, VideoPlan
from cluster.prepare import prepare_video
from cluster.shard import ShardEncoder
from pipeline.config import RefineConfig
from pipeline.models import LoadedModel, ModelIdentity

__all__ = ["EncoderActor", "RemoteEncoderActor", "commit_task", "load_models", "prepare_task"]

_metrics: dict[str, Any] = {}


def _counters() -> dict[str, Any]:
    """Ray metrics (exported by every node's metrics agent for Prometheus to scrape)."""
    if not _metrics:
        from ray.util.metrics import Counter

        tags = ("job",)
        _metrics["frames"] = Counter(
            "relatent_frames_encoded", description="frames encoded by actors", tag_keys=tags
        )
        _metrics["reused"] = Counter(
            "relatent_frames_reused", description="frames of reused staged shards", tag_keys=tags
        )
        _metrics["refine_seconds"] = Counter(
            "relatent_refine_seconds", description="seconds spent refining latents", tag_keys=tags
        )
        _metrics["bytes"] = Counter(
            "relatent_bytes_written", description="shard bytes written to staging", tag_keys=tags
        )
    return _metrics


class EncoderActor:
    """Holds one fixed model, or every rate point of a job with a target quality (loaded
    once, :func:`load_models`); encodes shards on request.

    Raises:
        ModelError: the model cannot be loaded, or its weights are not ``model``'s
            pinned ``weights_sha256`` (or, with rate points, ``rate_points``; raised by
            ``__init__``).
        ConfigError: ``cfg`` asks for a CUDA device the actor does not see.
    """

    def __init__(self, model: ModelSpec, cfg: ClusterConfig, job_id: str = "transcode") -> None:
        import torch

        t0 = time.perf_counter()
        torch.set_num_threads(cfg.torch_threads)  # this actor's own process
        self.device = actor_device(cfg, torch.cuda.is_available())
        self.models = load_models(model, self.device)
        self.model = self.models[0]
        try:
            self.node = ray.get_runtime_context().get_node_id()
        except Exception:  # pragma: no cover - outside Ray
            self.node = socket.gethostname()
        self.job_id = job_id
        self.encoder = ShardEncoder(self.models, node=self.node)
        self._warm_up()
        self.load_seconds = time.perf_counter() - t0
        self.shards = 0

    def _warm_up(self) -> None:
        """One tiny encode per model, so the first real shard does not pay for lazy
        initialisation."""
        import numpy as np

        from pipeline.codec import FrameEncoder

        rgb = np.full((64, 64, 3), 0.5, dtype=np.float32)
        for m in self.models:
            FrameEncoder(m, RefineConfig(iters=1, tol=0)).encode([rgb], [0], [0])

    def ready(self) -> dict[str, Any]:
        """Where the actor runs and what it loaded (pid, node, host, device, weights
        sha256 (slot 0's), the rate points' qualities when there are several, model load
        seconds): answered once ``__init__`` finished."""
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "node": self.node,
            "host": socket.gethostname(),
            "device": str(self.device),
            "weights_sha256": self.model.identity.weights_sha256,
            "load_seconds": round(self.load_seconds, 3),
        }
        if len(self.models) > 1:
            info["rate_points"] = [m.identity.quality for m in self.models]
        return info

    def encode_shard(self, spec: ShardSpec) -> dict[str, Any]:
        """Encode one shard (:meth:`cluster.shard.ShardEncoder.encode`, whose errors it
        raises); returns its :class:`~cluster.shard.ShardOutcome` as a dict."""
        out = self.encoder.encode(spec)
        self.shards += 1
        try:
            m = _counters()
            tags = {"job": self.job_id}
            if out.reused:
                m["reused"].inc(out.frames, tags=tags)
            else:
                m["frames"].inc(out.frames, tags=tags)
                m["refine_seconds"].inc(out.refine_seconds, tags=tags)
                m["bytes"].inc(out.bytes, tags=tags)
        except Exception:  # metrics must never fail a shard
            pass
        return out.to_dict()

    def first_pass(self, spec: ShardSpec) -> list[tuple[int, list[int]]]:
        """``--target-kbps``: the first pass of one shard's frames
        (:meth:`cluster.shard.ShardEncoder.first_pass`, whose errors it raises): each GOP's
        ``(GOP number, bytes per rate point)``, a few numbers per GOP."""
        return self.encoder.first_pass(spec)


RemoteEncoderActor = ray.remote(EncoderActor)


def load_models(model: ModelSpec, device: str) -> list[LoadedModel]:
    """What an actor of a job with ``model`` loads, on ``device``: with ``rate_points``,
    every rate point (:func:`pipeline.ratecontrol.rate_point_models`, slot order) checked
    against the pinned digests; else the one model, checked against ``weights_sha256``.

    Raises:
        ModelError: the weights cannot be loaded or are not the pinned ones.
        StorageError: a checkpoint cannot be read.
    """
    from pipeline.models import load_model

    if model.rate_points:
        from pipeline.ratecontrol import rate_point_models

        models = slot_order(rate_point_models(model.arch, model.checkpoint, device=device))
        check_rate_points(model, models)
        return models
    return [
        load_model(
            model.arch, model.quality, model.checkpoint, expected_sha256=model.weights_sha256,
            lmbda=model.lmbda, device=device,
        )
    ]  # fmt: skip


def _prepare(
    source: str,
    out: str,
    ident: ModelIdentity,
    refine: RefineConfig,
    carry: bool = True,
    drop_broken: bool = False,
    video_stream: int | None = None,
    start: int = 0,
    end: int | None = None,
) -> tuple[VideoPlan, list[str]]:
    """The plan of the frames ``[start, end)``, and the warnings about streams left out (of
    the carry section, or video streams not coded; the driver logs them: a task's own log
    lines stay on its node)."""
    warnings: list[str] = []
    plan = prepare_video(
        source, out, ident, refine, carry, drop_broken, warn=warnings.append,
        video_stream=video_stream, start=start, end=end,
    )  # fmt: skip
    return plan, warnings


def _commit(spec: CommitSpec) -> dict[str, Any]:
    """The manifest summary of the committed video (:func:`cluster.commit.commit_video`)."""
    return commit_video(spec)


prepare_task = ray.remote(_prepare)
commit_task = ray.remote(_commit)
