"""Storage: one interface over local paths, ``file://`` URIs and ``s3://bucket/key``.

Every function takes a URI string. A plain path or a ``file://`` URI is local storage (the
embedded default); ``s3://bucket/key`` is S3 or any S3-compatible server. boto3 is imported
lazily, only when an ``s3://`` URI is used, so local use never pays for it.

Local storage
    Writes are atomic: a hidden temporary file in the destination directory is written,
    fsynced and moved into place with :func:`os.replace` (create-only writes use
    :func:`os.link`, which fails when the destination exists). Parent directories are
    created as needed, like S3 which has no directories.

S3
    The client comes from the standard AWS chain (environment, profiles, instance roles);
    ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` point it at any S3-compatible server, and
    :class:`StorageConfig` ``endpoint_url`` overrides both. Throttling (SlowDown, 503) and
    5xx answers are retried by botocore with backoff: retry mode ``RELATENT_S3_RETRY_MODE``
    (default ``standard``), at most ``RELATENT_S3_MAX_ATTEMPTS`` attempts in total per
    request (default 8). Clients are cached per process (boto3 clients are thread-safe;
    sessions are not, so each client gets its own session).

    Tests (and callers with special needs) inject a client with
    :func:`set_s3_client_factory`; :func:`make_s3_client` builds one with the retry policy
    above, so hooks can be registered on it (``client.meta.events``).

Compare-and-swap
    :func:`put_if_absent`, :func:`replace_if_match`, :func:`delete_if_match` and
    :func:`read_versioned` are conditional writes on small objects (leases): S3
    ``If-None-Match: *`` / ``If-Match: <etag>``; locally ``os.link`` and an exclusive
    ``flock`` of the directory, with the content MD5 as the ETag (what S3 reports for a
    single-part upload). A lost race raises :class:`PreconditionFailedError`.

Errors are :mod:`pipeline.errors` storage errors: 404 / NoSuchKey / NoSuchBucket ->
:class:`ObjectNotFoundError`, 403 / AccessDenied / bad credentials ->
:class:`AccessDeniedError`, 412 -> :class:`PreconditionFailedError`, the rest
:class:`StorageError`. Messages name the URI and the fix; they never contain credentials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import posixpath
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlparse

from pipeline.errors import (
    AccessDeniedError,
    ConfigError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)

if TYPE_CHECKING:  # pragma: no cover
    from botocore.client import BaseClient

__all__ = [
    "MIN_PART_SIZE",
    "ObjectInfo",
    "S3RangeReader",
    "StorageConfig",
    "copy_concat",
    "delete",
    "delete_if_match",
    "exists",
    "get_config",
    "is_s3",
    "join",
    "list_prefix",
    "local_path",
    "make_s3_client",
    "open_read",
    "open_write",
    "put_if_absent",
    "read_bytes",
    "read_versioned",
    "replace_if_match",
    "reset_s3_clients",
    "set_config",
    "set_s3_client_factory",
    "stat",
    "write_bytes",
]

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB  # S3: every part but the last must be at least this big
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000

_TMP_SUFFIX = ".rltmp"  # local temporary files: ".<name>.<random>.rltmp" next to the target
_COPY_CHUNK = 1 * MiB
_STREAM_RETRIES = 3  # re-issue a GET whose body broke off mid-transfer

_CRED_HINT = (
    "check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the "
    "instance role) and that they are allowed this operation on the bucket"
)


# --------------------------------------------------------------------------- configuration


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not an integer",
            hint=f"set {name} to a whole number",
        ) from None


@dataclass(frozen=True)
class StorageConfig:
    """Tunables of the S3 backend. ``None`` fields are read from the environment."""

    endpoint_url: str | None = None  # None: boto3's own resolution (AWS_ENDPOINT_URL, config)
    max_attempts: int | None = None  # total attempts per request; env RELATENT_S3_MAX_ATTEMPTS, 8
    retry_mode: str | None = None  # "standard" | "adaptive" | "legacy"; env RELATENT_S3_RETRY_MODE
    region_name: str | None = None  # None: the AWS chain (AWS_REGION, AWS_DEFAULT_REGION, profile)
    multipart_threshold: int = 8 * MiB  # write_bytes switches to multipart above this
    part_size: int = 8 * MiB  # multipart part size (>= 5 MiB)
    read_block_size: int = 4 * MiB  # ranged GET size of open_read's read-ahead
    read_cache_blocks: int = 4  # blocks open_read keeps (header + index + data of a container)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_pool_connections: int = 32

    def resolved(self) -> StorageConfig:
        """A copy with the environment-dependent fields filled in and everything validated."""
        max_attempts = self.max_attempts
        if max_attempts is None:
            max_attempts = _env_int("RELATENT_S3_MAX_ATTEMPTS", 8)
        retry_mode = self.retry_mode or os.environ.get("RELATENT_S3_RETRY_MODE") or "standard"
        if max_attempts < 1:
            raise ConfigError(
                f"S3 max_attempts must be at least 1, got {max_attempts}",
                hint="set RELATENT_S3_MAX_ATTEMPTS to 1 or more",
            )
        if retry_mode not in ("standard", "adaptive", "legacy"):
            raise ConfigError(
                f"unknown S3 retry mode {retry_mode!r}",
                hint="use RELATENT_S3_RETRY_MODE=standard or adaptive",
            )
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ConfigError(
                f"S3 part_size {self.part_size} is outside 5 MiB..5 GiB",
                hint="S3 rejects multipart parts (other than the last) under 5 MiB",
            )
        if self.multipart_threshold < 0 or self.read_block_size < 1 or self.read_cache_blocks < 1:
            raise ConfigError(
                "S3 multipart_threshold, read_block_size and read_cache_blocks must be positive",
                hint="check the StorageConfig values",
            )
        return dataclasses.replace(self, max_attempts=max_attempts, retry_mode=retry_mode)


_config_lock = threading.Lock()
_config: StorageConfig | None = None


def get_config() -> StorageConfig:
    """The active configuration, with environment defaults resolved."""
    global _config
    with _config_lock:
        if _config is None:
            _config = StorageConfig().resolved()
        return _config


def set_config(config: StorageConfig | None = None, **changes: Any) -> StorageConfig:
    """Replace the configuration (``None``: back to the defaults), applying ``changes`` on top.

    Returns the previous configuration so callers (tests) can restore it.
    """
    global _config
    previous = get_config()
    new = config or StorageConfig()
    if changes:
        new = dataclasses.replace(new, **changes)
    new = new.resolved()
    with _config_lock:
        _config = new
    return previous


# --------------------------------------------------------------------------- object info


@dataclass(frozen=True)
class ObjectInfo:
    """What :func:`stat` and :func:`list_prefix` report about one object."""

    uri: str
    size: int
    etag: str  # S3 ETag without quotes; local: f"{size}-{mtime_ns}"
    version: str | None  # S3 VersionId when the bucket is versioned, else None
    mtime: float  # last modification, seconds since the epoch


# --------------------------------------------------------------------------- URIs


def is_s3(uri: str) -> bool:
    return isinstance(uri, str) and uri[:5].lower() == "s3://"


_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def _check_scheme(uri: str) -> None:
    m = _SCHEME_RE.match(uri)
    if m and m.group(1).lower() not in ("file", "s3"):
        raise ConfigError(
            f"unsupported storage URI {uri!r}",
            hint="use a local path, a file:// URI or s3://bucket/key",
        )


def local_path(uri: str | os.PathLike[str]) -> Path:
    """The filesystem path of a local path or ``file://`` URI."""
    if isinstance(uri, os.PathLike):
        return Path(uri)
    if is_s3(uri):
        raise ConfigError(f"{uri} is an S3 URI, not a local path", hint="use open_read/read_bytes")
    _check_scheme(uri)
    if uri[:7].lower() == "file://":
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"file URI {uri!r} names host {parsed.netloc!r}",
                hint="use file:///absolute/path (three slashes)",
            )
        return Path(unquote(parsed.path))
    return Path(uri)


