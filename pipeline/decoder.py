"""Decoder: .rlv packets back to frames, and whole streams to video files.

:class:`FrameDecoder` turns packets back into 8-bit RGB frames and proves, via the symbols
CRC, that it recovered the encoder's latents bit for bit; :func:`decode_video` writes a whole
stream, with its carried streams, to ``.y4m``, ``.mp4``/``.mkv`` or PNG frames. The decoder
is the standard one: the same fixed networks as the encoder (:mod:`pipeline.codec`), no
refinement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.bitstream import (
    FLAG_INTER,
    Packet,
    StreamHeader,
    StreamReader,
    check_packet_slot,
)
from pipeline.codec import to_uint8_frames
from pipeline.entropy import LatentCodec
from pipeline.errors import (
    BitstreamError,
    ConfigError,
    UnsupportedStreamError,
    WeightsMismatchError,
)
from pipeline.models import LoadedModel, ModelIdentity, load_cards, load_model, quality_value

__all__ = [
    "DecodeSummary",
    "DecodedFrame",
    "FrameDecoder",
    "check_model_matches",
    "decode_stream",
    "decode_video",
    "frame_range",
    "model_for_stream",
    "models_for_stream",
    "slot_identity",
]

#: What the decoder functions accept as weights: one model (a stream without rate points,
#: or with one), or one model per rate point slot, in slot order.
Models = LoadedModel | Sequence[LoadedModel]


@dataclass
class DecodedFrame:
    """One decoded frame: ``rgb`` [h, w, 3] uint8, ``y_hat`` [1, M, Hp/16, Wp/16] float32."""

    index: int
    pts: int
    rgb: np.ndarray  # h x w x 3 uint8
    y_hat: Tensor
    symbols_crc: int
    #: The integer symbols ``[M, h, w]`` int32 (factorized kind; None for hyperpriors).
    symbols: np.ndarray | None = None


class FrameDecoder:
    """Decodes packets of one stream; checks every frame's symbols CRC.

    ``model``: the stream's weights. A stream without rate points (or with one) takes one
    :class:`~pipeline.models.LoadedModel`; a stream with several rate points (format version
    4) takes one per slot, in slot order (:func:`models_for_stream`), and decodes each
    packet with the model of the slot it names (:attr:`~pipeline.bitstream.Packet.rate_slot`).

    Raises:
        WeightsMismatchError: at construction, when a model is not its slot's, or the number
            of models is not the stream's number of rate points.
    """

    def __init__(self, model: Models, header: StreamHeader) -> None:
        models = _model_list(model, header)
        for slot, m in enumerate(models):
            check_model_matches(m, header, slot)
        self.header = header
        #: The model and the entropy codec of each rate point slot.
        self.models = models
        self.codecs = [LatentCodec(m) for m in models]
        #: Slot 0's (the header's own model): what single-model callers use.
        self.model = models[0]
        self.codec = self.codecs[0]
        #: The last decoded frame's index, integer symbols and slot: a P frame's reference.
        self._ref: tuple[int, np.ndarray, int] | None = None

    def _reference(self, packet: Packet, slot: int) -> np.ndarray:
        """The symbols a P frame is coded against, or BitstreamError naming the frame."""
        idx, gop = packet.frame_index, self.header.gop
        if gop <= 1 or idx % gop == 0 or not self.codecs[slot].supports_inter:
            raise BitstreamError(
                f"frame {idx}: a P frame where the stream (gop {gop}) allows only intra frames",
                hint="the stream is corrupt",
            )
        if self._ref is None or self._ref[0] != idx - 1:
            raise BitstreamError(
                f"frame {idx}: P frame without its reference (frame {idx - 1} was not decoded)",
                hint="decode from the first frame of its GOP",
            )
        if len(packet.strings) != 1:
            raise BitstreamError(
                f"frame {idx}: P frame with {len(packet.strings)} strings, expected 1",
                hint="the stream is corrupt",
            )
        if self._ref[2] != slot:
            ref_slot = self._ref[2]
            self._ref = None  # nothing is predicted across rate points
            raise BitstreamError(
                f"frame {idx}: P frame codes rate point slot {slot}, its reference slot {ref_slot}",
                hint="the stream is corrupt (a rate point may change only at an I frame)",
            )
        return self._ref[1]

    def _latents(self, packet: Packet) -> tuple[dict[str, Any], int]:
        """Entropy-decode one packet with its slot's codec (a P frame against the previous
        frame), check its symbols CRC and make it the next frame's reference. Returns the
        decoded latents and the slot."""
        hd = self.header
        slot = check_packet_slot(packet, hd)
        codec = self.codecs[slot]
        if packet.flags & FLAG_INTER:
            ref = self._reference(packet, slot)
            out = codec.decompress_p(packet.strings[0], ref, f"frame {packet.frame_index}")
        else:
            out = codec.decompress(packet.strings, hd.padded_height, hd.padded_width)
        if out["symbols_crc"] != packet.latent_crc:
            self._ref = None  # nothing may be predicted from wrong latents
            raise BitstreamError(
                f"frame {packet.frame_index}: decoded latents differ from the encoder's (symbols CRC mismatch)",
                hint="the stream is corrupt, or this machine derives different entropy tables; decode with the encoder's relatent/compressai versions",
            )
        symbols = out.get("symbols")
        self._ref = (packet.frame_index, symbols, slot) if symbols is not None else None
        return out, slot

    def advance(self, packet: Packet) -> None:
        """Entropy-decode ``packet`` only (no synthesis): what random access does with the
        frames between a GOP's first frame and the first frame wanted.

        Raises:
            BitstreamError: as :meth:`decode`.
        """
        with torch.no_grad():
            self._latents(packet)

    def decode(self, packet: Packet) -> DecodedFrame:
        """Decode one packet (a P frame against the previously decoded frame) with the
        model of its rate point slot.

        Raises:
            BitstreamError: a wrong string count, a P frame without its reference or where
                the stream allows none, a P frame of another rate point slot than its
                reference, a slot the header does not have, a corrupt P packet, or a
                symbols CRC mismatch (each naming the frame).
        """
        hd = self.header
        with torch.no_grad():
            out, slot = self._latents(packet)
            x_hat = self.codecs[slot].synthesize(out["y_hat"])
            rgb = to_uint8_frames(x_hat, hd.height, hd.width)[0]
        return DecodedFrame(
            packet.frame_index,
            packet.pts,
            rgb,
            out["y_hat"],
            out["symbols_crc"],
            out.get("symbols"),
        )


def _model_list(model: Models, header: StreamHeader) -> list[LoadedModel]:
    """``model`` as one model per rate point slot of ``header``.

    Raises:
        WeightsMismatchError: not one model per slot.
    """
    models = [model] if isinstance(model, LoadedModel) else list(model)
    if len(models) != header.rate_slots:
        points = " ".join(f"q{rp['quality']}" for rp in header.rate_points) or f"q{header.quality}"
        raise WeightsMismatchError(
            f"the stream is coded with {header.rate_slots} rate point(s) ({header.arch} "
            f"{points}) and needs one model for each, got {len(models)}",
            hint="load them with pipeline.decoder.models_for_stream (the shipped weights of "
            "each rate point)",
        )
    return models


def slot_identity(header: StreamHeader, slot: int = 0) -> ModelIdentity:
    """The identity of the model that rate point ``slot`` of ``header`` names: its
    ``rate_points[slot]`` with the header's ``arch``, or, for a stream without rate points,
    the header's own model (slot 0).

    Raises:
        BitstreamError: ``slot`` is not one of the stream's slots.
    """
    if not 0 <= slot < header.rate_slots:
        raise BitstreamError(
            f"rate point slot {slot} is not one of the stream's {header.rate_slots}",
            hint="the stream is corrupt",
        )
    if not header.rate_points:
        return ModelIdentity(
            header.arch, header.quality, header.lmbda, header.weights_sha256, header.tables_sha256
        )
    rp = header.rate_points[slot]
    return ModelIdentity(
        header.arch,
        quality_value(rp["quality"]),
        float(rp["lmbda"]),
        str(rp["weights_sha256"]),
        str(rp["tables_sha256"]),
    )


def _slot_label(header: StreamHeader, slot: int) -> str:
    return f" (rate point slot {slot})" if header.rate_points else ""


def check_model_matches(model: LoadedModel, header: StreamHeader, slot: int = 0) -> None:
    """Raise WeightsMismatchError unless ``model`` is the arch, weights and tables of rate
    point ``slot`` of ``header`` (:func:`slot_identity`; slot 0: the header's own model)."""
    want = slot_identity(header, slot)
    ident = model.identity
    where = _slot_label(header, slot)
    if ident.arch != want.arch or ident.weights_sha256 != want.weights_sha256:
        raise WeightsMismatchError(
            f"stream needs {want.arch} q{want.quality} sha256 {want.weights_sha256[:12]}…{where}, "
            f"found {ident.arch} q{ident.quality} sha256 {ident.weights_sha256[:12]}…",
            hint="pass --checkpoint with the weights the stream was encoded with"
            if not header.rate_points or len(header.rate_points) == 1
            else "decode with the shipped weights of each rate point (models_for_stream)",
        )
    if ident.tables_sha256 != want.tables_sha256:
        raise WeightsMismatchError(
            f"the entropy tables built here ({ident.tables_sha256[:12]}…) differ from the encoder's ({want.tables_sha256[:12]}…){where}",
            hint="decode with the compressai version the stream was encoded with (1.2.8)",
        )


def models_for_stream(
    header: StreamHeader, checkpoint: str | None = None, device: str | None = None
) -> list[LoadedModel]:
    """Load the weights a stream needs, one model per rate point slot in slot order (one
    for a stream without rate points): ``checkpoint`` if given (a stream with at most one
    rate point), else the shipped weights whose sha256 each slot names.

    Raises:
        ConfigError: ``checkpoint`` given for a stream coded with several rate points.
        WeightsMismatchError: not the stream's weights, or none shipped match a slot.
        ModelError, ConfigError, StorageError: as :func:`~pipeline.models.load_model`."""
    if checkpoint is not None:
        if len(header.rate_points) > 1:
            points = " ".join(f"q{rp['quality']}" for rp in header.rate_points)
            raise ConfigError(
                f"--checkpoint {checkpoint}: the stream is coded with {len(header.rate_points)} "
                f"rate points ({header.arch} {points}) and decodes with the shipped weights "
                "of each",
                hint="drop --checkpoint",
            )
        model = load_model(
            header.arch, header.quality, checkpoint, lmbda=header.lmbda, device=device
        )
        check_model_matches(model, header)
        return [model]
    cards = load_cards()["models"]
    models = []
    for slot in range(header.rate_slots):
        want = slot_identity(header, slot)
        if not float(want.quality).is_integer():  # a midpoint: averaged from shipped weights
            model = load_model(want.arch, want.quality, device=device)
            check_model_matches(model, header, slot)
            models.append(model)
            continue
        match = [c for c in cards if c["sha256"] == want.weights_sha256]
        if not match:
            raise WeightsMismatchError(
                f"stream needs {want.arch} q{want.quality} sha256 {want.weights_sha256[:12]}…"
                f"{_slot_label(header, slot)}, which is not among the shipped weights",
                hint="pass --checkpoint with the weights the stream was encoded with"
                if header.rate_slots == 1
                else "install the relatent version whose shipped weights coded the stream",
            )
        model = load_model(match[0]["arch"], int(match[0]["quality"]), device=device)
        check_model_matches(model, header, slot)
        models.append(model)
    return models


def model_for_stream(
    header: StreamHeader, checkpoint: str | None = None, device: str | None = None
) -> LoadedModel:
    """Load the weights of a stream with one model (no rate points, or one):
    ``checkpoint`` if given, else the shipped ones (:func:`models_for_stream`).

    Raises:
        ConfigError: the stream is coded with several rate points (use
            :func:`models_for_stream`), or as :func:`models_for_stream`.
        WeightsMismatchError: not the stream's weights, or none shipped match.
        ModelError, StorageError: as :func:`~pipeline.models.load_model`."""
    if len(header.rate_points) > 1:
        if checkpoint is not None:
            models_for_stream(header, checkpoint, device)  # raises its ConfigError
        raise ConfigError(
            f"the stream is coded with {len(header.rate_points)} rate points and needs a "
            "model for each",
            hint="load them with pipeline.decoder.models_for_stream",
        )
    return models_for_stream(header, checkpoint, device)[0]


def frame_range(header: StreamHeader, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """``(start, end)`` checked against the stream's ``frame_count`` (``end`` None: the end).

    Raises:
        ConfigError: an empty or out-of-range span.
    """
    n = header.frame_count
    end = n if end is None else end
    if not 0 <= start < end <= n:
        raise ConfigError(
            f"frames {start}..{end} are not a span of this stream's {n} frames",
            hint=f"use 0 <= --start < --end <= {n}",
        )
    return start, end


def decode_stream(
    src: str,
    checkpoint: str | None = None,
    device: str | None = None,
    *,
    start: int = 0,
    end: int | None = None,
    model: Models | None = None,
) -> Iterator[DecodedFrame]:
    """Decode frames ``[start, end)`` of a stream, in order (default: all of them).

    Random access: a span that starts inside a GOP entropy-decodes the latents from the
    GOP's first frame up to ``start`` (reading those packets through the index) without
    synthesising those frames.

    ``model``: the weights to decode with, already loaded (checked against the stream;
    ``checkpoint`` and ``device`` are then unused): one model, or for a stream coded with
    several rate points one per slot in slot order; default: :func:`models_for_stream`.

    Raises:
        ConfigError: the span is not within the stream (:func:`frame_range`), or
            ``checkpoint`` given for a stream coded with several rate points.
        WeightsMismatchError: ``model`` is not the stream's.
        BitstreamError, ModelError, StorageError: unusable stream or weights."""
    with StreamReader(src) as reader:
        start, end = frame_range(reader.header, start, end)
        if model is None:
            model = models_for_stream(reader.header, checkpoint, device)
        dec = FrameDecoder(model, reader.header)
        gop = max(1, reader.header.gop)
        for n in range(start - start % gop, start):
            dec.advance(reader[n])
        for n in range(start, end):
            yield dec.decode(reader[n])


@dataclass
class DecodeSummary:
    """What :func:`decode_video` wrote: the stream's header and the number of frames."""

    header: StreamHeader
    frames: int
    #: Carried streams written next to the video, and those skipped (with the reason).
    carried: list[Any] = field(default_factory=list)
    skipped: list[tuple[Any, str]] = field(default_factory=list)
    #: Why the carried streams were not written at all ("" when they were, or there are none).
    video_only_reason: str = ""


def decode_video(
    src: str,
    dst: str,
    checkpoint: str | None = None,
    device: str | None = None,
    *,
    video_only: bool = False,
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
    on_frame: Callable[[DecodedFrame], None] | None = None,
    start: int = 0,
    end: int | None = None,
    model: Models | None = None,
) -> DecodeSummary:
    """Decode the stream ``src`` to ``dst`` (:func:`pipeline.media.write_frames` decides the
    kind of output from ``dst``; written atomically).

    ``.mp4``/``.mkv`` outputs also get the carried streams (audio, subtitles, chapters,
    metadata; :class:`pipeline.media.CarryMuxer`) unless ``video_only``: a stream the format
    cannot hold is skipped with a ``warn``-ing, or with ``strict`` raises
    :class:`~pipeline.errors.UnsupportedStreamError` before anything is written. ``.y4m``
    and PNG outputs are video-only (a warning; with ``strict`` the same error).

    ``model``: the weights, already loaded (as :func:`decode_stream` takes them); default:
    :func:`models_for_stream` of ``checkpoint`` (loaded before anything is written).

    ``start``/``end`` decode frames ``[start, end)`` only (:func:`decode_stream`); their
    timestamps are shifted so the output starts at 0, and the carried streams are not
    written (a warning; with ``strict`` the same error).

    How the frames are displayed (the header's ``display``: rotation, SAR, field order,
    title; and its ``color``) is written to every output that can hold it, whatever was
    carried (:func:`pipeline.media.write_frames`); the container tags of the carry section
    are written to ``.mp4``/``.mkv`` even without carried streams. What an output cannot hold
    is named in a ``warn``-ing (:func:`pipeline.media.output_notes`).

    Raises:
        UnsupportedStreamError: with ``strict``, as above. ConfigError: ``dst`` is ``src``.
        BitstreamError, ModelError, ConfigError, StorageError: as :func:`decode_stream`."""
    from pathlib import PurePath

    from pipeline import storage
    from pipeline.media import (
        CarryInfo,
        CarryMuxer,
        ColorInfo,
        output_notes,
        write_frames,
    )
    from pipeline.media.write import high_depth_supported

    storage.check_distinct(dst, [src])
    suffix = PurePath(dst).suffix.lower()
    fmt = {".mp4": "mp4", ".mkv": "matroska"}.get(suffix)
    ranged = start != 0 or end is not None
    with StreamReader(src) as r:
        header = r.header
        start, end = frame_range(header, start, end)
        all_pts = [r[n].pts for n in range(start, end)]
        all_pts = [p - all_pts[0] for p in all_pts] if ranged else all_pts
        info_dict = r.carry_info()
        has_carry = info_dict is not None and bool(
            info_dict.get("streams") or info_dict.get("chapters")
        )
        keep = has_carry and not video_only and fmt is not None and not ranged
        blob = r.carry_blob() if keep else b""
    color = _stream_color(header, src, ColorInfo)
    display = _stream_display(header, src, info_dict)
    if fmt is not None:  # containers need increasing timestamps (y4m and PNG have none)
        _check_pts(all_pts, start, src)
    summary = DecodeSummary(header, 0)
    muxer = None
    if has_carry and not video_only:
        assert info_dict is not None
        cinfo = CarryInfo.from_dict(info_dict)
        if fmt is None or ranged:
            summary.video_only_reason = (
                f"{suffix or 'PNG folder'} outputs are video-only"
                if fmt is None
                else "a --start/--end span is decoded video-only"
            )
            keep_hint = "decode the whole stream" if fmt is not None else "decode to .mkv or .mp4"
            _leave_out(cinfo.streams, dst, summary.video_only_reason, keep_hint, strict, warn)
        else:
            muxer = CarryMuxer(blob, cinfo, fmt, dst=dst, strict=strict, warn=warn)
            summary.carried = list(muxer.plan)
            summary.skipped = list(muxer.skipped)
    elif info_dict is not None and not video_only and fmt is not None and not ranged:
        # No carried streams or chapters, but the container's tags and the video's own
        # (title, language, disposition) are still the source's.
        muxer = CarryMuxer(b"", CarryInfo.from_dict(info_dict), fmt, dst=dst, warn=warn)
    kind = "video" if fmt is not None else ("y4m" if suffix == ".y4m" else "png")
    high = high_depth_supported() if kind == "video" else True
    for note in output_notes(display, color, kind, dst, high_depth=high):
        (warn or _log_warning)(note)
    models = model if model is not None else models_for_stream(header, checkpoint, device)

    def frames() -> Iterator[np.ndarray]:
        for d in decode_stream(src, start=start, end=end, model=models):
            summary.frames += 1
            if on_frame:
                on_frame(d)
            yield d.rgb

    write_frames(
        dst, frames(), frame_rate=header.frame_rate, time_base=header.time_base, pts=all_pts,
        color=color, extra=muxer, display=display,
    )  # fmt: skip
    return summary


def _stream_display(header: StreamHeader, src: str, carry: dict[str, Any] | None) -> Any:
    """The stream's ``DisplayInfo`` (:func:`pipeline.media.display.stream_display`).

    Raises:
        BitstreamError: the header's ``display`` holds a value ``DisplayInfo`` refuses.
    """
    from pipeline.media.display import stream_display

    try:
        return stream_display(header.display, carry)
    except ConfigError as exc:
        raise BitstreamError(
            f"{src}: header field 'display' is invalid ({exc})",
            hint="the file is corrupt or from an incompatible writer",
        ) from exc


def _stream_color(header: StreamHeader, src: str, color_info: Any) -> Any:
    """The header's colour description as a ``ColorInfo`` (``color_info``: the class), or
    None when it has none; a value ``ColorInfo`` refuses is the stream's fault.

    Raises:
        BitstreamError: the header's ``color`` names an unknown matrix or range, or lacks one.
    """
    if not header.color:
        return None
    try:
        return color_info.from_dict(header.color)
    except ConfigError as exc:
        raise BitstreamError(
            f"{src}: header field 'color' is invalid ({exc})",
            hint="the file is corrupt or from an incompatible writer",
        ) from exc


def _check_pts(pts: list[int], start: int, src: str) -> None:
    """Refuse packet timestamps that do not increase (a container output needs them to).

    Raises:
        BitstreamError: frame ``start + n`` has a pts not above the previous frame's.
    """
    for n in range(1, len(pts)):
        if pts[n] <= pts[n - 1]:
            raise BitstreamError(
                f"{src}: frame {start + n} has pts {pts[n]} after {pts[n - 1]} (timestamps must increase)",
                hint="the file is corrupt or from an incompatible writer; decode to .y4m to ignore the timestamps",
            )


def _leave_out(
    streams: list[Any],
    dst: str,
    reason: str,
    keep_hint: str,
    strict: bool,
    warn: Callable[[str], None] | None,
) -> None:
    """Carried ``streams`` that will not be written: an error with ``strict``, else a warning."""
    if streams and strict:
        raise UnsupportedStreamError(
            f"{dst}: {reason} and cannot hold the {len(streams)} carried stream(s) "
            f"({', '.join(c.describe() for c in streams)})",
            hint=f"{keep_hint} to keep them, or pass --video-only",
        )
    if streams:
        (warn or _log_warning)(
            f"{dst}: {reason}; the {len(streams)} carried stream(s) are not written "
            f"({keep_hint} to keep them)"
        )


def _log_warning(msg: str) -> None:
    import logging

    logging.getLogger(__name__).warning(msg)
