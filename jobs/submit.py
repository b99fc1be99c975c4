"""``relatent submit`` and ``relatent jobs``: run transcodes on a Ray cluster through the
Ray Jobs API (the dashboard's HTTP endpoint, ``http://<head>:8265``).

``relatent submit SRC... --out DST --address URL [transcode options]`` turns the command
line into a :class:`cluster.submission.JobDescription` (a ``relatent transcode ...
--address auto`` entrypoint and the work it does) and submits it with the client in
:mod:`cluster.submission`. The submission id is deterministic (derived from the *work*:
sources, output, model, refinement config, shard layout, carry, relatent version), so
submitting the same work again finds the existing job and reports it instead of starting
a second one. Sizing options (actors, GPUs per actor, in-flight shards, batch) do not
change the work, so they are not part of the id. Authentication: see
:mod:`cluster.submission`.

Exit codes: 0 submitted (or already submitted and not failed; with ``--wait``: the job
SUCCEEDED); with ``--wait`` a FAILED job exits with its driver's exit code (``relatent
transcode``'s: 1 some videos failed, 2 bad options, 5 model, ...) or 1 when there is none;
a STOPPED job exits 1. Cluster problems (unreachable, authentication, another Ray version)
raise :class:`pipeline.errors.ClusterError` (exit 7 via :func:`jobs.cli.main`), naming the
address.

Nothing secret is printed: ``--dry-run``'s JSON, ``jobs status``/``list`` and every message
go through :func:`cluster.submission.redacted` / :func:`~cluster.submission.redact_text`
(secret-looking ``--env`` values such as ``AWS_SECRET_ACCESS_KEY`` or ``AWS_SESSION_TOKEN``
become ``<redacted>``, ``AWS_ACCESS_KEY_ID`` shows its last 4 characters, URLs lose their
``user:password@``); the job itself receives the real values.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from cluster import submission as sj
from cluster.config import TranscodeJob
from pipeline.errors import ConfigError

__all__ = [
    "add_jobs_parser",
    "add_submit_parser",
    "cmd_jobs_list",
    "cmd_jobs_logs",
    "cmd_jobs_status",
    "cmd_jobs_stop",
    "cmd_submit",
    "description_from_args",
    "parse_env",
    "parse_runtime_env_json",
    "transcode_argv",
    "transcode_job",
]

#: transcode options that submit does not forward: the job always joins its cluster
#: (``--address auto``), never starts an embedded Ray, and is labelled with its id.
_NOT_FORWARDED = {"help", "src", "address", "num_cpus", "job_id", "no_progress"}


# --------------------------------------------------------------------------- parsers


def _transcode_parser() -> argparse.ArgumentParser:
    """``relatent transcode``'s own parser: submit accepts and forwards exactly its options,
    so the two never drift apart."""
    from jobs import transcode

    holder = argparse.ArgumentParser(add_help=False)
    return transcode.add_parser(holder.add_subparsers())


def _forwarded_actions(tp: argparse.ArgumentParser) -> list[argparse.Action]:
    """transcode's options that submit takes and forwards (``-h`` is ``help``: not one)."""
    return [a for a in tp._actions if a.dest not in _NOT_FORWARDED]


def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray dashboard / Jobs API URL (default: $RAY_API_SERVER_ADDRESS, an http "
        f"$RAY_ADDRESS, else {sj.DEFAULT_ADDRESS})",
    )


