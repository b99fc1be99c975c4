"""Prepare one video (no Ray): stat and probe the source, stage its carry section, decide
whether it needs encoding at all.

The prepare task (:func:`cluster.actor.prepare_task`) runs :func:`prepare_video` once per
source. Its result, a :class:`~cluster.planning.VideoPlan`, is what the driver cuts into
shards. What it stages (``probe.json``, ``carry.bin``; layout in :mod:`cluster.planning`)
lets the actors read frame timestamps without probing again and lets the commit append the
source's other streams without reading the source.

Idempotence: a rerun for the same source version reuses the staged probe (and carry
section) instead of probing again; the writes are atomic and deterministic.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster import manifest as mf
from cluster.commit import is_committed, summary_matches
from cluster.planning import (
    OutputPaths,
    VideoPlan,
    carry_uri,
    output_key,
    probe_uri,
    source_stem,
    staging_fingerprint,
)
from pipeline import media, storage
from pipeline.bitstream import carry_bytes
from pipeline.config import RefineConfig
from pipeline.errors import CorruptSourceError, InputError, ObjectNotFoundError
from pipeline.models import ModelIdentity

__all__ = ["Warn", "prepare_video", "probe_source", "span_times", "stage_carry"]

log = logging.getLogger("relatent.cluster")

#: Where warnings go (a message per call), e.g. ``list.append`` or ``log.warning``.
Warn = Callable[[str], None]


def probe_source(source: str, etag: str, video_stream: int | None = None) -> media.VideoInfo:
    """Probe ``source`` (packets only, no decoding), refusing an S3 object whose ETag is no
    longer ``etag``; ``video_stream`` as for :func:`pipeline.media.probe`.

    Raises:
        InputError: the S3 object changed since it was stat-ed.
        InputError subclasses (:class:`~pipeline.errors.CorruptSourceError`, ...): the
            source is not a readable video.
        StorageError: the source cannot be read.
    """
    if storage.is_s3(source):
        with storage.open_read(source) as f:
            if getattr(f, "etag", etag) != etag:
                raise InputError(
                    f"{source} changed while the job was starting",
                    hint="rerun the job once the upload is complete",
                )
            return media.probe(f, video_stream=video_stream)
    return media.probe(source, video_stream=video_stream)


def stage_carry(
    source: str,
    drop_broken: bool = False,
    warn: Warn | None = None,
    video_stream: int | None = None,
    start: Any = None,
    end: Any = None,
) -> tuple[bytes, int]:
    """The carry section ``relatent encode`` writes for ``source``
    (:func:`pipeline.bitstream.carry_bytes`), and how many corrupt streams ``drop_broken``
    left out (each reported through ``warn``). ``start``/``end`` (seconds, exact
    fractions; None: the video's own start/end) cut it to a frame span's times, as
    :func:`pipeline.media.extract_carry` does for ``relatent encode --start --end``
    (:func:`span_times`).

    Raises:
        CorruptSourceError: a corrupt stream, without ``drop_broken``.
        StorageError: the source cannot be read.
    """
    if storage.is_s3(source):
        with storage.open_read(source) as f:
            blob, info = media.extract_carry(
                f, start=start, end=end, drop_broken=drop_broken, warn=warn,
                video_stream=video_stream,
            )  # fmt: skip
    else:
        blob, info = media.extract_carry(
            source, start=start, end=end, drop_broken=drop_broken, warn=warn,
            video_stream=video_stream,
        )  # fmt: skip
    broken = sum(d.kind == "broken" for d in info.dropped)
    return carry_bytes(info.to_dict(), blob), broken


def span_times(info: media.VideoInfo, start: int, end: int) -> tuple[Any, Any]:
    """The times (seconds, exact: pts x time base) that cut the carry section to the
    coded frames ``[start, end)`` of ``info``'s source: the first coded frame's pts and the
    pts of the frame after the last, each None at the video's own edge. The very cut
    :func:`pipeline.codec.encode_video` makes, so the staged section is byte-identical."""
    span_start = info.pts[start] * info.time_base if start > 0 else None
    span_end = info.pts[end] * info.time_base if end < info.frame_count else None
    return span_start, span_end


@dataclass(frozen=True)
class _Probed:
    """What the prepare step staged: the probe result and the carry section's size."""

    info: media.VideoInfo
    carry_bytes: int


def _reuse_staged(
    staging: str, etag: str, carry: bool, drop_broken: bool, warn: Warn
) -> _Probed | None:
    """The staged probe of this source version, if complete and usable (its warnings are
    reported again through ``warn``), else ``None``."""
    with contextlib.suppress(ObjectNotFoundError, ValueError, KeyError, TypeError):
        doc = json.loads(storage.read_bytes(probe_uri(staging)))
        if (
            doc.get("etag") == etag
            and doc.get("carry_bytes", 0) == (storage.stat(carry_uri(staging)).size if carry else 0)
            # a section that left a corrupt stream out is only reused with drop_broken
            and (drop_broken or not doc.get("carry_broken", 0))
        ):
            probed = _Probed(media.VideoInfo.from_dict(doc["info"]), int(doc.get("carry_bytes", 0)))
            for msg in doc.get("carry_warnings", []):
                warn(msg)
            return probed
    return None


def _stage(
    source: str,
    etag: str,
    staging: str,
    carry: bool,
    drop_broken: bool,
    warn: Warn,
    video_stream: int | None = None,
    start: int = 0,
    end: int | None = None,
) -> _Probed:
    """Probe ``source`` and stage the result (and, with ``carry``, the carry section of the
    frames ``[start, end)``, written first: ``probe.json`` marks the prepare step
    complete). The staged probe is always the whole video's.

    Raises:
        ConfigError: the frame range is outside the video or empty
            (:func:`pipeline.media.check_range`, as ``relatent encode``)."""
    info = probe_source(source, etag, video_stream)
    if info.frame_count < 1:
        raise CorruptSourceError(f"{source}: no decodable frames", hint="check the source")
    stop = media.check_range(info, start, end)
    warnings: list[str] = []

    def note(msg: str) -> None:
        warnings.append(msg)
        warn(msg)

    media.warn_left_out(info, note)  # video streams not coded
    carry_size, broken = 0, 0
    if carry:
        section, broken = stage_carry(
            source, drop_broken, note, info.stream_index, *span_times(info, start, stop)
        )
        storage.write_bytes(carry_uri(staging), section)
        carry_size = len(section)
    doc = {
        "etag": etag,
        "info": info.to_dict(),
        "carry_bytes": carry_size,
        "carry_broken": broken,
        "carry_warnings": warnings,
    }
    storage.write_bytes(probe_uri(staging), json.dumps(doc).encode())
    return _Probed(info, carry_size)


def prepare_video(
    source: str,
    out: str,
    ident: ModelIdentity,
    refine: RefineConfig,
    carry: bool = True,
    drop_broken: bool = False,
    warn: Warn | None = None,
    video_stream: int | None = None,
    start: int = 0,
    end: int | None = None,
) -> VideoPlan:
    """Probe one source (packets only, no decoding) and decide what to do with it.

    ``start``/``end`` code only the source frames ``[start, end)`` (``end`` None: to the
    last frame), as ``relatent encode --start --end``: the plan counts the span's frames
    from 0 (``first`` = ``start``), its carry section is cut to the span's times, and a
    span that is given enters the video id (:func:`cluster.planning.output_key`).

    ``video_stream`` is the number of the video stream to code (None: the default choice,
    see :func:`pipeline.media.probe`); the video streams not coded are reported through
    ``warn``.

    Returns a :class:`VideoPlan`; ``skipped=True`` when a committed manifest already
    matches this source version, model and config. The probe result goes to staging so the
    actors read frame timestamps from there instead of probing again; with ``carry`` the
    source's other streams (audio, subtitles) are copied into the staged carry section.
    A corrupt audio stream fails the video (:class:`CorruptSourceError` naming the stream),
    or with ``drop_broken`` is left out; every stream left out is reported through ``warn``
    (again when a rerun reuses the staged section) and recorded in the section's info.

    Raises:
        ConfigError: the frame range is past the video's end or empty (the error of
            ``relatent encode``, :func:`pipeline.media.check_range`).
        CorruptSourceError: no decodable frames, or a corrupt carried stream.
        InputError: the source is not a readable video, or changed while starting.
        StorageError: the source, staging or output cannot be read or written.
    """
    warn = warn or log.warning
    st = storage.stat(source)
    key = output_key(source, ident, refine, carry, video_stream, start, end)
    vid = f"{source_stem(source)}-{key}"
    paths = OutputPaths.for_video(out, vid)
    fp = staging_fingerprint(key, st.etag, st.version)
    staging = paths.staging(fp)
    base: dict[str, Any] = {
        "source": source,
        "video_id": vid,
        "paths": paths,
        "source_etag": st.etag,
        "source_version": st.version,
        "source_size": st.size,
        "fingerprint": fp,
        "staging": staging,
        "carried": carry,
        "first": start,
    }
    summary = mf.read_summary(paths.manifest)
    if summary_matches(summary, st.etag, st.version, ident, refine) and is_committed(
        paths, summary
    ):
        assert summary is not None
        return VideoPlan(
            **base,
            frame_count=int(summary["frames"]),
            keyframes=(),
            width=int(summary.get("width", 0)),
            height=int(summary.get("height", 0)),
            skipped=True,
            summary=summary,
        )
    probed = _reuse_staged(staging, st.etag, carry, drop_broken, warn)
    if probed is None:
        probed = _stage(
            source, st.etag, staging, carry, drop_broken, warn, video_stream, start, end
        )
    info = probed.info
    stop = media.check_range(info, start, end)
    return VideoPlan(
        **base,
        carry_bytes=probed.carry_bytes,
        frame_count=stop - start,
        keyframes=tuple(int(k) - start for k in info.keyframes if start <= int(k) < stop),
        width=info.width,
        height=info.height,
        frame_rate=info.frame_rate,
    )
