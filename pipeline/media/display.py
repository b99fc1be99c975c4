"""How frames are displayed: rotation (the display matrix), sample aspect ratio, field order
and the container title, read from a source and applied to every output that can hold them.

What is recorded (:class:`DisplayInfo`, the stream header's ``display`` object):

* **Rotation.** The display matrix (FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX``: MP4/MOV ``tkhd``
  matrix, Matroska projection, H.264/HEVC display-orientation SEI) read from the first
  decoded frame. A matrix that is a rotation by a multiple of 90 degrees, mirrored or not,
  is recorded as ``rotation`` (degrees counter-clockwise, as PyAV's ``VideoFrame.rotation``
  reads it) and ``hflip`` (mirrored left-right after the rotation); translation terms are
  ignored, as FFmpeg does. Any other matrix (a free angle, a scale, a shear) is recorded as
  is (``matrix``, nine int32 in FFmpeg's 16.16/2.30 layout) with a warning.
* **Sample aspect ratio** (``sar``): FFmpeg's guess from the container and the codec
  (``av_guess_sample_aspect_ratio``); square and unknown are the default.
* **Field order** (``field_order``): ``progressive`` (also: unknown), ``tt``/``bb`` (top or
  bottom field first), ``tb``/``bt`` (FFmpeg's ``AV_FIELD_TB``/``AV_FIELD_BT``: coded in one
  order, shown in the other). Interlaced frames are coded as woven pictures.
* **Title**: the container's ``title`` tag, for streams that do not carry the container's tags
  (``--no-carry``; with carry, the carry section holds every tag).

Colour primaries, transfer, matrix, range and the source bit depth are the header's ``color``
(:class:`pipeline.media.colour.ColorInfo`).

Applied on decode (:func:`pipeline.media.write.write_frames`): ``.mp4``/``.mkv`` get the display
matrix, the SAR, the field order (coded interlaced by libx264, ``tt``/``tb`` top field first,
``bb``/``bt`` bottom field first, as FFmpeg's Y4M muxer maps them) and the title. ``.y4m`` and
PNG outputs cannot hold a display matrix, so the pixels are rotated and mirrored as ffmpeg
does by default (its ``autorotate``: :func:`orient`), the SAR inverted by a quarter turn;
Y4M writes the SAR (``A``) and the field order (``I``), PNG the SAR (``pHYs``).
:func:`output_notes` lists, for the warnings, what an output cannot hold.

Never imports ray or torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import av
import av.filter
import numpy as np

from pipeline.errors import ConfigError

__all__ = [
    "FIELD_ORDERS",
    "NEUTRAL_PRIMARIES",
    "NEUTRAL_TRANSFERS",
    "DisplayInfo",
    "FieldTagger",
    "display_of",
    "field_order_code",
    "orient",
    "orientation_of",
    "oriented_sar",
    "output_notes",
    "stream_display",
]

#: The field orders (FFmpeg's ``AVFieldOrder`` names, ``progressive`` also for unknown).
FIELD_ORDERS = ("progressive", "tt", "bb", "tb", "bt")
_FIELD_FROM_CODE = {1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
_FIELD_TO_CODE = {v: k for k, v in _FIELD_FROM_CODE.items()}
#: The field order shown first, as FFmpeg's Y4M muxer maps ``AVFieldOrder`` (``t``/``b``).
_TOP_FIRST = {"tt": True, "tb": True, "bb": False, "bt": False}

#: Primaries and transfers that an untagged output is taken to have anyway (SD/HD video):
#: losing them changes nothing, so :func:`output_notes` does not warn about them.
NEUTRAL_PRIMARIES = frozenset({"unknown", "bt709", "smpte170m", "bt470bg", "bt470m"})
NEUTRAL_TRANSFERS = frozenset({"unknown", "bt709", "smpte170m", "gamma22", "gamma28"})

_ONE = 1 << 16  # 1.0 in the matrix's 16.16 fixed point
_W_ONE = 1 << 30  # 1.0 in its 2.30 fixed point (the last column)
_INT32 = 2**31
_MAX_TEXT = 4096


def _unit(v: int) -> int | None:
    """-1, 0 or 1 for a 16.16 value within 16 units of one of them, else None."""
    for u in (-1, 0, 1):
        if abs(v - u * _ONE) <= 16:
            return u
    return None


def orientation_of(matrix: Sequence[int]) -> tuple[int, bool] | None:
    """``(rotation, hflip)`` of a display matrix that is a rotation by a multiple of 90
    degrees, mirrored or not: ``rotation`` in degrees counter-clockwise (0, 90, 180 or
    270, what PyAV's ``VideoFrame.rotation`` reads, modulo 360) and ``hflip`` whether the
    picture is mirrored left-right after the rotation (the matrix
    ``av_display_rotation_set(-rotation)`` then ``av_display_matrix_flip(hflip)`` makes, which
    is what ``VideoStream.set_display_rotation(rotation, hflip)`` writes). None for any other
    matrix. The translation terms (6 and 7) are ignored, as FFmpeg ignores them.

    Source: libavutil/display.c (``av_display_rotation_get/set``, ``av_display_matrix_flip``).
    """
    if len(matrix) != 9 or matrix[2] or matrix[5] or matrix[8] != _W_ONE:
        return None
    a, b, c, d = (_unit(int(matrix[i])) for i in (0, 1, 3, 4))
    if a is None or b is None or c is None or d is None:
        return None
    det = a * d - b * c
    if det not in (1, -1) or (a * b + c * d) != 0:
        return None
    hflip = det < 0
    if hflip:  # the flip negates column 0 (a, c): undo it to read the rotation
        a, c = -a, -c
    # rotation(theta): a = cos, c = sin (theta counter-clockwise)
    return round(math.degrees(math.atan2(c, a))) % 360, hflip


@dataclass(frozen=True)
class DisplayInfo:
    """How the coded frames are displayed (see the module docstring).

    ``rotation``: degrees counter-clockwise, one of 0/90/180/270; ``hflip``: mirrored
    left-right after the rotation; ``matrix``: a display matrix that is neither (nine int32,
    then ``rotation`` is 0 and ``hflip`` False); ``sar``: sample (pixel) aspect ratio, None
    for square or unknown; ``field_order``: one of :data:`FIELD_ORDERS`; ``title``: the
    container title when the stream does not carry the container's tags.

    Raises:
        ConfigError: a value outside those sets (from the constructor).
    """

    rotation: int = 0
    hflip: bool = False
    matrix: tuple[int, ...] | None = None
    sar: Fraction | None = None
    field_order: str = "progressive"
    title: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.rotation not in (0, 90, 180, 270) or isinstance(self.rotation, bool):
            problems.append(f"rotation {self.rotation!r} is not 0, 90, 180 or 270")
        if self.matrix is not None and (
            len(self.matrix) != 9 or any(not -_INT32 <= int(v) < _INT32 for v in self.matrix)
        ):
            problems.append("matrix is not nine 32-bit integers")
        if self.sar is not None and self.sar <= 0:
            problems.append(f"sample aspect ratio {self.sar} is not positive")
        if self.field_order not in FIELD_ORDERS:
            problems.append(f"field order {self.field_order!r} is not one of {FIELD_ORDERS}")
        if self.title is not None and len(self.title) > _MAX_TEXT:
            problems.append(f"title is longer than {_MAX_TEXT} characters")
        if problems:
            raise ConfigError(
                f"display info is invalid ({'; '.join(problems)})",
                hint="pass values as DisplayInfo.from_dict reads them",
            )

    @property
    def interlaced(self) -> bool:
        """Whether the frames are interlaced (woven fields)."""
        return self.field_order != "progressive"

    @property
    def top_first(self) -> bool:
        """Whether the top field is shown first (``tt``/``tb``; False when progressive)."""
        return _TOP_FIRST.get(self.field_order, False)

    @property
    def quarter_turn(self) -> bool:
        """Whether the rotation swaps width and height (90 or 270 degrees)."""
        return self.rotation in (90, 270)

    def display_aspect(self, width: int, height: int) -> Fraction:
        """The display aspect ratio of ``width`` x ``height`` coded frames (before rotation)."""
        return Fraction(width, height) * (self.sar or 1)

    def to_dict(self) -> dict[str, Any]:
        """The header's ``display`` object: only the keys that differ from the default
        (``{}`` for square, progressive, unrotated frames without a title)."""
        d: dict[str, Any] = {}
        if self.rotation:
            d["rotation"] = self.rotation
        if self.hflip:
            d["hflip"] = True
        if self.matrix is not None:
            d["matrix"] = [int(v) for v in self.matrix]
        if self.sar is not None and self.sar != 1:
            d["sar"] = [self.sar.numerator, self.sar.denominator]
        if self.field_order != "progressive":
            d["field_order"] = self.field_order
        if self.title:
            d["title"] = self.title
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DisplayInfo:
        """Inverse of :meth:`to_dict` (None or ``{}``: the default).

        Raises:
            ConfigError: a value is malformed or out of its set.
        """
        d = d or {}
        try:
            sar = d.get("sar")
            matrix = d.get("matrix")
            return cls(
                rotation=int(d.get("rotation", 0)),
                hflip=bool(d.get("hflip", False)),
                matrix=None if matrix is None else tuple(int(v) for v in matrix),
                sar=None if sar is None else Fraction(int(sar[0]), int(sar[1])),
                field_order=str(d.get("field_order", "progressive")),
                title=None if d.get("title") is None else str(d["title"]),
            )
        except (TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
            raise ConfigError(
                f"display info {d!r:.200} is malformed ({exc})",
                hint="pass a dict written by DisplayInfo.to_dict",
            ) from exc

    def without_title(self) -> DisplayInfo:
        """This display info with no title (the carry section holds the tags)."""
        return replace(self, title=None)

    def describe(self, width: int, height: int) -> str:
        """One line for ``relatent info``: rotation, SAR and DAR, field order, title."""
        if self.matrix is not None:
            turn = f"display matrix {list(self.matrix)} (not a quarter turn)"
        elif self.rotation or self.hflip:
            turn = f"rotated {self.rotation}° counter-clockwise" + (
                ", mirrored" if self.hflip else ""
            )
        else:
            turn = "not rotated"
        if self.quarter_turn and self.matrix is None:
            turn += f" (shown {height}x{width})"
        sar = self.sar or Fraction(1)
        dar = self.display_aspect(width, height)
        parts = [
            turn,
            f"SAR {sar.numerator}:{sar.denominator} (DAR {dar.numerator}:{dar.denominator})",
            "progressive"
            if not self.interlaced
            else f"interlaced, field order {self.field_order} "
            f"({'top' if self.top_first else 'bottom'} field first)",
        ]
        if self.title:
            parts.append(f"title {self.title!r}")
        return ", ".join(parts)


def stream_display(display: dict[str, Any] | None, carry: dict[str, Any] | None) -> DisplayInfo:
    """The :class:`DisplayInfo` of a stream from its header's ``display`` object and its
    carry info (``CarryInfo.to_dict``, or None): a stream written before the header had a
    ``display`` takes the rotation its carry section recorded (``video.rotation``).

    Raises:
        ConfigError: ``display`` holds a value :class:`DisplayInfo` refuses.
    """
    info = DisplayInfo.from_dict(display)
    rotation = ((carry or {}).get("video") or {}).get("rotation")
    if not display and isinstance(rotation, (int, float)) and float(rotation) % 90 == 0:
        info = DisplayInfo(rotation=int(float(rotation)) % 360)
    return info


def field_order_code(field_order: str) -> int:
    """FFmpeg's ``AVFieldOrder`` value of one of :data:`FIELD_ORDERS` (progressive: 1)."""
    return _FIELD_TO_CODE[field_order]


def _matrix(frame: av.VideoFrame | None) -> list[int] | None:
    """The display matrix of a decoded frame (nine int32), or None."""
    if frame is None:
        return None
    try:
        data = bytes(frame.side_data["DISPLAYMATRIX"])
    except (KeyError, ValueError):
        return None
    if len(data) != 36:
        return None
    return [int(v) for v in np.frombuffer(data, dtype=np.int32)]


def display_of(
    container: Any, stream: Any, first: av.VideoFrame | None, name: str
) -> tuple[DisplayInfo, list[str]]:
    """The :class:`DisplayInfo` of ``stream`` (a PyAV video stream of the open
    ``container``; ``first``: its first decoded frame, for the display matrix and the
    interlacing flag, or None), and the warnings to give about it (``name``: the source).
    """
    notes: list[str] = []
    rotation, hflip, kept = 0, False, None
    matrix = _matrix(first)
    if matrix is not None:
        found = orientation_of(matrix)
        if found is None:
            kept = tuple(matrix)
            notes.append(
                f"{name}: its display matrix {matrix} is not a rotation by a multiple of 90 "
                "degrees: it is recorded and written to .mp4/.mkv outputs, but .y4m and PNG "
                "outputs are not transformed"
            )
        else:
            rotation, hflip = found
    sar = stream.sample_aspect_ratio
    sar = Fraction(sar) if sar and sar > 0 and sar != 1 else None
    field = _FIELD_FROM_CODE.get(int(stream.codec_context.field_order or 0), "progressive")
    if field == "progressive" and first is not None and first.interlaced_frame:
        field = "tt"
        notes.append(
            f"{name}: its frames are interlaced but no field order is declared: recorded "
            "as top field first"
        )
    title = next(
        (str(v) for k, v in container.metadata.items() if k.lower() == "title" and v), None
    )
    info = DisplayInfo(rotation, hflip, kept, sar, field, title[:_MAX_TEXT] if title else None)
    return info, notes


def orient(rgb: np.ndarray, display: DisplayInfo | None) -> np.ndarray:
    """``rgb`` (H x W x C) as it is displayed: rotated ``display.rotation`` degrees
    counter-clockwise, then mirrored left-right with ``hflip``; what ffmpeg's default
    ``autorotate`` does for the same matrix (its ``transpose``/``hflip``/``vflip`` choice in
    fftools/ffmpeg_filter.c gives the same pixels for all eight orientations)."""
    if display is None or display.matrix is not None:
        return rgb
    out = np.rot90(rgb, display.rotation // 90) if display.rotation else rgb
    if display.hflip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out) if out is not rgb else rgb


def oriented_sar(display: DisplayInfo | None) -> Fraction | None:
    """The SAR of :func:`orient`-ed frames (inverted by a quarter turn), or None."""
    if display is None or display.sar is None:
        return None
    return 1 / display.sar if display.quarter_turn and display.matrix is None else display.sar


def output_notes(
    display: DisplayInfo | None, color: Any, kind: str, dst: str, *, high_depth: bool = True
) -> list[str]:
    """What an output of ``kind`` (``"video"``: .mp4/.mkv, ``"y4m"``, ``"png"``) cannot hold
    of ``display`` and ``color`` (a ``ColorInfo`` or None), as warnings naming ``dst``.
    ``high_depth``: whether the video encoder can write 10 bits."""
    notes: list[str] = []
    d = display or DisplayInfo()
    depth = int(getattr(color, "bit_depth", 8) or 8)
    tagged = color is not None and (
        color.primaries not in NEUTRAL_PRIMARIES or color.transfer not in NEUTRAL_TRANSFERS
    )
    if kind == "video":
        if depth > 8 and not high_depth:
            notes.append(
                f"{dst}: the source has {depth}-bit samples but this FFmpeg's libx264 writes "
                "8 bits only: the output is 8-bit yuv420p"
            )
        return notes
    if d.matrix is not None:
        notes.append(
            f"{dst}: the source's display matrix (not a quarter turn) is not applied: "
            f"{kind} outputs cannot hold it (decode to .mkv or .mp4 to keep it)"
        )
    if d.interlaced and (kind == "png" or d.quarter_turn):
        why = (
            "PNG frames cannot be flagged" if kind == "png" else "the rotated frames hold no fields"
        )
        notes.append(
            f"{dst}: the source is interlaced ({d.field_order}) but {why}: written as woven "
            "progressive frames (decode to .mkv or .mp4 to keep the field order)"
        )
    if kind == "y4m" and tagged:
        notes.append(
            f"{dst}: Y4M cannot hold the colour tags (primaries {color.primaries}, transfer "
            f"{color.transfer}): players will assume BT.709 (decode to .mkv or .mp4 to keep them)"
        )
    if kind == "png" and depth > 8:
        notes.append(f"{dst}: PNG frames are 8-bit RGB (the source has {depth}-bit samples)")
    return notes


class FieldTagger:
    """Marks frames as interlaced, top or bottom field first (FFmpeg's ``setfield`` filter),
    so an encoder codes them as fields in that order. Call it on each frame, in order."""

    def __init__(self, width: int, height: int, pix_fmt: str, time_base: Fraction, top_first: bool):
        self._graph = av.filter.Graph()
        src = self._graph.add_buffer(
            width=width, height=height, format=pix_fmt, time_base=time_base
        )
        setfield = self._graph.add("setfield", "tff" if top_first else "bff")
        sink = self._graph.add("buffersink")
        src.link_to(setfield)
        setfield.link_to(sink)
        self._graph.configure()

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        """``frame`` flagged (the same pixels, pts and colour tags)."""
        self._graph.push(frame)
        return self._graph.pull()
