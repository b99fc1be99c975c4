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
6. Write the run report ``DST/_runs/<UTC time>-<run id>.json`` (:mod:`cluster.report`;
   atomic, create-only): counts, bytes, times, failures.

The run itself is :func:`cluster.catalog.run_catalog`; this module turns the options into
its :class:`cluster.catalog.CatalogRun` and prints the plan or the report.

Exit codes: 0 when nothing failed (videos leased by another run are not failures); 1 when
some videos failed (each has ``DST/_errors/<id>.json`` and a line in the report); a
run-level error exits with its :mod:`pipeline.errors` code (via :func:`jobs.cli.main`),
after the report (with ``error``) is written and the leases are released.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from cluster.config import VIDEO_SUFFIXES
from jobs import transcode
from jobs.refine_options import positive_float

if TYPE_CHECKING:  # cluster.catalog loads pyarrow; the parser must stay light
    from cluster.catalog import CatalogItem, EventHook

__all__ = ["add_parser", "cmd_catalog"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``relatent catalog`` to ``subparsers``; returns its parser."""
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
        type=positive_float,
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


def _print_plan(a: argparse.Namespace, items: list[CatalogItem], counts: dict[str, int]) -> None:
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


def _print_run(
    a: argparse.Namespace, report: dict[str, Any], items: list[CatalogItem], uri: str
) -> None:
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
        f"{report['bytes']['stream_encoded']} file bytes of streams written; {report['seconds']:.1f} s"
    )
    print(f"report: {uri}")


def cmd_catalog(a: argparse.Namespace, on_event: EventHook | None = None) -> int:
    """Run ``relatent catalog`` (see the module doc); the exit code (0, or 1 when some
    videos failed).

    Raises:
        ConfigError: bad options.
        ModelError: the model cannot be loaded.
        SourceNotFoundError: no video under ``SRC_PREFIX``.
        StorageError: listing, planning or writing the report failed.
        RelatentError: the run-level error of a run whose report was written (named on
            stderr first), e.g. ``ClusterError``.
    """
    transcode.setup_logging(a.log_level)
    from cluster.catalog import CatalogRun, new_run_id, run_catalog

    run_id = a.run_id or new_run_id()
    run = CatalogRun(
        src=a.src,
        # Validates every encode option with transcode's rules (sources are filled in later).
        job=transcode.job_from_args(a, sources=(a.src,), job_id=f"catalog-{run_id}"),
        run_id=run_id,
        suffixes=tuple(a.ext or VIDEO_SUFFIXES),
        lease_ttl=a.lease_ttl,
        plan_threads=a.plan_threads,
        dry_run=a.dry_run,
    )
    outcome = run_catalog(
        run,
        ray_session=lambda: transcode.ray_session(a.address, a.num_cpus),
        on_event=on_event,
        progress=not a.no_progress and sys.stderr.isatty(),
    )
    if outcome.report is None or outcome.report_uri is None:
        _print_plan(a, outcome.items, outcome.counts)
        return 0
    if outcome.error is not None:
        print(f"report: {outcome.report_uri}", file=sys.stderr)
        raise outcome.error
    _print_run(a, outcome.report, outcome.items, outcome.report_uri)
    return 1 if outcome.counts["failed"] else 0