def _split_s3(uri: str, *, need_key: bool = True) -> tuple[str, str]:
    rest = uri[5:]
    bucket, _, key = rest.partition("/")
    if not bucket or (need_key and not key):
        raise ConfigError(
            f"{uri!r} is not a valid S3 object URI", hint="use s3://bucket/path/to/object"
        )
    return bucket, key


def join(base_uri: str, *parts: str) -> str:
    """Join path components onto a local path, ``file://`` or ``s3://`` URI."""
    clean = [p.strip("/") for p in parts if p and p.strip("/")]
    if is_s3(base_uri) or base_uri[:7].lower() == "file://":
        out = base_uri
        for p in clean:
            out = out + p if out.endswith("/") else f"{out}/{p}"
        return out
    return posixpath.join(str(base_uri), *clean) if clean else str(base_uri)


def _same_form(template: str, path: Path) -> str:
    """Spell ``path`` the way ``template`` was spelled (plain path or file:// URI)."""
    if template[:7].lower() == "file://":
        return "file://" + str(path)
    return str(path)


# --------------------------------------------------------------------------- S3 client


_client_lock = threading.Lock()
_clients: dict[tuple[Any, ...], Any] = {}
_client_factory: Callable[[StorageConfig], Any] | None = None


def make_s3_client(config: StorageConfig | None = None, **client_kwargs: Any) -> BaseClient:
    """A new boto3 S3 client with relatent's retry policy and timeouts.

    ``client_kwargs`` go to ``Session.client`` (e.g. ``endpoint_url``,
    ``aws_access_key_id``). Not cached: this is the building block for the cache and for
    clients that tests inject with :func:`set_s3_client_factory`.
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


_ENV_KEYS = (
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


def _s3_client() -> Any:
    cfg = get_config()
    if _client_factory is not None:
        return _client_factory(cfg)
    # Keyed on everything that decides where the client talks and as whom, and on the pid
    # (a client must not cross a fork).
    key = (os.getpid(), cfg, tuple(os.environ.get(k) for k in _ENV_KEYS))
    with _client_lock:
        client = _clients.get(key)
        if client is None:
            client = make_s3_client(cfg)
            _clients[key] = client
        return client


# --------------------------------------------------------------------------- error mapping

_SECRETISH = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b|Credential=[^,\s]+")


def _scrub(text: str) -> str:
    return _SECRETISH.sub("[redacted]", text)


def _s3_error(exc: BaseException, uri: str, action: str) -> StorageError:
    """Translate a botocore exception into the relatent hierarchy."""
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
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code", "") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        what = f"{code or 'error'}, HTTP {status}" if status else (code or "error")
        if status == 404 or code in (
            "404",
            "NoSuchKey",
            "NoSuchBucket",
            "NotFound",
            "NoSuchUpload",
        ):
            bucket_missing = code == "NoSuchBucket"
            return ObjectNotFoundError(
                f"cannot {action} {uri}: {'the bucket' if bucket_missing else 'the object'} does not exist ({what})",
                hint="check the bucket name and key"
                if bucket_missing
                else "check the URI (key names are case-sensitive)",
            )
        if status == 403 or code in (
            "403",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
            "AllAccessDisabled",
        ):
            # The server's own message is left out on purpose: some servers echo key ids.
            return AccessDeniedError(
                f"cannot {action} {uri}: access denied ({what})", hint=_CRED_HINT
            )
        if status == 412 or code in ("PreconditionFailed", "412"):
            return PreconditionFailedError(
                f"cannot {action} {uri}: a precondition failed ({what}); the object already "
                "exists or changed since it was read",
                hint="re-read the object and retry, or write to a new key",
            )
        if status == 503 or code in (
            "SlowDown",
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
        ):
            attempts = 1 + int(
                exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0
            )
            return StorageError(
                f"cannot {action} {uri}: S3 kept throttling the request ({what}) after "
                f"{attempts} attempt{'s' if attempts > 1 else ''}",
                hint="lower the concurrency or raise RELATENT_S3_MAX_ATTEMPTS",
            )
        message = _scrub(str(err.get("Message", "") or ""))
        return StorageError(
            f"cannot {action} {uri}: S3 error ({what}){': ' + message if message else ''}",
            hint="retry; if it persists check the bucket configuration",
        )
    return StorageError(
        f"cannot {action} {uri}: {_scrub(type(exc).__name__ + ': ' + str(exc))}",
        hint="check the S3 endpoint and network, then retry",
    )


@contextlib.contextmanager
def _s3_errors(uri: str, action: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(exc, uri, action) from None


def _local_error(exc: OSError, uri: str, action: str) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFoundError(f"cannot {action} {uri}: no such file", hint="check the path")
    if isinstance(exc, PermissionError):
        return AccessDeniedError(
            f"cannot {action} {uri}: permission denied",
            hint="check the file and directory permissions",
        )
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"cannot {action} {uri}: it is a directory", hint="name a file")
    return StorageError(
        f"cannot {action} {uri}: {exc.strerror or exc}",
        hint="check the disk (space, mounts) and retry",
    )


@contextlib.contextmanager
def _local_errors(uri: str, action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _local_error(exc, uri, action) from None


def _strip_etag(etag: str | None) -> str:
    return (etag or "").strip('"')


# --------------------------------------------------------------------------- read


def _get_body(client: Any, bucket: str, key: str, uri: str, **kwargs: Any) -> bytes:
    """GET (optionally ranged) and read the body; a body that breaks off is fetched again."""
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

    for attempt in range(_STREAM_RETRIES):
        with _s3_errors(uri, "read"):
            resp = client.get_object(Bucket=bucket, Key=key, **kwargs)
        try:
            with contextlib.closing(resp["Body"]) as body:
                return body.read()
        except (IncompleteReadError, ResponseStreamingError, ReadTimeoutError) as exc:
            if attempt == _STREAM_RETRIES - 1:
                raise _s3_error(exc, uri, "read") from None
    raise AssertionError("unreachable")  # pragma: no cover


def read_bytes(uri: str) -> bytes:
    """The whole content of ``uri``."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        return _get_body(_s3_client(), bucket, key, uri)
    p = local_path(uri)
    with _local_errors(uri, "read"), p.open("rb") as f:
        return f.read()