def add_submit_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``relatent submit`` (transcode's options, forwarded, plus the job's) to
    ``subparsers``; returns its parser."""
    tp = _transcode_parser()
    p = subparsers.add_parser(
        "submit",
        help="submit a transcode to a Ray cluster as a Ray job (idempotent: same work, same job)",
        description="Submit `relatent transcode SRC... --out DST` to a Ray cluster through the "
        "Jobs API. The job id is derived from the work, so resubmitting reports the existing "
        "job. Sources and --out must be reachable from the cluster (s3:// or a shared "
        "filesystem; local paths are made absolute).",
    )
    p.add_argument("src", nargs="+", help="source videos (s3:// URIs, or paths the cluster sees)")
    for action in _forwarded_actions(tp):
        p._add_action(action)
    _add_address(p)
    p.add_argument(
        "--wait", action="store_true", help="stream the job's logs; exit with its status"
    )
    p.add_argument(
        "--working-dir",
        default=None,
        help="upload this source tree with the job and run it from there "
        "(default: use the relatent installed on the cluster)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="environment variable for the job (KEY alone copies the local value); repeatable",
    )
    p.add_argument(
        "--runtime-env-json",
        default=None,
        help="extra Ray runtime_env as JSON, merged over relatent's (env_vars are merged)",
    )
    p.add_argument(
        "--resubmit-failed",
        action="store_true",
        help="if this work's job exists and FAILED or was STOPPED, delete it and submit again "
        "(committed videos are skipped, staged shards are reused)",
    )
    p.add_argument(
        "--allow-version-mismatch",
        action="store_true",
        help="submit even if the cluster runs another Ray version than this client",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the id, entrypoint and runtime_env"
    )
    p.set_defaults(func=cmd_submit)
    return p


def add_jobs_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``relatent jobs status|logs|stop|list`` to ``subparsers``; returns its parser."""
    p = subparsers.add_parser("jobs", help="status, logs, stop and list of Ray jobs on a cluster")
    jsub = p.add_subparsers(dest="jobs_command", required=True)
    st = jsub.add_parser("status", help="a job's status, message and driver exit code")
    st.add_argument("id", help="submission id (relatent-...)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    _add_address(st)
    st.set_defaults(func=cmd_jobs_status)
    lg = jsub.add_parser("logs", help="a job's driver logs")
    lg.add_argument("id", help="submission id (relatent-...)")
    lg.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    _add_address(lg)
    lg.set_defaults(func=cmd_jobs_logs)
    sp = jsub.add_parser("stop", help="stop a running job")
    sp.add_argument("id", help="submission id (relatent-...)")
    sp.add_argument("--wait", action="store_true", help="wait until the job has stopped")
    _add_address(sp)
    sp.set_defaults(func=cmd_jobs_stop)
    ls = jsub.add_parser("list", help="jobs on the cluster (relatent's only, unless --all)")
    ls.add_argument("--all", action="store_true", help="include jobs not submitted by relatent")
    _add_address(ls)
    ls.set_defaults(func=cmd_jobs_list)
    return p


# --------------------------------------------------------------------------- the job


def transcode_job(a: argparse.Namespace) -> TranscodeJob:
    """The transcode ``a`` (submit's options) asks for, validated with transcode's own
    rules: transcode's defaults for the options submit does not take, then ``a``'s values.

    Raises:
        ConfigError: an option is out of range or the options contradict each other.
    """
    from jobs.transcode import job_from_args

    ns = argparse.Namespace(
        **{x.dest: x.default for x in _transcode_parser()._actions if x.dest != "help"}
    )
    ns.__dict__.update({k: v for k, v in vars(a).items() if hasattr(ns, k)})
    ns.actors = ns.actors or 1  # sized on the cluster; only validated here
    return job_from_args(ns)


def transcode_argv(a: argparse.Namespace) -> list[str]:
    """``relatent transcode``'s arguments for the job: the sources, then every forwarded
    option stated explicitly (so the cluster's defaults cannot change what the id
    promised). :func:`cluster.submission.build_submission` adds ``--address auto --job-id
    ID --no-progress``."""
    from jobs.refine_options import lr_of, tol_of

    argv = list(a.src)
    # options whose default depends on --refine are stated as resolved here
    per_method = {"lr": lr_of(a), "tol": tol_of(a)}
    for action in _forwarded_actions(_transcode_parser()):
        value = getattr(a, action.dest, None)
        if value is None:
            value = per_method.get(action.dest)
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:  # a flag (store_true / store_false): present or not
            if value != action.default:
                argv.append(flag)
            continue
        if value is None:
            continue
        if isinstance(value, bool):
            argv += [flag, str(value).lower()]
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def parse_env(items: list[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` / ``--env KEY`` (the local value) items as a dict.

    Raises:
        ConfigError: an item is not ``KEY=VALUE`` or ``KEY``, or ``KEY`` is not set here.
    """
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or not key.replace("_", "a").isalnum():
            shown = key + ("=..." if sep else "")  # never echo a value: it may be a secret
            raise ConfigError(
                f"--env {shown!r} is not KEY=VALUE or KEY (KEY: letters, digits and _)",
                hint="e.g. --env AWS_REGION=eu-west-1",
            )
        if not sep:
            if key not in os.environ:
                raise ConfigError(
                    f"--env {key}: {key} is not set here", hint=f"use --env {key}=VALUE"
                )
            value = os.environ[key]
        env[key] = value
    return env


def parse_runtime_env_json(text: str | None) -> dict[str, Any]:
    """``--runtime-env-json``'s object (``{}`` when not given).

    Raises:
        ConfigError: ``text`` is not JSON, or not a JSON object.
    """
    if not text:
        return {}
    try:
        extra = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--runtime-env-json is not valid JSON ({exc})") from None
    if not isinstance(extra, dict):
        raise ConfigError("--runtime-env-json must be a JSON object", hint='e.g. {"pip": ["x"]}')
    return extra


def description_from_args(a: argparse.Namespace) -> sj.JobDescription:
    """The job ``relatent submit``'s options describe; local paths are made absolute (the
    job's cwd is not ours). ``a`` is left unchanged.

    Raises:
        ConfigError: a bad option, ``--env`` or ``--runtime-env-json``.
    """
    a = argparse.Namespace(**vars(a))
    a.src = [sj.absolute_uri(s) for s in a.src]
    a.out = sj.absolute_uri(a.out)
    if a.checkpoint:
        a.checkpoint = sj.absolute_uri(a.checkpoint)
    if a.report:
        a.report = sj.absolute_uri(a.report)
    return sj.JobDescription(
        argv=tuple(transcode_argv(a)),
        job=transcode_job(a),
        working_dir=a.working_dir,
        env_vars=parse_env(a.env),
        extra_runtime_env=parse_runtime_env_json(a.runtime_env_json),
    )


# --------------------------------------------------------------------------- commands


def cmd_submit(a: argparse.Namespace) -> int:
    """``relatent submit`` (see the module doc); the exit code.

    Raises:
        ConfigError: bad options or address.
        ClusterError: the cluster cannot be reached, refuses us, or its Jobs API fails.
    """
    sub = sj.build_submission(description_from_args(a))
    if a.dry_run:
        doc = {
            "submission_id": sub.submission_id,
            "entrypoint": sub.entrypoint,
            "runtime_env": sub.runtime_env,
            "metadata": sub.metadata,
            "work": sub.work,
        }
        secrets = sj.secret_values(sub.runtime_env.get("env_vars") or {})
        print(json.dumps(sj.redacted(doc, secrets), indent=2))
        return 0
    client, address, _ = sj.connect(a.address, allow_version_mismatch=a.allow_version_mismatch)
    res = sj.submit(client, address, sub, resubmit_failed=a.resubmit_failed)
    sid = res.submission_id
    if res.created:
        print(f"submitted job {sid} to {address}")
    else:
        print(f"job {sid} already exists on {address}: {sj.describe(res.info)}; not resubmitting")
        if getattr(res.info, "entrypoint", sub.entrypoint) != sub.entrypoint:
            print(
                "note: its entrypoint differs from this one (sizing or logging options); "
                "the existing job keeps its own",
            )
    print(f"  status: relatent jobs status {sid} --address {address}")
    print(f"  logs:   relatent jobs logs {sid} --address {address} --follow")
    if not a.wait:
        if not res.created and sj.job_status(res.info) in ("FAILED", "STOPPED"):
            print(
                f"relatent submit: job {sid} on {address} is {sj.job_status(res.info)}; "
                "pass --resubmit-failed to run it again",
                file=sys.stderr,
            )
            return sj.exit_code(res.info)
        return 0
    info = sj.follow_logs(client, address, sid, sys.stdout)
    code = sj.exit_code(info)
    line = f"job {sid} on {address}: {sj.describe(info)}"
    if code:
        print(f"relatent submit: {line}, exit code {code}", file=sys.stderr)
    else:
        print(line)
    return code


def cmd_jobs_status(a: argparse.Namespace) -> int:
    """``relatent jobs status ID``: the job's status, message and driver exit code.

    Raises:
        ConfigError: no such job, or a bad address.
        ClusterError: the cluster cannot be reached or its Jobs API fails.
    """
    client, address, _ = sj.connect(a.address, allow_version_mismatch=True)
    info = sj.require_job(client, address, a.id)
    if a.json:
        fields = ("submission_id", "job_id", "status", "message", "entrypoint", "start_time",
                  "end_time", "driver_exit_code", "metadata", "error_type")  # fmt: skip
        doc = {f: getattr(info, f, None) for f in fields}
        doc["status"] = sj.job_status(info)
        print(json.dumps(sj.redacted(json.loads(json.dumps(doc, default=str))), indent=2))
        return 0
    print(f"job         {a.id} on {address}")
    print(f"status      {sj.describe(info)}")
    print(f"entrypoint  {sj.redact_text(str(info.entrypoint))}")
    if getattr(info, "driver_exit_code", None) is not None:
        print(f"exit code   {info.driver_exit_code}")
    return 0


def cmd_jobs_logs(a: argparse.Namespace) -> int:
    """``relatent jobs logs ID [--follow]``: the driver's logs (``--follow``: until the job
    ends, then its exit code, see :func:`cluster.submission.exit_code`).

    Raises:
        ConfigError: no such job, or a bad address.
        ClusterError: the cluster cannot be reached or its Jobs API fails.
    """
    client, address, _ = sj.connect(a.address, allow_version_mismatch=True)
    sj.require_job(client, address, a.id)
    if a.follow:
        return sj.exit_code(sj.follow_logs(client, address, a.id, sys.stdout))
    sys.stdout.write(sj.job_logs(client, address, a.id))
    return 0


def cmd_jobs_stop(a: argparse.Namespace) -> int:
    """``relatent jobs stop ID [--wait]``.

    Raises:
        ConfigError: no such job, or a bad address.
        ClusterError: the cluster cannot be reached or its Jobs API fails.
    """
    client, address, _ = sj.connect(a.address, allow_version_mismatch=True)
    info = sj.require_job(client, address, a.id)
    if sj.job_status(info) in sj.TERMINAL:
        print(f"job {a.id} on {address} has already ended: {sj.describe(info)}")
        return 0
    final = sj.stop_job(client, address, a.id, wait=a.wait)
    now = f", now {sj.describe(final)}" if final is not None else ""
    print(f"job {a.id} on {address}: stop requested" + now)
    return 0


def cmd_jobs_list(a: argparse.Namespace) -> int:
    """``relatent jobs list [--all]``: one line per job, oldest first.

    Raises:
        ConfigError: a bad address.
        ClusterError: the cluster cannot be reached or its Jobs API fails.
    """
    client, address, _ = sj.connect(a.address, allow_version_mismatch=True)
    rows = sj.list_jobs(client, address, include_all=a.all)
    for j in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((j.start_time or 0) / 1000))
        print(
            f"{j.submission_id or j.job_id:<28} {sj.job_status(j):<10} {started}Z  "
            f"{sj.redact_text(str(j.entrypoint))[:60]}"
        )
    if not rows:
        print(f"no {'' if a.all else 'relatent '}jobs on {address}")
    return 0
