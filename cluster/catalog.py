"""Catalog runs: which videos of a catalog need encoding and why, and the run that encodes
them (Ray only in its encode step).

A video is *current* when the driver would skip it: its committed manifest matches the
source version, the model and the config, and the stream beside it is whole. That decision
is :func:`cluster.commit.summary_matches` + :func:`cluster.commit.is_committed`, the very checks
:func:`cluster.prepare.prepare_video` makes; this module only adds the *why* for the rest,
by comparing with the manifest at the video's own output key or, when there is none (the
key changes with the model and config), with earlier manifests of the same source:

* ``missing``: no manifest of this source under ``out``;
* ``source changed``: the source's ETag / version differs from the one encoded;
* ``model changed``: weights, entropy tables, architecture or rate point differ (another
  ``--quality`` or checkpoint; with a target quality, any rate point's weights);
* ``config changed``: the refinement config hash (or the carry setting) differs; a target
  (``--target-psnr``, ``--target-msssim``, ``--target-kbps``, ``--max-kbps``) is part of
  the config;
* ``container changed``: the stream container version differs;
* ``stream missing``: a manifest matches but its stream is absent or has another size.

:func:`run_catalog` is a whole catalog run: list, plan, claim a lease per stale video
(:mod:`cluster.leases`), encode the claimed ones in one driver run
(:func:`cluster.driver.run_job`), release the leases, write the run report
(:mod:`cluster.report`). Ray is imported only when something is encoded.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cluster import leases
from cluster import manifest as mf
from cluster import report as rp
from cluster.commit import container_version, is_committed, summary_matches
from cluster.config import VIDEO_SUFFIXES, TranscodeJob
from cluster.identity import job_refine, rate_points_of, resolve_job_model
from cluster.planning import (
    MANIFEST_FORMATS,
    OutputPaths,
    source_stem,
    video_id,
)
from pipeline import storage
from pipeline.config import RefineConfig
from pipeline.errors import ConfigError, RelatentError, SourceNotFoundError
from pipeline.models import ModelIdentity

if TYPE_CHECKING:
    from cluster.results import JobReport

__all__ = [
    "MANIFEST_SUFFIX",
    "CatalogItem",
    "CatalogOutcome",
    "CatalogRun",
    "EventHook",
    "check_video",
    "list_catalog",
    "list_manifests",
    "new_run_id",
    "plan_catalog",
    "run_catalog",
]

#: The name every committed manifest ends with.
MANIFEST_SUFFIX = ".manifest.parquet"
#: ``on_event(event, fields)``: the driver's structured events (see :mod:`cluster.driver`).
EventHook = Callable[[str, dict[str, Any]], None]


def _under(uri: str, prefix: str) -> bool:
    if storage.is_s3(uri) != storage.is_s3(prefix):
        return False
    if storage.is_s3(prefix):
        p = prefix if prefix.endswith("/") else prefix + "/"
        return uri.startswith(p)
    root = storage.local_path(prefix).resolve()
    return root in storage.local_path(uri).resolve().parents


def list_catalog(src: str, out: str, suffixes: Sequence[str]) -> list[storage.ObjectInfo]:
    """Every video under ``src`` (recursive, names ending in one of ``suffixes``), sorted,
    leaving out hidden files and anything under ``out`` (when the output prefix sits
    inside the catalog).

    Raises:
        StorageError: ``src`` cannot be listed.
    """
    objs = storage.list_prefix(src, suffixes=tuple(suffixes))
    return [
        o for o in objs if not _under(o.uri, out) and not posixpath.basename(o.uri).startswith(".")
    ]


def list_manifests(out: str) -> set[str]:
    """Names of the manifests directly under ``out``.

    Raises:
        StorageError: ``out`` cannot be listed.
    """
    found = set()
    for o in storage.list_prefix(out, suffixes=(MANIFEST_SUFFIX,)):
        if storage.is_s3(out):
            p = out if out.endswith("/") else out + "/"
            if "/" in o.uri[len(p) :]:
                continue
        elif storage.local_path(o.uri).parent.resolve() != storage.local_path(out).resolve():
            continue
        found.add(posixpath.basename(o.uri))
    return found


@dataclass
class CatalogItem:
    """One video of the catalog: the plan (``action``, ``reasons``) and, after a run, what
    happened (``status``: current, encoded, failed, leased, done-elsewhere; planned in a
    dry run)."""

    source: str
    video_id: str
    source_bytes: int
    action: str  # "encode" | "skip"
    reasons: list[str] = field(default_factory=list)
    status: str = "planned"
    error: str | None = None
    stream_bytes: int = 0
    frames: int = 0
    holder: str | None = None  # run id of the live lease holder (status "leased")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (one entry of a plan or report's ``videos``)."""
        return asdict(self)


