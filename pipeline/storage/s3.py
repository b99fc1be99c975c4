"""The S3 backend: ``s3://bucket/key`` on AWS S3 or any S3-compatible server.

Reads are ranged GETs through :class:`S3RangeReader`; writes go through :class:`S3Writer`
(one PutObject, or a multipart upload once a part fills; nothing is visible before
:meth:`S3Writer.commit`). :meth:`S3Backend.concat_in_place` assembles an object server-side
with ``UploadPartCopy``. Compare-and-swap uses ``If-None-Match: *`` / ``If-Match: <etag>``.
The client and the error mapping come from :mod:`pipeline.storage.s3_client`; boto3 is only
imported when an S3 operation runs.
"""

from __future__ import annotations

import contextlib
import io
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

from pipeline.errors import ObjectNotFoundError, StorageError
from pipeline.storage.backend import ObjectInfo, content_etag, lost_race, strip_etag
from pipeline.storage.config import (
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    StorageConfig,
    get_config,
)
from pipeline.storage.s3_client import s3_client, s3_error, s3_errors
from pipeline.storage.uri import split_s3

__all__ = [
    "S3Backend",
    "S3RangeReader",
    "S3Writer",
    "copy_ranges",
]

_STREAM_RETRIES = 3  # re-issue a GET whose body broke off mid-transfer

# --------------------------------------------------------------------------- read


def _get_body(client: Any, bucket: str, key: str, uri: str, **kwargs: Any) -> bytes:
    """GET (optionally ranged) and read the body; a body that breaks off is fetched again."""
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

    for attempt in range(_STREAM_RETRIES):
        with s3_errors(uri, "read"):
            resp = client.get_object(Bucket=bucket, Key=key, **kwargs)
        try:
            with contextlib.closing(resp["Body"]) as body:
                return body.read()
        except (IncompleteReadError, ResponseStreamingError, ReadTimeoutError) as exc:
            if attempt == _STREAM_RETRIES - 1:
                raise s3_error(exc, uri, "read") from None
    raise AssertionError("unreachable")  # pragma: no cover


