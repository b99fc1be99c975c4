"""What a reader accepts: the bounds of every header, footer and carry-section field of an
.rlv stream (docs/bitstream.md, "Field bounds").

A stream is input like any other: a buggy or hostile writer can recompute every CRC, so a
CRC proves only that the bytes arrived as written, not that they make sense. Every value
read from a stream goes through one of the checks below before it is used, and every
length is bounded before anything is allocated for it. Every failure is a
:class:`~pipeline.errors.BitstreamError` (exit 4) naming the stream, the field and the bound.

JSON documents (the header, the footer's stats, the carry info) are parsed by
:func:`loads_bounded`: strict UTF-8, nesting depth at most :data:`MAX_JSON_DEPTH` (checked
before :func:`json.loads`, whose recursion a deep document would exhaust), no NaN or
infinities. Torch-free and av-free (``relatent info`` uses it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from pipeline.errors import BitstreamError

__all__ = [
    "ARCH_KINDS",
    "DISPLAY_FIELD_ORDERS",
    "HEADER_RULES",
    "HINT_FOREIGN",
    "KIND_PAD_MULTIPLE",
    "MAX_DIMENSION",
    "MAX_FRAMES",
    "MAX_GOP",
    "MAX_HEADER_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_PIXELS",
    "MAX_RATE_POINTS",
    "MAX_RATIONAL",
    "MIN_PACKET_BYTES",
    "check_carry_info",
    "check_header",
    "check_stats_record",
    "loads_bounded",
    "padded_sizes",
]

HINT_FOREIGN = "the file is corrupt or from an incompatible writer"

#: Largest header JSON accepted (bytes; written headers are under 2 KiB).
MAX_HEADER_BYTES = 1 << 20
#: Deepest nesting of arrays and objects accepted in any JSON document of a stream.
MAX_JSON_DEPTH = 16
#: Largest ``width``/``height`` (and padded size minus the padding) accepted.
MAX_DIMENSION = 65536
#: Largest ``width * height`` accepted (2**28: 16384 x 16384, 8 times 8K UHD).
MAX_PIXELS = 1 << 28
#: Largest numerator or denominator of ``frame_rate``/``time_base`` (FFmpeg's AVRational
#: holds C ints).
MAX_RATIONAL = 2**31 - 1
#: Largest ``frame_count`` accepted (a stream must also be large enough to hold them).
MAX_FRAMES = 2**31 - 1
#: Largest ``gop`` (as ``--gop`` accepts).
MAX_GOP = 100_000
#: Most rate points (models) one stream may use: packet flags have 3 bits for the slot.
MAX_RATE_POINTS = 8
#: The first format version with rate points (``pipeline.bitstream.RATE_VERSION``).
_RATE_VERSION = 4
#: The first format version whose rate points may be midpoints (half-step qualities,
#: ``pipeline.bitstream.MIDPOINT_VERSION``).
_MIDPOINT_VERSION = 5
#: The smallest packet: sync, body length, the body's fixed fields, CRC (bytes).
MIN_PACKET_BYTES = 2 + 4 + 22 + 4
#: The architectures a stream may name, and their latent kind.
ARCH_KINDS = {
    "bmshj2018-factorized": "factorized",
    "bmshj2018-hyperprior": "scale-hyperprior",
    "mbt2018-mean": "mean-scale-hyperprior",
}
#: What each latent kind pads frames to; padded sizes are multiples of it (64 is also
#: accepted for ``factorized``: streams written before took 64 for all kinds).
KIND_PAD_MULTIPLE = {"factorized": 16, "scale-hyperprior": 64, "mean-scale-hyperprior": 64}
_PAD_MAX = 64  # padded - size < this, for every kind
_MAX_QUALITY = 64
_MAX_TEXT = 4096  # the longest string a typed text field may hold (characters)
_INT64 = 2**63
_MAX_TIME = 2**62  # chapter times, in their time base (FFmpeg muxers refuse negative ones)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_RATIO = re.compile(r"-?[0-9]{1,19}/[0-9]{1,19}")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class _Invalid(ValueError):
    """A value outside its bound (the message says which)."""


# --------------------------------------------------------------------------- JSON


def _reject_constant(token: str) -> Any:
    raise _Invalid(f"{token} is not a JSON number")


def _depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON ``text`` (strings skipped)."""
    depth = deepest = 0
    for ch in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    break
        else:
            depth -= 1
    return deepest


