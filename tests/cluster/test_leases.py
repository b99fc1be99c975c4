"""Per-video leases (cluster.leases) on the local filesystem and on S3 (moto over HTTP):
absent -> taken, live -> refused with the holder named, expired or damaged -> taken over,
renew/release only by the holder, racing runs never both hold one lease, and the lease
keeper renews in the background and releases what is still ours."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cluster import leases
from pipeline import storage


@pytest.fixture(params=["local", "s3"])
def out(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return request.getfixturevalue("s3_prefix") + "out/"


def test_absent_lease_is_created_and_released(out: str) -> None:
    c = leases.acquire(out, "clip-0123", "s3://b/clip.mp4", "run-a", ttl=60)
    assert c.lease is not None and c.holder is None and c.took_over is None
    assert c.lease.uri == leases.lease_uri(out, "clip-0123")
    stored = leases.read(out, "clip-0123")
    assert stored == c.lease.info and stored.run_id == "run-a" and not stored.expired()
    assert 59 <= stored.expires_at - time.time() <= 60
    doc = json.loads(storage.read_bytes(c.lease.uri))
    assert doc["format"] == leases.LEASE_FORMAT and len(doc["sha256"]) == 64
    assert leases.release(c.lease)
    assert not storage.exists(c.lease.uri)
    assert not leases.release(c.lease)  # already gone: nothing to delete


def test_live_lease_of_another_run_is_refused(out: str) -> None:
    a = leases.acquire(out, "v", "src", "run-a", ttl=60)
    before = storage.read_bytes(a.lease.uri)
    b = leases.acquire(out, "v", "src", "run-b", ttl=60)
    assert b.lease is None and b.holder is not None and b.holder.run_id == "run-a"
    assert storage.read_bytes(a.lease.uri) == before  # untouched
    # The same run asking again (a retry) gets it back.
    again = leases.acquire(out, "v", "src", "run-a", ttl=60)
    assert again.lease is not None and again.took_over.run_id == "run-a"


def test_expired_lease_is_taken_over_and_the_old_holder_cannot_touch_it(out: str) -> None:
    old = leases.acquire(out, "v", "src", "run-a", ttl=10, now=time.time() - 100)
    assert old.lease is not None and old.lease.info.expired()
    new = leases.acquire(out, "v", "src", "run-b", ttl=60)
    assert new.lease is not None and new.took_over == old.lease.info
    # run-a (back from the dead) may neither renew nor release run-b's lease.
    assert not leases.renew(old.lease, 60)
    assert not leases.release(old.lease)
    assert leases.read(out, "v").run_id == "run-b"
    # run-b renews: the expiry moves, and it stays releasable with the new etag.
    first = new.lease.info.expires_at
    assert leases.renew(new.lease, 120, now=time.time() + 5)
    assert leases.read(out, "v").expires_at == new.lease.info.expires_at > first
    assert leases.release(new.lease) and leases.read(out, "v") is None


def test_damaged_lease_counts_as_expired(out: str) -> None:
    uri = leases.lease_uri(out, "v")
    storage.write_bytes(uri, b'{"format": "relatent-lease/1", "run_id": "x"')  # torn
    c = leases.acquire(out, "v", "src", "run-b", ttl=60)
    assert c.lease is not None and c.took_over is None and c.took_over_damaged
    good = json.loads(storage.read_bytes(uri))
    good["expires_at"] += 1e9  # edited by hand: the checksum no longer matches
    storage.write_bytes(uri, json.dumps(good).encode())
    assert leases.read(out, "v") is None
    assert leases.acquire(out, "v", "src", "run-c", ttl=60).lease is not None


def test_racing_runs_never_share_a_lease(out: str) -> None:
    """Eight runs race for each of five videos: every video ends with exactly one holder,
    the one its lease object names."""
    n_runs, videos = 8, [f"v{i}" for i in range(5)]
    won: dict[str, list[str]] = {v: [] for v in videos}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_runs)

    def run(r: int) -> None:
        try:
            barrier.wait()
            for v in videos:
                if leases.acquire(out, v, "src", f"run-{r}", ttl=60).lease is not None:
                    won[v].append(f"run-{r}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(n_runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for v in videos:
        assert len(won[v]) == 1, (v, won[v])
        assert leases.read(out, v).run_id == won[v][0]


def test_non_positive_ttl_is_a_config_error(tmp_path: Path) -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="lease-ttl"):
        leases.acquire(str(tmp_path), "v", "src", "run", ttl=0)


def test_held_leases_are_renewed_in_the_background_and_released(tmp_path: Path) -> None:
    out = str(tmp_path / "rlv")
    mine = leases.acquire(out, "v1", "src1", "run-a", ttl=0.9).lease
    stolen = leases.acquire(out, "v2", "src2", "run-a", ttl=0.9).lease
    held = leases.LeaseKeeper(ttl=0.9)
    held.add("v1", mine)
    held.add("v2", stolen)
    with held:
        # Another run takes v2 over (as it would after an expiry); v1 stays ours.
        _, etag = storage.read_versioned(stolen.uri)
        other = leases.LeaseInfo("v2", "src2", "run-b", "h", 1, 0.0, 0.0, time.time() + 600)
        storage.replace_if_match(stolen.uri, leases.encode_lease(other), etag)
        time.sleep(2.0)  # several renewal rounds (every ttl/3)
        current = leases.read(out, "v1")
        assert current.run_id == "run-a" and not current.expired()
        assert current.renewed_at > mine.info.acquired_at
    assert held.lost == ["v2"]
    assert leases.read(out, "v1") is None  # released at the end
    assert leases.read(out, "v2").run_id == "run-b"  # never touched: not ours any more
