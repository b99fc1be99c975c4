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
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from pipeline import storage
from pipeline.errors import ConfigError, ObjectNotFoundError, PreconditionFailedError

LEASE_FORMAT = "relatent-lease/1"
LEASES_DIR = "_leases"
_ATTEMPTS = 4  # create / take over rounds before giving up on one video (always a race)


def lease_uri(out: str, vid: str) -> str:
    return storage.join(out, LEASES_DIR, f"{vid}.json")


@dataclass(frozen=True)
class LeaseInfo:
    """The content of one lease object."""

    video_id: str
    source: str
    run_id: str
    host: str
    pid: int
    acquired_at: float
    renewed_at: float
    expires_at: float

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def encode_lease(info: LeaseInfo) -> bytes:
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
    longer ours (it expired and another run took it over, or it was deleted)."""
    t = time.time() if now is None else now
    info = replace(lease.info, renewed_at=t, expires_at=t + ttl)
    try:
        etag = storage.replace_if_match(lease.uri, encode_lease(info), lease.etag)
    except PreconditionFailedError:
        return False
    lease.info, lease.etag = info, etag
    return True


def release(lease: Lease) -> bool:
    """Delete a lease we hold. ``False`` when it is no longer ours (then it is left alone)."""
    try:
        storage.delete_if_match(lease.uri, lease.etag)
    except PreconditionFailedError:
        return False
    return True


def read(out: str, vid: str) -> LeaseInfo | None:
    """The current lease of ``vid`` (``None``: none, or a damaged one)."""
    try:
        return decode_lease(storage.read_bytes(lease_uri(out, vid)))
    except ObjectNotFoundError:
        return None
