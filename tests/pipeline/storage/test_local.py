"""pipeline.storage.local: atomic writes, create-only writes, errors, listings, concatenation
and compare-and-swap on the local filesystem."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.errors import ObjectNotFoundError, PreconditionFailedError, StorageError
from tests.pipeline.storage.conftest import blob


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
    parts = [blob(n, seed=n) for n in (3000, 0, 1_500_000)]
    srcs = [str(tmp_path / f"p{i}") for i in range(len(parts))]
    for s, d in zip(srcs, parts, strict=True):
        storage.write_bytes(s, d)
    storage.copy_concat(str(tmp_path / "out"), srcs)
    assert storage.read_bytes(str(tmp_path / "out")) == b"".join(parts)


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
