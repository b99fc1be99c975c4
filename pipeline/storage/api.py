"""The storage verbs: one function per operation, dispatched to a backend by URI scheme.

Every verb takes a URI string: a plain path or ``file://`` URI goes to
:class:`~pipeline.storage.local.LocalBackend`, ``s3://bucket/key`` to
:class:`~pipeline.storage.s3.S3Backend`. :func:`backend_for` makes that choice, once per
call; the verbs add only what both backends share (suffix filtering and sorting of listings,
the streaming fallback of :func:`copy_concat`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import BinaryIO

from pipeline.storage.backend import Backend, ObjectInfo
from pipeline.storage.config import MiB
from pipeline.storage.local import LocalBackend
from pipeline.storage.s3 import S3Backend
from pipeline.storage.uri import is_s3

__all__ = [
    "backend_for",
    "copy_concat",
    "delete",
    "delete_if_match",
    "exists",
    "list_prefix",
    "open_read",
    "open_write",
    "put_if_absent",
    "read_bytes",
    "read_versioned",
    "replace_if_match",
    "stat",
    "write_bytes",
]

_COPY_CHUNK = 1 * MiB  # bytes per read of the streaming copy_concat

_LOCAL = LocalBackend()
_S3 = S3Backend()


def backend_for(uri: str | os.PathLike[str]) -> Backend:
    """The backend that serves ``uri``: S3 for ``s3://``, local storage for the rest.

    Nothing is validated here; the local backend rejects unsupported schemes
    (:class:`~pipeline.errors.ConfigError`) when it resolves the path.
    """
    return _S3 if is_s3(uri) else _LOCAL  # type: ignore[arg-type]


def read_bytes(uri: str) -> bytes:
    """The whole content of ``uri``.

    Raises:
        ConfigError: ``uri`` is malformed or has an unsupported scheme.
        ObjectNotFoundError: the object (or the bucket) does not exist.
        AccessDeniedError: permissions or credentials forbid it.
        StorageError: any other failure (a directory, an S3 error after retries).
    """
    return backend_for(uri).read_bytes(uri)


def open_read(uri: str) -> BinaryIO:
    """A seekable binary file object over ``uri`` (use it as a context manager).

    For S3 it is an :class:`~pipeline.storage.s3.S3RangeReader`: ranged GETs with a
    read-ahead block cache, so PyAV (``av.open(f)``) can demux straight from S3.

    Raises:
        ConfigError: ``uri`` is malformed or has an unsupported scheme.
        ObjectNotFoundError: the object does not exist.
        StorageError: it is a directory, or opening failed.
    """
    return backend_for(uri).open_read(uri)


def open_write(uri: str, *, if_none_match: bool = False) -> AbstractContextManager[BinaryIO]:
    """Atomic writer: nothing is visible at ``uri`` until the block exits without error.

    On an exception nothing is left behind (the local temporary file is removed; the S3
    multipart upload is aborted). ``if_none_match=True`` makes it create-only and raises
    :class:`~pipeline.errors.PreconditionFailedError` at exit when ``uri`` already exists.

    Raises:
        ConfigError: ``uri`` is malformed or has an unsupported scheme.
        PreconditionFailedError: ``if_none_match`` and ``uri`` exists at exit.
        StorageError: the write failed.
    """
    return backend_for(uri).open_write(uri, if_none_match=if_none_match)


def write_bytes(uri: str, data: bytes, *, if_none_match: bool = False) -> None:
    """Write ``data`` to ``uri`` atomically; ``if_none_match=True`` is create-only.

    Local: temporary file in the same directory + fsync + rename. S3: one PutObject, or a
    multipart upload above ``StorageConfig.multipart_threshold``.

    Raises:
        ConfigError: ``uri`` is malformed or has an unsupported scheme.
        PreconditionFailedError: ``if_none_match`` and ``uri`` exists.
        AccessDeniedError: permissions or credentials forbid it.
        StorageError: any other failure.
    """
    backend_for(uri).write_bytes(uri, data, if_none_match=if_none_match)


def read_versioned(uri: str) -> tuple[bytes, str]:
    """The content of a small object and its ETag, read together (for compare-and-swap).

    S3: the ETag of the GET that returned the bytes. Local: the hex MD5 of the bytes (what
    S3 gives a single-part upload), so both backends agree for objects written by
    :func:`put_if_absent` / :func:`replace_if_match`.

    Raises:
        ConfigError: ``uri`` is malformed or has an unsupported scheme.
        ObjectNotFoundError: the object does not exist.
        StorageError: any other failure.
    """
    return backend_for(uri).read_versioned(uri)


def put_if_absent(uri: str, data: bytes) -> str:
    """Create ``uri`` with ``data`` only if nothing is there; returns the new ETag.

    S3: one ``PutObject`` with ``If-None-Match: *`` (atomic on AWS S3 and on servers that
    implement conditional writes). Local: temporary file + ``os.link`` (atomic, fails if the
    name exists).

    Raises:
        ConfigError: ``uri`` is malformed or has an unsupported scheme.
        PreconditionFailedError: the object exists.
        StorageError: any other failure.
    """
    return backend_for(uri).put_if_absent(uri, data)


def replace_if_match(uri: str, data: bytes, etag: str) -> str:
    """Overwrite ``uri`` with ``data`` only if it is still the object with ``etag`` (as
    returned by :func:`read_versioned`, :func:`put_if_absent` or an earlier call); returns
    the new ETag.

    S3: ``PutObject`` with ``If-Match``. Local: compare and atomic rename under an exclusive
    ``flock`` of the directory (every local compare-and-swap takes it).

    Raises:
        ConfigError: ``uri`` is malformed or has an unsupported scheme.
        PreconditionFailedError: the object changed or is gone.
        StorageError: any other failure.
    """
    return backend_for(uri).replace_if_match(uri, data, etag)


def delete_if_match(uri: str, etag: str) -> None:
    """Delete ``uri`` only if it is still the object with ``etag``.

    S3: ``DeleteObject`` with ``If-Match``. Local: compare and unlink under the directory
    lock.

    Raises:
        ConfigError: ``uri`` is malformed or has an unsupported scheme.
        PreconditionFailedError: the object changed or is already gone.
        StorageError: any other failure.
    """
    backend_for(uri).delete_if_match(uri, etag)


def stat(uri: str) -> ObjectInfo:
    """Size, ETag/fingerprint, version and modification time of one object.

    Raises:
        ConfigError: ``uri`` is malformed or has an unsupported scheme.
        ObjectNotFoundError: the object does not exist.
        StorageError: it is a directory, or any other failure.
    """
    return backend_for(uri).stat(uri)


def exists(uri: str) -> bool:
    """Whether an object (a regular file, locally) exists at ``uri``.

    Raises:
        ConfigError: ``uri`` is malformed or has an unsupported scheme.
        StorageError: S3 failed for another reason than "not found".
    """
    return backend_for(uri).exists(uri)


def list_prefix(uri_prefix: str, *, suffixes: tuple[str, ...] | None = None) -> list[ObjectInfo]:
    """Every object under ``uri_prefix``, recursively, sorted by URI.

    S3: a key prefix (``s3://b/videos/`` or ``s3://b/videos/clip``). Local: a directory, or a
    directory plus a file-name prefix. ``suffixes`` keeps only names ending in one of them
    (case-insensitive). A prefix that matches nothing gives an empty list.

    Raises:
        ConfigError: ``uri_prefix`` is malformed or has an unsupported scheme.
        StorageError: the listing failed.
    """
    wanted = tuple(s.lower() for s in suffixes) if suffixes else None

    def keep(name: str) -> bool:
        return wanted is None or name.lower().endswith(wanted)

    found = backend_for(uri_prefix).list_prefix(uri_prefix, keep)
    return sorted(found, key=lambda o: o.uri)


def delete(uri: str) -> None:
    """Delete one object. Deleting something that does not exist is not an error.

    Raises:
        ConfigError: ``uri`` is malformed or has an unsupported scheme.
        StorageError: the delete failed.
    """
    backend_for(uri).delete(uri)


def copy_concat(dst_uri: str, src_uris: Sequence[str]) -> None:
    """Write the concatenation of ``src_uris`` to ``dst_uri``, atomically.

    S3 to S3: assembled server-side with multipart ``UploadPartCopy`` when every source but
    the last is at least 5 MiB (each copy is pinned to the source ETag read at the start,
    so a source replaced meanwhile raises
    :class:`~pipeline.errors.PreconditionFailedError`). Otherwise - small sources, local or
    mixed storage - the bytes are streamed through this process into an atomic
    :func:`open_write`.

    Raises:
        ConfigError: a URI is malformed or has an unsupported scheme.
        ObjectNotFoundError: a source does not exist (``dst_uri`` is then left untouched).
        PreconditionFailedError: a source was replaced during a server-side copy.
        StorageError: any other failure.
    """
    srcs = list(src_uris)
    backend = backend_for(dst_uri)
    same = bool(srcs) and all(backend_for(s) is backend for s in srcs)
    if same and backend.concat_in_place(dst_uri, srcs):
        return
    with open_write(dst_uri) as out:
        for src in srcs:
            with open_read(src) as f:
                while chunk := f.read(_COPY_CHUNK):
                    out.write(chunk)
