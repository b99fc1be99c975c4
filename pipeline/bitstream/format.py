"""The .rlv layout: constants, header, packets, footer, carry section, tail, assembly and
the writer (the package docstring of :mod:`pipeline.bitstream` draws the layout)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from typing import Any, BinaryIO

from pipeline.bitstream.schema import (
    HINT_FOREIGN,
    MAX_HEADER_BYTES,
    check_carry_info,
    check_header,
    loads_bounded,
)
from pipeline.errors import (
    BadMagicError,
    BitstreamError,
    ChecksumError,
    TruncatedStreamError,
    UnsupportedVersionError,
)
from pipeline.stats import FrameStats

__all__ = [
    "CARRY_FIXED_SIZE",
    "CARRY_MAGIC",
    "CARRY_VERSION",
    "END_MAGIC",
    "ENTRY_STRUCT",
    "FLAG_INTER",
    "FLAG_REFINED",
    "FOOTER_MAGIC",
    "HINT_CORRUPT",
    "HINT_CUT_SHORT",
    "HINT_FOREIGN",
    "HINT_REENCODE",
    "INTER_VERSION",
    "MAGIC",
    "MIDPOINT_VERSION",
    "PACKET_SYNC",
    "RATE_SLOT_MASK",
    "RATE_SLOT_SHIFT",
    "RATE_VERSION",
    "STREAM_SUFFIX",
    "SUPPORTED_VERSIONS",
    "TRAILER_SIZE",
    "U32",
    "U64",
    "VERSION",
    "CarryRef",
    "IndexEntry",
    "Packet",
    "StreamHeader",
    "StreamWriter",
    "assemble",
    "carry_bytes",
    "carry_info_of",
    "check_packet_slot",
    "crc32",
    "footer_bytes",
    "has_midpoint",
    "index_for",
    "iter_packets",
    "parse_header",
    "parse_header_version",
    "read_carry_head",
    "read_carry_info",
    "read_packet",
    "stream_tail",
    "trailer_bytes",
    "version_for",
]

MAGIC = b"\x89RLV\r\n\x1a\n"
#: The version of all-intra streams (``gop`` 1): what earlier relatent wrote and reads.
VERSION = 2
#: The version of streams with a GOP (``gop`` > 1): P-frame packets (:data:`FLAG_INTER`).
INTER_VERSION = 3
#: The first version with rate points (header ``rate_points`` non-empty): each packet
#: names, in flags bits 2..4, the rate point (model) that coded it (:data:`RATE_SLOT_MASK`).
RATE_VERSION = 4
#: The version streams with rate points are written with: version 4, whose rate points may
#: also be midpoints (a half-step ``quality``, ``q + 0.5``: the average of the shipped
#: models ``q`` and ``q + 1``, :func:`pipeline.models.midpoint_state_dict`).
MIDPOINT_VERSION = 5
#: The file name suffix of a stream (``relatent encode`` writes only names that end in it).
STREAM_SUFFIX = ".rlv"
SUPPORTED_VERSIONS = (1, 2, 3, 4, 5)
#: First version with a carry section (and the carry fields in the footer).
CARRY_VERSION = 2
PACKET_SYNC = b"PK"
CARRY_MAGIC = b"RLVC"
FOOTER_MAGIC = b"RLVI"
END_MAGIC = b"RLVE"
TRAILER_SIZE = 12  # footer_offset:u64 + END_MAGIC

FLAG_REFINED = 0x01
#: The packet is a P frame: its one string is the rANS stream of :mod:`pipeline.inter`,
#: coded against the previous frame's symbols (format versions 3 and 4).
FLAG_INTER = 0x02
#: Packet flags bits 2..4: the rate point slot (an index into the header's ``rate_points``)
#: of the model that coded the frame (format version 4 only; 0 in earlier versions).
RATE_SLOT_SHIFT = 2
RATE_SLOT_MASK = 0x1C

# The fixes the errors name.
HINT_CORRUPT = "the file is corrupt; re-encode or re-download it"
HINT_CUT_SHORT = "the file was cut short; re-encode or re-download it"
HINT_REENCODE = "the file is corrupt; re-encode it"

_HEAD = struct.Struct("<HI")
_PKT_HEAD = struct.Struct("<2sI")
_BODY_FIXED = struct.Struct("<QqBIB")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
ENTRY_STRUCT = struct.Struct("<QQI")


def crc32(data: bytes) -> int:
    """The CRC-32 (zlib's, ISO-HDLC polynomial) of ``data`` as an unsigned 32-bit int."""
    return zlib.crc32(data) & 0xFFFFFFFF


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class StreamHeader:
    """Everything a decoder needs besides the packets, and what the stream was made with."""

    arch: str
    quality: int
    lmbda: float
    weights_sha256: str
    tables_sha256: str
    width: int
    height: int
    padded_width: int
    padded_height: int
    frame_rate: Fraction
    time_base: Fraction
    frame_count: int
    color: dict[str, Any]
    refine: dict[str, Any]
    refine_hash: str
    latent_kind: str
    source: dict[str, Any] = field(default_factory=dict)
    #: Frames per group of pictures (1: every frame intra). Left out of the JSON when 1.
    gop: int = 1
    #: How the frames are displayed (``pipeline.media.display.DisplayInfo.to_dict``:
    #: rotation, hflip, matrix, sar, field_order, title). Left out of the JSON when empty.
    display: dict[str, Any] = field(default_factory=dict)
    #: The models of a stream coded with rate points (format version 4, at most 8): slot
    #: ``i`` is ``rate_points[i]``, ``{"quality", "lmbda", "weights_sha256",
    #: "tables_sha256"}``, a model of ``arch``; slot 0 is the header's own model (its
    #: ``quality``, ``lmbda``, ``weights_sha256``, ``tables_sha256``). Each packet names its
    #: slot (:attr:`Packet.rate_slot`). Empty: one model; left out of the JSON then.
    rate_points: tuple[dict[str, Any], ...] = ()

    @property
    def format_version(self) -> int:
        """The version this header is written with (:func:`version_for`):
        :data:`MIDPOINT_VERSION` with a midpoint rate point, :data:`RATE_VERSION` with rate
        points, else :data:`INTER_VERSION` with a GOP, else :data:`VERSION` (byte-identical
        to what all-intra relatent always wrote)."""
        return version_for(self.gop, len(self.rate_points), has_midpoint(self.rate_points))

    @property
    def rate_slots(self) -> int:
        """How many models the stream's packets may name: ``len(rate_points)``, or 1 (the
        header's own) without rate points."""
        return max(1, len(self.rate_points))

    def to_json(self) -> dict[str, Any]:
        """The header as JSON-ready values (fractions as ``[numerator, denominator]``)."""
        d = asdict(self)
        if self.gop == 1:
            del d["gop"]
        if not self.display:
            del d["display"]
        if self.rate_points:
            d["rate_points"] = [dict(rp) for rp in self.rate_points]
        else:
            del d["rate_points"]
        d["frame_rate"] = [self.frame_rate.numerator, self.frame_rate.denominator]
        d["time_base"] = [self.time_base.numerator, self.time_base.denominator]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StreamHeader:
        """The inverse of :meth:`to_json`.

        Raises:
            KeyError, TypeError, ValueError: a field is missing or malformed (the header
                parser turns these into :class:`~pipeline.errors.BitstreamError`).
        """
        d = dict(d)
        if "rate_points" in d:
            d["rate_points"] = tuple(dict(rp) for rp in d["rate_points"])
        d["frame_rate"] = Fraction(*d["frame_rate"])
        d["time_base"] = Fraction(*d["time_base"])
        return cls(**d)

    def to_bytes(self, version: int | None = None) -> bytes:
        """The serialised header (magic, version, canonical JSON, CRC).

        Raises:
            BitstreamError: ``version`` is not one of :data:`SUPPORTED_VERSIONS`, or is
                :data:`RATE_VERSION` or above without ``rate_points``, below it with them, or
                below :data:`MIDPOINT_VERSION` with a midpoint among them.
        """
        version = self.format_version if version is None else version
        _check_version(version)
        if (version >= RATE_VERSION) != bool(self.rate_points):
            raise BitstreamError(
                f"cannot write a header {'with' if self.rate_points else 'without'} rate "
                f"points as .rlv format version {version}",
                hint=f"rate points are written as version {RATE_VERSION} or {MIDPOINT_VERSION}, and only they are",
            )
        if version < MIDPOINT_VERSION and has_midpoint(self.rate_points):
            raise BitstreamError(
                f"cannot write midpoint rate points as .rlv format version {version}",
                hint=f"they are written as version {MIDPOINT_VERSION}",
            )
        body = _canonical_json(self.to_json())
        return MAGIC + _HEAD.pack(version, len(body)) + body + U32.pack(crc32(body))


_HEADER_FIELDS = tuple(f.name for f in fields(StreamHeader))


def has_midpoint(rate_points: Iterable[Any]) -> bool:
    """Whether one of ``rate_points`` (header entries, or model identities) is a midpoint:
    its ``quality`` a half step (:data:`MIDPOINT_VERSION`)."""
    return any(
        not float(rp["quality"] if isinstance(rp, dict) else rp.quality).is_integer()
        for rp in rate_points
    )


def version_for(gop: int, rate_points: int = 0, midpoints: bool = False) -> int:
    """The format version of a stream coded with ``gop`` frames per group and
    ``rate_points`` models (the header's ``rate_points``; 0: none, the header's own model),
    ``midpoints`` when one of them is a midpoint (a half-step quality): the lowest that
    holds it, so earlier streams are written as before: :data:`MIDPOINT_VERSION` with a
    midpoint rate point, else :data:`RATE_VERSION` with rate points, else
    :data:`INTER_VERSION` when frames may be P frames, else :data:`VERSION`."""
    if rate_points:
        return MIDPOINT_VERSION if midpoints else RATE_VERSION
    return INTER_VERSION if gop > 1 else VERSION


def _check_version(version: int) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise BitstreamError(
            f"cannot write .rlv format version {version}", hint=f"use one of {SUPPORTED_VERSIONS}"
        )


def parse_header(f: BinaryIO, name: str = "stream") -> tuple[StreamHeader, int]:
    """Read the header at the start of ``f``; return it and its size in bytes.

    Raises:
        BadMagicError, TruncatedStreamError, UnsupportedVersionError, ChecksumError,
        BitstreamError: as :func:`parse_header_version`.
    """
    header, size, _ = parse_header_version(f, name)
    return header, size


def parse_header_version(f: BinaryIO, name: str = "stream") -> tuple[StreamHeader, int, int]:
    """Like :func:`parse_header`, also returning the stream's format version.

    Raises:
        BadMagicError: ``f`` does not start with :data:`MAGIC`.
        TruncatedStreamError: the file ends inside the header.
        UnsupportedVersionError: a format version this reader does not know.
        ChecksumError: the header JSON does not match its CRC.
        BitstreamError: the header JSON is longer than
            :data:`~pipeline.bitstream.schema.MAX_HEADER_BYTES` (refused before reading
            it), not JSON, or a field is missing, unknown or out of its bounds
            (:func:`~pipeline.bitstream.schema.check_header`).
    """
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        if len(magic) < len(MAGIC):
            raise TruncatedStreamError(
                f"{name} is too short to be an .rlv stream", hint="the file is empty or truncated"
            )
        raise BadMagicError(
            f"{name} is not an .rlv stream (wrong magic bytes)",
            hint="pass a file written by relatent encode",
        )
    head = f.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise TruncatedStreamError(f"{name}: header is truncated", hint=HINT_CUT_SHORT)
    version, n = _HEAD.unpack(head)
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(
            f"{name} uses .rlv format version {version}; this relatent reads {SUPPORTED_VERSIONS}",
            hint="upgrade relatent to a version that supports it",
        )
    if n > MAX_HEADER_BYTES:
        raise BitstreamError(
            f"{name}: header length {n} is above the bound of {MAX_HEADER_BYTES} bytes",
            hint=HINT_FOREIGN,
        )
    body = f.read(n)
    crc = f.read(4)
    if len(body) < n or len(crc) < 4:
        raise TruncatedStreamError(f"{name}: header is truncated", hint=HINT_CUT_SHORT)
    if U32.unpack(crc)[0] != crc32(body):
        raise ChecksumError(f"{name}: header CRC mismatch", hint=HINT_CORRUPT)
    d = check_header(loads_bounded(body, "header is", name), _HEADER_FIELDS, version, name)
    try:
        header = StreamHeader.from_json(d)
    except (ValueError, TypeError, KeyError, ZeroDivisionError) as exc:
        raise BitstreamError(f"{name}: header is malformed ({exc})", hint=HINT_FOREIGN) from exc
    return header, len(MAGIC) + _HEAD.size + n + 4, version


# --------------------------------------------------------------------------- packets


@dataclass(frozen=True)
class Packet:
    """One coded frame. ``strings`` are the entropy-coded latents (z then y for hyperprior
    models); ``latent_crc`` is the CRC32 of the decoded integer symbols, so a decoder can
    prove it recovered bit-identical latents."""

    frame_index: int
    pts: int
    strings: tuple[bytes, ...]
    latent_crc: int
    flags: int = 0

    @property
    def refined(self) -> bool:
        """Whether the coded latent is a refined one (:data:`FLAG_REFINED`)."""
        return bool(self.flags & FLAG_REFINED)

    @property
    def rate_slot(self) -> int:
        """The rate point slot that coded the frame (flags bits 2..4, :data:`RATE_SLOT_MASK`):
        an index into the header's ``rate_points``; 0 before format version 4."""
        return (self.flags & RATE_SLOT_MASK) >> RATE_SLOT_SHIFT

    def to_bytes(self) -> bytes:
        """The packet as stored: sync, body length, body, CRC of the body."""
        parts = [
            _BODY_FIXED.pack(
                self.frame_index, self.pts, self.flags, self.latent_crc, len(self.strings)
            )
        ]
        for s in self.strings:
            parts.append(U32.pack(len(s)))
            parts.append(s)
        body = b"".join(parts)
        return _PKT_HEAD.pack(PACKET_SYNC, len(body)) + body + U32.pack(crc32(body))


def _parse_body(body: bytes, where: str) -> Packet:
    try:
        frame_index, pts, flags, latent_crc, n = _BODY_FIXED.unpack_from(body, 0)
        pos = _BODY_FIXED.size
        strings = []
        for _ in range(n):
            (ln,) = U32.unpack_from(body, pos)
            pos += 4
            if pos + ln > len(body):
                raise struct.error("string overruns packet")
            strings.append(body[pos : pos + ln])
            pos += ln
    except struct.error as exc:
        raise BitstreamError(
            f"{where}: malformed packet ({exc})", hint="the stream is corrupt"
        ) from exc
    return Packet(frame_index, pts, tuple(strings), latent_crc, flags)


def check_packet_slot(packet: Packet, header: StreamHeader, where: str | None = None) -> int:
    """The rate point slot of ``packet`` (:attr:`Packet.rate_slot`), checked against
    ``header``: below ``len(header.rate_points)`` in a version-4 stream, 0 in a stream
    without rate points. ``where`` (the stream) prefixes the message when given.

    Raises:
        BitstreamError: "[<where>: ]frame N: packet names rate point slot s, ..." (exit 4).
    """
    slot = packet.rate_slot
    if slot and slot >= len(header.rate_points):
        why = (
            f"the stream has {len(header.rate_points)} rate points (slots 0.."
            f"{len(header.rate_points) - 1})"
            if header.rate_points
            else f"a stream without rate points (format version < {RATE_VERSION}) has only slot 0"
        )
        raise BitstreamError(
            f"{where + ': ' if where else ''}frame {packet.frame_index}: packet names rate "
            f"point slot {slot}, but {why}",
            hint=HINT_FOREIGN,
        )
    return slot


def read_packet(f: BinaryIO, where: str = "stream", size: int | None = None) -> Packet:
    """Read one packet at the current position of ``f`` (``where`` names it in errors).
    ``size``: the bytes the packet must take (its index entry's length), or at most the
    bytes left in the data when not known exactly (``-size``); the body length is checked
    against it before the body is read, so a hostile length allocates nothing.

    Raises:
        TruncatedStreamError: the file ends inside the packet.
        ChecksumError: the body does not match its CRC.
        BitstreamError: lost packet sync, a body length other than ``size`` allows, or a
            malformed body.
    """
    head = f.read(_PKT_HEAD.size)
    if len(head) < _PKT_HEAD.size:
        raise TruncatedStreamError(f"{where}: packet header is truncated", hint=HINT_CUT_SHORT)
    sync, n = _PKT_HEAD.unpack(head)
    if sync != PACKET_SYNC:
        raise BitstreamError(
            f"{where}: lost packet sync", hint="the stream is corrupt or was assembled out of order"
        )
    total = _PKT_HEAD.size + n + 4
    if size is not None and (total != size if size >= 0 else total > -size):
        if size < 0:
            raise TruncatedStreamError(
                f"{where}: packet length {total} overruns the {-size} bytes left",
                hint=HINT_CUT_SHORT,
            )
        raise BitstreamError(
            f"{where}: packet length {total} differs from its index entry's {size}",
            hint=HINT_FOREIGN,
        )
    body = f.read(n)
    crc = f.read(4)
    if len(body) < n or len(crc) < 4:
        raise TruncatedStreamError(f"{where}: packet is truncated", hint=HINT_CUT_SHORT)
    if U32.unpack(crc)[0] != crc32(body):
        raise ChecksumError(f"{where}: packet CRC mismatch", hint=HINT_CORRUPT)
    return _parse_body(body, where)


def iter_packets(data: bytes, where: str = "shard") -> Iterator[tuple[int, Packet]]:
    """Yield ``(offset, packet)`` for each packet of a shard (or any run of packets);
    ``offset`` is in bytes from the start of ``data``.

    Raises:
        TruncatedStreamError, ChecksumError, BitstreamError: as :func:`read_packet`.
    """
    f = io.BytesIO(data)
    while f.tell() < len(data):
        off = f.tell()
        yield off, read_packet(f, f"{where} @{off}", -(len(data) - off))


# --------------------------------------------------------------------------- footer


@dataclass(frozen=True)
class IndexEntry:
    """One footer index entry: a frame's packet at byte ``offset`` from the start of the
    stream, ``length`` bytes long (packet header and CRC included)."""

    frame_index: int
    offset: int
    length: int


@dataclass(frozen=True)
class CarryRef:
    """Where the carry section is: byte offset from the start of the stream, and length
    (the whole section, magic to blob)."""

    offset: int
    length: int


def footer_bytes(
    entries: Sequence[IndexEntry],
    stats: Sequence[FrameStats] | None = None,
    carry: CarryRef | None = None,
    *,
    version: int = VERSION,
) -> bytes:
    """The footer (without the trailer): the index ``entries``, the ``stats`` of every
    frame (their :meth:`~pipeline.stats.FrameStats.to_stream` records, canonical JSON;
    zlib-compressed from version 3) and,
    from version 2, the carry fields. ``carry`` locates the carry section, which sits right
    after the last packet (offset = end of the packets); None means no section.
    ``version`` must be the header's. Most callers want :func:`stream_tail`.

    Raises:
        BitstreamError: an unknown ``version``, or a carry section with version 1.
    """
    _check_version(version)
    stats_json = _canonical_json({"frames": [s.to_stream() for s in stats or ()]})
    if version >= INTER_VERSION:
        stats_json = zlib.compress(stats_json, 9)  # about 5x smaller: ~40 B a frame
    parts = (
        [FOOTER_MAGIC, U64.pack(len(entries))]
        + [ENTRY_STRUCT.pack(e.frame_index, e.offset, e.length) for e in entries]
        + [U32.pack(len(stats_json)), stats_json]
    )
    if version >= CARRY_VERSION:
        parts += [U64.pack(carry.offset if carry else 0), U64.pack(carry.length if carry else 0)]
    elif carry is not None and carry.length:
        raise BitstreamError(
            "format version 1 has no carry section",
            hint="write version 2 or drop the carried streams",
        )
    block = b"".join(parts)
    return block + U32.pack(crc32(block))


# --------------------------------------------------------------------------- carry section


def carry_bytes(info: dict[str, Any], blob: bytes | None = None) -> bytes:
    """The carry section: ``info`` (canonical JSON: the description of the carried streams,
    :meth:`pipeline.media.CarryInfo.to_dict`) and ``blob`` (the streams themselves, a
    Matroska file; may be empty). Each part has its own CRC, so ``info`` is read without
    reading the blob."""
    ij = _canonical_json(info)
    blob = blob or b""
    return b"".join(
        [
            CARRY_MAGIC,
            U32.pack(len(ij)),
            ij,
            U32.pack(crc32(ij)),
            U64.pack(len(blob)),
            U32.pack(crc32(blob)),
            blob,
        ]
    )


CARRY_FIXED_SIZE = len(CARRY_MAGIC) + 4 + 4 + 8 + 4  # everything but info_json and blob


def carry_info_of(section: bytes, name: str = "carry section") -> dict[str, Any]:
    """The info JSON of a carry section made by :func:`carry_bytes` (e.g. a staged one, for
    a manifest: ``CarryInfo.from_dict(carry_info_of(section)).to_rows()``). ``section``
    may stop right after the info's CRC (the blob is not needed); ``name`` names it in errors.

    Raises:
        BitstreamError: ``section`` does not start with :data:`CARRY_MAGIC`, or its info
            is not JSON or not of the shape ``CarryInfo.to_dict`` writes
            (:func:`~pipeline.bitstream.schema.check_carry_info`).
        TruncatedStreamError: ``section`` ends inside the info or its CRC.
        ChecksumError: the info does not match its CRC.
    """
    if section[:4] != CARRY_MAGIC:
        raise BitstreamError(f"{name}: carry section magic missing", hint=HINT_REENCODE)
    n = U32.unpack_from(section, 4)[0] if len(section) >= 8 else 0
    ij, crc = section[8 : 8 + n], section[8 + n : 12 + n]
    if len(section) < 8 or len(ij) < n or len(crc) < 4:
        raise TruncatedStreamError(f"{name}: carry section is truncated", hint=HINT_CUT_SHORT)
    if U32.unpack(crc)[0] != crc32(ij):
        raise ChecksumError(f"{name}: carry info CRC mismatch", hint=HINT_CORRUPT)
    return check_carry_info(loads_bounded(ij, "carry info is", name), name)


def read_carry_info(f: BinaryIO, name: str = "carry section") -> dict[str, Any]:
    """The info JSON of the carry section that starts at the current position of ``f``,
    reading only the info part (not the carried streams). ``name`` names it in errors.

    Raises:
        BitstreamError, TruncatedStreamError, ChecksumError: as :func:`carry_info_of`.
    """
    return read_carry_head(f, name)[0]


def read_carry_head(f: BinaryIO, name: str, limit: int | None = None) -> tuple[Any, int]:
    """The info of the carry section at the position of ``f`` and the bytes from the
    section's start to its blob length field; ``limit``: the section's length, if known
    (else the bytes left in a seekable ``f``). The info length is checked against it
    before the info is read.

    Raises:
        BitstreamError, TruncatedStreamError, ChecksumError: as :func:`carry_info_of`, or
            an info length that overruns the section.
    """
    if limit is None and f.seekable():
        here = f.tell()
        limit = f.seek(0, io.SEEK_END) - here
        f.seek(here)
    head = f.read(8)
    n = U32.unpack_from(head, 4)[0] if len(head) == 8 and head[:4] == CARRY_MAGIC else 0
    if limit is not None and 8 + n + 4 + 12 > limit:
        raise BitstreamError(f"{name}: carry info overruns its section", hint=HINT_REENCODE)
    return carry_info_of(head + f.read(n + 4), name), 8 + n + 4


def index_for(header_size: int, packet_lengths: Iterable[tuple[int, int]]) -> list[IndexEntry]:
    """Index of packets laid out right after a header of ``header_size`` bytes:
    ``packet_lengths`` yields ``(frame_index, length in bytes)`` in stream order."""
    entries, off = [], header_size
    for idx, ln in packet_lengths:
        entries.append(IndexEntry(idx, off, ln))
        off += ln
    return entries


def trailer_bytes(footer_offset: int) -> bytes:
    """The trailer: the footer's byte offset from the start of the stream, then
    :data:`END_MAGIC` (:data:`TRAILER_SIZE` bytes)."""
    return U64.pack(footer_offset) + END_MAGIC


def stream_tail(
    header_size: int,
    packet_lengths: Iterable[tuple[int, int]],
    stats: Sequence[FrameStats] | None = None,
    carry_size: int = 0,
    *,
    version: int = VERSION,
) -> tuple[list[IndexEntry], bytes]:
    """The index and the tail (footer + trailer) of a stream laid out as
    ``header ++ packets ++ carry section ++ tail``.

    Args:
        header_size: bytes of the header (:meth:`StreamHeader.to_bytes`).
        packet_lengths: ``(frame_index, length in bytes)`` of every packet, in stream order.
        stats: the frames' statistics, in the same order (None: an empty stats list).
        carry_size: bytes of the carry section (:func:`carry_bytes`) that sits between the
            last packet and the footer; 0 means no section.
        version: the header's format version.

    Returns:
        The index entries (byte offsets from the start of the stream) and the tail bytes;
        the footer starts at ``header_size + sum(lengths) + carry_size``.

    Raises:
        BitstreamError: an unknown ``version``, or ``carry_size > 0`` with version 1.
    """
    entries = index_for(header_size, packet_lengths)
    body_end = header_size + sum(e.length for e in entries)
    ref = CarryRef(body_end, carry_size) if carry_size else None
    footer = footer_bytes(entries, stats, ref, version=version)
    return entries, footer + trailer_bytes(body_end + carry_size)


def assemble(
    header: StreamHeader,
    shards: Sequence[bytes],
    stats: Sequence[FrameStats] | None = None,
    carry: bytes | None = None,
    *,
    version: int | None = None,
) -> bytes:
    """header + shard bytes in order + carry section (:func:`carry_bytes`) + tail (the
    local reassembly path; the shards are parsed only for their packet lengths).

    Raises:
        TruncatedStreamError, ChecksumError, BitstreamError: a shard holds a damaged
            packet; an unknown ``version``; a carry section with version 1.
    """
    version = header.format_version if version is None else version
    hb = header.to_bytes(version)
    lengths = [(p.frame_index, len(p.to_bytes())) for s in shards for _, p in iter_packets(s)]
    carry = carry or b""
    _, tail = stream_tail(len(hb), lengths, stats, len(carry), version=version)
    return hb + b"".join(shards) + carry + tail


# --------------------------------------------------------------------------- writer


class StreamWriter:
    """Writes a stream to a binary file object: header now, packets as they come, carry
    section and tail at :meth:`close`. Atomicity (temp file + rename) is the caller's job
    (:func:`pipeline.storage.open_write`).

    Raises:
        BitstreamError: an unknown ``version`` (from the constructor).
    """

    def __init__(self, f: BinaryIO, header: StreamHeader, *, version: int | None = None) -> None:
        self._f = f
        self.header = header
        self.version = header.format_version if version is None else version
        hb = header.to_bytes(version)
        f.write(hb)
        self._header_size = len(hb)
        self._pos = len(hb)
        self._entries: list[IndexEntry] = []
        self._stats: list[FrameStats] = []

    def write(self, packet: Packet, stats: FrameStats | None = None) -> int:
        """Append one packet (frames in increasing order) and its frame's ``stats``
        (``None``: the footer gets no record for it). Returns the packet's size in bytes.

        Raises:
            BitstreamError: the packet's frame index is not above the previous one's.
        """
        if self._entries and packet.frame_index <= self._entries[-1].frame_index:
            raise BitstreamError(
                f"packet for frame {packet.frame_index} written after frame {self._entries[-1].frame_index}",
                hint="write packets in frame order",
            )
        pb = packet.to_bytes()
        self._f.write(pb)
        self._entries.append(IndexEntry(packet.frame_index, self._pos, len(pb)))
        self._pos += len(pb)
        if stats is not None:
            self._stats.append(stats)
        return len(pb)

    def close(self, carry: bytes | None = None) -> None:
        """Write the carry section (``carry``, from :func:`carry_bytes`; version 2 only)
        and the tail (:func:`stream_tail`: footer and trailer).

        Raises:
            BitstreamError: fewer or more packets were written than the header declares,
                or a carry section with version 1.
        """
        if len(self._entries) != self.header.frame_count:
            raise BitstreamError(
                f"stream declares {self.header.frame_count} frames but {len(self._entries)} were written",
                hint="this is a bug in the caller",
            )
        carry = carry or b""
        lengths = [(e.frame_index, e.length) for e in self._entries]
        _, tail = stream_tail(
            self._header_size, lengths, self._stats, len(carry), version=self.version
        )
        self._f.write(carry)
        self._f.write(tail)
        self._pos += len(carry) + len(tail)
