"""The driver: plans videos, feeds shards to one pool of encoder actors, commits videos.

It assumes Ray is already initialised (``ray.init`` belongs to :mod:`jobs`). The loop::

    probe tasks (bounded) -> shard specs queue -> actors (<= max_inflight each)
                                   ^                        |
                                   +-- requeue on failure --+--> all shards of a video done
                                                                  -> commit task -> manifest

* One pool serves every video; shards of many videos are in flight at once.
* Fault tolerance is the driver's: a shard whose actor died (``RayActorError``: crash,
  SIGKILL, OOM, node loss) is requeued at the front, preferably onto another actor, and the
  dead actor is replaced (up to ``max_replacements``). After ``max_attempts`` a shard's
  video fails - recorded in ``_errors/<id>.json`` and the report - while the others go on.
  Input, model and config errors are deterministic: their video fails at once. A storage
  authentication/authorization failure (:class:`~pipeline.errors.AccessDeniedError`, from
  any task or actor) stops the whole job and is raised: the credentials are the job's. A
  :class:`~pipeline.errors.ConfigError` of a prepare task or a shard (``--start``/``--end``
  or ``--video-stream`` do not fit a source; a target quality out of reach on the first
  frame, :class:`~pipeline.errors.TargetUnreachableError`) and a
  :class:`~pipeline.errors.QualityFloorError` of a commit (``--min-psnr`` with
  ``--strict``) are raised the same way when the job has one source (the CLI then exits as
  ``relatent encode`` does with the same options: 2, or 9); with several sources (a
  catalog) only that video fails.
* With a target quality the actors hold every rate point (the job's model identity is a
  :class:`cluster.identity.RatePointsIdentity`, pinned digest by digest); with
  ``--min-psnr`` the commit flags (or with ``--strict`` refuses) frames below the floor.
* With ``--target-kbps`` a video's shards first run as *first-pass* tasks on the actors
  (each GOP's unrefined bytes at every rate point, a few numbers back); once all are in,
  the driver shares the bitrate out as ``relatent encode`` does and queues the shards with
  their GOPs' budgets (:mod:`cluster.bitrate`). A bitrate out of reach fails the video
  (:class:`~pipeline.errors.TargetUnreachableError`, exit 2 for a one-source job) before
  any shard is encoded. First-pass tasks are retried like shards.
* Only small things cross the object store: shard specs one way, shard outcomes back.

The work itself lives in :mod:`cluster.prepare`, :mod:`cluster.shard` and
:mod:`cluster.commit` (wrapped for Ray by :mod:`cluster.actor`); the report types and the
failure classification in :mod:`cluster.results`; the model is resolved once per job by
:func:`cluster.identity.resolve_model`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from cluster.actor import RemoteEncoderActor, commit_task, prepare_task
from cluster.bitrate import needs_first_pass, shard_budgets
from cluster.commit import CommitSpec, record_error
from cluster.config import TranscodeJob, actor_options, helper_task_options
from cluster.identity import job_refine, pin_model, rate_points_of, resolve_job_model
from cluster.planning import OutputPaths, ShardSpec, VideoPlan, video_id
from cluster.results import JobReport, VideoResult, error_message, is_deterministic, root_cause
from pipeline.config import RefineConfig
from pipeline.errors import AccessDeniedError, ClusterError, ConfigError, QualityFloorError

__all__ = ["Driver", "EventHook", "JobReport", "VideoResult", "run_job"]

log = logging.getLogger("relatent.cluster")

#: Called with every event the driver logs: its name and its fields.
EventHook = Callable[[str, dict[str, Any]], None]


# --------------------------------------------------------------------------- internals


@dataclass(eq=False)
class _Actor:
    """One encoder actor of the pool, as the driver tracks it."""

    n: int
    handle: Any
    ready: bool = False
    dead: bool = False
    inflight: int = 0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class _Video:
    """One source in flight: its result row, outputs, plan and shard ranges."""

    result: VideoResult
    paths: OutputPaths
    plan: VideoPlan | None = None
    ranges: list[tuple[int, int]] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    #: ``--target-kbps``: the planned shards, the first pass's rows so far (GOP number ->
    #: bytes per rate point) and how many first-pass tasks are still out.
    specs: list[ShardSpec] = field(default_factory=list)
    first_rows: dict[int, list[int]] = field(default_factory=dict)
    first_left: int = 0

    @property
    def closed(self) -> bool:
        return self.result.status in ("committed", "skipped", "failed")


@dataclass(eq=False)
class _ShardTask:
    """One shard to encode (or with ``first``, whose first pass to run: ``--target-kbps``),
    its attempts so far and the actors to avoid on a retry."""

    video: _Video
    spec: ShardSpec
    attempts: int = 0
    avoid: set[int] = field(default_factory=set)
    actor: _Actor | None = None
    first: bool = False


class Driver:
    """Runs one :class:`TranscodeJob` on the connected Ray cluster (:meth:`run`)."""

    def __init__(
        self,
        job: TranscodeJob,
        *,
        on_event: EventHook | None = None,
        progress: bool = False,
        poll_seconds: float = 0.5,
    ) -> None:
        self.job = job.validate()
        self.cfg = job.cluster
        self.on_event = on_event
        self.progress = progress
        self.poll = poll_seconds
        self.actors: list[_Actor] = []
        self.refs: dict[Any, tuple[str, Any]] = {}
        self.queue: deque[_ShardTask] = deque()
        self.commits: deque[_Video] = deque()
        self.videos: list[_Video] = []
        self.report = JobReport(job.job_id, [])
        self._bar: Any = None
        self._actor_change = time.monotonic()
        self._ever_ready = False
        self._fatal: str | None = None
        #: The first storage authentication/authorization failure of any task or actor, or
        #: in a one-source job the first option that does not fit the source (a prepare
        #: task's or a shard's ConfigError, a commit's QualityFloorError): it stops the job
        #: (the credentials and options are the job's).
        self._denied: AccessDeniedError | ConfigError | QualityFloorError | None = None

    # -------------------------------------------------------------- helpers

    def _emit(self, event: str, level: int = logging.INFO, **fields: Any) -> None:
        fields = {"job": self.job.job_id, **fields}
        log.log(level, json.dumps({"event": event, **fields}, default=str, sort_keys=True))
        if self.on_event is not None:
            self.on_event(event, fields)

    def _spawn(self) -> None:
        n = self.report.actors_started
        self.report.actors_started += 1
        handle = RemoteEncoderActor.options(**actor_options(self.cfg)).remote(
            self.model_spec, self.cfg, self.job.job_id
        )
        actor = _Actor(n, handle)
        self.actors.append(actor)
        self.refs[handle.ready.remote()] = ("ready", actor)
        self._actor_change = time.monotonic()
        self._emit("actor_started", actor=n)

    def _actor_lost(self, actor: _Actor, why: str) -> None:
        if actor.dead:
            return
        actor.dead = True
        actor.ready = False
        self.report.actor_deaths += 1
        with contextlib.suppress(Exception):
            ray.kill(actor.handle, no_restart=True)
        self._emit("actor_died", actor=actor.n, error=why, **actor.info)
        replacements = self.report.actors_started - self.cfg.actors
        if replacements < self.cfg.max_replacements:
            self._spawn()
        self._actor_change = time.monotonic()

    def _live(self) -> list[_Actor]:
        return [a for a in self.actors if a.ready and not a.dead]

    def _fail_video(self, video: _Video, error: str | BaseException) -> None:
        if video.closed:
            return
        res = video.result
        res.status = "failed"
        res.error = error_message(error) if isinstance(error, BaseException) else error
        res.seconds = time.monotonic() - video.t0
        record_error(  # the task's own error (its type and hint), not Ray's wrapper
            video.paths,
            res.source,
            root_cause(error) if isinstance(error, BaseException) else RuntimeError(error),
            self.job.job_id,
        )
        self._emit("video_failed", video=res.video_id, source=res.source, error=res.error)
        self._tick(0)

    def _tick(self, frames: int) -> None:
        if self._bar is None:
            return
        done = sum(v.closed for v in self.videos)
        self._bar.set_postfix_str(f"videos {done}/{len(self.job.sources)}", refresh=False)
        self._bar.update(frames)

    # -------------------------------------------------------------- phases

    def _submit_prepares(self, pending: deque[str]) -> None:
        inflight = sum(1 for k, _ in self.refs.values() if k == "prepare")
        while (
            pending
            and inflight < self.cfg.prepare_inflight
            and len(self.queue) < 2 * self.cfg.slots
        ):
            source = pending.popleft()
            vid = video_id(
                source, self.ident, self.refine, self.carry, self.job.video_stream,
                self.job.start, self.job.end,
            )  # fmt: skip
            video = _Video(VideoResult(source, vid), OutputPaths.for_video(self.job.out, vid))
            self.videos.append(video)
            self.report.videos.append(video.result)
            ref = prepare_task.options(**helper_task_options()).remote(
                source, self.job.out, self.ident, self.refine, self.carry, self.job.drop_broken,
                self.job.video_stream, self.job.start, self.job.end,
            )  # fmt: skip
            self.refs[ref] = ("prepare", video)
            inflight += 1

    def _on_prepared(self, video: _Video, plan: VideoPlan, warnings: list[str]) -> None:
        res = video.result
        video.plan = plan
        for msg in warnings:  # streams left out of the carry section (--drop-broken-streams)
            res.warnings.append(msg)
            self._emit("stream_dropped", level=logging.WARNING, video=res.video_id, message=msg)
        res.frames = plan.frame_count
        res.stream, res.manifest = plan.paths.stream, plan.paths.manifest
        if plan.skipped:
            s = plan.summary or {}
            low = s.get("totals", {}).get("psnr_min")
            if self.job.min_psnr is not None and low is not None and low < self.job.min_psnr:
                # the floor does not change the bytes: a committed video is not re-encoded
                res.warnings.append(
                    f"committed earlier with frames below --min-psnr {self.job.min_psnr:g} dB "
                    f"(lowest {low:.2f} dB); the floor does not re-encode a current video"
                )
            res.status = "skipped"
            res.stream_bytes = int(s.get("stream_bytes", 0))
            res.bpp = float(s.get("totals", {}).get("bpp", 0.0))
            res.psnr = float(s.get("totals", {}).get("psnr", 0.0))
            res.seconds = time.monotonic() - video.t0
            self._emit("video_skipped", video=res.video_id, reason="committed manifest matches")
            self._tick(0)
            return
        specs = plan.shards(
            self.job.shard_frames, self.job.keyframe_slack, self.refine,
            self.ident.weights_sha256, self.job.batch, self.model_spec.rate_points,
        )  # fmt: skip
        video.ranges = [(s.start, s.end) for s in specs]
        res.shards = len(specs)
        res.status = "encoding"
        if needs_first_pass(specs[0]):  # the bitrate is shared out before any shard
            video.specs, video.first_left = specs, len(specs)
            self.queue.extend(_ShardTask(video, s, first=True) for s in specs)
        else:
            self.queue.extend(_ShardTask(video, s) for s in specs)
        if self._bar is not None:
            self._bar.total = (self._bar.total or 0) + plan.frame_count
            self._bar.refresh()
        self._emit("video_planned", video=res.video_id, frames=plan.frame_count, shards=len(specs))

    def _dispatch(self) -> None:
        live = self._live()
        while self.queue and live:
            task = self.queue[0]
            if task.video.closed:
                self.queue.popleft()
                continue
            free = [a for a in live if a.inflight < self.cfg.max_inflight]
            if not free:
                return
            pref = [a for a in free if a.n not in task.avoid] or free
            actor = min(pref, key=lambda a: (a.inflight, a.n))
            self.queue.popleft()
            task.actor = actor
            actor.inflight += 1
            method = actor.handle.first_pass if task.first else actor.handle.encode_shard
            self.refs[method.remote(task.spec)] = ("shard", task)

    def _on_first_pass(self, task: _ShardTask, rows: list[tuple[int, list[int]]]) -> None:
        """One shard's first pass is in; after the video's last, share the bitrate out
        (:func:`cluster.bitrate.shard_budgets`) and queue its shards with their budgets,
        or fail the video when the bitrate is out of reach (for a one-source job the job
        stops with that ConfigError: exit 2)."""
        video = task.video
        if video.closed:
            return
        video.first_rows.update((int(n), list(r)) for n, r in rows)
        video.first_left -= 1
        self._emit(
            "first_pass_done", video=video.result.video_id, shard=task.spec.index,
            start=task.spec.start, end=task.spec.end, attempt=task.attempts + 1,
        )  # fmt: skip
        if video.first_left > 0 or video.plan is None:
            return
        plan, target = video.plan, self.refine.target
        assert target is not None
        try:
            specs = shard_budgets(
                video.specs, video.first_rows, [p.lmbda for p in rate_points_of(self.ident)],
                target[1], float(plan.frame_rate or 0), plan.frame_count, plan.source,
            )  # fmt: skip
        except ConfigError as exc:  # TargetUnreachableError: the bitrate is out of reach
            if self._denied is None and len(self.job.sources) == 1:
                self._denied = exc
            self._fail_video(video, exc)
            return
        self.queue.extend(_ShardTask(video, s) for s in specs)
        self._emit(
            "bitrate_allocated", video=video.result.video_id, kbps=target[1],
            gops=len(video.first_rows), budget_bytes=sum(b for s in specs for _, b in s.gop_bytes),
        )  # fmt: skip

    def _on_shard(self, task: _ShardTask, out: dict[str, Any]) -> None:
        video, res = task.video, task.video.result
        if video.closed:
            return
        res.shards_done += 1
        res.refine_seconds += float(out["refine_seconds"])
        frames = int(out["end"]) - int(out["start"])
        if out["reused"]:
            res.shards_reused += 1
            self.report.shards_reused += 1
            self.report.frames_reused += frames
        else:
            res.frames_encoded += frames
            self.report.shards_encoded += 1
            self.report.frames_encoded += frames
        self._emit(
            "shard_done", video=res.video_id, shard=task.spec.index, start=task.spec.start,
            end=task.spec.end, reused=out["reused"], node=out["node"], pid=out["pid"],
            seconds=round(out["seconds"], 3), attempt=task.attempts + 1,
        )  # fmt: skip
        self._tick(frames)
        if res.shards_done == res.shards:
            res.status = "committing"
            self.commits.append(video)

    def _on_shard_error(self, task: _ShardTask, exc: BaseException) -> None:
        video = task.video
        actor = task.actor
        if isinstance(exc, ray.exceptions.RayActorError) and actor is not None:
            self._actor_lost(actor, error_message(exc))
        if video.closed:
            return
        if is_deterministic(exc):
            self._fail_video(video, exc)
            return
        task.attempts += 1
        self.report.shard_retries += 1
        video.result.retries += 1
        if task.attempts >= self.cfg.max_attempts:
            what = "the first pass of shard" if task.first else "shard"
            self._fail_video(
                video,
                f"{what} {task.spec.start}..{task.spec.end} failed {task.attempts} times, "
                f"last: {error_message(exc)}",
            )
            return
        if actor is not None:
            task.avoid.add(actor.n)
        task.actor = None
        self.queue.appendleft(task)
        self._emit(
            "shard_retry", video=video.result.video_id, shard=task.spec.index,
            attempt=task.attempts + 1, error=error_message(exc), first_pass=task.first,
        )  # fmt: skip

    def _submit_commits(self) -> None:
        inflight = sum(1 for k, _ in self.refs.values() if k == "commit")
        while self.commits and inflight < self.cfg.commit_inflight:
            video = self.commits.popleft()
            if video.closed or video.plan is None:
                continue
            spec = CommitSpec(
                video.plan, tuple(video.ranges), self.ident, self.refine, self.job.job_id,
                min_psnr=self.job.min_psnr, strict=self.job.strict,
            )  # fmt: skip
            self.refs[commit_task.options(**helper_task_options()).remote(spec)] = ("commit", video)
            inflight += 1

    def _on_committed(self, video: _Video, summary: dict[str, Any]) -> None:
        res = video.result
        res.status = "committed"
        res.stream_bytes = int(summary["stream_bytes"])
        res.bpp = float(summary["totals"]["bpp"])
        res.psnr = float(summary["totals"]["psnr"])
        res.seconds = time.monotonic() - video.t0
        below = int(summary.get("below_min_psnr", 0) or 0)
        if below:
            low = summary["totals"].get("psnr_min", 0.0)
            res.warnings.append(
                f"{below} of {res.frames} frames are below --min-psnr {summary['min_psnr']:g} "
                f"dB (lowest {low:.2f} dB; the manifest's below_min_psnr names them)"
            )
        self._emit(
            "video_committed", video=res.video_id, stream=res.stream, manifest=res.manifest,
            bytes=res.stream_bytes, frames=res.frames, reused_shards=res.shards_reused,
        )  # fmt: skip
        self._tick(0)

    def _handle(self, ref: Any) -> None:
        kind, obj = self.refs.pop(ref)
        try:
            value = ray.get(ref)
        except Exception as exc:
            cause = root_cause(exc)  # a task's error arrives wrapped in a RayTaskError
            if self._denied is None and (
                isinstance(cause, AccessDeniedError)
                or (len(self.job.sources) == 1 and self._stops_job(kind, cause))
            ):
                self._denied = cause  # type: ignore[assignment]
            if kind == "ready":
                if isinstance(exc, ray.exceptions.RayActorError) or not is_deterministic(exc):
                    self._actor_lost(obj, error_message(exc))
                else:  # the model cannot load: every actor would fail the same way
                    self._fatal = f"encoder actors cannot start: {error_message(exc)}"
                    obj.dead = True
                return
            if kind == "shard":
                if obj.actor is not None:
                    obj.actor.inflight -= 1
                self._on_shard_error(obj, exc)
            else:  # prepare or commit
                self._fail_video(obj, exc)
            return
        if kind == "ready":
            obj.ready, obj.info = True, value
            self._ever_ready = True
            self._actor_change = time.monotonic()
            self._emit("actor_ready", actor=obj.n, **value)
        elif kind == "prepare":
            self._on_prepared(obj, *value)
        elif kind == "shard":
            obj.actor.inflight -= 1
            if obj.first:
                self._on_first_pass(obj, value)
            else:
                self._on_shard(obj, value)
        elif kind == "commit":
            self._on_committed(obj, value)

    @staticmethod
    def _stops_job(kind: str, cause: BaseException) -> bool:
        """Whether a one-source job stops on ``cause`` (raised by a ``kind`` task), so the
        CLI exits with its code as ``relatent encode`` does: an option that does not fit
        the source (a prepare task's or a shard's ConfigError, e.g. a target out of reach)
        or a strict quality floor (a commit's QualityFloorError)."""
        if kind in ("prepare", "shard"):
            return isinstance(cause, ConfigError)
        return kind == "commit" and isinstance(cause, QualityFloorError)

    def _check_stuck(self) -> None:
        if self._fatal is None and not self.queue:
            return
        alive = [a for a in self.actors if not a.dead]
        waited = time.monotonic() - self._actor_change
        reason = self._fatal
        if reason is None and not alive:
            reason = "every encoder actor died and the replacement budget is spent"
        elif reason is None and not self._ever_ready and waited > self.cfg.actor_start_timeout:
            raise self._start_timeout()
        elif reason is None and not self._live() and waited > self.cfg.actor_start_timeout:
            reason = (
                f"no encoder actor became ready within {self.cfg.actor_start_timeout:.0f} s "
                "(the cluster may lack the CPUs/GPUs the actors request)"
            )
        if reason is None:
            return
        for video in self.videos:
            if video.result.status in ("pending", "encoding"):
                self._fail_video(video, reason)
        self.queue.clear()

    def _requested(self) -> str:
        """The resources one actor requests, as Ray names them."""
        opts = actor_options(self.cfg)
        names = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
        return ", ".join(f"{names[k]}: {opts[k]:g}" for k in names if k in opts)

    def _start_timeout(self) -> ClusterError:
        """No actor of the job ever started: a job-level error (the cluster cannot host the
        actors, or its autoscaler did not add nodes in time). Pending videos are recorded
        as failed first, so a catalog run sees them."""
        timeout = self.cfg.actor_start_timeout
        try:
            address = ray.get_runtime_context().gcs_address
        except Exception:  # pragma: no cover - connected drivers always have one
            address = "the connected Ray cluster"
        try:
            have = ray.cluster_resources()
            has = f"CPU: {have.get('CPU', 0):g}, GPU: {have.get('GPU', 0):g}"
        except Exception:  # pragma: no cover - a GCS hiccup only degrades the message
            has = "unknown"
        msg = (
            f"no encoder actor started on the Ray cluster at {address} within {timeout:g} s; "
            f"each of the {self.cfg.actors} actor(s) requests {{{self._requested()}}} and the "
            f"cluster has {{{has}}} in total"
        )
        for video in self.videos:
            if video.result.status in ("pending", "encoding"):
                self._fail_video(video, msg)
        self.queue.clear()
        return ClusterError(
            msg,
            hint="join a cluster that has (or can autoscale to) nodes with these resources, "
            "lower --gpus-per-actor/--cpus-per-actor, or raise --actor-start-timeout",
        )

    def _access_denied(self) -> AccessDeniedError | ConfigError | QualityFloorError:
        """Storage refused the job's credentials or permissions, or a source does not fit
        the job's options: a job-level error (exit 6, or 2 for options, or 9 for a strict
        quality floor, through the CLI, as on the driver or in ``relatent encode``). Videos
        not done are recorded as failed first (best effort: the same storage may refuse that
        too)."""
        assert self._denied is not None
        for video in self.videos:
            if video.result.status in ("pending", "encoding", "committing"):
                self._fail_video(video, self._denied)
        self.queue.clear()
        self._emit("job_stopped", level=logging.ERROR, error=str(self._denied))
        return self._denied

    # -------------------------------------------------------------- run

    def run(self) -> JobReport:
        """Run the job to the end: every video committed, skipped or failed.

        Raises:
            ModelError, StorageError, ConfigError: the model cannot be resolved.
            ClusterError: no encoder actor ever started within ``actor_start_timeout``.
            AccessDeniedError: storage refused the job's credentials or permissions in any
                task or actor (the job stops at the first refusal).
            ConfigError: the one source of the job does not fit its options (``start``/``end``
                past its last frame, ``video_stream`` not one of its streams, a target
                quality out of reach: :class:`~pipeline.errors.TargetUnreachableError`).
            QualityFloorError: the one source of the job has frames below ``min_psnr`` and
                ``strict`` is set (nothing of it is committed).
        """
        t0 = time.monotonic()
        self.ident = resolve_job_model(self.job.model, self.job.refine)
        self.model_spec = pin_model(self.job.model, self.ident)
        self.refine: RefineConfig = job_refine(self.job.refine, self.ident)
        self.carry = self.job.carry
        if self.cfg.gpus_per_actor > 0 and ray.cluster_resources().get("GPU", 0) <= 0:
            # Scale from zero: an autoscaler adds GPU nodes once the actors are pending.
            # _check_stuck gives up (ClusterError) if none starts in actor_start_timeout.
            self._emit(
                "waiting_for_gpus", level=logging.WARNING, gpus_per_actor=self.cfg.gpus_per_actor,
                actor_start_timeout=self.cfg.actor_start_timeout,
                message="cluster has no GPUs now; waiting up to actor_start_timeout "
                f"({self.cfg.actor_start_timeout:g} s) for the autoscaler",
            )  # fmt: skip
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="frame", desc=self.job.job_id, dynamic_ncols=True)
        self._emit("job_started", sources=len(self.job.sources), actors=self.cfg.actors)
        pending = deque(self.job.sources)
        try:
            for _ in range(self.cfg.actors):
                self._spawn()
            while True:
                self._submit_prepares(pending)
                self._dispatch()
                self._submit_commits()
                self._check_stuck()
                if self._denied is not None:
                    raise self._access_denied()
                if (
                    not pending
                    and not self.queue
                    and not self.commits
                    and not any(k != "ready" for k, _ in self.refs.values())
                ):
                    break
                ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=self.poll)
                if ready:
                    more, _ = ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
                    for ref in {*ready, *more}:
                        self._handle(ref)
        finally:
            for a in self.actors:
                with contextlib.suppress(Exception):
                    ray.kill(a.handle, no_restart=True)
            if self._bar is not None:
                self._bar.close()
        self.report.seconds = time.monotonic() - t0
        self._emit(
            "job_finished", ok=self.report.ok, seconds=round(self.report.seconds, 3),
            frames_encoded=self.report.frames_encoded, failed=len(self.report.failed),
        )  # fmt: skip
        return self.report


def run_job(
    job: TranscodeJob, *, on_event: EventHook | None = None, progress: bool = False
) -> JobReport:
    """Run ``job`` on the Ray cluster this process is connected to; returns its report
    (failed videos are in it, not raised).

    Raises:
        ConfigError: Ray is not initialised, or the job is invalid.
        ModelError, StorageError: the model cannot be resolved.
        ClusterError: no encoder actor ever started.
        AccessDeniedError: storage refused the job's credentials or permissions (a task's
            or an actor's error, unwrapped from Ray's).
        ConfigError: also when the job's one source does not fit its frame span, video
            stream or target quality (a prepare task's or a shard's error, unwrapped from
            Ray's).
        QualityFloorError: the job's one source has frames below ``min_psnr`` with
            ``strict`` (a commit's error, unwrapped from Ray's).
    """
    if not ray.is_initialized():
        raise ConfigError(
            "Ray is not initialised", hint="call ray.init() first (jobs.transcode does it)"
        )
    return Driver(job, on_event=on_event, progress=progress).run()