def _differences(
    summary: dict[str, Any],
    etag: str,
    version: str | None,
    ident: ModelIdentity,
    refine: RefineConfig,
    *,
    check_source: bool = True,
) -> list[str]:
    reasons = []
    model = summary.get("model", {}) or {}
    if (
        model.get("weights_sha256") != ident.weights_sha256
        or model.get("tables_sha256") != ident.tables_sha256
        or model.get("arch") != ident.arch
        or model.get("quality") != ident.quality
        or mf.rate_point_digests(model)
        != [[p.weights_sha256, p.tables_sha256] for p in rate_points_of(ident)]
    ):
        reasons.append("model changed")
    if summary.get("config_hash") != refine.hash():
        reasons.append("config changed")
    if check_source and (summary.get("source_etag"), summary.get("source_version")) != (
        etag,
        version,
    ):
        reasons.append("source changed")
    if (
        summary.get("container_version") != container_version(ident, refine)
        or summary.get("format") not in MANIFEST_FORMATS
    ):
        reasons.append("container changed")
    return reasons


def check_video(
    obj: storage.ObjectInfo,
    out: str,
    ident: ModelIdentity,
    refine: RefineConfig,
    carry: bool,
    manifests: set[str] | None = None,
    *,
    explain: bool = True,
    video_stream: int | None = None,
    start: int = 0,
    end: int | None = None,
) -> CatalogItem:
    """Plan one video. ``manifests`` (names from :func:`list_manifests`) saves a request
    per video that has none; ``None`` reads the manifest directly (a fresh check).
    ``explain=False`` skips looking for earlier manifests (the decision stays the same,
    the reason of a video without its own manifest is then just ``missing``).
    ``start``/``end``: the frame span coded (``--start``/``--end``; it names the output
    when given, :func:`cluster.planning.output_key`).

    Raises:
        StorageError: a manifest or the source cannot be read.
    """
    vid = video_id(obj.uri, ident, refine, carry, video_stream, start, end)
    paths = OutputPaths.for_video(out, vid)
    item = CatalogItem(obj.uri, vid, obj.size, "encode")
    summary = None
    if manifests is None or posixpath.basename(paths.manifest) in manifests:
        summary = mf.read_summary(paths.manifest)
    if summary is not None:
        st = storage.stat(obj.uri)  # the version too, exactly as prepare_video sees it
        if summary_matches(summary, st.etag, st.version, ident, refine) and is_committed(
            paths, summary
        ):
            item.action, item.reasons, item.status = "skip", ["current"], "current"
            item.stream_bytes = int(summary.get("stream_bytes", 0))
            item.frames = int(summary.get("frames", 0))
            return item
        item.reasons = _differences(summary, st.etag, st.version, ident, refine) or [
            "stream missing"
        ]
        return item
    earlier = _earlier_summaries(obj.uri, out, vid, manifests) if explain else []
    if not earlier:
        item.reasons = ["missing"]
        return item
    # Explain with the closest earlier manifest (fewest differences, then the newest). The
    # listing has no version id: only ETags are compared for the explanation.
    diffs = [
        (_differences(e, obj.etag, e.get("source_version"), ident, refine), e) for e in earlier
    ]
    reasons, _ = min(diffs, key=lambda d: (len(d[0]), _neg(str(d[1].get("committed_at", "")))))
    item.reasons = reasons or ["config changed"]  # same model and config hash: carry differs
    return item


