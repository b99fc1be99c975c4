"""Catalog planning: which videos of a catalog need encoding, and why (no Ray here).

A video is *current* when the driver would skip it: its committed manifest matches the
source version, the model and the config, and the stream beside it is whole. That decision
is :func:`cluster.work.summary_matches` + :func:`cluster.work._committed`, the very checks
:func:`cluster.work.prepare_video` makes; this module only adds the *why* for the rest,
by comparing with the manifest at the video's own output key or, when there is none (the
key changes with the model and config), with earlier manifests of the same source:

* ``missing``: no manifest of this source under ``out``;
* ``source changed``: the source's ETag / version differs from the one encoded;
* ``model changed``: weights, entropy tables, architecture or rate point differ (another
  ``--quality`` or checkpoint);
* ``config changed``: the refinement config hash (or the carry setting) differs;
* ``container changed``: the stream container version differs;
* ``stream missing``: a manifest matches but its stream is absent or has another size.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from cluster import manifest as mf
from cluster.config import ModelSpec
from cluster.planning import (
    MANIFEST_FORMAT,
    ModelIdentityLite,
    OutputPaths,
    source_stem,
    video_id,
)
from cluster.work import _committed, summary_matches
from pipeline import storage
from pipeline.bitstream import VERSION as STREAM_VERSION
from pipeline.refine import RefineConfig

MANIFEST_SUFFIX = ".manifest.parquet"


def resolve_model(spec: ModelSpec) -> ModelIdentityLite:
    """The identity of the model ``spec`` names (loads it once, on the CPU), as the
    driver resolves it."""
    from cluster.work import identity_of
    from pipeline.models import load_model

    model = load_model(
        spec.arch, spec.quality, spec.checkpoint, expected_sha256=spec.weights_sha256,
        lmbda=spec.lmbda, device="cpu",
    )  # fmt: skip
    return identity_of(model)


def _under(uri: str, prefix: str) -> bool:
    if storage.is_s3(uri) != storage.is_s3(prefix):
        return False
    if storage.is_s3(prefix):
        p = prefix if prefix.endswith("/") else prefix + "/"
        return uri.startswith(p)
    root = storage.local_path(prefix).resolve()
    return root in storage.local_path(uri).resolve().parents


def list_catalog(src: str, out: str, suffixes: Sequence[str]) -> list[storage.ObjectInfo]:
    """Every video under ``src`` (recursive, names ending in one of ``suffixes``), sorted,
    leaving out hidden files and anything under ``out`` (when the output prefix sits
    inside the catalog)."""
    objs = storage.list_prefix(src, suffixes=tuple(suffixes))
    return [
        o for o in objs if not _under(o.uri, out) and not posixpath.basename(o.uri).startswith(".")
    ]


def list_manifests(out: str) -> set[str]:
    """URIs of the manifests directly under ``out``."""
    found = set()
    for o in storage.list_prefix(out, suffixes=(MANIFEST_SUFFIX,)):
        if storage.is_s3(out):
            p = out if out.endswith("/") else out + "/"
            if "/" in o.uri[len(p) :]:
                continue
        elif storage.local_path(o.uri).parent.resolve() != storage.local_path(out).resolve():
            continue
        found.add(posixpath.basename(o.uri))
    return found


@dataclass
class CatalogItem:
    """One video of the catalog: the plan (``action``, ``reasons``) and, after a run, what
    happened (``status``: current, encoded, failed, leased, done-elsewhere; planned in a
    dry run)."""

    source: str
    video_id: str
    source_bytes: int
    action: str  # "encode" | "skip"
    reasons: list[str] = field(default_factory=list)
    status: str = "planned"
    error: str | None = None
    stream_bytes: int = 0
    frames: int = 0
    holder: str | None = None  # run id of the live lease holder (status "leased")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _differences(
    summary: dict[str, Any],
    etag: str,
    version: str | None,
    ident: ModelIdentityLite,
    refine: RefineConfig,
    *,
    check_source: bool = True,
) -> list[str]:
    reasons = []
    model = summary.get("model", {}) or {}
    if (
        model.get("weights_sha256") != ident.weights_sha256
        or model.get("tables_sha256") != ident.tables_sha256
        or model.get("arch") != ident.arch
        or model.get("quality") != ident.quality
    ):
        reasons.append("model changed")
    if summary.get("config_hash") != refine.hash():
        reasons.append("config changed")
    if check_source and (summary.get("source_etag"), summary.get("source_version")) != (
        etag,
        version,
    ):
        reasons.append("source changed")
    if (
        summary.get("container_version") != STREAM_VERSION
        or summary.get("format") != MANIFEST_FORMAT
    ):
        reasons.append("container changed")
    return reasons


def check_video(
    obj: storage.ObjectInfo,
    out: str,
    ident: ModelIdentityLite,
    refine: RefineConfig,
    carry: bool,
    manifests: set[str] | None = None,
    *,
    explain: bool = True,
) -> CatalogItem:
    """Plan one video. ``manifests`` (names from :func:`list_manifests`) saves a request
    per video that has none; ``None`` reads the manifest directly (a fresh check).
    ``explain=False`` skips looking for earlier manifests (the decision stays the same,
    the reason of a video without its own manifest is then just ``missing``)."""
    vid = video_id(obj.uri, ident, refine, carry)
    paths = OutputPaths.for_video(out, vid)
    item = CatalogItem(obj.uri, vid, obj.size, "encode")
    summary = None
    if manifests is None or posixpath.basename(paths.manifest) in manifests:
        summary = mf.read_summary(paths.manifest)
    if summary is not None:
        st = storage.stat(obj.uri)  # the version too, exactly as prepare_video sees it
        if summary_matches(summary, st.etag, st.version, ident, refine) and _committed(
            paths, summary
        ):
            item.action, item.reasons, item.status = "skip", ["current"], "current"
            item.stream_bytes = int(summary.get("stream_bytes", 0))
            item.frames = int(summary.get("frames", 0))
            return item
        item.reasons = _differences(summary, st.etag, st.version, ident, refine) or [
            "stream missing"
        ]
        return item
    earlier = _earlier_summaries(obj.uri, out, vid, manifests) if explain else []
    if not earlier:
        item.reasons = ["missing"]
        return item
    # Explain with the closest earlier manifest (fewest differences, then the newest). The
    # listing has no version id: only ETags are compared for the explanation.
    diffs = [
        (_differences(e, obj.etag, e.get("source_version"), ident, refine), e) for e in earlier
    ]
    reasons, _ = min(diffs, key=lambda d: (len(d[0]), _neg(str(d[1].get("committed_at", "")))))
    item.reasons = reasons or ["config changed"]  # same model and config hash: carry differs
    return item


def _neg(text: str) -> tuple[int, ...]:
    """A key that sorts strings in reverse order."""
    return tuple(-ord(c) for c in text)


def _earlier_summaries(
    source: str, out: str, vid: str, manifests: set[str] | None
) -> list[dict[str, Any]]:
    """Summaries of other manifests of ``source`` under ``out`` (other models/configs)."""
    if manifests is None:
        manifests = list_manifests(out)
    stem = source_stem(source) + "-"
    own = f"{vid}{MANIFEST_SUFFIX}"
    found = []
    for name in sorted(manifests):
        key = name[len(stem) : -len(MANIFEST_SUFFIX)]
        if name == own or not name.startswith(stem) or len(key) != 12:
            continue
        summary = mf.read_summary(storage.join(out, name))
        if summary is not None and summary.get("source") == source:
            found.append(summary)
    return found


def plan_catalog(
    objs: Iterable[storage.ObjectInfo],
    out: str,
    ident: ModelIdentityLite,
    refine: RefineConfig,
    carry: bool,
    threads: int = 16,
) -> list[CatalogItem]:
    """:func:`check_video` for every listed video (``threads`` at a time: each check is a
    few small requests), in listing order."""
    objs = list(objs)
    manifests = list_manifests(out)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(lambda o: check_video(o, out, ident, refine, carry, manifests), objs))