class S3RangeReader(io.RawIOBase):
    """A seekable, read-only file object over one S3 object.

    Reads are served from aligned blocks of ``read_block_size`` bytes fetched with ranged
    GETs and kept in a small LRU cache, so a demuxer that jumps between the header, the
    index and the data does not download the whole object. Every GET is pinned to the ETag
    seen at open (``IfMatch``): if the object is replaced meanwhile the read fails with
    :class:`PreconditionFailedError` instead of mixing two versions.

    ``bytes_fetched`` and ``requests`` count the traffic (for tests and metrics).
    """

    def __init__(
        self, uri: str, *, client: Any = None, config: StorageConfig | None = None
    ) -> None:
        super().__init__()
        cfg = config or get_config()
        self.uri = uri
        self._bucket, self._key = _split_s3(uri)
        self._client = client if client is not None else _s3_client()
        self._block = cfg.read_block_size
        self._max_blocks = cfg.read_cache_blocks
        with _s3_errors(uri, "open"):
            head = self._client.head_object(Bucket=self._bucket, Key=self._key)
        self.size: int = int(head["ContentLength"])
        self.etag: str = _strip_etag(head.get("ETag"))
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.bytes_fetched = 0
        self.requests = 0

    # io protocol -------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        start = self._pos
        end = self.size if size is None or size < 0 else min(self.size, start + size)
        if start >= end:
            return b""
        first, last = start // self._block, (end - 1) // self._block
        if last - first + 1 > self._max_blocks:
            # A big sequential read: one GET for the whole span, not through the cache.
            data = self._fetch(start, end)
        else:
            data = b"".join(self._block_data(i) for i in range(first, last + 1))
            offset = start - first * self._block
            data = data[offset : offset + (end - start)]
        self._pos = start + len(data)
        return data

    def close(self) -> None:
        self._cache.clear()
        super().close()

    # internals -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed reader of {self.uri}")

    def _block_data(self, index: int) -> bytes:
        data = self._cache.get(index)
        if data is not None:
            self._cache.move_to_end(index)
            return data
        start = index * self._block
        data = self._fetch(start, min(self.size, start + self._block))
        self._cache[index] = data
        while len(self._cache) > self._max_blocks:
            self._cache.popitem(last=False)
        return data

    def _fetch(self, start: int, end: int) -> bytes:
        kwargs: dict[str, Any] = {"Range": f"bytes={start}-{end - 1}"}
        if self.etag:
            kwargs["IfMatch"] = f'"{self.etag}"'
        data = _get_body(self._client, self._bucket, self._key, self.uri, **kwargs)
        self.requests += 1
        self.bytes_fetched += len(data)
        if len(data) != end - start:
            raise StorageError(
                f"cannot read {self.uri}: asked for bytes {start}-{end - 1}, got {len(data)} bytes",
                hint="the object may have been truncated; retry",
            )
        return data


