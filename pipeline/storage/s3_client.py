"""The S3 client and the translation of its errors.

boto3 is imported lazily, inside the functions that need it, so local use never pays for it.
The client comes from the standard AWS chain (environment, profiles, instance roles);
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` point it at any S3-compatible server, and
:class:`~pipeline.storage.config.StorageConfig` ``endpoint_url`` overrides both. Throttling
(SlowDown, 503) and 5xx answers are retried by botocore with backoff: retry mode
``RELATENT_S3_RETRY_MODE`` (default ``standard``), at most ``RELATENT_S3_MAX_ATTEMPTS``
attempts in total per request (default 8). Clients are cached per process, keyed on the
configuration, the credential-related environment (:data:`CREDENTIAL_ENV_KEYS`) and the pid
(boto3 clients are thread-safe; sessions are not, so each client gets its own session).
Tests inject a client with :func:`set_s3_client_factory`; :func:`make_s3_client` builds one
with the retry policy above, so hooks can be registered on it (``client.meta.events``).

botocore errors are mapped by :func:`s3_error`: 404 / NoSuchKey / NoSuchBucket ->
:class:`~pipeline.errors.ObjectNotFoundError`, 403 / AccessDenied / bad credentials ->
:class:`~pipeline.errors.AccessDeniedError`, 412 ->
:class:`~pipeline.errors.PreconditionFailedError`, the rest
:class:`~pipeline.errors.StorageError`. Messages name the URI and the fix; they never contain
credentials (the server's own message is dropped for 403 answers and passed through
:func:`scrub` otherwise).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pipeline.errors import (
    AccessDeniedError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)
from pipeline.storage.config import StorageConfig, get_config

if TYPE_CHECKING:  # pragma: no cover
    from botocore.client import BaseClient

__all__ = [
    "CREDENTIAL_ENV_KEYS",
    "make_s3_client",
    "reset_s3_clients",
    "s3_client",
    "s3_error",
    "s3_errors",
    "scrub",
    "set_s3_client_factory",
]

_CRED_HINT = (
    "check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the "
    "instance role) and that they are allowed this operation on the bucket"
)


# --------------------------------------------------------------------------- client


_client_lock = threading.Lock()
_clients: dict[tuple[Any, ...], Any] = {}
_client_factory: Callable[[StorageConfig], Any] | None = None


def make_s3_client(config: StorageConfig | None = None, **client_kwargs: Any) -> BaseClient:
    """A new boto3 S3 client with relatent's retry policy and timeouts.

    ``client_kwargs`` go to ``Session.client`` (e.g. ``endpoint_url``,
    ``aws_access_key_id``). Not cached: this is the building block for the cache and for
    clients that tests inject with :func:`set_s3_client_factory`.

    Raises:
        ConfigError: the configuration (or the environment it reads) is invalid.
    """
    import boto3
    from botocore.config import Config

    cfg = (config or get_config()).resolved()
    bc = Config(
        retries={"total_max_attempts": cfg.max_attempts, "mode": cfg.retry_mode},
        connect_timeout=cfg.connect_timeout,
        read_timeout=cfg.read_timeout,
        max_pool_connections=cfg.max_pool_connections,
    )
    kwargs: dict[str, Any] = {"config": bc}
    if cfg.endpoint_url:
        kwargs["endpoint_url"] = cfg.endpoint_url
    if cfg.region_name:
        kwargs["region_name"] = cfg.region_name
    kwargs.update(client_kwargs)
    # A session per client: sessions are not thread-safe, clients are.
    return boto3.session.Session().client("s3", **kwargs)


def set_s3_client_factory(
    factory: Callable[[StorageConfig], Any] | None,
) -> Callable[[StorageConfig], Any] | None:
    """Route every S3 operation through ``factory(config)`` (``None``: the default cache).

    The factory is called for each operation, so it should return a prepared client rather
    than build one. Returns the previous factory.
    """
    global _client_factory
    previous = _client_factory
    _client_factory = factory
    return previous


def reset_s3_clients() -> None:
    """Forget the cached clients (after changing credentials or the endpoint in-process)."""
    with _client_lock:
        _clients.clear()


CREDENTIAL_ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
"""The environment variables that decide where a client talks and as whom (cache key)."""


def s3_client() -> Any:
    """The S3 client for the next operation: the injected factory's, or a cached one.

    Raises:
        ConfigError: the configuration (or the environment it reads) is invalid.
    """
    cfg = get_config()
    if _client_factory is not None:
        return _client_factory(cfg)
    # Keyed on everything that decides where the client talks and as whom, and on the pid
    # (a client must not cross a fork).
    key = (os.getpid(), cfg, tuple(os.environ.get(k) for k in CREDENTIAL_ENV_KEYS))
    with _client_lock:
        client = _clients.get(key)
        if client is None:
            client = make_s3_client(cfg)
            _clients[key] = client
        return client


# --------------------------------------------------------------------------- error mapping

_SECRETISH = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b|Credential=[^,\s]+")


def scrub(text: str) -> str:
    """``text`` with anything that looks like an AWS key id or a SigV4 credential redacted."""
    return _SECRETISH.sub("[redacted]", text)


_NOT_FOUND_CODES = ("404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchUpload")
_DENIED_CODES = (
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
)
_THROTTLE_CODES = ("SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded")


def _client_error(exc: Any, uri: str, action: str) -> StorageError:
    """Translate a botocore ``ClientError`` (an HTTP answer with an S3 error code)."""
    err = exc.response.get("Error", {}) or {}
    code = str(err.get("Code", "") or "")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    what = f"{code or 'error'}, HTTP {status}" if status else (code or "error")
    if status == 404 or code in _NOT_FOUND_CODES:
        bucket_missing = code == "NoSuchBucket"
        thing = "the bucket" if bucket_missing else "the object"
        return ObjectNotFoundError(
            f"cannot {action} {uri}: {thing} does not exist ({what})",
            hint="check the bucket name and key"
            if bucket_missing
            else "check the URI (key names are case-sensitive)",
        )
    if status == 403 or code in _DENIED_CODES:
        # The server's own message is left out on purpose: some servers echo key ids.
        return AccessDeniedError(f"cannot {action} {uri}: access denied ({what})", hint=_CRED_HINT)
    if status == 412 or code in ("PreconditionFailed", "412"):
        return PreconditionFailedError(
            f"cannot {action} {uri}: a precondition failed ({what}); the object already "
            "exists or changed since it was read",
            hint="re-read the object and retry, or write to a new key",
        )
    if status == 503 or code in _THROTTLE_CODES:
        attempts = 1 + int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)
        return StorageError(
            f"cannot {action} {uri}: S3 kept throttling the request ({what}) after "
            f"{attempts} attempt{'s' if attempts > 1 else ''}",
            hint="lower the concurrency or raise RELATENT_S3_MAX_ATTEMPTS",
        )
    message = scrub(str(err.get("Message", "") or ""))
    return StorageError(
        f"cannot {action} {uri}: S3 error ({what}){': ' + message if message else ''}",
        hint="retry; if it persists check the bucket configuration",
    )


def s3_error(exc: BaseException, uri: str, action: str) -> StorageError:
    """Translate a botocore exception met while doing ``action`` on ``uri`` into the
    relatent hierarchy (returned, not raised): :class:`ObjectNotFoundError`,
    :class:`AccessDeniedError`, :class:`PreconditionFailedError` or :class:`StorageError`."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AccessDeniedError(
            f"cannot {action} {uri}: no usable AWS credentials found", hint=_CRED_HINT
        )
    if isinstance(exc, EndpointConnectionError):
        return StorageError(
            f"cannot {action} {uri}: the S3 endpoint is unreachable",
            hint="check AWS_ENDPOINT_URL / the network, then retry",
        )
    if isinstance(exc, ClientError):
        return _client_error(exc, uri, action)
    return StorageError(
        f"cannot {action} {uri}: {scrub(type(exc).__name__ + ': ' + str(exc))}",
        hint="check the S3 endpoint and network, then retry",
    )


@contextlib.contextmanager
def s3_errors(uri: str, action: str) -> Iterator[None]:
    """Re-raise any botocore error of the block as :func:`s3_error` translates it.

    Raises:
        StorageError: (or ObjectNotFoundError, AccessDeniedError, PreconditionFailedError)
            for a botocore ``ClientError`` or ``BotoCoreError`` raised inside the block.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, uri, action) from None
