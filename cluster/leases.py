"""Per-video leases: how concurrent catalog runs divide the work without encoding a video
twice.

A lease is a small JSON object ``<out>/_leases/<video id>.json`` naming the run that holds
it and when it expires. It is taken with a create-only write
(:func:`pipeline.storage.put_if_absent`: S3 ``If-None-Match: *``, locally ``os.link``), so
of two runs racing for one video exactly one wins. An expired (or unreadable) lease is
taken over with a conditional overwrite (:func:`pipeline.storage.replace_if_match`, S3
``If-Match: <etag>``), so of two runs taking over the same dead lease one wins too. The
holder renews its leases while it encodes (same conditional overwrite) and deletes them
when the video is committed or has failed (:func:`pipeline.storage.delete_if_match`, so it
never deletes a lease another run has taken over meanwhile).

After every successful write the lease is read back and must be ours: a server that
ignored the condition (an S3-compatible store without conditional writes) is caught as
a lost race instead of letting two runs encode.

Expiry compares wall clocks of different machines: the TTL must be much longer than their
clock skew (minutes, with NTP: seconds). A run renews every ``ttl / 3``.

Format (``relatent-lease/1``)::

    {"format": "relatent-lease/1", "video_id", "source", "run_id", "host", "pid",
     "acquired_at", "renewed_at", "expires_at" (seconds since the epoch), "sha256"}

``sha256`` is the digest of the canonical JSON of the other fields; a lease that does not
parse or whose digest does not match is treated like an expired one.

:class:`LeaseKeeper` holds the leases of one run: a background thread renews them every
``ttl / 3`` seconds, and each is released as its video is closed (the rest at the end).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from pipeline import storage
from pipeline.errors import ConfigError, ObjectNotFoundError, PreconditionFailedError

__all__ = [
    "LEASES_DIR",
    "LEASE_FORMAT",
    "Claim",
    "Lease",
    "LeaseInfo",
    "LeaseKeeper",
    "acquire",
    "decode_lease",
    "encode_lease",
    "lease_uri",
    "read",
    "release",
    "renew",
]

#: The ``format`` field of every lease object.
LEASE_FORMAT = "relatent-lease/1"
#: The folder of the lease objects, under the output prefix.
LEASES_DIR = "_leases"
_ATTEMPTS = 4  # create / take over rounds before giving up on one video (always a race)

log = logging.getLogger("relatent.cluster")


def lease_uri(out: str, vid: str) -> str:
    """The URI of video ``vid``'s lease under the output prefix ``out``
    (``<out>/_leases/<vid>.json``)."""
    return storage.join(out, LEASES_DIR, f"{vid}.json")


@dataclass(frozen=True)
class LeaseInfo:
    """The content of one lease object (times in seconds since the epoch, wall clock)."""

    video_id: str
    source: str
    run_id: str
    host: str
    pid: int
    acquired_at: float
    renewed_at: float
    expires_at: float

    def expired(self, now: float | None = None) -> bool:
        """Whether the lease has run out at ``now`` (default: the current time)."""
        return (time.time() if now is None else now) >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def encode_lease(info: LeaseInfo) -> bytes:
    """``info`` as a lease object: canonical JSON with the format and its sha256."""
    body = {"format": LEASE_FORMAT, **info.to_dict()}
    return json.dumps({**body, "sha256": _digest(body)}, sort_keys=True).encode()


def decode_lease(data: bytes) -> LeaseInfo | None:
    """The lease in ``data``, or ``None`` when it is not an intact relatent lease."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != LEASE_FORMAT:
            return None
        digest = doc.pop("sha256", None)
        if digest != _digest(doc):
            return None
        doc.pop("format")
        info = LeaseInfo(**doc)
        float(info.expires_at)
    except (ValueError, TypeError):
        return None
    return info