def open_read(uri: str) -> BinaryIO:
    """A seekable binary file object over ``uri`` (use it as a context manager).

    For S3 it is an :class:`S3RangeReader`: ranged GETs with a read-ahead block cache, so
    PyAV (``av.open(f)``) can demux straight from S3.
    """
    if is_s3(uri):
        return S3RangeReader(uri)  # type: ignore[return-value]
    p = local_path(uri)
    with _local_errors(uri, "open"):
        if p.is_dir():
            raise IsADirectoryError(21, "Is a directory", str(p))
        return p.open("rb")


# --------------------------------------------------------------------------- write


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _local_temp(target: Path) -> tuple[int, Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=_TMP_SUFFIX)
    return fd, Path(tmp)


def _local_publish(tmp: Path, target: Path, uri: str, if_none_match: bool) -> None:
    """Move the finished temporary file onto ``target`` (create-only when asked)."""
    if if_none_match:
        try:
            os.link(tmp, target)  # atomic, and fails if target exists
        except FileExistsError:
            raise PreconditionFailedError(
                f"cannot write {uri}: it already exists (create-only write)",
                hint="write to a new name, or delete the existing file first",
            ) from None
        except OSError:
            # Filesystems without hard links: check then rename (a small race remains).
            if target.exists():
                raise PreconditionFailedError(
                    f"cannot write {uri}: it already exists (create-only write)",
                    hint="write to a new name, or delete the existing file first",
                ) from None
            tmp.replace(target)
        else:
            tmp.unlink()
    else:
        tmp.replace(target)
    _fsync_dir(target.parent)