def _neg(text: str) -> tuple[int, ...]:
    """A key that sorts strings in reverse order."""
    return tuple(-ord(c) for c in text)


def _earlier_summaries(
    source: str, out: str, vid: str, manifests: set[str] | None
) -> list[dict[str, Any]]:
    """Summaries of other manifests of ``source`` under ``out`` (other models/configs)."""
    if manifests is None:
        manifests = list_manifests(out)
    stem = source_stem(source) + "-"
    own = f"{vid}{MANIFEST_SUFFIX}"
    found = []
    for name in sorted(manifests):
        key = name[len(stem) : -len(MANIFEST_SUFFIX)]
        if name == own or not name.startswith(stem) or len(key) != 12:
            continue
        summary = mf.read_summary(storage.join(out, name))
        if summary is not None and summary.get("source") == source:
            found.append(summary)
    return found


def plan_catalog(
    objs: Iterable[storage.ObjectInfo],
    out: str,
    ident: ModelIdentity,
    refine: RefineConfig,
    carry: bool,
    threads: int = 16,
    video_stream: int | None = None,
    start: int = 0,
    end: int | None = None,
) -> list[CatalogItem]:
    """:func:`check_video` for every listed video (``threads`` at a time: each check is a
    few small requests), in listing order (``video_stream``, ``start``, ``end``: as there).

    Raises:
        StorageError: ``out`` cannot be listed, or a manifest or source cannot be read.
    """
    objs = list(objs)
    manifests = list_manifests(out)

    def check(o: storage.ObjectInfo) -> CatalogItem:
        return check_video(
            o, out, ident, refine, carry, manifests,
            video_stream=video_stream, start=start, end=end,
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(check, objs))


# --------------------------------------------------------------------------- the run


