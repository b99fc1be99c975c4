"""Storage: one interface over local paths, ``file://`` URIs and ``s3://bucket/key``.

Every function takes a URI string. A plain path or a ``file://`` URI is local storage (the
embedded default); ``s3://bucket/key`` is S3 or any S3-compatible server. boto3 is imported
lazily, only when an ``s3://`` URI is used, so local use never pays for it.

Layout
    :mod:`~pipeline.storage.api` holds the verbs (:func:`read_bytes`, :func:`open_read`,
    :func:`open_write`, :func:`write_bytes`, :func:`stat`, :func:`exists`,
    :func:`list_prefix`, :func:`delete`, :func:`copy_concat` and the compare-and-swap verbs)
    and picks the backend once per call (:func:`~pipeline.storage.api.backend_for`).
    :mod:`~pipeline.storage.local` and :mod:`~pipeline.storage.s3` are the two backends,
    both implementing :class:`~pipeline.storage.backend.Backend`;
    :mod:`~pipeline.storage.s3_client` builds, caches and injects the boto3 client and maps
    its errors; :mod:`~pipeline.storage.config` holds :class:`StorageConfig`;
    :mod:`~pipeline.storage.uri` parses and joins URIs. Callers use this package
    (``from pipeline import storage``), not the submodules.

Local storage
    Writes are atomic: a hidden temporary file in the destination directory is written,
    fsynced and moved into place with :func:`os.replace` (create-only writes use
    :func:`os.link`, which fails when the destination exists). Parent directories are
    created as needed, like S3 which has no directories. Files get ``0666 & ~umask``.
    Temporary files of killed writers are removed by the next write of the same name and
    by :func:`remove_stale_temps`, never while their writer lives (it holds a ``flock``).

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

from pipeline.storage.api import (
    copy_concat,
    delete,
    delete_if_match,
    exists,
    list_prefix,
    open_read,
    open_write,
    put_if_absent,
    read_bytes,
    read_versioned,
    replace_if_match,
    stat,
    write_bytes,
)
from pipeline.storage.backend import ObjectInfo
from pipeline.storage.config import MIN_PART_SIZE, StorageConfig, get_config, set_config
from pipeline.storage.local import remove_stale_temps
from pipeline.storage.s3 import S3RangeReader
from pipeline.storage.s3_client import make_s3_client, reset_s3_clients, set_s3_client_factory
from pipeline.storage.uri import check_distinct, is_s3, join, local_path, same_object

__all__ = [
    "MIN_PART_SIZE",
    "ObjectInfo",
    "S3RangeReader",
    "StorageConfig",
    "check_distinct",
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
    "remove_stale_temps",
    "replace_if_match",
    "reset_s3_clients",
    "same_object",
    "set_config",
    "set_s3_client_factory",
    "stat",
    "write_bytes",
]
