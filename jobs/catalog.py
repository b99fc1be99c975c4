"""``relatent catalog SRC_PREFIX --out DST_PREFIX``: re-encode what is stale in a catalog.

1. List every video under ``SRC_PREFIX`` (a folder or an ``s3://`` prefix, recursive, by
   extension).
2. Plan: a video whose committed manifest matches its source version, the model and the
   config (the driver's own skip check, :mod:`cluster.catalog`) is *current*; the others
   are stale, with the reason (missing, source / model / config changed).
3. ``--dry-run`` prints that plan (``--json``: machine-readable) and stops: nothing is
   written, no Ray is started.
4. Claim a lease per stale video (:mod:`cluster.leases`, ``DST/_leases/<id>.json``,
   conditional writes). A video leased by another live run is reported as ``leased`` and
   left to it; one that another run committed meanwhile is ``done-elsewhere``.
5. Encode the claimed videos in ONE driver run (:func:`cluster.driver.run_job`) on the
   cluster at ``--address`` (``auto`` inside a Ray job) or on an embedded local Ray. Leases
   are renewed every ``--lease-ttl``/3 seconds and released as each video is committed or
   fails.
6. Write the run report ``DST/_runs/<UTC time>-<run id>.json`` (atomic, create-only):
   counts, bytes, times, failures.

Exit codes: 0 when nothing failed (videos leased by another run are not failures); 1 when
some videos failed (each has ``DST/_errors/<id>.json`` and a line in the report); a
run-level error exits with its :mod:`pipeline.errors` code, after the report (with
``error``) is written and the leases are released.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from jobs import transcode

log = logging.getLogger("relatent.cluster")

#: File extensions listed as videos by default (case-insensitive).
VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
    ".mxf", ".flv", ".wmv", ".y4m",
)  # fmt: skip
RUNS_DIR = "_runs"
REPORT_FORMAT = "relatent-catalog-run/1"
EventHook = Any  # Callable[[str, dict[str, Any]], None] | None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "catalog",
        help="re-encode the stale or missing videos of a catalog (folder or S3 prefix) in one Ray job",
        description="List SRC_PREFIX, skip every video whose committed manifest under DST "
        "matches its source version, model and config, and encode the rest in one Ray job. "
        "Safe to run on a schedule and concurrently: per-video leases under DST/_leases/ keep "
        "two runs from encoding the same video. Writes DST/_runs/<time>-<run id>.json.",
    )
    p.add_argument("src", metavar="SRC_PREFIX", help="catalog folder or s3:// prefix")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix (DST_PREFIX)")
    transcode.add_encode_options(p)
    transcode.add_runtime_options(p)
    p.add_argument(
        "--ext",
        action="append",
        default=None,
        metavar=".EXT",
        help=f"video file extension to list (repeatable; default: {' '.join(VIDEO_SUFFIXES)})",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan; encode and write nothing"
    )
    p.add_argument("--json", action="store_true", help="print the plan or the run report as JSON")
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=900.0,
        help="seconds a video's lease lasts without renewal (renewed every ttl/3; must be "
        "well above the clock skew between machines)",
    )
    p.add_argument("--run-id", default=None, help="this run's id (default: random)")
    p.add_argument(
        "--plan-threads", type=int, default=16, help="manifests checked concurrently while planning"
    )
    p.set_defaults(func=cmd_catalog)
    return p


# --------------------------------------------------------------------------- leases


class _Leases:
    """The leases this run holds: renewed by a background thread, released one by one as
    the driver closes each video, the rest at the end."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.held: dict[str, Any] = {}  # video id -> cluster.leases.Lease
        self.lost: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, vid: str, lease: Any) -> None:
        with self._lock:
            self.held[vid] = lease

    def release(self, vid: str) -> None:
        from cluster import leases

        with self._lock:
            lease = self.held.pop(vid, None)
            if lease is None:
                return
            try:
                if not leases.release(lease):
                    self._lose(vid, "at release")
            except Exception as exc:
                log.warning(
                    json.dumps({"event": "lease_release_failed", "video": vid, "error": str(exc)})
                )

    def release_all(self) -> None:
        for vid in list(self.held):
            self.release(vid)

    def _lose(self, vid: str, when: str) -> None:
        self.lost.append(vid)
        log.warning(
            json.dumps({"event": "lease_lost", "video": vid, "when": when,
                        "message": "another run took the lease over; it may encode the video too"})
        )  # fmt: skip

    def renew_all(self) -> None:
        from cluster import leases

        for vid in list(self.held):
            with self._lock:
                lease = self.held.get(vid)
                if lease is None:
                    continue
                try:
                    ok = leases.renew(lease, self.ttl)
                except Exception as exc:
                    log.warning(
                        json.dumps({"event": "lease_renew_failed", "video": vid, "error": str(exc)})
                    )
                    continue
                if not ok:
                    self.held.pop(vid)
                    self._lose(vid, "at renewal")

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self.renew_all()

    def __enter__(self) -> _Leases:
        self._thread = threading.Thread(
            target=self._loop, name="relatent-lease-renewal", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.release_all()


# --------------------------------------------------------------------------- the run


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _counts(items: list[Any]) -> dict[str, int]:
    by = {s: sum(i.status == s for i in items) for s in
          ("current", "encoded", "failed", "leased", "done-elsewhere", "planned")}  # fmt: skip
    return {
        "listed": len(items),
        "stale": sum(i.action == "encode" for i in items),
        "skipped": by["current"] + by["done-elsewhere"],
        "current": by["current"],
        "done_elsewhere": by["done-elsewhere"],
        "encoded": by["encoded"],
        "failed": by["failed"],
        "leased": by["leased"],
    }


def _with_checksum(doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc, sort_keys=True, default=str)
    return json.dumps(
        {**doc, "sha256": hashlib.sha256(body.encode()).hexdigest()}, indent=1, sort_keys=True,
        default=str,
    ).encode()  # fmt: skip


def verify_report(data: bytes) -> dict[str, Any]:
    """A run report parsed and checked (format and checksum); ``ValueError`` otherwise."""
    doc = json.loads(data)
    digest = doc.pop("sha256", None)
    if doc.get("format") != REPORT_FORMAT:
        raise ValueError(f"not a {REPORT_FORMAT} report")
    if digest != hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest():
        raise ValueError("run report checksum mismatch")
    return doc


def _print_plan(a: argparse.Namespace, items: list[Any], counts: dict[str, int]) -> None:
    if a.json:
        print(json.dumps({"src": a.src, "out": a.out, "dry_run": True, "counts": counts,
                          "videos": [i.to_dict() for i in items]}, indent=1))  # fmt: skip
        return
    width = max((len(i.video_id) for i in items), default=8)
    for i in items:
        print(f"{i.action:<7} {', '.join(i.reasons):<30} {i.video_id:<{width}}  {i.source}")
    print(
        f"plan: {counts['listed']} listed, {counts['stale']} to encode, "
        f"{counts['current']} current (dry run: nothing encoded or written)"
    )


def _print_run(a: argparse.Namespace, report: dict[str, Any], items: list[Any], uri: str) -> None:
    if a.json:
        print(json.dumps({**report, "report": uri}, indent=1, default=str))
        return
    width = max((len(i.video_id) for i in items), default=8)
    for i in items:
        if i.status == "current":
            continue
        why = i.error or (f"lease held by run {i.holder}" if i.holder else ", ".join(i.reasons))
        print(f"{i.status:<14} {i.video_id:<{width}}  {why}  ({i.source})")
    c = report["counts"]
    print(
        f"catalog run {report['run_id']}: {c['listed']} listed, {c['skipped']} skipped "
        f"({c['current']} current, {c['done_elsewhere']} done by another run), "
        f"{c['encoded']} encoded, {c['failed']} failed, {c['leased']} leased by another run; "
        f"{report['bytes']['stream_encoded']} stream bytes written; {report['seconds']:.1f} s"
    )
    print(f"report: {uri}")


def cmd_catalog(a: argparse.Namespace, on_event: EventHook = None) -> int:
    from cluster import leases
    from cluster.catalog import check_video, list_catalog, plan_catalog, resolve_model
    from cluster.work import HAS_CARRY
    from pipeline import storage
    from pipeline.errors import ConfigError, RelatentError, SourceNotFoundError

    transcode._setup_logging(a.log_level)
    t0 = time.time()
    run_id = a.run_id or uuid.uuid4().hex[:12]
    if a.lease_ttl <= 0:
        raise ConfigError(
            f"--lease-ttl {a.lease_ttl:g} must be positive", hint="e.g. 900 (seconds)"
        )
    if a.plan_threads < 1:
        raise ConfigError(f"--plan-threads {a.plan_threads} must be at least 1")
    # Validates every encode option with transcode's rules (sources are filled in later).
    template = transcode.job_from_args(a, sources=(a.src,), job_id=f"catalog-{run_id}")
    ident = resolve_model(template.model)
    refine = template.refine.resolved(ident.lmbda)
    carry = template.carry and HAS_CARRY
    suffixes = tuple(e if e.startswith(".") else f".{e}" for e in (a.ext or VIDEO_SUFFIXES))
    objs = list_catalog(a.src, a.out, suffixes)
    if not objs:
        raise SourceNotFoundError(
            f"no videos under {a.src} (extensions {' '.join(suffixes)})",
            hint="check the catalog prefix (S3 prefixes are case-sensitive) or pass --ext",
        )
    items = plan_catalog(objs, a.out, ident, refine, carry, threads=a.plan_threads)
    t_plan = time.time()
    if a.dry_run:
        _print_plan(a, items, _counts(items))
        return 0

    by_obj = dict(zip((i.video_id for i in items), objs, strict=True))
    held = _Leases(a.lease_ttl)
    taken_over: list[dict[str, Any]] = []
    error: RelatentError | None = None
    job_report = None
    t_enc = t_plan

    def claim(item: Any) -> None:
        c = leases.acquire(a.out, item.video_id, item.source, run_id, a.lease_ttl)
        if c.lease is None:
            item.status, item.holder = "leased", c.holder.run_id if c.holder else None
            return
        held.add(item.video_id, c.lease)
        if c.took_over is not None or c.took_over_damaged:
            taken_over.append({"video_id": item.video_id, "from_run": getattr(c.took_over, "run_id", None),
                               "damaged": c.took_over_damaged})  # fmt: skip
        # Another run may have committed it between our plan and our lease.
        fresh = check_video(by_obj[item.video_id], a.out, ident, refine, carry, explain=False)
        if fresh.action == "skip":
            item.status, item.stream_bytes, item.frames = (
                "done-elsewhere",
                fresh.stream_bytes,
                fresh.frames,
            )
            held.release(item.video_id)
        else:
            item.status = "claimed"

    def hook(event: str, fields: dict[str, Any]) -> None:
        if event in ("video_committed", "video_failed", "video_skipped"):
            held.release(str(fields.get("video")))
        if on_event is not None:
            on_event(event, fields)

    try:
        stale = [i for i in items if i.action == "encode"]
        # Each run claims in its own order, so overlapping runs split a big catalog
        # between them instead of contending for the same videos one after another.
        order = sorted(
            stale, key=lambda i: hashlib.sha256(f"{run_id}/{i.video_id}".encode()).digest()
        )
        with held:
            with ThreadPoolExecutor(max_workers=a.plan_threads) as pool:
                list(pool.map(claim, order))
            todo = [i for i in stale if i.status == "claimed"]
            t_enc = time.time()
            if todo:
                job_report = _encode(a, template, todo, hook)
    except RelatentError as exc:
        error = exc
        for i in items:
            if i.status == "claimed":
                i.status, i.error = "failed", str(exc)
    t_end = time.time()

    counts = _counts(items)
    report = {
        "format": REPORT_FORMAT,
        "run_id": run_id,
        "src": a.src,
        "out": a.out,
        "started_at": _utc(t0),
        "finished_at": _utc(t_end),
        "seconds": round(t_end - t0, 3),
        "plan_seconds": round(t_plan - t0, 3),
        "encode_seconds": round(t_end - t_enc, 3) if job_report is not None else 0.0,
        "model": {"arch": ident.arch, "quality": ident.quality, "lmbda": ident.lmbda,
                  "weights_sha256": ident.weights_sha256, "tables_sha256": ident.tables_sha256},
        "config_hash": refine.hash(),
        "refine": refine.to_json(),
        "carry": carry,
        "counts": counts,
        "bytes": {
            "source_listed": sum(i.source_bytes for i in items),
            "source_encoded": sum(i.source_bytes for i in items if i.status == "encoded"),
            "stream_encoded": sum(i.stream_bytes for i in items if i.status == "encoded"),
        },
        "frames_encoded": job_report.frames_encoded if job_report is not None else 0,
        "failures": [{"source": i.source, "video_id": i.video_id, "error": i.error}
                     for i in items if i.status == "failed"],
        "leases": {"ttl": a.lease_ttl, "taken_over": taken_over, "lost": sorted(held.lost)},
        "job": None if job_report is None else {
            "job_id": job_report.job_id, "seconds": round(job_report.seconds, 3),
            "fps": job_report.fps, "shards_encoded": job_report.shards_encoded,
            "shards_reused": job_report.shards_reused, "shard_retries": job_report.shard_retries,
            "actor_deaths": job_report.actor_deaths, "actors_started": job_report.actors_started,
        },
        "error": None if error is None else {"type": type(error).__name__, "message": str(error)},
        "videos": [i.to_dict() for i in items],
    }  # fmt: skip
    stamp = datetime.fromtimestamp(t0, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    uri = storage.join(a.out, RUNS_DIR, f"{stamp}-{run_id}.json")
    storage.write_bytes(uri, _with_checksum(report), if_none_match=True)
    if error is not None:
        print(f"report: {uri}", file=sys.stderr)
        raise error
    _print_run(a, report, items, uri)
    return 1 if counts["failed"] else 0


def _encode(a: argparse.Namespace, template: Any, todo: list[Any], hook: Any) -> Any:
    """One driver run over the claimed videos; their items get the outcome."""
    from cluster.driver import run_job

    job = replace(template, sources=tuple(i.source for i in todo))
    started = transcode.init_ray(a.address, a.num_cpus)
    try:
        report = run_job(job, on_event=hook, progress=not a.no_progress and sys.stderr.isatty())
    finally:
        if started:
            import ray

            ray.shutdown()
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


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand on its own (``python -m jobs.catalog SRC --out DST``)."""
    from pipeline.errors import RelatentError

    parser = argparse.ArgumentParser(prog="relatent")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    a = parser.parse_args(["catalog", *(sys.argv[1:] if argv is None else argv)])
    try:
        return a.func(a)
    except RelatentError as exc:
        print(f"relatent catalog: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