class S3Writer(io.RawIOBase):
    """A write-only file object that becomes an S3 object only on :meth:`commit`.

    Data is buffered up to one part; the first full part starts a multipart upload and
    every full part is uploaded as it fills. A small object is one PutObject. Part sizes
    grow after each 1,000 parts so the 10,000-part limit is never hit.
    """

    def __init__(self, uri: str, *, if_none_match: bool = False, client: Any = None) -> None:
        super().__init__()
        self.uri = uri
        self._bucket, self._key = _split_s3(uri)
        self._client = client if client is not None else _s3_client()
        self._part_size = get_config().part_size
        self._if_none_match = if_none_match
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._done = False
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.bytes_written

    def write(self, data: Any) -> int:
        if self.closed or self._done:
            raise ValueError(f"write to a finished writer of {self.uri}")
        view = memoryview(data).cast("B")
        self._buf += view
        self.bytes_written += len(view)
        while len(self._buf) >= self._current_part_size():
            n = self._current_part_size()
            self._upload_part(bytes(self._buf[:n]))
            del self._buf[:n]
        return len(view)

    def _current_part_size(self) -> int:
        return min(MAX_PART_SIZE, self._part_size * (1 + len(self._parts) // 1000))

    def _upload_part(self, chunk: bytes) -> None:
        with _s3_errors(self.uri, "write"):
            if self._upload_id is None:
                resp = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
                self._upload_id = resp["UploadId"]
            number = len(self._parts) + 1
            resp = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=chunk,
            )
        self._parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    def commit(self) -> None:
        """Make the object visible (PutObject, or the last part + CompleteMultipartUpload)."""
        if self._done:
            return
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if self._if_none_match else {}
        if self._upload_id is None:
            with _s3_errors(self.uri, "write"):
                self._client.put_object(
                    Bucket=self._bucket, Key=self._key, Body=bytes(self._buf), **extra
                )
        else:
            if self._buf:
                self._upload_part(bytes(self._buf))
            with _s3_errors(self.uri, "write"):
                self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                    **extra,
                )
        self._buf = bytearray()
        self._done = True

    def abort(self) -> None:
        """Drop everything: abort the multipart upload, if one was started."""
        self._buf = bytearray()
        self._done = True
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            with contextlib.suppress(Exception):  # best effort; a lifecycle rule cleans leftovers
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=upload_id
                )

    def close(self) -> None:
        # Closing does not commit: open_write decides between commit and abort.
        super().close()