def loads_bounded(raw: bytes, what: str, name: str) -> Any:
    """``raw`` (strict UTF-8 JSON) parsed, with its nesting depth checked first.

    Args:
        raw: the document's bytes.
        what: the document and its verb, for messages (``"header is"``, ``"footer stats are"``).
        name: the stream, for messages.

    Raises:
        BitstreamError: not UTF-8, nested deeper than :data:`MAX_JSON_DEPTH`, not JSON,
            or holding NaN/Infinity.
    """
    try:
        text = raw.decode("utf-8")
        if _depth(text) > MAX_JSON_DEPTH:
            raise _Invalid(f"nested deeper than {MAX_JSON_DEPTH} levels")
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError too
        raise BitstreamError(f"{name}: {what} malformed ({exc})", hint=HINT_FOREIGN) from exc


# --------------------------------------------------------------------------- value checks


def _int(v: Any, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise _Invalid(f"{v!r:.40} is not an integer")
    if not lo <= v <= hi:
        raise _Invalid(f"{v} is not in {lo}..{hi}")
    return v


def _half_step(v: Any, lo: int, hi: int) -> int | float:
    """A quality: an integer, or a half step (``q + 0.5``, a midpoint rate point)."""
    if isinstance(v, float) and math.isfinite(v) and (v - 0.5).is_integer():
        if not lo <= v <= hi:
            raise _Invalid(f"{v} is not in {lo}..{hi}")
        return v
    if isinstance(v, float):
        raise _Invalid(f"{v!r:.40} is not an integer or a half step")
    return _int(v, lo, hi)


def _number(v: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise _Invalid(f"{v!r:.40} is not a number")
    f = float(v)
    if not math.isfinite(f) or not lo <= f <= hi:
        raise _Invalid(f"{v!r:.40} is not a finite number in [{lo}, {hi}]")
    return v


def _text(v: Any, optional: bool = False) -> Any:
    if v is None and optional:
        return v
    if not isinstance(v, str) or len(v) > _MAX_TEXT:
        raise _Invalid(f"{v!r:.40} is not a string (of at most {_MAX_TEXT} characters)")
    return v


def _match(v: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(v, str) or not pattern.fullmatch(v):
        raise _Invalid(f"{v!r:.80} is not {what}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(f"{v!r:.40} is not true or false")
    return v


def _one_of(v: Any, choices: tuple[Any, ...]) -> Any:
    if not any(v == c and type(v) is type(c) for c in choices):
        raise _Invalid(f"{v!r:.40} is not one of {', '.join(map(repr, choices))}")
    return v


def _dict(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Invalid(f"a {type(v).__name__}, not an object")
    return v


def _str_map(v: Any) -> dict[str, str]:
    for x in _dict(v).values():
        _text(x)
    return v


def _str_list(v: Any) -> list[str]:
    if not isinstance(v, list):
        raise _Invalid(f"a {type(v).__name__}, not a list")
    for x in v:
        _text(x)
    return v


def _rational(v: Any) -> list[int]:
    if not isinstance(v, list) or len(v) != 2:
        raise _Invalid(f"{v!r:.40} is not [numerator, denominator]")
    for x in v:
        _int(x, 1, MAX_RATIONAL)
    return v


def _ratio_text(v: Any, optional: bool = False) -> Any:
    if v is None and optional:
        return v
    _match(v, _RATIO, 'a "num/den" string')
    if int(v.split("/")[1]) <= 0:
        raise _Invalid(f"{v!r} has a denominator below 1")
    return v


def _color(v: Any) -> dict[str, Any]:
    d = _dict(v)
    for key in ("matrix", "range", "primaries", "transfer"):
        if key in d:
            _text(d[key])
    if "bit_depth" in d:
        _int(d["bit_depth"], 1, 32)
    return d


#: The header ``display`` object's field orders (``pipeline.media.display.FIELD_ORDERS``).
DISPLAY_FIELD_ORDERS = ("progressive", "tt", "bb", "tb", "bt")
_INT32 = 2**31


def _matrix9(v: Any) -> list[int]:
    if not isinstance(v, list) or len(v) != 9:
        raise _Invalid(f"{v!r:.60} is not a list of 9 integers")
    for x in v:
        _int(x, -_INT32, _INT32 - 1)
    return v


_DISPLAY_RULES: dict[str, Callable[[Any], Any]] = {
    "rotation": lambda v: _one_of(v, (0, 90, 180, 270)),
    "hflip": _bool,
    "matrix": _matrix9,
    "sar": _rational,
    "field_order": lambda v: _one_of(v, DISPLAY_FIELD_ORDERS),
    "title": _text,
}


def _display(v: Any) -> dict[str, Any]:
    """The header's ``display`` object (``DisplayInfo.to_dict``): known keys only, each in
    its set; a free ``matrix`` excludes ``rotation`` and ``hflip``."""
    d = _dict(v)
    for key, x in d.items():
        rule = _DISPLAY_RULES.get(key)
        if rule is None:
            raise _Invalid(f"unknown key {key!r:.40}")
        try:
            rule(x)
        except _Invalid as exc:
            raise _Invalid(f"{key!r}: {exc}") from exc
    if "matrix" in d and (d.get("rotation") or d.get("hflip")):
        raise _Invalid("'matrix' comes without 'rotation' and 'hflip'")
    return d


def _positive(v: Any) -> float:
    _number(v, 0.0)
    if not v > 0:
        raise _Invalid(f"{v!r:.40} is not above 0")
    return v


#: The keys of one ``rate_points`` entry (exactly these) and their rules.
_RATE_POINT_RULES: dict[str, Callable[[Any], Any]] = {
    "quality": lambda v: _half_step(v, 0, _MAX_QUALITY),
    "lmbda": _positive,
    "weights_sha256": lambda v: _match(v, _HEX64, "64 lowercase hex digits"),
    "tables_sha256": lambda v: _match(v, _HEX64, "64 lowercase hex digits"),
}


def _rate_points(v: Any) -> list[dict[str, Any]]:
    """The header's ``rate_points``: 1..:data:`MAX_RATE_POINTS` objects with exactly the
    keys of :data:`_RATE_POINT_RULES`, each in its bounds, qualities distinct."""
    if not isinstance(v, list):
        raise _Invalid(f"a {type(v).__name__}, not a list")
    if not 1 <= len(v) <= MAX_RATE_POINTS:
        raise _Invalid(f"{len(v)} entries, not 1..{MAX_RATE_POINTS}")
    for i, e in enumerate(v):
        try:
            d = _dict(e)
            extra = sorted(set(d) - set(_RATE_POINT_RULES))
            if extra:
                raise _Invalid(f"unknown key {extra[0]!r:.40}")
            _check_fields(d, _RATE_POINT_RULES, required=True)
        except _Invalid as exc:
            raise _Invalid(f"entry {i}: {exc}") from exc
    qualities = [e["quality"] for e in v]
    if len(set(qualities)) != len(qualities):
        raise _Invalid(f"qualities {qualities} are not distinct")
    return v


def _fail(name: str, what: str, key: str, exc: Exception) -> BitstreamError:
    return BitstreamError(f"{name}: {what} {key!r} is invalid ({exc})", hint=HINT_FOREIGN)


# --------------------------------------------------------------------------- header

#: The rule of each header field: raises on a value outside its bounds (the bounds that tie
#: fields together are checked after: :func:`check_header`).
HEADER_RULES: dict[str, Callable[[Any], Any]] = {
    "arch": lambda v: _one_of(v, tuple(ARCH_KINDS)),
    "quality": lambda v: _half_step(v, 0, _MAX_QUALITY),  # a midpoint: rate points (below)
    "lmbda": lambda v: _number(v, 0.0),
    "weights_sha256": lambda v: _match(v, _HEX64, "64 lowercase hex digits"),
    "tables_sha256": lambda v: _match(v, _HEX64, "64 lowercase hex digits"),
    "width": lambda v: _int(v, 1, MAX_DIMENSION),
    "height": lambda v: _int(v, 1, MAX_DIMENSION),
    "padded_width": lambda v: _int(v, 1, MAX_DIMENSION + _PAD_MAX),
    "padded_height": lambda v: _int(v, 1, MAX_DIMENSION + _PAD_MAX),
    "frame_rate": _rational,
    "time_base": _rational,
    "frame_count": lambda v: _int(v, 1, MAX_FRAMES),
    "color": _color,
    "refine": _dict,
    "refine_hash": lambda v: _match(v, _HEX16, "16 lowercase hex digits"),
    "latent_kind": lambda v: _one_of(v, tuple(KIND_PAD_MULTIPLE)),
    "source": _dict,
    "gop": lambda v: _int(v, 1, MAX_GOP),
    "display": _display,
    "rate_points": _rate_points,
}
_HEADER_OPTIONAL = {"source", "gop", "display", "rate_points"}


def check_header(d: Any, fields: tuple[str, ...], version: int, name: str) -> dict[str, Any]:
    """The header JSON ``d`` checked against its schema (bounds: docs/bitstream.md).

    Args:
        d: the parsed header JSON.
        fields: the names :class:`~pipeline.bitstream.StreamHeader` takes; a key outside
            them is refused. A field without a rule here is accepted as parsed.
        version: the stream's format version (``gop`` > 1 needs version 3; version 4,
            and only it, has ``rate_points``, whose entry 0 is the header's own model).
        name: the stream, for messages.

    Returns:
        ``d`` itself (its values are the ones checked).

    Raises:
        BitstreamError: "header field X is invalid (why)", a missing or unknown field.
    """
    if not isinstance(d, dict):
        raise BitstreamError(
            f"{name}: header is a JSON {type(d).__name__}, not an object", hint=HINT_FOREIGN
        )
    for key in d:
        if key not in fields:
            raise BitstreamError(
                f"{name}: header has an unknown field {key!r:.60}", hint=HINT_FOREIGN
            )
    for key in fields:
        if key not in d:
            if key in _HEADER_OPTIONAL or key not in HEADER_RULES:
                continue
            raise BitstreamError(f"{name}: header field {key!r} is missing", hint=HINT_FOREIGN)
        rule = HEADER_RULES.get(key)
        try:
            if rule is not None:
                rule(d[key])
        except _Invalid as exc:
            raise _fail(name, "header field", key, exc) from exc
    _check_header_relations(d, version, name)
    return d


def padded_sizes(size: int, kind: str) -> tuple[int, ...]:
    """The coded sizes a writer may have padded ``size`` pixels to for ``kind``: up to its
    :data:`KIND_PAD_MULTIPLE`, or (``factorized`` streams written before) up to 64."""
    mults = {KIND_PAD_MULTIPLE[kind], _PAD_MAX}
    return tuple(sorted({-(-size // m) * m for m in mults}))


def _check_header_relations(d: dict[str, Any], version: int, name: str) -> None:
    """The bounds that tie header fields together."""
    kind = ARCH_KINDS[d["arch"]]
    if d["latent_kind"] != kind:
        raise _fail(name, "header field", "latent_kind", _Invalid(f"{d['arch']} is {kind}"))
    if d["width"] * d["height"] > MAX_PIXELS:
        raise _fail(
            name, "header field", "width", _Invalid(f"width * height is above {MAX_PIXELS}")
        )
    for size, padded in (("width", "padded_width"), ("height", "padded_height")):
        s, p = d[size], d[padded]
        allowed = padded_sizes(s, kind)
        if p not in allowed:
            raise _fail(
                name, "header field", padded,
                _Invalid(f"{p} is not {' or '.join(map(str, allowed))} ({size} {s}, {kind})"),
            )  # fmt: skip
    if d.get("gop", 1) > 1 and version < 3:
        raise _fail(
            name, "header field", "gop", _Invalid(f"gop > 1 needs format version 3, not {version}")
        )
    points = d.get("rate_points")
    if points is None and isinstance(d["quality"], float):
        raise _fail(
            name, "header field", "quality",
            _Invalid(f"a midpoint model (q{d['quality']}) is recorded in rate_points, which are missing"),
        )  # fmt: skip
    if points is None:
        if version >= _RATE_VERSION:
            raise BitstreamError(
                f"{name}: header field 'rate_points' is missing (format version {version} "
                "needs rate points)",
                hint=HINT_FOREIGN,
            )
        return
    if version < _RATE_VERSION:
        raise _fail(
            name, "header field", "rate_points",
            _Invalid(f"rate points need format version {_RATE_VERSION}, not {version}"),
        )  # fmt: skip
    half = [p["quality"] for p in points if isinstance(p["quality"], float)]
    if half and version < _MIDPOINT_VERSION:
        raise _fail(
            name, "header field", "rate_points",
            _Invalid(f"midpoint rate points (q{half[0]}) need format version {_MIDPOINT_VERSION}, not {version}"),
        )  # fmt: skip
    for key in _RATE_POINT_RULES:
        if points[0][key] != d[key]:
            raise _fail(
                name, "header field", "rate_points",
                _Invalid(f"entry 0 has {key} {points[0][key]!r:.20}, the header {d[key]!r:.20} (slot 0 is the header's model)"),
            )  # fmt: skip


# --------------------------------------------------------------------------- footer stats

_STATS_FIELDS: dict[str, Callable[[Any], Any]] = {
    "index": lambda v: _int(v, 0, _INT64 - 1),
    "pts": lambda v: _int(v, -_INT64, _INT64 - 1),
    "bytes": lambda v: _int(v, 0, _INT64 - 1),
    "bpp": lambda v: _number(v, 0.0),
    "psnr": _number,
    "psnr_y": _number,
    "ms_ssim": _number,
    "rd_before": _number,
    "rd_after": _number,
    "iters": lambda v: _int(v, 0, _INT64 - 1),
    "refined": _bool,
}
#: Footer fields a frame has only when rate control chose them.
_STATS_OPTIONAL: dict[str, Callable[[Any], Any]] = {
    "lambda": lambda v: _number(v, 1e-12, 1e6),
    "rate_point": lambda v: _half_step(v, 0, _MAX_QUALITY),
}


def _check_fields(
    d: dict[str, Any], rules: dict[str, Callable[[Any], Any]], required: bool, label: str = ""
) -> None:
    """Apply each key's rule to ``d[key]``; a missing key fails when ``required`` (else it
    is skipped). Failures name the key: ``<label>'key' is missing`` / ``<label>'key': why``."""
    for key, rule in rules.items():
        if key not in d:
            if required:
                raise _Invalid(f"{label}{key!r} is missing")
            continue
        try:
            rule(d[key])
        except _Invalid as exc:
            raise _Invalid(f"{label}{key!r}: {exc}") from exc


def check_stats_record(record: Any, n: int, name: str) -> dict[str, Any]:
    """Frame ``n``'s footer stats record checked (every stored field present and typed,
    ``type`` absent, ``"I"`` or ``"P"``; ``lambda`` and ``rate_point`` absent or in
    bounds; other keys are ignored).

    Raises:
        BitstreamError: "footer stats of frame N are malformed (why)".
    """
    try:
        d = _dict(record)
        _check_fields(d, _STATS_FIELDS, required=True, label="field ")
        if d.get("type", "I") not in ("I", "P"):
            raise _Invalid(f"field 'type': {d['type']!r:.40} is neither 'I' nor 'P'")
        _check_fields(d, _STATS_OPTIONAL, required=False, label="field ")
    except _Invalid as exc:
        raise BitstreamError(
            f"{name}: footer stats of frame {n} are malformed ({exc})", hint=HINT_FOREIGN
        ) from exc
    return d


# --------------------------------------------------------------------------- carry info


def _entries(v: Any, rules: dict[str, Callable[[Any], Any]], what: str) -> list[dict[str, Any]]:
    if not isinstance(v, list):
        raise _Invalid(f"{what}: a {type(v).__name__}, not a list")
    for i, e in enumerate(v):
        try:
            _check_fields(_dict(e), rules, required=True)
        except _Invalid as exc:
            raise _Invalid(f"{what} entry {i}: {exc}") from exc
    return v


_COUNT = 2**63 - 1
_STREAM_RULES: dict[str, Callable[[Any], Any]] = {
    "index": lambda v: _int(v, 0, _COUNT),
    "blob_index": lambda v: _int(v, 0, _COUNT),
    "type": _text,
    "codec": _text,
    "language": lambda v: _text(v, optional=True),
    "title": lambda v: _text(v, optional=True),
    "disposition": _str_list,
    "start": lambda v: v if v is None else _number(v),
    "duration": lambda v: v if v is None else _number(v),
    "bytes": lambda v: _int(v, 0, _COUNT),
    "packets": lambda v: _int(v, 0, _COUNT),
}
_DROPPED_RULES: dict[str, Callable[[Any], Any]] = {
    "index": lambda v: _int(v, 0, _COUNT),
    "type": _text,
    "codec": _text,
    "language": lambda v: _text(v, optional=True),
    "kind": _text,
    "reason": _text,
}
_CHAPTER_RULES: dict[str, Callable[[Any], Any]] = {
    "id": lambda v: _int(v, -_INT64, _INT64 - 1),
    "start": lambda v: _int(v, 0, _MAX_TIME),
    "end": lambda v: _int(v, 0, _MAX_TIME),
    "time_base": _ratio_text,
}


def _chapters(v: Any) -> list[dict[str, Any]]:
    for i, c in enumerate(_entries(v, _CHAPTER_RULES, "chapter")):
        _str_map(c.get("metadata", {}))
        if c["end"] < c["start"]:
            raise _Invalid(f"chapter entry {i}: end {c['end']} is before start {c['start']}")
        num, den = (int(x) for x in c["time_base"].split("/"))
        if not 1 <= num <= MAX_RATIONAL or den > MAX_RATIONAL:
            raise _Invalid(
                f"chapter entry {i}: time_base {c['time_base']} is out of 1..{MAX_RATIONAL}"
            )
    return v


def _video(v: Any) -> dict[str, Any]:
    d = _dict(v)
    rules: dict[str, Callable[[Any], Any]] = {
        "index": lambda x: _int(x, 0, _COUNT),
        "language": lambda x: _text(x, optional=True),
        "title": lambda x: _text(x, optional=True),
        "disposition": _str_list,
        "metadata": _str_map,
        "rotation": lambda x: x if x is None else _number(x, -1e6, 1e6),
    }
    _check_fields(d, rules, required=False)
    return d


def _span(v: Any) -> list[Any]:
    if not isinstance(v, list) or len(v) != 2:
        raise _Invalid(f"{v!r:.40} is not [start, end]")
    for x in v:
        _ratio_text(x, optional=True)
    return v


def check_carry_info(d: Any, name: str) -> dict[str, Any]:
    """The carry section's info JSON checked against the shape ``CarryInfo.to_dict``
    writes (:mod:`pipeline.media.carry`): ``format`` ``matroska``/``mov``/null; every
    stream, dropped stream and chapter entry complete and typed; ``blob_index`` values
    distinct and below the number of carried streams; chapter and span times ``"num/den"``
    with a positive denominator; metadata string to string. Keys the reader does not use
    are ignored.

    Raises:
        BitstreamError: "carry info field X is invalid (why)".
    """
    if not isinstance(d, dict):
        raise BitstreamError(
            f"{name}: carry info is a JSON {type(d).__name__}, not an object", hint=HINT_FOREIGN
        )
    rules: dict[str, Callable[[Any], Any]] = {
        "format": lambda v: _one_of(v, (None, "matroska", "mov")),
        "streams": lambda v: _entries(v, _STREAM_RULES, "stream"),
        "dropped": lambda v: _entries(v, _DROPPED_RULES, "dropped stream"),
        "chapters": _chapters,
        "metadata": _str_map,
        "video": _video,
        "span": _span,
    }  # fmt: skip
    for key, rule in rules.items():
        if key not in d:
            continue
        try:
            rule(d[key])
        except _Invalid as exc:
            raise _fail(name, "carry info field", key, exc) from exc
    blob_indexes = [s["blob_index"] for s in d.get("streams", [])]
    if sorted(blob_indexes) != list(range(len(blob_indexes))):
        raise _fail(
            name, "carry info field", "streams",
            _Invalid(f"blob_index values {blob_indexes[:8]} are not 0..{len(blob_indexes) - 1}"),
        )  # fmt: skip
    return d
