"""A Ray Jobs client for relatent transcodes: submit, watch, stop and list jobs through the
Ray dashboard's HTTP endpoint (``http://<head>:8265``), with
:class:`ray.job_submission.JobSubmissionClient`.

A transcode to submit is a :class:`JobDescription`: ``relatent transcode``'s arguments and
the :class:`cluster.config.TranscodeJob` they describe, plus what the job's Ray
``runtime_env`` needs. :func:`build_submission` turns it into the :class:`Submission` sent
to the Jobs API. The submission id is deterministic: ``relatent-<16 hex>`` of a canonical
JSON of the *work* (:func:`work_spec`: sources, output, model, refinement config, shard
layout, carry, relatent version), so submitting the same work again finds the existing
job and reports it instead of starting a second one. Sizing (actors, GPUs per actor,
in-flight shards, batch) does not change the work, so it is not part of the id.

Authentication: Ray 2.60 clusters started with ``ray start`` use token authentication. The
token is taken from ``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``,
else ``~/.ray/auth_token`` (what ``ray get-auth-token`` prints on the head node), and sent
as ``Authorization: Bearer <token>``. ``RAY_AUTH_MODE=disabled`` sends none.

Cluster problems (unreachable, authentication, another Ray version, a failing Jobs API
call) raise :class:`pipeline.errors.ClusterError` naming the address. Ray and ``requests``
are imported only by the functions that talk to a cluster.

Secrets: what relatent prints or logs about a job goes through :func:`redacted` /
:func:`redact_text` first. The value of an environment variable whose name is
secret-looking (:func:`is_secret_name`: it contains one of :data:`SECRET_NAME_PARTS`, e.g.
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``DB_PASSWORD``, ``API_KEY``) becomes
:data:`REDACTED`; ``AWS_ACCESS_KEY_ID`` (:data:`MASKED_NAMES`) names an identity rather
than proving one, so it is shown as ``aws configure list`` shows it: all but its last 4
characters masked. The user information of any URL (``scheme://user:password@host``) is
redacted wherever it appears. The job itself still receives the real values: only what is
shown changes (and the submission id does not depend on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cluster.config import TranscodeJob
from pipeline.errors import ClusterError, ConfigError

__all__ = [
    "DEFAULT_ADDRESS",
    "ID_HEX",
    "ID_PREFIX",
    "MASKED_NAMES",
    "REDACTED",
    "SECRET_NAME_PARTS",
    "TERMINAL",
    "WORKING_DIR_EXCLUDES",
    "WORK_FORMAT",
    "JobDescription",
    "Submission",
    "SubmitResult",
    "absolute_uri",
    "auth_headers",
    "build_submission",
    "cluster_ray_version",
    "connect",
    "describe",
    "exit_code",
    "follow_logs",
    "get_job",
    "is_duplicate",
    "is_secret_name",
    "job_logs",
    "job_status",
    "list_jobs",
    "redact_text",
    "redact_value",
    "redacted",
    "relatent_version",
    "require_job",
    "resolve_address",
    "runtime_env",
    "secret_values",
    "stop_job",
    "submission_id",
    "submit",
    "work_spec",
]

#: The dashboard address used when neither ``--address`` nor the environment names one.
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
#: Submission ids are ``relatent-`` + this many hex digits of the work's sha256.
ID_PREFIX = "relatent-"
ID_HEX = 16
#: Version of the canonical work description (bump if its fields change meaning).
WORK_FORMAT = "relatent-submit/1"
#: Files never uploaded with a working_dir (outputs, caches, VCS, virtualenvs).
WORKING_DIR_EXCLUDES = [
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", "runs", "out", "tests", "docs/benchmarks",
]  # fmt: skip
#: TranscodeJob fields that are not part of the work (sizing, performance, labels).
_NOT_WORK = ("cluster", "job_id", "batch")
#: RefineConfig fields of rate control (None: off), left out of the work when off.
_RATE_CONTROL_FIELDS = ("target_psnr", "target_msssim", "target_kbps", "max_kbps")
#: Job statuses after which nothing changes any more.
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
_HTTP_TIMEOUT = 15.0


# --------------------------------------------------------------------------- secrets

#: What a hidden value is shown as.
REDACTED = "<redacted>"
#: A variable (or JSON key) whose upper-cased name contains one of these holds a secret.
SECRET_NAME_PARTS = (
    "SECRET", "TOKEN", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "PRIVATE", "KEY",
    "COOKIE",
)  # fmt: skip
#: Names that match :data:`SECRET_NAME_PARTS` but name an identity, not a secret: shown
#: with all but their last 4 characters masked (as ``aws configure list`` does).
MASKED_NAMES = frozenset({"AWS_ACCESS_KEY_ID"})
#: ``scheme://userinfo@``: the user information of a URL (``user``, ``user:password``).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@]+@")


def is_secret_name(name: str) -> bool:
    """Whether the variable or key ``name`` looks like it holds a secret (any case): it
    contains one of :data:`SECRET_NAME_PARTS`, or is one of :data:`MASKED_NAMES`."""
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def redact_text(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with the user information of every URL replaced by :data:`REDACTED`
    (``https://u:p@host/x`` -> ``https://<redacted>@host/x``) and every occurrence of the
    ``secrets`` values (e.g. :func:`secret_values`; values under 4 characters are left
    alone) replaced too."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    for value in sorted({v for v in secrets if len(v) >= 4}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def redact_value(name: str, value: str) -> str:
    """How the value of variable ``name`` is shown: :data:`REDACTED` for a secret name,
    the last 4 characters behind ``*`` for :data:`MASKED_NAMES`, else the value with any
    URL's user information redacted (:func:`redact_text`)."""
    if name.upper() in MASKED_NAMES:
        return "*" * max(0, len(value) - 4) + value[-4:] if len(value) > 4 else REDACTED
    if is_secret_name(name):
        return REDACTED
    return redact_text(value)


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The values of ``env`` that :func:`redact_value` hides (to scrub them from free text,
    e.g. an error a server echoed)."""
    return [str(v) for k, v in env.items() if is_secret_name(str(k)) and v]


def redacted(obj: Any, secrets: Sequence[str] = ()) -> Any:
    """A copy of the JSON-like ``obj`` fit to print or log: in every mapping (at any depth)
    a scalar value under a secret-looking key goes through :func:`redact_value` (as a
    string), and every other string through :func:`redact_text` (with ``secrets``)."""
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            secret = isinstance(k, str) and is_secret_name(k)
            if secret and v is not None and not isinstance(v, Mapping | list | tuple):
                out[k] = redact_value(k, str(v))
            else:
                out[k] = redacted(v, secrets)
        return out
    if isinstance(obj, list | tuple):
        return [redacted(v, secrets) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    return obj


# --------------------------------------------------------------------------- the work


def absolute_uri(uri: str) -> str:
    """URIs stay as they are; local paths become absolute (a job's cwd is not ours)."""
    if "://" in uri:
        return uri
    return str(Path(uri).expanduser().absolute())


def relatent_version() -> str:
    """The installed relatent's version (``0+unknown`` when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relatent")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def work_spec(job: TranscodeJob) -> dict[str, Any]:
    """The canonical description of the work ``job`` does (what the id is derived from).

    Every field of the job that shapes the output bytes or where they go (model,
    refinement, shard layout, carry, and any added later) is in it, sources sorted; the
    sizing, the performance knobs and the label are not.
    """
    work = dataclasses.asdict(job)
    for key in _NOT_WORK:
        work.pop(key, None)
    # quality settings that are off are left out, so the ids of earlier work stay the same
    for d, key, off in (
        (work, "min_psnr", None), (work, "strict", False),
        (work["model"], "rate_points", ()),
        *((work["refine"], k, None) for k in _RATE_CONTROL_FIELDS),
    ):  # fmt: skip
        if key in d and d[key] == off:
            del d[key]
    ref = work["refine"]  # the intra frame's lambda only counts in a refined GOP
    if ref.get("ip_ratio") == 1.0 or ref["gop"] == 1 or ref["method"] == "none" or not ref["iters"]:
        ref.pop("ip_ratio", None)
    work["sources"] = sorted(job.sources)
    return {"format": WORK_FORMAT, **work, "relatent": relatent_version()}


def submission_id(work: Mapping[str, Any]) -> str:
    """``relatent-`` + the first 16 hex digits of the sha256 of ``work``'s canonical JSON
    (sorted keys, no spaces)."""
    blob = json.dumps(work, sort_keys=True, separators=(",", ":")).encode()
    return ID_PREFIX + hashlib.sha256(blob).hexdigest()[:ID_HEX]


def runtime_env(
    working_dir: str | None, env_vars: Mapping[str, str], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """relatent's Ray runtime_env: unbuffered output, the source tree ``working_dir``
    (uploaded without :data:`WORKING_DIR_EXCLUDES`) when given, ``env_vars``, and ``extra``
    merged over it (its ``env_vars`` merged into ours).

    Raises:
        ConfigError: ``working_dir`` is not a relatent source tree, or ``extra``'s
            ``env_vars`` is not an object.
    """
    renv: dict[str, Any] = {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    if working_dir:
        wd = Path(working_dir)
        if not (wd / "jobs" / "transcode.py").is_file():
            raise ConfigError(
                f"--working-dir {working_dir} is not a relatent source tree (no jobs/transcode.py)",
                hint="point it at the repository root, or omit it to use the installed relatent",
            )
        renv["working_dir"] = str(wd.resolve())
        renv["excludes"] = list(WORKING_DIR_EXCLUDES)
    renv["env_vars"].update(env_vars)
    more = dict(extra)
    more_vars = more.pop("env_vars", None) or {}
    if not isinstance(more_vars, dict):
        raise ConfigError("--runtime-env-json: env_vars must be an object of strings")
    renv["env_vars"].update({str(k): str(v) for k, v in more_vars.items()})
    renv.update(more)
    return renv


@dataclass(frozen=True)
class JobDescription:
    """A ``relatent transcode`` to run as a Ray job.

    Attributes:
        argv: ``relatent transcode``'s arguments: the sources as the cluster sees them, then
            every option stated explicitly (so the cluster's defaults cannot change what the
            id promises), without ``--address``, ``--job-id`` and ``--no-progress`` (the job
            joins its own cluster and is labelled with its submission id).
        job: the transcode those arguments describe (its work gives the id).
        working_dir: a relatent source tree uploaded with the job and run from
            (``python -m jobs.transcode``); ``None``: the relatent installed on the cluster.
        env_vars: environment variables of the job.
        extra_runtime_env: more Ray runtime_env, merged over relatent's (:func:`runtime_env`).
    """

    argv: tuple[str, ...]
    job: TranscodeJob
    working_dir: str | None = None
    env_vars: Mapping[str, str] = field(default_factory=dict)
    extra_runtime_env: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Submission:
    """Everything sent to the Jobs API for one job."""

    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    work: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)


def build_submission(desc: JobDescription) -> Submission:
    """The submission of ``desc``: its id (:func:`submission_id` of :func:`work_spec`), the
    entrypoint (``relatent transcode ARGV --address auto --job-id ID --no-progress``, or
    ``python -m jobs.transcode ...`` from a working_dir), the runtime_env and metadata.

    Raises:
        ConfigError: see :func:`runtime_env`.
    """
    work = work_spec(desc.job)
    sid = submission_id(work)
    argv = [*desc.argv, "--address", "auto", "--job-id", sid, "--no-progress"]
    prefix = ["python", "-m", "jobs.transcode"] if desc.working_dir else ["relatent", "transcode"]
    return Submission(
        submission_id=sid,
        entrypoint=shlex.join(prefix + argv),
        runtime_env=runtime_env(desc.working_dir, desc.env_vars, desc.extra_runtime_env),
        work=work,
        metadata={
            "relatent.version": work["relatent"],
            "relatent.out": work["out"],
            "relatent.sources": str(len(work["sources"])),
        },
    )


# --------------------------------------------------------------------------- the cluster


def resolve_address(address: str | None) -> str:
    """The dashboard URL to talk to: ``address``, else ``$RAY_API_SERVER_ADDRESS``, else an
    http ``$RAY_ADDRESS``, else :data:`DEFAULT_ADDRESS` (``http://`` added when missing).

    Raises:
        ConfigError: the address is a Ray client (``ray://``) or ``auto`` address, or not
            http(s).
    """
    if not address:
        env_api = os.environ.get("RAY_API_SERVER_ADDRESS")
        env_ray = os.environ.get("RAY_ADDRESS", "")
        address = env_api or (env_ray if env_ray.startswith(("http://", "https://")) else None)
        address = address or DEFAULT_ADDRESS
    address = address.strip().rstrip("/")
    if address.startswith("ray://") or address == "auto":
        raise ConfigError(
            f"--address {redact_text(address)} is not a Jobs API address",
            hint="use the dashboard URL of the head node, e.g. http://HEAD:8265",
        )
    if "://" not in address:
        address = "http://" + address
    if not address.startswith(("http://", "https://")):
        raise ConfigError(
            f"--address {redact_text(address)}: only http:// and https:// are supported"
        )
    return address


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer <token>`` when a Ray token is available (see the module doc).

    Raises:
        ConfigError: ``RAY_AUTH_TOKEN_PATH`` names a missing file, or the token file cannot
            be read.
    """
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
    saved = {k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if k in os.environ}  # fmt: skip
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


def cluster_ray_version(address: str, headers: Mapping[str, str]) -> str:
    """The Ray version the cluster at ``address`` runs (``GET /api/version``).

    Raises:
        ClusterError: the dashboard cannot be reached, refuses ``headers``' token, or is
            not a Ray dashboard.
    """
    import requests

    shown = redact_text(address)
    try:
        r = requests.get(f"{address}/api/version", headers=dict(headers), timeout=_HTTP_TIMEOUT)
    except requests.exceptions.RequestException as exc:
        raise ClusterError(
            f"cannot reach the Ray dashboard at {shown} ({type(exc).__name__})",
            hint="check the address and port (the dashboard listens on 8265 by default), that "
            "the cluster is up (`ray status` on the head), and any tunnel "
            "(`ray dashboard infra/aws/cluster.yaml`, `kubectl port-forward svc/...-head-svc 8265`)",
        ) from None
    if r.status_code in (401, 403):
        raise _auth_error(shown, r.status_code)
    try:
        r.raise_for_status()
        return str(r.json()["ray_version"])
    except Exception:
        raise ClusterError(
            f"{shown} answered /api/version with HTTP {r.status_code}, not a Ray dashboard",
            hint="pass the Ray dashboard URL, e.g. http://HEAD:8265",
        ) from None


def connect(address: str | None, *, allow_version_mismatch: bool = False) -> tuple[Any, str, str]:
    """A JobSubmissionClient for the cluster, after checking it is reachable, accepts our
    token and runs our Ray version. Returns ``(client, address, cluster_ray_version)``;
    ``address`` is the URL as it may be shown (:func:`redact_text`: no user information),
    the client holds the real one.

    Raises:
        ConfigError: see :func:`resolve_address` and :func:`auth_headers`.
        ClusterError: the cluster cannot be reached, refuses the token, runs another Ray
            version (unless ``allow_version_mismatch``), or its Jobs API fails.
    """
    import ray
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    shown = redact_text(url)
    headers = auth_headers()
    version = cluster_ray_version(url, headers)
    if version != ray.__version__ and not allow_version_mismatch:
        raise ClusterError(
            f"the Ray cluster at {shown} runs Ray {version}, this client runs Ray {ray.__version__}",
            hint=f"relatent pins ray=={ray.__version__}: start the cluster from the matching image "
            "(infra/docker/Dockerfile), or pass --allow-version-mismatch",
        )
    try:
        with _no_address_override():
            client = JobSubmissionClient(url, headers=dict(headers))
    except AuthenticationError as exc:
        raise _auth_error(shown, 403 if "Forbidden" in str(exc) else 401) from None
    except (ConnectionError, RuntimeError) as exc:
        raise ClusterError(f"the Jobs API at {shown} failed: {redact_text(str(exc))}") from None
    return client, shown, version


def _status_code(exc: BaseException) -> int | None:
    # JobSubmissionClient raises RuntimeError("Request failed with status code 404: ...").
    text = str(exc)
    marker = "status code "
    if marker in text:
        digits = text.split(marker, 1)[1][:3]
        if digits.isdigit():
            return int(digits)
    return None


def is_duplicate(exc: BaseException) -> bool:
    """Whether a Jobs API error says the submission id is taken ("already exists")."""
    return "already exists" in str(exc)


def get_job(client: Any, address: str, sid: str) -> Any | None:
    """The job's JobDetails, or ``None`` when the cluster has no job with that id.

    Raises:
        ClusterError: the Jobs API failed otherwise.
    """
    try:
        return client.get_job_info(sid)
    except RuntimeError as exc:
        if _status_code(exc) == 404 or "does not exist" in str(exc):
            return None
        raise ClusterError(
            f"asking {address} for job {sid} failed: {redact_text(str(exc))}"
        ) from None


def require_job(client: Any, address: str, sid: str) -> Any:
    """The job's JobDetails.

    Raises:
        ConfigError: the cluster has no job ``sid`` (a wrong id is the user's to fix).
        ClusterError: the Jobs API failed.
    """
    info = get_job(client, address, sid)
    if info is None:
        raise ConfigError(
            f"there is no job {sid} on the Ray cluster at {address}",
            hint=f"list them with `relatent jobs list --address {address}`",
        )
    return info


def _call(address: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, any failure but a ClusterError turned into one naming
    ``what`` and ``address``."""
    try:
        return fn(*args, **kwargs)
    except ClusterError:
        raise
    except Exception as exc:
        raise ClusterError(
            f"{what} on the Ray cluster at {address} failed: {redact_text(str(exc))}"
        ) from None


def job_status(info: Any) -> str:
    """The status of a JobDetails as a plain string (``SUCCEEDED``, ``RUNNING``, ...)."""
    return str(getattr(info.status, "value", info.status))


def describe(info: Any) -> str:
    """``STATUS (message)`` of a JobDetails, for one-line reports."""
    msg = f" ({redact_text(str(info.message))})" if getattr(info, "message", None) else ""
    return f"{job_status(info)}{msg}"


@dataclass
class SubmitResult:
    """What :func:`submit` did: ``created`` False when the job already existed and is
    reported instead (``info``: its JobDetails)."""

    submission_id: str
    created: bool
    info: Any


def submit(
    client: Any, address: str, sub: Submission, *, resubmit_failed: bool = False
) -> SubmitResult:
    """Submit ``sub`` unless a job with its id exists (then report that job; with
    ``resubmit_failed`` a FAILED or STOPPED one is deleted and submitted again). A
    concurrent submitter that wins the race shows up as the Jobs API's "already exists"
    error, which is handled the same way. "No available agent" (an agent still starting)
    is retried for 60 s.

    Raises:
        ClusterError: the Jobs API refused or failed the submission.
    """
    secrets = secret_values(sub.runtime_env.get("env_vars") or {})
    existing = get_job(client, address, sub.submission_id)
    if existing is not None:
        if not (resubmit_failed and job_status(existing) in ("FAILED", "STOPPED")):
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
            if is_duplicate(exc):
                info = get_job(client, address, sub.submission_id)
                if info is not None:
                    return SubmitResult(sub.submission_id, False, info)
            if "No available agent" in str(exc) and time.monotonic() < deadline:
                time.sleep(2.0)
                continue
            raise ClusterError(
                f"submitting job {sub.submission_id} to the Ray cluster at {address} failed: "
                + redact_text(str(exc), secrets)
            ) from None
        except ClusterError:
            raise
        except Exception as exc:
            raise ClusterError(
                f"submitting job {sub.submission_id} to the Ray cluster at {address} failed: "
                + redact_text(str(exc), secrets),
                hint="a working_dir must be a folder the client can read and zip",
            ) from None
    info = get_job(client, address, sub.submission_id)
    return SubmitResult(sub.submission_id, True, info)


def _warn_stderr(message: str) -> None:
    print(f"relatent: {message}", file=sys.stderr)


def follow_logs(
    client: Any,
    address: str,
    sid: str,
    out: TextIO,
    warn: Callable[[str], None] = _warn_stderr,
) -> Any:
    """Stream the job's logs to ``out`` until it ends; returns its final JobDetails.

    Uses the Jobs API's log websocket; if that is unavailable (a proxy that drops
    websockets, an agent restarting), polls the logs instead (``warn`` says so, default:
    a line on stderr). Reading logs is best effort: the job's status decides the result.

    Raises:
        ClusterError: the job disappeared, or the Jobs API failed.
    """
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
        warn(f"log stream from {address} broke ({redact_text(str(exc))}); polling")
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
                    warn(f"cannot read the logs of {sid} from {address} ({redact_text(str(exc))})")
                    warned = True
            if len(logs) > printed:
                out.write(logs[printed:])
                out.flush()
                printed = len(logs)
        if job_status(info) in TERMINAL:
            return info
        time.sleep(1.0)


def exit_code(info: Any) -> int:
    """0 for SUCCEEDED; the driver's exit code (or 1) for FAILED; 1 for STOPPED (or any
    other status)."""
    status = job_status(info)
    if status == "SUCCEEDED":
        return 0
    if status == "FAILED":
        code = getattr(info, "driver_exit_code", None)
        return int(code) if code else 1
    return 1


def job_logs(client: Any, address: str, sid: str) -> str:
    """The job's driver logs so far.

    Raises:
        ClusterError: the Jobs API failed.
    """
    return str(_call(address, f"reading the logs of {sid}", client.get_job_logs, sid))


def stop_job(client: Any, address: str, sid: str, *, wait: bool = False) -> Any | None:
    """Ask the job to stop; with ``wait``, poll (every second) until it has ended and
    return its final JobDetails (``None`` without ``wait``).

    Raises:
        ConfigError: the job vanished while waiting.
        ClusterError: the Jobs API failed.
    """
    _call(address, f"stopping job {sid}", client.stop_job, sid)
    if not wait:
        return None
    while True:
        time.sleep(1.0)
        info = require_job(client, address, sid)
        if job_status(info) in TERMINAL:
            return info


def list_jobs(client: Any, address: str, *, include_all: bool = False) -> list[Any]:
    """The cluster's jobs, oldest first: relatent's only (ids starting with
    :data:`ID_PREFIX`) unless ``include_all``.

    Raises:
        ClusterError: the Jobs API failed.
    """
    jobs: Sequence[Any] = _call(address, "listing jobs", client.list_jobs)
    rows = [
        j for j in jobs
        if include_all or str(getattr(j, "submission_id", "") or "").startswith(ID_PREFIX)
    ]  # fmt: skip
    rows.sort(key=lambda j: getattr(j, "start_time", 0) or 0)
    return rows
