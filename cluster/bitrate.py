"""``--target-kbps`` on the distributed path: the first pass and the byte budgets.

A target bitrate shares the bits out over the whole video before any GOP is coded
(docs/ratecontrol.md). On the cluster:

1. Before any shard of a video is encoded, the driver sends each planned shard's spec to
   an actor as a *first-pass* task (:meth:`cluster.shard.ShardEncoder.first_pass`): the
   actor codes the shard's frames unrefined at every rate point and returns each GOP's
   bytes per slot (a few numbers per GOP). The rows are staged
   (``firstpass-<s>-<e>.json``, :func:`store_first_pass`), so a rerun does not code them
   again.
2. Once every shard's rows are in, the driver shares the bitrate out
   (:func:`shard_budgets`: :func:`pipeline.bitrate.bitrate_budgets`, the very function
   ``relatent encode`` uses), or the video fails (``TargetUnreachableError``: exit 2 for a
   one-source job, nothing committed).
3. Each shard spec then carries its GOPs' budgets and first-pass rows
   (:attr:`ShardSpec.gop_bytes`, :attr:`ShardSpec.first_bytes`), which the actor sets on
   its rate controller before coding; both are recorded in the shard's sidecar, so a
   staged shard is reused only for the same ones (:func:`cluster.shard.load_sidecar`).

A GOP's first-pass bytes depend on its own frames only, so the budgets, and the stream, do
not depend on the shard layout, the batch or retries: the stream is ``encode``'s.

Importing this module loads neither torch nor ray (:func:`shard_budgets` loads
:mod:`pipeline.ratecontrol` on call; a targeted driver has loaded it already, to resolve
the rate points).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from cluster.planning import ShardSpec
from pipeline import storage
from pipeline.errors import ObjectNotFoundError

__all__ = [
    "FIRST_PASS_FORMAT",
    "first_pass_uri",
    "load_first_pass",
    "needs_first_pass",
    "shard_budgets",
    "shard_gops",
    "store_first_pass",
]

#: The format of a staged first-pass result.
FIRST_PASS_FORMAT = "relatent-firstpass/1"

#: One GOP's first-pass row: ``(GOP number, bytes at each rate point, slot order)``.
Rows = list[tuple[int, list[int]]]


def needs_first_pass(spec: ShardSpec) -> bool:
    """Whether ``spec``'s video is coded to a target bitrate (``--target-kbps``)."""
    target = spec.refine.target
    return target is not None and target[0] == "kbps"


def shard_gops(spec: ShardSpec) -> range:
    """The GOP numbers (frame index // ``refine.grid``, from the span's first frame) of the
    shard's frames: shards are cut on the GOP grid, so they are whole GOPs."""
    grid = spec.refine.grid
    return range(spec.start // grid, -(-spec.end // grid))


def first_pass_uri(spec: ShardSpec) -> str:
    """Where the first-pass rows of the shard's frames are staged."""
    return storage.join(spec.staging, f"firstpass-{spec.start:09d}-{spec.end:09d}.json")


def _identity(spec: ShardSpec) -> dict[str, Any]:
    """What a staged first pass must have been made for: the source version, the frames,
    the rate points and the config."""
    return {
        "format": FIRST_PASS_FORMAT,
        "fingerprint": spec.fingerprint,
        "start": spec.start,
        "end": spec.end,
        "rate_sha256": list(spec.rate_sha256),
        "config_hash": spec.refine.hash(),
    }


def load_first_pass(spec: ShardSpec) -> Rows | None:
    """The staged first-pass rows of ``spec``'s frames, if they were made for exactly this
    source version, range, rate points and config and cover every GOP of the shard; else
    None.

    Raises:
        StorageError: staging cannot be read (other than the file being absent).
    """
    try:
        doc = json.loads(storage.read_bytes(first_pass_uri(spec)))
    except (ObjectNotFoundError, ValueError):
        return None
    if not isinstance(doc, dict) or any(doc.get(k) != v for k, v in _identity(spec).items()):
        return None
    try:
        rows = [(int(n), [int(b) for b in r]) for n, r in doc["rows"]]
    except (KeyError, TypeError, ValueError):
        return None
    width = len(spec.rate_sha256) or 1
    ok = [n for n, _ in rows] == list(shard_gops(spec)) and all(len(r) == width for _, r in rows)
    return rows if ok else None


def store_first_pass(spec: ShardSpec, rows: Rows) -> None:
    """Stage the first-pass ``rows`` of ``spec``'s frames (atomic write).

    Raises:
        StorageError: staging cannot be written.
    """
    doc = {**_identity(spec), "rows": [[n, list(r)] for n, r in rows]}
    storage.write_bytes(first_pass_uri(spec), json.dumps(doc).encode())


def shard_budgets(
    specs: Sequence[ShardSpec],
    rows: Mapping[int, Sequence[int]],
    lmbdas: Sequence[float],
    kbps: float,
    frame_rate: float,
    frames: int,
    name: str,
) -> list[ShardSpec]:
    """``specs`` with each shard's GOP budgets and first-pass rows set: the bitrate ``kbps``
    over the video's ``frames`` frames at ``frame_rate`` frames/s, shared out from the whole
    video's first pass ``rows`` (GOP number -> bytes per slot) at the rate points' lambdas
    ``lmbdas`` (slot order) exactly as ``relatent encode`` shares it
    (:func:`pipeline.bitrate.bitrate_budgets`).

    Raises:
        TargetUnreachableError: the bitrate is outside what the rate points can spend on
            the video (a ConfigError: exit 2); ``name`` names the video.
        ConfigError: a shard's GOP has no first-pass row (a bug: every shard's first pass
            must be in).
    """
    from pipeline.bitrate import bitrate_budgets
    from pipeline.errors import ConfigError

    missing = [n for s in specs for n in shard_gops(s) if n not in rows]
    if missing:
        raise ConfigError(
            f"{name}: no first-pass bytes for GOPs {missing[:5]}",
            hint="this is a bug: every shard's first pass must finish before the budgets",
        )
    logs = [math.log(x) for x in lmbdas]
    budgets = bitrate_budgets(rows, logs, kbps, frame_rate, frames, name)
    return [
        replace(
            s,
            gop_bytes=tuple((n, budgets[n]) for n in shard_gops(s)),
            first_bytes=tuple((n, tuple(int(b) for b in rows[n])) for n in shard_gops(s)),
        )
        for s in specs
    ]