@contextlib.contextmanager
def open_write(uri: str, *, if_none_match: bool = False) -> Iterator[BinaryIO]:
    """Atomic writer: nothing is visible at ``uri`` until the block exits without error.

    On an exception nothing is left behind (the local temporary file is removed; the S3
    multipart upload is aborted). ``if_none_match=True`` makes it create-only and raises
    :class:`PreconditionFailedError` at exit when ``uri`` already exists.
    """
    if is_s3(uri):
        writer = S3Writer(uri, if_none_match=if_none_match)
        try:
            yield writer  # type: ignore[misc]
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        finally:
            writer.close()
        return

    target = local_path(uri)
    with _local_errors(uri, "write"):
        fd, tmp = _local_temp(target)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f  # type: ignore[misc]
            with _local_errors(uri, "write"):
                f.flush()
                os.fsync(f.fileno())
        with _local_errors(uri, "write"):
            _local_publish(tmp, target, uri, if_none_match)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(uri: str, data: bytes, *, if_none_match: bool = False) -> None:
    """Write ``data`` to ``uri`` atomically; ``if_none_match=True`` is create-only.

    Local: temporary file in the same directory + fsync + rename. S3: one PutObject, or a
    multipart upload above ``StorageConfig.multipart_threshold``.
    """
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        if len(data) > get_config().multipart_threshold:
            with open_write(uri, if_none_match=if_none_match) as f:
                f.write(data)
            return
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_none_match else {}
        with _s3_errors(uri, "write"):
            _s3_client().put_object(Bucket=bucket, Key=key, Body=data, **extra)
        return
    with _local_errors(uri, "write"), open_write(uri, if_none_match=if_none_match) as f:
        f.write(data)


# --------------------------------------------------------------------------- compare-and-swap


def _content_etag(data: bytes) -> str:
    """The ETag S3 gives a single-part upload: the hex MD5 of the bytes."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@contextlib.contextmanager
def _local_cas_lock(target: Path) -> Iterator[None]:
    """Serialise the compare-and-swap operations on the files of one local directory
    (an exclusive ``flock`` on the directory itself, across processes)."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lost_race(uri: str, action: str, why: str) -> PreconditionFailedError:
    return PreconditionFailedError(
        f"cannot {action} {uri}: {why}",
        hint="another writer changed it first; re-read it and decide again",
    )


def read_versioned(uri: str) -> tuple[bytes, str]:
    """The content of a small object and its ETag, read together (for compare-and-swap).

    S3: the ETag of the GET that returned the bytes. Local: the hex MD5 of the bytes (what
    S3 gives a single-part upload), so both backends agree for objects written by
    :func:`put_if_absent` / :func:`replace_if_match`.
    """
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri, "read"):
            resp = _s3_client().get_object(Bucket=bucket, Key=key)
        with contextlib.closing(resp["Body"]) as body, _s3_errors(uri, "read"):
            data = body.read()
        return data, _strip_etag(resp.get("ETag"))
    data = read_bytes(uri)
    return data, _content_etag(data)


def put_if_absent(uri: str, data: bytes) -> str:
    """Create ``uri`` with ``data`` only if nothing is there; returns the new ETag.

    Raises :class:`PreconditionFailedError` when the object exists. S3: one ``PutObject``
    with ``If-None-Match: *`` (atomic on AWS S3 and on servers that implement conditional
    writes). Local: temporary file + ``os.link`` (atomic, fails if the name exists).
    """
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri, "create"):
            resp = _s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        return _strip_etag(resp.get("ETag")) or _content_etag(data)
    with _local_errors(uri, "create"), open_write(uri, if_none_match=True) as f:
        f.write(data)
    return _content_etag(data)


def replace_if_match(uri: str, data: bytes, etag: str) -> str:
    """Overwrite ``uri`` with ``data`` only if it is still the object with ``etag`` (as
    returned by :func:`read_versioned`, :func:`put_if_absent` or an earlier call); returns
    the new ETag.

    Raises :class:`PreconditionFailedError` when the object changed or is gone. S3:
    ``PutObject`` with ``If-Match``. Local: compare and atomic rename under an exclusive
    ``flock`` of the directory (every local compare-and-swap takes it).
    """
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        try:
            with _s3_errors(uri, "replace"):
                resp = _s3_client().put_object(
                    Bucket=bucket, Key=key, Body=data, IfMatch=f'"{_strip_etag(etag)}"'
                )
        except ObjectNotFoundError:
            raise _lost_race(uri, "replace", "it no longer exists") from None
        return _strip_etag(resp.get("ETag")) or _content_etag(data)
    target = local_path(uri)
    with _local_errors(uri, "replace"), _local_cas_lock(target):
        try:
            current = target.read_bytes()
        except FileNotFoundError:
            raise _lost_race(uri, "replace", "it no longer exists") from None
        if _content_etag(current) != _strip_etag(etag):
            raise _lost_race(uri, "replace", "it changed since it was read (ETag differs)")
        with open_write(uri) as f:
            f.write(data)
    return _content_etag(data)