def new_run_id() -> str:
    """A fresh random run id (12 hex digits)."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class CatalogRun:
    """One catalog run: what to list, how to encode it, how to lease it.

    Attributes:
        src: the catalog, a folder or ``s3://`` prefix (listed recursively).
        job: the encode template: model, refinement, shard layout, actor sizing, carry;
            its ``out`` is the output prefix. :func:`run_catalog` replaces its ``sources``
            (the claimed videos) and its ``job_id`` (``catalog-<run id>``).
        run_id: this run's id (in its leases, its report and its job id).
        suffixes: file extensions listed as videos (case-insensitive; the dot is optional).
        lease_ttl: seconds a lease lasts without renewal (renewed every ``ttl / 3``).
        plan_threads: manifests checked, and leases claimed, concurrently.
        dry_run: plan only: write nothing, start no Ray.
    """

    src: str
    job: TranscodeJob
    run_id: str = field(default_factory=new_run_id)
    suffixes: tuple[str, ...] = VIDEO_SUFFIXES
    lease_ttl: float = 900.0
    plan_threads: int = 16
    dry_run: bool = False

    @property
    def out(self) -> str:
        """The output prefix (the job's ``out``)."""
        return self.job.out

    def validate(self) -> CatalogRun:
        """``self``, checked (the job is validated by its own :meth:`TranscodeJob.validate`).

        Raises:
            ConfigError: ``lease_ttl`` is not positive or ``plan_threads`` is below 1.
        """
        if self.lease_ttl <= 0:
            raise ConfigError(
                f"--lease-ttl {self.lease_ttl:g} must be positive", hint="e.g. 900 (seconds)"
            )
        if self.plan_threads < 1:
            raise ConfigError(f"--plan-threads {self.plan_threads} must be at least 1")
        return self


@dataclass
class CatalogOutcome:
    """What :func:`run_catalog` did.

    Attributes:
        items: every listed video, in listing order: its plan and final status.
        counts: :func:`cluster.report.count_items` of ``items``.
        report: the run report as written (``None`` for a dry run).
        report_uri: where it was written (``None`` for a dry run).
        error: the run-level error the report records (``None``: none). :func:`run_catalog`
            returns it instead of raising it, so that the caller can name the report first.
    """

    items: list[CatalogItem]
    counts: dict[str, int]
    report: dict[str, Any] | None = None
    report_uri: str | None = None
    error: RelatentError | None = None


def run_catalog(
    run: CatalogRun,
    *,
    ray_session: Callable[[], AbstractContextManager[object]] | None = None,
    on_event: EventHook | None = None,
    progress: bool = False,
) -> CatalogOutcome:
    """Re-encode what is stale in a catalog: list, plan, claim, encode, release, report.

    1. List every video under ``run.src`` (:func:`list_catalog`) and plan each
       (:func:`plan_catalog`). A dry run stops here.
    2. Claim a lease per stale video, each run in its own order (so overlapping runs split
       a big catalog instead of contending for the same videos); a video leased by another
       live run is ``leased``, one committed meanwhile ``done-elsewhere``.
    3. Encode the claimed videos in one :func:`cluster.driver.run_job` (inside
       ``ray_session()``, entered only when there is something to encode; ``None``: Ray is
       already initialised), while a :class:`cluster.leases.LeaseKeeper` renews the
       leases and releases each as its video is closed.
    4. Write the run report (:func:`cluster.report.write_report`).

    ``on_event`` receives the driver's events; ``progress`` shows the driver's progress bar.

    Raises:
        ConfigError: a bad ``lease_ttl`` or ``plan_threads``.
        ModelError: the model cannot be loaded.
        SourceNotFoundError: no video under ``run.src``.
        StorageError: listing, planning or writing the report failed.

    A :class:`pipeline.errors.RelatentError` while claiming or encoding (e.g. a
    ``ClusterError`` when no actor starts) is not raised: the claimed videos fail, the
    leases are released, and the error is recorded in the report and returned in
    :attr:`CatalogOutcome.error`.
    """
    run.validate()
    t0 = time.time()
    template = replace(run.job, job_id=f"catalog-{run.run_id}")
    ident = resolve_job_model(template.model, template.refine)
    refine = job_refine(template.refine, ident)
    carry = template.carry
    suffixes = tuple(e if e.startswith(".") else f".{e}" for e in run.suffixes)
    objs = list_catalog(run.src, run.out, suffixes)
    if not objs:
        raise SourceNotFoundError(
            f"no videos under {run.src} (extensions {' '.join(suffixes)})",
            hint="check the catalog prefix (S3 prefixes are case-sensitive) or pass --ext",
        )
    items = plan_catalog(
        objs, run.out, ident, refine, carry, threads=run.plan_threads,
        video_stream=template.video_stream, start=template.start, end=template.end,
    )  # fmt: skip
    t_plan = time.time()
    if run.dry_run:
        return CatalogOutcome(items, rp.count_items(items))

    by_obj = dict(zip((i.video_id for i in items), objs, strict=True))
    keeper = leases.LeaseKeeper(run.lease_ttl)
    taken_over: list[dict[str, Any]] = []
    error: RelatentError | None = None
    job_report: JobReport | None = None
    t_enc = t_plan

    def recheck(item: CatalogItem) -> CatalogItem:
        return check_video(
            by_obj[item.video_id], run.out, ident, refine, carry, explain=False,
            video_stream=template.video_stream, start=template.start, end=template.end,
        )  # fmt: skip

    def hook(event: str, fields: dict[str, Any]) -> None:
        if event in ("video_committed", "video_failed", "video_skipped"):
            keeper.release(str(fields.get("video")))
        if on_event is not None:
            on_event(event, fields)

    try:
        stale = [i for i in items if i.action == "encode"]
        with keeper:
            taken_over = _claim_all(run, stale, keeper, recheck)
            todo = [i for i in stale if i.status == "claimed"]
            t_enc = time.time()
            if todo:
                job = replace(template, sources=tuple(i.source for i in todo))
                with ray_session() if ray_session is not None else contextlib.nullcontext():
                    job_report = _encode(job, todo, hook, progress)
    except RelatentError as exc:
        error = exc
        for i in items:
            if i.status == "claimed":
                i.status, i.error = "failed", str(exc)
    t_end = time.time()

    report = rp.build_report(
        run_id=run.run_id, src=run.src, out=run.out, times=(t0, t_plan, t_enc, t_end),
        ident=ident, refine=refine, carry=carry, items=items, job=job_report,
        leases={"ttl": run.lease_ttl, "taken_over": taken_over, "lost": sorted(keeper.lost)},
        error=error,
    )  # fmt: skip
    uri = rp.write_report(run.out, report, t0)
    return CatalogOutcome(items, report["counts"], report, uri, error)


def _claim_all(
    run: CatalogRun,
    stale: list[CatalogItem],
    keeper: leases.LeaseKeeper,
    recheck: Callable[[CatalogItem], CatalogItem],
) -> list[dict[str, Any]]:
    """Claim the lease of every stale video (``run.plan_threads`` at a time); each item's
    status becomes ``claimed``, ``leased`` or ``done-elsewhere``. Returns the leases taken
    over (``{"video_id", "from_run", "damaged"}``)."""
    taken_over: list[dict[str, Any]] = []

    def claim(item: CatalogItem) -> None:
        c = leases.acquire(run.out, item.video_id, item.source, run.run_id, run.lease_ttl)
        if c.lease is None:
            item.status, item.holder = "leased", c.holder.run_id if c.holder else None
            return
        keeper.add(item.video_id, c.lease)
        if c.took_over is not None or c.took_over_damaged:
            taken_over.append({"video_id": item.video_id, "from_run": getattr(c.took_over, "run_id", None),
                               "damaged": c.took_over_damaged})  # fmt: skip
        # Another run may have committed it between our plan and our lease.
        fresh = recheck(item)
        if fresh.action == "skip":
            item.status, item.stream_bytes, item.frames = (
                "done-elsewhere",
                fresh.stream_bytes,
                fresh.frames,
            )
            keeper.release(item.video_id)
        else:
            item.status = "claimed"

    # Each run claims in its own order, so overlapping runs split a big catalog
    # between them instead of contending for the same videos one after another.
    order = sorted(
        stale, key=lambda i: hashlib.sha256(f"{run.run_id}/{i.video_id}".encode()).digest()
    )
    with ThreadPoolExecutor(max_workers=run.plan_threads) as pool:
        list(pool.map(claim, order))
    return taken_over


def _encode(
    job: TranscodeJob, todo: list[CatalogItem], hook: EventHook, progress: bool
) -> JobReport:
    """One driver run over the claimed videos (``job.sources``); their items get the
    outcome."""
    from cluster.driver import run_job

    report = run_job(job, on_event=hook, progress=progress)
    by_source = {v.source: v for v in report.videos}
    for item in todo:
        v = by_source.get(item.source)
        if v is None:  # pragma: no cover - the driver reports every source
            item.status, item.error = "failed", "the driver did not report this video"
        elif v.status == "committed":
            item.status, item.stream_bytes, item.frames = "encoded", v.stream_bytes, v.frames
        elif v.status == "skipped":  # committed by something that took no lease
            item.status, item.stream_bytes, item.frames = "done-elsewhere", v.stream_bytes, v.frames
        else:
            item.status, item.error = "failed", v.error or v.status
    return report