@dataclass
class Lease:
    """A lease this process holds (``etag`` is the one of our last write)."""

    uri: str
    info: LeaseInfo
    etag: str


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`acquire`: ``lease`` when we hold it now, else ``holder`` (the
    live lease of another run). ``took_over`` is the expired or damaged lease we replaced
    (``None`` after a plain create)."""

    lease: Lease | None = None
    holder: LeaseInfo | None = None
    took_over: LeaseInfo | None = None
    took_over_damaged: bool = False


def _verify(uri: str, etag: str, run_id: str) -> bool:
    """Read the lease back: still the object we wrote, and ours."""
    try:
        data, current = storage.read_versioned(uri)
    except ObjectNotFoundError:
        return False
    info = decode_lease(data)
    return current == etag and info is not None and info.run_id == run_id


def acquire(
    out: str, vid: str, source: str, run_id: str, ttl: float, *, now: float | None = None
) -> Claim:
    """Take the lease of video ``vid`` for ``run_id`` for ``ttl`` seconds.

    Returns a :class:`Claim` holding the lease, or naming the live holder. A lease of
    ``run_id`` itself (a retry within the same run) counts as ours and is taken over.
    Storage errors other than lost races propagate.

    Raises:
        ConfigError: ``ttl`` is not positive.
        PreconditionFailedError: the lease kept changing during every attempt.
        StorageError: the lease cannot be read or written.
    """
    if ttl <= 0:
        raise ConfigError(f"--lease-ttl {ttl:g} must be positive", hint="e.g. 900 (seconds)")
    uri = lease_uri(out, vid)
    t = time.time() if now is None else now
    mine = LeaseInfo(vid, source, run_id, socket.gethostname(), os.getpid(), t, t, t + ttl)
    data = encode_lease(mine)
    last: LeaseInfo | None = None
    for _ in range(_ATTEMPTS):
        try:
            etag = storage.put_if_absent(uri, data)
        except PreconditionFailedError:
            pass
        else:
            if _verify(uri, etag, run_id):
                return Claim(lease=Lease(uri, mine, etag))
            continue  # somebody overwrote it (a server without conditional writes)
        try:
            current, etag = storage.read_versioned(uri)
        except ObjectNotFoundError:
            continue  # released meanwhile: try to create it again
        held = decode_lease(current)
        last = held
        if held is not None and held.run_id != run_id and not held.expired(t):
            return Claim(holder=held)
        try:
            new = storage.replace_if_match(uri, data, etag)
        except PreconditionFailedError:
            continue  # another run took it over (or released it) first: look again
        if _verify(uri, new, run_id):
            return Claim(
                lease=Lease(uri, mine, new), took_over=held, took_over_damaged=held is None
            )
    if last is not None and last.run_id != run_id:
        return Claim(holder=last)
    raise PreconditionFailedError(
        f"cannot take the lease {uri}: it kept changing during {_ATTEMPTS} attempts",
        hint="another run is fighting over it; rerun later",
    )


def renew(lease: Lease, ttl: float, *, now: float | None = None) -> bool:
    """Push the expiry of a lease we hold ``ttl`` seconds ahead. ``False`` when it is no
    longer ours (it expired and another run took it over, or it was deleted).

    Raises:
        StorageError: the lease cannot be written (other than a lost condition).
    """
    t = time.time() if now is None else now
    info = replace(lease.info, renewed_at=t, expires_at=t + ttl)
    try:
        etag = storage.replace_if_match(lease.uri, encode_lease(info), lease.etag)
    except PreconditionFailedError:
        return False
    lease.info, lease.etag = info, etag
    return True


def release(lease: Lease) -> bool:
    """Delete a lease we hold. ``False`` when it is no longer ours (then it is left alone).

    Raises:
        StorageError: the lease cannot be deleted (other than a lost condition).
    """
    try:
        storage.delete_if_match(lease.uri, lease.etag)
    except PreconditionFailedError:
        return False
    return True


def read(out: str, vid: str) -> LeaseInfo | None:
    """The current lease of ``vid`` (``None``: none, or a damaged one).

    Raises:
        StorageError: the lease cannot be read (other than a missing object).
    """
    try:
        return decode_lease(storage.read_bytes(lease_uri(out, vid)))
    except ObjectNotFoundError:
        return None


class LeaseKeeper:
    """The leases one run holds: renewed by a background thread every ``ttl / 3`` seconds
    while the keeper is entered (``with keeper:``), released one by one as the driver
    closes each video (:meth:`release`), the rest when the ``with`` block ends.

    A lease found to belong to another run at renewal or release is dropped and its video
    id appended to :attr:`lost` (with a ``lease_lost`` warning); storage errors while
    renewing or releasing are logged and never raised (the lease then simply expires).
    """

    def __init__(self, ttl: float) -> None:
        """``ttl``: seconds each renewal pushes the expiry ahead (> 0)."""
        self.ttl = ttl
        #: video id -> the lease we hold for it.
        self.held: dict[str, Lease] = {}
        #: video ids whose lease another run took over while we held it.
        self.lost: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, vid: str, lease: Lease) -> None:
        """Keep (renew, then release) ``lease``, the lease of video ``vid``."""
        with self._lock:
            self.held[vid] = lease

    def release(self, vid: str) -> None:
        """Release the lease of ``vid`` now (nothing when it is not held)."""
        with self._lock:
            lease = self.held.pop(vid, None)
            if lease is None:
                return
            try:
                if not release(lease):
                    self._lose(vid, "at release")
            except Exception as exc:
                log.warning(
                    json.dumps({"event": "lease_release_failed", "video": vid, "error": str(exc)})
                )

    def release_all(self) -> None:
        """Release every lease still held."""
        for vid in list(self.held):
            self.release(vid)

    def _lose(self, vid: str, when: str) -> None:
        self.lost.append(vid)
        log.warning(
            json.dumps({"event": "lease_lost", "video": vid, "when": when,
                        "message": "another run took the lease over; it may encode the video too"})
        )  # fmt: skip

    def renew_all(self) -> None:
        """Renew every held lease once (what the background thread does every ttl/3)."""
        for vid in list(self.held):
            with self._lock:
                lease = self.held.get(vid)
                if lease is None:
                    continue
                try:
                    ok = renew(lease, self.ttl)
                except Exception as exc:
                    log.warning(
                        json.dumps({"event": "lease_renew_failed", "video": vid, "error": str(exc)})
                    )
                    continue
                if not ok:
                    self.held.pop(vid)
                    self._lose(vid, "at renewal")

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self.renew_all()

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(
            target=self._loop, name="relatent-lease-renewal", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.release_all()