class S3RangeReader(io.RawIOBase):
    """A seekable, read-only file object over one S3 object.

    Reads are served from aligned blocks of ``read_block_size`` bytes fetched with ranged
    GETs and kept in a small LRU cache, so a demuxer that jumps between the header, the
    index and the data does not download the whole object. Every GET is pinned to the ETag
    seen at open (``IfMatch``): if the object is replaced meanwhile the read fails with
    :class:`PreconditionFailedError` instead of mixing two versions.

    ``bytes_fetched`` and ``requests`` count the traffic (for tests and metrics).

    Raises:
        ObjectNotFoundError: (at construction) the object does not exist.
        PreconditionFailedError: (on read) the object was replaced since it was opened.
        StorageError: any other S3 failure, or a short ranged read.
    """

    def __init__(
        self, uri: str, *, client: Any = None, config: StorageConfig | None = None
    ) -> None:
        super().__init__()
        cfg = config or get_config()
        self.uri = uri
        self._bucket, self._key = split_s3(uri)
        self._client = client if client is not None else s3_client()
        self._block = cfg.read_block_size
        self._max_blocks = cfg.read_cache_blocks
        with s3_errors(uri, "open"):
            head = self._client.head_object(Bucket=self._bucket, Key=self._key)
        self.size: int = int(head["ContentLength"])
        self.etag: str = strip_etag(head.get("ETag"))
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.bytes_fetched = 0
        self.requests = 0

    # io protocol -------------------------------------------------------------------
    def readable(self) -> bool:
        """Always ``True``."""
        return True

    def seekable(self) -> bool:
        """Always ``True``."""
        return True

    def writable(self) -> bool:
        """Always ``False``."""
        return False

    def tell(self) -> int:
        """The current position, in bytes from the start."""
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` relative to ``whence``; returns the new position.

        Raises:
            ValueError: unknown ``whence``, a negative position, or the reader is closed.
        """
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
        """Fill ``buffer`` from the current position; returns the number of bytes read."""
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        """Everything from the current position to the end."""
        return self.read(-1)

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all of the rest when negative or ``None``).

        Raises:
            ValueError: the reader is closed.
            StorageError: the ranged GET failed (see the class).
        """
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
        """Drop the block cache and close."""
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


# --------------------------------------------------------------------------- write


class S3Writer(io.RawIOBase):
    """A write-only file object that becomes an S3 object only on :meth:`commit`.

    Data is buffered up to one part; the first full part starts a multipart upload and
    every full part is uploaded as it fills. A small object is one PutObject. Part sizes
    grow after each 1,000 parts so the 10,000-part limit is never hit.

    Raises:
        PreconditionFailedError: (on commit) ``if_none_match`` and the object exists.
        StorageError: any other S3 failure while uploading or committing.
    """

    def __init__(self, uri: str, *, if_none_match: bool = False, client: Any = None) -> None:
        super().__init__()
        self.uri = uri
        self._bucket, self._key = split_s3(uri)
        self._client = client if client is not None else s3_client()
        self._part_size = get_config().part_size
        self._if_none_match = if_none_match
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._done = False
        self.bytes_written = 0

    def writable(self) -> bool:
        """Always ``True``."""
        return True

    def readable(self) -> bool:
        """Always ``False``."""
        return False

    def seekable(self) -> bool:
        """Always ``False``."""
        return False

    def tell(self) -> int:
        """Bytes written so far."""
        return self.bytes_written

    def write(self, data: Any) -> int:
        """Buffer ``data`` (any bytes-like object), uploading every part that fills.

        Raises:
            ValueError: the writer is closed, committed or aborted.
            StorageError: a part upload failed.
        """
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
        with s3_errors(self.uri, "write"):
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
        """Make the object visible (PutObject, or the last part + CompleteMultipartUpload).

        Raises:
            PreconditionFailedError: ``if_none_match`` and the object exists.
            StorageError: the upload failed.
        """
        if self._done:
            return
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if self._if_none_match else {}
        if self._upload_id is None:
            with s3_errors(self.uri, "write"):
                self._client.put_object(
                    Bucket=self._bucket, Key=self._key, Body=bytes(self._buf), **extra
                )
        else:
            if self._buf:
                self._upload_part(bytes(self._buf))
            with s3_errors(self.uri, "write"):
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
        """Close without committing: :func:`~pipeline.storage.open_write` decides between
        commit and abort."""
        super().close()


# --------------------------------------------------------------------------- concatenation


def copy_ranges(sizes: list[int]) -> list[tuple[int, int, int]] | None:
    """(source index, first byte, last byte) parts for UploadPartCopy, or None if S3
    cannot assemble these sources server-side (a non-final part under 5 MiB, too many parts).

    ``sizes`` are the source sizes in bytes; sources over 5 GiB are split into equal ranges.
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


def _concat_server_side(
    dst_uri: str, srcs: list[str], infos: list[ObjectInfo], plan: list[tuple[int, int, int]]
) -> None:
    bucket, key = split_s3(dst_uri)
    client = s3_client()
    with s3_errors(dst_uri, "write"):
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        parts = []
        for number, (i, lo, hi) in enumerate(plan, start=1):
            sb, sk = split_s3(srcs[i])
            kwargs: dict[str, Any] = {}
            if infos[i].size and (lo, hi) != (0, infos[i].size - 1):
                kwargs["CopySourceRange"] = f"bytes={lo}-{hi}"
            if infos[i].etag:
                kwargs["CopySourceIfMatch"] = f'"{infos[i].etag}"'
            with s3_errors(srcs[i], "copy"):
                resp = client.upload_part_copy(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": sb, "Key": sk},
                    **kwargs,
                )
            parts.append({"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]})
        with s3_errors(dst_uri, "write"):
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
    except BaseException:
        with contextlib.suppress(Exception):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise


# --------------------------------------------------------------------------- the backend


class S3Backend:
    """The :class:`~pipeline.storage.backend.Backend` of ``s3://bucket/key`` URIs.

    Every method raises :class:`~pipeline.errors.ConfigError` for a malformed S3 URI and
    translates botocore errors with :func:`s3_error`.
    """

    def read_bytes(self, uri: str) -> bytes:
        """One GET (re-issued when the body breaks off mid-transfer).

        Raises:
            ObjectNotFoundError: the object or the bucket does not exist.
            AccessDeniedError: the credentials are missing or not allowed.
            StorageError: any other S3 failure.
        """
        bucket, key = split_s3(uri)
        return _get_body(s3_client(), bucket, key, uri)

    def open_read(self, uri: str) -> BinaryIO:
        """An :class:`S3RangeReader` (ranged GETs with a read-ahead block cache).

        Raises:
            ObjectNotFoundError: the object or the bucket does not exist.
            StorageError: any other S3 failure.
        """
        return S3RangeReader(uri)  # type: ignore[return-value]

    @contextlib.contextmanager
    def open_write(self, uri: str, *, if_none_match: bool = False) -> Iterator[BinaryIO]:
        """An :class:`S3Writer`, committed when the block exits cleanly, aborted otherwise.

        Raises:
            PreconditionFailedError: ``if_none_match`` and the object exists at exit.
            StorageError: the upload failed.
        """
        writer = S3Writer(uri, if_none_match=if_none_match)
        try:
            yield writer  # type: ignore[misc]
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        finally:
            writer.close()

    def write_bytes(self, uri: str, data: bytes, *, if_none_match: bool = False) -> None:
        """One PutObject, or a multipart upload above ``StorageConfig.multipart_threshold``.

        Raises:
            PreconditionFailedError: ``if_none_match`` and the object exists.
            StorageError: the upload failed.
        """
        bucket, key = split_s3(uri)
        if len(data) > get_config().multipart_threshold:
            with self.open_write(uri, if_none_match=if_none_match) as f:
                f.write(data)
            return
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_none_match else {}
        with s3_errors(uri, "write"):
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, **extra)

    def read_versioned(self, uri: str) -> tuple[bytes, str]:
        """The bytes and the ETag of the GET that returned them.

        Raises:
            ObjectNotFoundError: the object does not exist.
            StorageError: any other S3 failure.
        """
        bucket, key = split_s3(uri)
        with s3_errors(uri, "read"):
            resp = s3_client().get_object(Bucket=bucket, Key=key)
        with contextlib.closing(resp["Body"]) as body, s3_errors(uri, "read"):
            data = body.read()
        return data, strip_etag(resp.get("ETag"))

    def put_if_absent(self, uri: str, data: bytes) -> str:
        """One PutObject with ``If-None-Match: *``; returns the new ETag.

        Raises:
            PreconditionFailedError: the object exists.
            StorageError: any other S3 failure.
        """
        bucket, key = split_s3(uri)
        with s3_errors(uri, "create"):
            resp = s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        return strip_etag(resp.get("ETag")) or content_etag(data)

    def replace_if_match(self, uri: str, data: bytes, etag: str) -> str:
        """PutObject with ``If-Match``; returns the new ETag.

        Raises:
            PreconditionFailedError: the object changed or is gone.
            StorageError: any other S3 failure.
        """
        bucket, key = split_s3(uri)
        try:
            with s3_errors(uri, "replace"):
                resp = s3_client().put_object(
                    Bucket=bucket, Key=key, Body=data, IfMatch=f'"{strip_etag(etag)}"'
                )
        except ObjectNotFoundError:
            raise lost_race(uri, "replace", "it no longer exists") from None
        return strip_etag(resp.get("ETag")) or content_etag(data)

    def delete_if_match(self, uri: str, etag: str) -> None:
        """DeleteObject with ``If-Match``.

        Raises:
            PreconditionFailedError: the object changed or is gone.
            StorageError: any other S3 failure.
        """
        bucket, key = split_s3(uri)
        try:
            with s3_errors(uri, "delete"):
                s3_client().delete_object(Bucket=bucket, Key=key, IfMatch=f'"{strip_etag(etag)}"')
        except ObjectNotFoundError:
            raise lost_race(uri, "delete", "it no longer exists") from None

    def stat(self, uri: str) -> ObjectInfo:
        """HeadObject: size, ETag, VersionId and LastModified.

        Raises:
            ObjectNotFoundError: the object or the bucket does not exist.
            StorageError: any other S3 failure.
        """
        bucket, key = split_s3(uri)
        with s3_errors(uri, "stat"):
            head = s3_client().head_object(Bucket=bucket, Key=key)
        return ObjectInfo(
            uri=uri,
            size=int(head["ContentLength"]),
            etag=strip_etag(head.get("ETag")),
            version=head.get("VersionId"),
            mtime=head["LastModified"].timestamp(),
        )

    def exists(self, uri: str) -> bool:
        """Whether HeadObject finds the object.

        Raises:
            StorageError: an S3 failure other than "not found".
        """
        try:
            self.stat(uri)
        except ObjectNotFoundError:
            return False
        return True

    def list_prefix(self, uri_prefix: str, keep: Callable[[str], bool]) -> list[ObjectInfo]:
        """ListObjectsV2 over a key prefix (``s3://b/videos/`` or ``s3://b/videos/clip``).

        Raises:
            StorageError: the listing failed (a missing bucket is ObjectNotFoundError).
        """
        bucket, prefix = split_s3(uri_prefix, need_key=False)
        out: list[ObjectInfo] = []
        with s3_errors(uri_prefix, "list"):
            pages = (
                s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    if keep(obj["Key"]):
                        out.append(
                            ObjectInfo(
                                uri=f"s3://{bucket}/{obj['Key']}",
                                size=int(obj["Size"]),
                                etag=strip_etag(obj.get("ETag")),
                                version=None,
                                mtime=obj["LastModified"].timestamp(),
                            )
                        )
        return out

    def delete(self, uri: str) -> None:
        """DeleteObject (S3 does not report a missing key).

        Raises:
            StorageError: the delete failed.
        """
        bucket, key = split_s3(uri)
        with s3_errors(uri, "delete"):
            s3_client().delete_object(Bucket=bucket, Key=key)

    def concat_in_place(self, dst_uri: str, src_uris: Sequence[str]) -> bool:
        """Multipart ``UploadPartCopy`` when every source but the last is at least 5 MiB.

        Each copy is pinned to the source ETag read at the start. Empty sources are left
        out. ``False`` (nothing written) when S3 cannot assemble these sources.

        Raises:
            ObjectNotFoundError: a source does not exist.
            PreconditionFailedError: a source was replaced during the copy.
            StorageError: any other S3 failure (the multipart upload is aborted).
        """
        srcs = list(src_uris)
        infos = [self.stat(s) for s in srcs]
        # Empty sources add nothing (and S3 has no empty copy range): leave them out.
        nonempty = [(s, i) for s, i in zip(srcs, infos, strict=True) if i.size > 0]
        plan = copy_ranges([i.size for _, i in nonempty])
        if not nonempty or plan is None:
            return False
        _concat_server_side(dst_uri, [s for s, _ in nonempty], [i for _, i in nonempty], plan)
        return True
