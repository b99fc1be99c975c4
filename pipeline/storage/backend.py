"""What every storage backend provides: the :class:`Backend` protocol and :class:`ObjectInfo`.

:mod:`pipeline.storage.api` picks one backend per URI (:func:`~pipeline.storage.api.backend_for`)
and calls it; :class:`~pipeline.storage.local.LocalBackend` and
:class:`~pipeline.storage.s3.S3Backend` implement the protocol. The small helpers of the
compare-and-swap contract that both backends share (content ETags, lost races) live here too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from pipeline.errors import PreconditionFailedError

__all__ = [
    "Backend",
    "ObjectInfo",
    "content_etag",
    "lost_race",
    "strip_etag",
]


@dataclass(frozen=True)
class ObjectInfo:
    """What :func:`~pipeline.storage.stat` and :func:`~pipeline.storage.list_prefix` report
    about one object."""

    uri: str
    size: int  # bytes
    etag: str  # S3 ETag without quotes; local: f"{size}-{mtime_ns}"
    version: str | None  # S3 VersionId when the bucket is versioned, else None
    mtime: float  # last modification, seconds since the epoch


class Backend(Protocol):
    """The storage verbs of one kind of storage (local files, S3).

    URIs passed in are already known to belong to this backend. Every verb raises the
    :mod:`pipeline.errors` storage errors documented on the public function of the same
    name in :mod:`pipeline.storage.api`.
    """

    def read_bytes(self, uri: str) -> bytes:
        """The whole content of ``uri``."""
        ...

    def open_read(self, uri: str) -> BinaryIO:
        """A seekable binary file object over ``uri``."""
        ...

    def open_write(
        self, uri: str, *, if_none_match: bool = False
    ) -> AbstractContextManager[BinaryIO]:
        """An atomic writer: nothing is visible at ``uri`` until the block exits cleanly."""
        ...

    def write_bytes(self, uri: str, data: bytes, *, if_none_match: bool = False) -> None:
        """Write ``data`` to ``uri`` atomically (create-only with ``if_none_match``)."""
        ...

    def read_versioned(self, uri: str) -> tuple[bytes, str]:
        """The content of a small object and its ETag, read together."""
        ...

    def put_if_absent(self, uri: str, data: bytes) -> str:
        """Create ``uri`` only if nothing is there; returns the new ETag."""
        ...

    def replace_if_match(self, uri: str, data: bytes, etag: str) -> str:
        """Overwrite ``uri`` only if it still has ``etag``; returns the new ETag."""
        ...

    def delete_if_match(self, uri: str, etag: str) -> None:
        """Delete ``uri`` only if it still has ``etag``."""
        ...

    def stat(self, uri: str) -> ObjectInfo:
        """Size, ETag/fingerprint, version and modification time of one object."""
        ...

    def exists(self, uri: str) -> bool:
        """Whether an object exists at ``uri``."""
        ...

    def list_prefix(self, uri_prefix: str, keep: Callable[[str], bool]) -> list[ObjectInfo]:
        """Every object under ``uri_prefix`` whose name ``keep`` accepts, in any order."""
        ...

    def delete(self, uri: str) -> None:
        """Delete one object; a missing object is not an error."""
        ...

    def concat_in_place(self, dst_uri: str, src_uris: Sequence[str]) -> bool:
        """Assemble ``dst_uri`` from ``src_uris`` (all of this backend) without streaming the
        bytes through this process; ``False`` when this backend cannot (then the caller
        streams)."""
        ...


def content_etag(data: bytes) -> str:
    """The ETag S3 gives a single-part upload: the hex MD5 of the bytes (RFC 1321)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def strip_etag(etag: str | None) -> str:
    """An ETag without its surrounding double quotes (``""`` for ``None``)."""
    return (etag or "").strip('"')


def lost_race(uri: str, action: str, why: str) -> PreconditionFailedError:
    """The error of a compare-and-swap that another writer won (returned, not raised)."""
    return PreconditionFailedError(
        f"cannot {action} {uri}: {why}",
        hint="another writer changed it first; re-read it and decide again",
    )