def delete_if_match(uri: str, etag: str) -> None:
    """Delete ``uri`` only if it is still the object with ``etag``.

    Raises :class:`PreconditionFailedError` when it changed or is already gone. S3:
    ``DeleteObject`` with ``If-Match``. Local: compare and unlink under the directory lock.
    """
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        try:
            with _s3_errors(uri, "delete"):
                _s3_client().delete_object(Bucket=bucket, Key=key, IfMatch=f'"{_strip_etag(etag)}"')
        except ObjectNotFoundError:
            raise _lost_race(uri, "delete", "it no longer exists") from None
        return
    target = local_path(uri)
    with _local_errors(uri, "delete"), _local_cas_lock(target):
        try:
            current = target.read_bytes()
        except FileNotFoundError:
            raise _lost_race(uri, "delete", "it no longer exists") from None
        if _content_etag(current) != _strip_etag(etag):
            raise _lost_race(uri, "delete", "it changed since it was read (ETag differs)")
        target.unlink()


# --------------------------------------------------------------------------- metadata


def _local_info(uri: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        uri=uri,
        size=st.st_size,
        etag=f"{st.st_size}-{st.st_mtime_ns}",
        version=None,
        mtime=st.st_mtime_ns / 1e9,
    )


def stat(uri: str) -> ObjectInfo:
    """Size, ETag/fingerprint, version and modification time of one object."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri, "stat"):
            head = _s3_client().head_object(Bucket=bucket, Key=key)
        return ObjectInfo(
            uri=uri,
            size=int(head["ContentLength"]),
            etag=_strip_etag(head.get("ETag")),
            version=head.get("VersionId"),
            mtime=head["LastModified"].timestamp(),
        )
    p = local_path(uri)
    with _local_errors(uri, "stat"):
        st = p.stat()
        if p.is_dir():
            raise IsADirectoryError(21, "Is a directory", str(p))
    return _local_info(uri, st)


def exists(uri: str) -> bool:
    """Whether an object (a regular file, locally) exists at ``uri``."""
    if is_s3(uri):
        try:
            stat(uri)
        except ObjectNotFoundError:
            return False
        return True
    return local_path(uri).is_file()


def list_prefix(uri_prefix: str, *, suffixes: tuple[str, ...] | None = None) -> list[ObjectInfo]:
    """Every object under ``uri_prefix``, recursively, sorted by URI.

    S3: a key prefix (``s3://b/videos/`` or ``s3://b/videos/clip``). Local: a directory, or a
    directory plus a file-name prefix. ``suffixes`` keeps only names ending in one of them
    (case-insensitive). A prefix that matches nothing gives an empty list.
    """
    wanted = tuple(s.lower() for s in suffixes) if suffixes else None

    def keep(name: str) -> bool:
        return wanted is None or name.lower().endswith(wanted)

    out: list[ObjectInfo] = []
    if is_s3(uri_prefix):
        bucket, prefix = _split_s3(uri_prefix, need_key=False)
        with _s3_errors(uri_prefix, "list"):
            pages = (
                _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    if keep(obj["Key"]):
                        out.append(
                            ObjectInfo(
                                uri=f"s3://{bucket}/{obj['Key']}",
                                size=int(obj["Size"]),
                                etag=_strip_etag(obj.get("ETag")),
                                version=None,
                                mtime=obj["LastModified"].timestamp(),
                            )
                        )
        return sorted(out, key=lambda o: o.uri)

    base = local_path(uri_prefix)
    if base.is_dir():
        root, name_prefix = base, ""
    else:
        root, name_prefix = base.parent, base.name
    if not root.is_dir():
        return []
    with _local_errors(uri_prefix, "list"):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            for fn in filenames:
                first = fn if rel == "." else rel.split(os.sep, 1)[0]
                if not first.startswith(name_prefix):
                    continue
                if fn.startswith(".") and fn.endswith(_TMP_SUFFIX):
                    continue  # an in-flight atomic write
                if not keep(fn):
                    continue
                p = Path(dirpath, fn)
                try:
                    st = p.stat()
                except FileNotFoundError:  # deleted while listing
                    continue
                out.append(_local_info(_same_form(uri_prefix, p), st))
    return sorted(out, key=lambda o: o.uri)


def delete(uri: str) -> None:
    """Delete one object. Deleting something that does not exist is not an error."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri, "delete"):
            _s3_client().delete_object(Bucket=bucket, Key=key)
        return
    p = local_path(uri)
    with _local_errors(uri, "delete"), contextlib.suppress(FileNotFoundError):
        p.unlink()


# --------------------------------------------------------------------------- concatenation


def _copy_ranges(sizes: list[int]) -> list[tuple[int, int, int]] | None:
    """(source index, first byte, last byte) parts for UploadPartCopy, or None if S3
    cannot assemble these sources server-side (a non-final part under 5 MiB, too many parts).
    """
    parts: list[tuple[int, int, int]] = []
    for i, size in enumerate(sizes):
        n = max(1, -(-size // MAX_PART_SIZE))  # sources over 5 GiB are copied in ranges
        step = -(-size // n) if size else 0
        for k in range(n):
            lo = k * step
            hi = min(size, lo + step) - 1
            parts.append((i, lo, hi))
    if len(parts) > MAX_PARTS:
        return None
    if any(hi - lo + 1 < MIN_PART_SIZE for _, lo, hi in parts[:-1]):
        return None
    return parts


def _concat_streaming(dst_uri: str, src_uris: Sequence[str]) -> None:
    with open_write(dst_uri) as out:
        for src in src_uris:
            with open_read(src) as f:
                while chunk := f.read(_COPY_CHUNK):
                    out.write(chunk)


def copy_concat(dst_uri: str, src_uris: Sequence[str]) -> None:
    """Write the concatenation of ``src_uris`` to ``dst_uri``, atomically.

    S3 to S3: assembled server-side with multipart ``UploadPartCopy`` when every source but
    the last is at least 5 MiB (each copy is pinned to the source ETag read at the start,
    so a source replaced meanwhile raises :class:`PreconditionFailedError`). Otherwise -
    small sources, local or mixed storage - the bytes are streamed through this process
    into an atomic :func:`open_write`.
    """
    srcs = list(src_uris)
    if is_s3(dst_uri) and srcs and all(is_s3(s) for s in srcs):
        infos = [stat(s) for s in srcs]
        # Empty sources add nothing (and S3 has no empty copy range): leave them out.
        nonempty = [(s, i) for s, i in zip(srcs, infos, strict=True) if i.size > 0]
        plan = _copy_ranges([i.size for _, i in nonempty])
        if nonempty and plan is not None:
            _concat_server_side(dst_uri, [s for s, _ in nonempty], [i for _, i in nonempty], plan)
            return
    _concat_streaming(dst_uri, srcs)


def _concat_server_side(
    dst_uri: str, srcs: list[str], infos: list[ObjectInfo], plan: list[tuple[int, int, int]]
) -> None:
    bucket, key = _split_s3(dst_uri)
    client = _s3_client()
    with _s3_errors(dst_uri, "write"):
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        parts = []
        for number, (i, lo, hi) in enumerate(plan, start=1):
            sb, sk = _split_s3(srcs[i])
            kwargs: dict[str, Any] = {}
            if infos[i].size and (lo, hi) != (0, infos[i].size - 1):
                kwargs["CopySourceRange"] = f"bytes={lo}-{hi}"
            if infos[i].etag:
                kwargs["CopySourceIfMatch"] = f'"{infos[i].etag}"'
            with _s3_errors(srcs[i], "copy"):
                resp = client.upload_part_copy(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": sb, "Key": sk},
                    **kwargs,
                )
            parts.append({"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]})
        with _s3_errors(dst_uri, "write"):
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
    except BaseException:
        with contextlib.suppress(Exception):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
