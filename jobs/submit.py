"""``relatent submit`` and ``relatent jobs``: run transcodes on a Ray cluster through the
Ray Jobs API (the dashboard's HTTP endpoint, ``http://<head>:8265``).

``relatent submit SRC... --out DST --address URL [transcode options]`` turns the command
line into a ``relatent transcode ... --address auto`` entrypoint and submits it with
:class:`ray.job_submission.JobSubmissionClient`. The submission id is deterministic: it is
``relatent-<16 hex>`` of a canonical JSON of the *work* (sources, output, model, refinement
config, shard layout, carry, relatent version), so submitting the same work again finds the
existing job and reports it instead of starting a second one. Sizing options (actors, GPUs
per actor, in-flight shards, batch) do not change the work, so they are not part of the id.

Authentication: Ray 2.60 clusters started with ``ray start`` use token authentication. The
token is taken from ``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``,
else ``~/.ray/auth_token`` (what ``ray get-auth-token`` prints on the head node), and sent
as ``Authorization: Bearer <token>``. ``RAY_AUTH_MODE=disabled`` sends none.

Exit codes: 0 submitted (or already submitted and not failed; with ``--wait``: the job
SUCCEEDED); with ``--wait`` a FAILED job exits with its driver's exit code (``relatent
transcode``'s: 1 some videos failed, 2 bad options, 5 model, ...) or 1 when there is none;
a STOPPED job exits 1. Cluster problems (unreachable, authentication, another Ray version)
raise :class:`pipeline.errors.ClusterError` (exit 7), naming the address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pipeline.errors import ClusterError, ConfigError

#: The dashboard address used when neither ``--address`` nor the environment names one.
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
#: Submission ids are ``relatent-`` + this many hex digits of the work's sha256.
ID_PREFIX = "relatent-"
ID_HEX = 16
#: Version of the canonical work description (bump if its fields change meaning).
WORK_FORMAT = "relatent-submit/1"
#: Files never uploaded with ``--working-dir`` (outputs, caches, VCS, virtualenvs).
WORKING_DIR_EXCLUDES = [
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", "runs", "out", "tests", "docs/benchmarks",
]
#: transcode options that submit does not forward: the job always joins its cluster
#: (``--address auto``), never starts an embedded Ray, and is labelled with its id.
_NOT_FORWARDED = {"help", "src", "address", "num_cpus", "job_id", "no_progress"}
#: TranscodeJob fields that are not part of the work (sizing, performance, labels).
_NOT_WORK = ("cluster", "job_id", "batch")
_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
_HTTP_TIMEOUT = 15.0


# --------------------------------------------------------------------------- parsers


def _transcode_parser() -> argparse.ArgumentParser:
    """``relatent transcode``'s own parser: submit accepts and forwards exactly its options,
    so the two never drift apart."""
    from jobs import transcode

    holder = argparse.ArgumentParser(add_help=False)
    return transcode.add_parser(holder.add_subparsers())


def _forwarded_actions(tp: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a for a in tp._actions
        if a.dest not in _NOT_FORWARDED and not isinstance(a, argparse._HelpAction)
    ]


def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray dashboard / Jobs API URL (default: $RAY_API_SERVER_ADDRESS, an http "
        f"$RAY_ADDRESS, else {DEFAULT_ADDRESS})",
    )


def add_submit_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    p.add_argument("--wait", action="store_true", help="stream the job's logs; exit with its status")
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
    p.add_argument("--dry-run", action="store_true", help="print the id, entrypoint and runtime_env")
    p.set_defaults(func=cmd_submit)
    return p


def add_jobs_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("jobs", help="status, logs, stop and list of Ray jobs on a cluster")
    jsub = p.add_subparsers(dest="jobs_command", required=True)
    st = jsub.add_parser("status", help="a job's status, message and driver exit code")
    st.add_argument("id", help="submission id (relatent-...)")
    st.add_argument("--json", action="store_true")
    _add_address(st)
    st.set_defaults(func=cmd_jobs_status)
    lg = jsub.add_parser("logs", help="a job's driver logs")
    lg.add_argument("id")
    lg.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    _add_address(lg)
    lg.set_defaults(func=cmd_jobs_logs)
    sp = jsub.add_parser("stop", help="stop a running job")
    sp.add_argument("id")
    sp.add_argument("--wait", action="store_true", help="wait until the job has stopped")
    _add_address(sp)
    sp.set_defaults(func=cmd_jobs_stop)
    ls = jsub.add_parser("list", help="jobs on the cluster (relatent's only, unless --all)")
    ls.add_argument("--all", action="store_true", help="include jobs not submitted by relatent")
    _add_address(ls)
    ls.set_defaults(func=cmd_jobs_list)
    return p


# --------------------------------------------------------------------------- the work


def _absolute(uri: str) -> str:
    """URIs stay as they are; local paths become absolute (a job's cwd is not ours)."""
    if "://" in uri:
        return uri
    return str(Path(uri).expanduser().absolute())


def relatent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relatent")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def work_spec(a: argparse.Namespace) -> dict[str, Any]:
    """The canonical description of the work ``a`` asks for (what the id is derived from).

    Everything that changes the output bytes or where they go is in it; sizing options
    (actors, resources, in-flight shards, attempts, batch) and logging are not.
    """
    from jobs.transcode import job_from_args

    # transcode's namespace: its defaults for the options submit does not take, then ours.
    ns = argparse.Namespace(
        **{x.dest: x.default for x in _transcode_parser()._actions if x.dest != "help"}
    )
    ns.__dict__.update({k: v for k, v in vars(a).items() if hasattr(ns, k)})
    ns.actors = ns.actors or 1  # sized on the cluster; only validated here
    job = job_from_args(ns)  # validates every option with transcode's own rules
    # Every field of the job that shapes the output (model, refinement, shard layout, carry,
    # and any added later), minus the sizing, the performance knobs and the label.
    work = dataclasses.asdict(job)
    for key in _NOT_WORK:
        work.pop(key, None)
    work["sources"] = sorted(job.sources)
    return {"format": WORK_FORMAT, **work, "relatent": relatent_version()}


def submission_id(work: dict[str, Any]) -> str:
    blob = json.dumps(work, sort_keys=True, separators=(",", ":")).encode()
    return ID_PREFIX + hashlib.sha256(blob).hexdigest()[:ID_HEX]


def transcode_argv(a: argparse.Namespace, sid: str) -> list[str]:
    """``relatent transcode``'s arguments for the job: every option stated explicitly (so
    the cluster's defaults cannot change what the id promised), joining the job's cluster."""
    argv = list(a.src)
    for action in _forwarded_actions(_transcode_parser()):
        value = getattr(a, action.dest, None)
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
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
    return [*argv, "--address", "auto", "--job-id", sid, "--no-progress"]


def _parse_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or not key.replace("_", "a").isalnum():
            raise ConfigError(f"--env {item!r} is not KEY=VALUE or KEY", hint="e.g. --env AWS_REGION=eu-west-1")
        if not sep:
            if key not in os.environ:
                raise ConfigError(
                    f"--env {key}: {key} is not set here", hint=f"use --env {key}=VALUE"
                )
            value = os.environ[key]
        env[key] = value
    return env


def runtime_env(a: argparse.Namespace) -> dict[str, Any]:
    """relatent's runtime_env, with ``--env`` and ``--runtime-env-json`` merged in."""
    renv: dict[str, Any] = {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    if a.working_dir:
        wd = Path(a.working_dir)
        if not (wd / "jobs" / "transcode.py").is_file():
            raise ConfigError(
                f"--working-dir {a.working_dir} is not a relatent source tree (no jobs/transcode.py)",
                hint="point it at the repository root, or omit it to use the installed relatent",
            )
        renv["working_dir"] = str(wd.resolve())
        renv["excludes"] = list(WORKING_DIR_EXCLUDES)
    renv["env_vars"].update(_parse_env(a.env))
    if a.runtime_env_json:
        try:
            extra = json.loads(a.runtime_env_json)
        except ValueError as exc:
            raise ConfigError(f"--runtime-env-json is not valid JSON ({exc})") from None
        if not isinstance(extra, dict):
            raise ConfigError("--runtime-env-json must be a JSON object", hint='e.g. {"pip": ["x"]}')
        extra = dict(extra)
        env_vars = extra.pop("env_vars", None) or {}
        if not isinstance(env_vars, dict):
            raise ConfigError("--runtime-env-json: env_vars must be an object of strings")
        renv["env_vars"].update({str(k): str(v) for k, v in env_vars.items()})
        renv.update(extra)
    return renv


@dataclass(frozen=True)
class Submission:
    """Everything sent to the Jobs API for one ``relatent submit``."""

    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    work: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)


def build_submission(a: argparse.Namespace) -> Submission:
    a.src = [_absolute(s) for s in a.src]
    a.out = _absolute(a.out)
    if a.checkpoint:
        a.checkpoint = _absolute(a.checkpoint)
    if a.report:
        a.report = _absolute(a.report)
    work = work_spec(a)
    sid = submission_id(work)
    argv = transcode_argv(a, sid)
    prefix = ["python", "-m", "jobs.transcode"] if a.working_dir else ["relatent", "transcode"]
    return Submission(
        submission_id=sid,
        entrypoint=shlex.join(prefix + argv),
        runtime_env=runtime_env(a),
        work=work,
        metadata={
            "relatent.version": work["relatent"],
            "relatent.out": work["out"],
            "relatent.sources": str(len(work["sources"])),
        },
    )


# --------------------------------------------------------------------------- the cluster


def resolve_address(address: str | None) -> str:
    """The dashboard URL to talk to: ``--address``, else the environment, else the default."""
    if not address:
        env_api = os.environ.get("RAY_API_SERVER_ADDRESS")
        env_ray = os.environ.get("RAY_ADDRESS", "")
        address = env_api or (env_ray if env_ray.startswith(("http://", "https://")) else None)
        address = address or DEFAULT_ADDRESS
    address = address.strip().rstrip("/")
    if address.startswith("ray://") or address == "auto":
        raise ConfigError(
            f"--address {address} is not a Jobs API address",
            hint="use the dashboard URL of the head node, e.g. http://HEAD:8265",
        )
    if "://" not in address:
        address = "http://" + address
    if not address.startswith(("http://", "https://")):
        raise ConfigError(f"--address {address}: only http:// and https:// are supported")
    return address


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer <token>`` when a Ray token is available (see the module doc)."""
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        explicit = os.environ.get("RAY_AUTH_TOKEN_PATH")
        path = Path(explicit).expanduser() if explicit else Path.home() / ".ray" / "auth_token"
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            if explicit:
                raise ConfigError(
                    f"RAY_AUTH_TOKEN_PATH={explicit} does not exist",
                    hint="point it at the cluster's token file, or set RAY_AUTH_TOKEN",
                ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read the Ray auth token {path}: {exc}") from None
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.contextmanager
def _no_address_override() -> Iterator[None]:
    """Ray's client lets RAY_ADDRESS / RAY_API_SERVER_ADDRESS override the address it is
    given; the address we resolved (and name in errors) must be the one used."""
    saved = {k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _auth_error(address: str, status: int) -> ClusterError:
    if status == 401:
        return ClusterError(
            f"the Ray cluster at {address} requires an authentication token and none was sent",
            hint="get it on the head node with `ray get-auth-token` and set RAY_AUTH_TOKEN "
            "(or save it to ~/.ray/auth_token)",
        )
    return ClusterError(
        f"the Ray cluster at {address} rejected the authentication token",
        hint="RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token holds another "
        "cluster's token; use the one `ray get-auth-token` prints on this cluster's head",
    )


def cluster_ray_version(address: str, headers: dict[str, str]) -> str:
    """The Ray version the cluster runs (``GET /api/version``); raises ClusterError naming
    the address when it cannot be reached or refuses us."""
    import requests

    try:
        r = requests.get(f"{address}/api/version", headers=headers, timeout=_HTTP_TIMEOUT)
    except requests.exceptions.RequestException as exc:
        raise ClusterError(
            f"cannot reach the Ray dashboard at {address} ({type(exc).__name__})",
            hint="check the address and port (the dashboard listens on 8265 by default), that "
            "the cluster is up (`ray status` on the head), and any tunnel "
            "(`ray dashboard infra/aws/cluster.yaml`, `kubectl port-forward svc/...-head-svc 8265`)",
        ) from None
    if r.status_code in (401, 403):
        raise _auth_error(address, r.status_code)
    try:
        r.raise_for_status()
        return str(r.json()["ray_version"])
    except Exception:
        raise ClusterError(
            f"{address} answered /api/version with HTTP {r.status_code}, not a Ray dashboard",
            hint="pass the Ray dashboard URL, e.g. http://HEAD:8265",
        ) from None


def connect(address: str | None, *, allow_version_mismatch: bool = False) -> tuple[Any, str, str]:
    """A JobSubmissionClient for the cluster, after checking it is reachable, accepts our
    token and runs our Ray version. Returns ``(client, address, cluster_ray_version)``."""
    import ray
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    headers = auth_headers()
    version = cluster_ray_version(url, headers)
    if version != ray.__version__ and not allow_version_mismatch:
        raise ClusterError(
            f"the Ray cluster at {url} runs Ray {version}, this client runs Ray {ray.__version__}",
            hint=f"relatent pins ray=={ray.__version__}: start the cluster from the matching image "
            "(infra/docker/Dockerfile), or pass --allow-version-mismatch",
        )
    try:
        with _no_address_override():
            client = JobSubmissionClient(url, headers=dict(headers))
    except AuthenticationError as exc:
        raise _auth_error(url, 403 if "Forbidden" in str(exc) else 401) from None
    except (ConnectionError, RuntimeError) as exc:
        raise ClusterError(f"the Jobs API at {url} failed: {exc}") from None
    return client, url, version


def _status_code(exc: BaseException) -> int | None:
    # JobSubmissionClient raises RuntimeError("Request failed with status code 404: ...").
    text = str(exc)
    marker = "status code "
    if marker in text:
        digits = text.split(marker, 1)[1][:3]
        if digits.isdigit():
            return int(digits)
    return None


def _is_duplicate(exc: BaseException) -> bool:
    return "already exists" in str(exc)


def get_job(client: Any, address: str, sid: str) -> Any | None:
    """The job's JobDetails, or None when the cluster has no job with that id."""
    try:
        return client.get_job_info(sid)
    except RuntimeError as exc:
        if _status_code(exc) == 404 or "does not exist" in str(exc):
            return None
        raise ClusterError(f"asking {address} for job {sid} failed: {exc}") from None


def _call(address: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ClusterError:
        raise
    except Exception as exc:
        raise ClusterError(f"{what} on the Ray cluster at {address} failed: {exc}") from None


def _status(info: Any) -> str:
    return str(getattr(info.status, "value", info.status))


@dataclass
class SubmitResult:
    submission_id: str
    created: bool  # False: the job already existed and was reported
    info: Any  # JobDetails


def submit(client: Any, address: str, sub: Submission, *, resubmit_failed: bool = False) -> SubmitResult:
    """Submit ``sub`` unless a job with its id exists (then report that job). A concurrent
    submitter that wins the race shows up as the Jobs API's "already exists" error, which is
    handled the same way."""
    existing = get_job(client, address, sub.submission_id)
    if existing is not None:
        if not (resubmit_failed and _status(existing) in ("FAILED", "STOPPED")):
            return SubmitResult(sub.submission_id, False, existing)
        _call(address, f"deleting job {sub.submission_id}", client.delete_job, sub.submission_id)
    # A job whose runtime env or agent is still starting can make the API answer 500 "No
    # available agent"; that is transient, so retry for a short while.
    deadline = time.monotonic() + 60.0
    while True:
        try:
            client.submit_job(
                entrypoint=sub.entrypoint,
                submission_id=sub.submission_id,
                runtime_env=sub.runtime_env,
                metadata=dict(sub.metadata),
            )
            break
        except RuntimeError as exc:
            if _is_duplicate(exc):
                info = get_job(client, address, sub.submission_id)
                if info is not None:
                    return SubmitResult(sub.submission_id, False, info)
            if "No available agent" in str(exc) and time.monotonic() < deadline:
                time.sleep(2.0)
                continue
            raise ClusterError(
                f"submitting job {sub.submission_id} to the Ray cluster at {address} failed: {exc}"
            ) from None
        except ClusterError:
            raise
        except Exception as exc:
            raise ClusterError(
                f"submitting job {sub.submission_id} to the Ray cluster at {address} failed: {exc}",
                hint="a working_dir must be a folder the client can read and zip",
            ) from None
    info = get_job(client, address, sub.submission_id)
    return SubmitResult(sub.submission_id, True, info)


def follow_logs(client: Any, address: str, sid: str, out: TextIO) -> Any:
    """Stream the job's logs to ``out`` until it ends; returns its final JobDetails.

    Uses the Jobs API's log websocket; if that is unavailable (a proxy that drops
    websockets, an agent restarting), polls the logs instead. Reading logs is best effort:
    the job's status decides the result."""
    printed = 0
    tailed = False

    async def tail() -> None:
        nonlocal printed
        async for chunk in client.tail_job_logs(sid):
            out.write(chunk)
            out.flush()
            printed += len(chunk)

    try:
        asyncio.run(tail())
        tailed = True
    except Exception as exc:
        print(f"relatent: log stream from {address} broke ({exc}); polling", file=sys.stderr)
    warned = False
    while True:
        info = get_job(client, address, sid)
        if info is None:
            raise ClusterError(f"job {sid} disappeared from the Ray cluster at {address}")
        if not tailed:
            try:
                logs = client.get_job_logs(sid)
            except Exception as exc:
                logs = ""
                if not warned:
                    print(f"relatent: cannot read the logs of {sid} from {address} ({exc})", file=sys.stderr)
                    warned = True
            if len(logs) > printed:
                out.write(logs[printed:])
                out.flush()
                printed = len(logs)
        if _status(info) in _TERMINAL:
            return info
        time.sleep(1.0)


def exit_code(info: Any) -> int:
    """0 for SUCCEEDED; the driver's exit code (or 1) for FAILED; 1 for STOPPED."""
    status = _status(info)
    if status == "SUCCEEDED":
        return 0
    if status == "FAILED":
        code = getattr(info, "driver_exit_code", None)
        return int(code) if code else 1
    return 1


def _describe(info: Any) -> str:
    msg = f" ({info.message})" if getattr(info, "message", None) else ""
    return f"{_status(info)}{msg}"


# --------------------------------------------------------------------------- commands


def cmd_submit(a: argparse.Namespace) -> int:
    sub = build_submission(a)
    if a.dry_run:
        print(json.dumps(
            {"submission_id": sub.submission_id, "entrypoint": sub.entrypoint,
             "runtime_env": sub.runtime_env, "metadata": sub.metadata, "work": sub.work},
            indent=2,
        ))
        return 0
    client, address, _ = connect(a.address, allow_version_mismatch=a.allow_version_mismatch)
    res = submit(client, address, sub, resubmit_failed=a.resubmit_failed)
    sid = res.submission_id
    if res.created:
        print(f"submitted job {sid} to {address}")
    else:
        print(f"job {sid} already exists on {address}: {_describe(res.info)}; not resubmitting")
        if getattr(res.info, "entrypoint", sub.entrypoint) != sub.entrypoint:
            print(
                "note: its entrypoint differs from this one (sizing or logging options); "
                "the existing job keeps its own",
            )
    print(f"  status: relatent jobs status {sid} --address {address}")
    print(f"  logs:   relatent jobs logs {sid} --address {address} --follow")
    if not a.wait:
        if not res.created and _status(res.info) in ("FAILED", "STOPPED"):
            print(
                f"relatent submit: job {sid} on {address} is {_status(res.info)}; "
                "pass --resubmit-failed to run it again",
                file=sys.stderr,
            )
            return exit_code(res.info)
        return 0
    info = follow_logs(client, address, sid, sys.stdout)
    code = exit_code(info)
    line = f"job {sid} on {address}: {_describe(info)}"
    if code:
        print(f"relatent submit: {line}, exit code {code}", file=sys.stderr)
    else:
        print(line)
    return code


def cmd_jobs_status(a: argparse.Namespace) -> int:
    client, address, _ = connect(a.address, allow_version_mismatch=True)
    info = _require(client, address, a.id)
    if a.json:
        fields = ("submission_id", "job_id", "status", "message", "entrypoint", "start_time",
                  "end_time", "driver_exit_code", "metadata", "error_type")
        doc = {f: getattr(info, f, None) for f in fields}
        doc["status"] = _status(info)
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"job         {a.id} on {address}")
    print(f"status      {_describe(info)}")
    print(f"entrypoint  {info.entrypoint}")
    if getattr(info, "driver_exit_code", None) is not None:
        print(f"exit code   {info.driver_exit_code}")
    return 0


def _require(client: Any, address: str, sid: str) -> Any:
    info = get_job(client, address, sid)
    if info is None:
        raise ConfigError(
            f"there is no job {sid} on the Ray cluster at {address}",
            hint=f"list them with `relatent jobs list --address {address}`",
        )
    return info


def cmd_jobs_logs(a: argparse.Namespace) -> int:
    client, address, _ = connect(a.address, allow_version_mismatch=True)
    _require(client, address, a.id)
    if a.follow:
        return exit_code(follow_logs(client, address, a.id, sys.stdout))
    sys.stdout.write(_call(address, f"reading the logs of {a.id}", client.get_job_logs, a.id))
    return 0


def cmd_jobs_stop(a: argparse.Namespace) -> int:
    client, address, _ = connect(a.address, allow_version_mismatch=True)
    info = _require(client, address, a.id)
    if _status(info) in _TERMINAL:
        print(f"job {a.id} on {address} has already ended: {_describe(info)}")
        return 0
    _call(address, f"stopping job {a.id}", client.stop_job, a.id)
    while a.wait and _status(info) not in _TERMINAL:
        time.sleep(1.0)
        info = _require(client, address, a.id)
    print(f"job {a.id} on {address}: stop requested" + (f", now {_describe(info)}" if a.wait else ""))
    return 0


def cmd_jobs_list(a: argparse.Namespace) -> int:
    client, address, _ = connect(a.address, allow_version_mismatch=True)
    jobs = _call(address, "listing jobs", client.list_jobs)
    rows = [
        j for j in jobs
        if a.all or str(getattr(j, "submission_id", "") or "").startswith(ID_PREFIX)
    ]
    rows.sort(key=lambda j: getattr(j, "start_time", 0) or 0)
    for j in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((j.start_time or 0) / 1000))
        print(f"{j.submission_id or j.job_id:<28} {_status(j):<10} {started}Z  {j.entrypoint[:60]}")
    if not rows:
        print(f"no {'' if a.all else 'relatent '}jobs on {address}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.submit ...``: the two commands without the rest of the CLI."""
    from pipeline.errors import RelatentError

    parser = argparse.ArgumentParser(prog="relatent")
    sub = parser.add_subparsers(dest="command", required=True)
    add_submit_parser(sub)
    add_jobs_parser(sub)
    a = parser.parse_args(argv)
    try:
        return int(a.func(a) or 0)
    except RelatentError as exc:
        print(f"relatent {a.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
