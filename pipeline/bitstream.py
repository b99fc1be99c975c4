"""The .rlv container: header, per-frame packets, footer index. Spec: docs/bitstream.md.

Layout (all integers little-endian; format version 2)::

    stream  := header packet* carry? footer
    header  := MAGIC(8) version:u16 json_len:u32 json crc32(json):u32
    packet  := b"PK" body_len:u32 body crc32(body):u32
    body    := frame_index:u64 pts:i64 flags:u8 latent_crc:u32 n:u8 (len:u32 bytes)*n
    carry   := b"RLVC" info_len:u32 info_json crc32(info_json):u32
               blob_len:u64 crc32(blob):u32 blob
    footer  := b"RLVI" count:u64 (frame_index:u64 offset:u64 length:u32)*count
               stats_len:u32 stats_json carry_offset:u64 carry_length:u64
               crc32(b"RLVI"..carry_length):u32
               footer_offset:u64 b"RLVE"

Version 1 is the same without the carry section and without the two carry fields of the
footer; it is still read (and written with ``version=1``). The carry section holds the
source's non-video streams, copied (see :mod:`pipeline.media.carry`); ``carry_offset`` and
``carry_length`` are 0 when there is none.

A *shard* is a run of whole packets for a frame range. Concatenating header + shards in
frame order + carry section + tail gives a complete stream; the tail (footer + trailer) is
computed from the header size, the packet lengths, the per-frame stats and the carry
section's length alone (:func:`stream_tail`), so reassembly never has to parse shard bytes.
This module is the only owner of that layout: :func:`assemble`, :class:`StreamWriter` and
the distributed commit (:mod:`cluster.commit`) all get their tail from :func:`stream_tail`.

Per-frame statistics travel as :class:`pipeline.stats.FrameStats`; the footer stores
their :meth:`~pipeline.stats.FrameStats.to_stream` records.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.errors import (
    BadMagicError,
    BitstreamError,
    ChecksumError,
    TruncatedStreamError,
    UnsupportedVersionError,
)
from pipeline.stats import FrameStats

__all__ = [
    "CARRY_MAGIC",
    "CARRY_VERSION",
    "END_MAGIC",
    "FLAG_REFINED",
    "FOOTER_MAGIC",
    "MAGIC",
    "PACKET_SYNC",
    "STREAM_SUFFIX",
    "SUPPORTED_VERSIONS",
    "TRAILER_SIZE",
    "VERSION",
    "CarryRef",
    "IndexEntry",
    "Packet",
    "StreamHeader",
    "StreamReader",
    "StreamWriter",
    "assemble",
    "carry_bytes",
    "carry_info_of",
    "crc32",
    "footer_bytes",
    "index_for",
    "iter_packets",
    "parse_header",
    "parse_header_version",
    "read_carry_info",
    "read_packet",
    "stream_tail",
    "trailer_bytes",
]

MAGIC = b"\x89RLV\r\n\x1a\n"
VERSION = 2
#: The file name suffix of a stream (``relatent encode`` writes only names that end in it).
STREAM_SUFFIX = ".rlv"
SUPPORTED_VERSIONS = (1, 2)
#: First version with a carry section (and the carry fields in the footer).
CARRY_VERSION = 2
PACKET_SYNC = b"PK"
CARRY_MAGIC = b"RLVC"
FOOTER_MAGIC = b"RLVI"
END_MAGIC = b"RLVE"
TRAILER_SIZE = 12  # footer_offset:u64 + END_MAGIC

FLAG_REFINED = 0x01

# The fixes the errors name.
_CORRUPT = "the file is corrupt; re-encode or re-download it"
_CUT_SHORT = "the file was cut short; re-encode or re-download it"
_FOREIGN = "the file is corrupt or from an incompatible writer"
_REENCODE = "the file is corrupt; re-encode it"

_HEAD = struct.Struct("<HI")
_PKT_HEAD = struct.Struct("<2sI")
_BODY_FIXED = struct.Struct("<QqBIB")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ENTRY = struct.Struct("<QQI")


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

    def to_json(self) -> dict[str, Any]:
        """The header as JSON-ready values (fractions as ``[numerator, denominator]``)."""
        d = asdict(self)
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
        d["frame_rate"] = Fraction(*d["frame_rate"])
        d["time_base"] = Fraction(*d["time_base"])
        return cls(**d)

    def to_bytes(self, version: int = VERSION) -> bytes:
        """The serialised header (magic, version, canonical JSON, CRC).

        Raises:
            BitstreamError: ``version`` is not one of :data:`SUPPORTED_VERSIONS`.
        """
        _check_version(version)
        body = _canonical_json(self.to_json())
        return MAGIC + _HEAD.pack(version, len(body)) + body + _U32.pack(crc32(body))


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
        BitstreamError: the header JSON is malformed.
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
        raise TruncatedStreamError(f"{name}: header is truncated", hint=_CUT_SHORT)
    version, n = _HEAD.unpack(head)
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(
            f"{name} uses .rlv format version {version}; this relatent reads {SUPPORTED_VERSIONS}",
            hint="upgrade relatent to a version that supports it",
        )
    body = f.read(n)
    crc = f.read(4)
    if len(body) < n or len(crc) < 4:
        raise TruncatedStreamError(f"{name}: header is truncated", hint=_CUT_SHORT)
    if _U32.unpack(crc)[0] != crc32(body):
        raise ChecksumError(f"{name}: header CRC mismatch", hint=_CORRUPT)
    try:
        header = StreamHeader.from_json(json.loads(body))
    except (ValueError, TypeError, KeyError) as exc:
        raise BitstreamError(f"{name}: header is malformed ({exc})", hint=_FOREIGN) from exc
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

    def to_bytes(self) -> bytes:
        """The packet as stored: sync, body length, body, CRC of the body."""
        parts = [
            _BODY_FIXED.pack(
                self.frame_index, self.pts, self.flags, self.latent_crc, len(self.strings)
            )
        ]
        for s in self.strings:
            parts.append(_U32.pack(len(s)))
            parts.append(s)
        body = b"".join(parts)
        return _PKT_HEAD.pack(PACKET_SYNC, len(body)) + body + _U32.pack(crc32(body))


def _parse_body(body: bytes, where: str) -> Packet:
    try:
        frame_index, pts, flags, latent_crc, n = _BODY_FIXED.unpack_from(body, 0)
        pos = _BODY_FIXED.size
        strings = []
        for _ in range(n):
            (ln,) = _U32.unpack_from(body, pos)
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


def read_packet(f: BinaryIO, where: str = "stream") -> Packet:
    """Read one packet at the current position of ``f`` (``where`` names it in errors).

    Raises:
        TruncatedStreamError: the file ends inside the packet.
        ChecksumError: the body does not match its CRC.
        BitstreamError: lost packet sync, or a malformed body.
    """
    head = f.read(_PKT_HEAD.size)
    if len(head) < _PKT_HEAD.size:
        raise TruncatedStreamError(f"{where}: packet header is truncated", hint=_CUT_SHORT)
    sync, n = _PKT_HEAD.unpack(head)
    if sync != PACKET_SYNC:
        raise BitstreamError(
            f"{where}: lost packet sync", hint="the stream is corrupt or was assembled out of order"
        )
    body = f.read(n)
    crc = f.read(4)
    if len(body) < n or len(crc) < 4:
        raise TruncatedStreamError(f"{where}: packet is truncated", hint=_CUT_SHORT)
    if _U32.unpack(crc)[0] != crc32(body):
        raise ChecksumError(f"{where}: packet CRC mismatch", hint=_CORRUPT)
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
        yield off, read_packet(f, f"{where} @{off}")


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
    frame (their :meth:`~pipeline.stats.FrameStats.to_stream` records, canonical JSON) and,
    from version 2, the carry fields. ``carry`` locates the carry section, which sits right
    after the last packet (offset = end of the packets); None means no section.
    ``version`` must be the header's. Most callers want :func:`stream_tail`.

    Raises:
        BitstreamError: an unknown ``version``, or a carry section with version 1.
    """
    _check_version(version)
    stats_json = _canonical_json({"frames": [s.to_stream() for s in stats or ()]})
    parts = (
        [FOOTER_MAGIC, _U64.pack(len(entries))]
        + [_ENTRY.pack(e.frame_index, e.offset, e.length) for e in entries]
        + [_U32.pack(len(stats_json)), stats_json]
    )
    if version >= CARRY_VERSION:
        parts += [_U64.pack(carry.offset if carry else 0), _U64.pack(carry.length if carry else 0)]
    elif carry is not None and carry.length:
        raise BitstreamError(
            "format version 1 has no carry section",
            hint="write version 2 or drop the carried streams",
        )
    block = b"".join(parts)
    return block + _U32.pack(crc32(block))


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
            _U32.pack(len(ij)),
            ij,
            _U32.pack(crc32(ij)),
            _U64.pack(len(blob)),
            _U32.pack(crc32(blob)),
            blob,
        ]
    )


_CARRY_FIXED = len(CARRY_MAGIC) + 4 + 4 + 8 + 4  # everything but info_json and blob


def carry_info_of(section: bytes, name: str = "carry section") -> dict[str, Any]:
    """The info JSON of a carry section made by :func:`carry_bytes` (e.g. a staged one, for
    a manifest: ``CarryInfo.from_dict(carry_info_of(section)).to_rows()``). ``section``
    may stop right after the info's CRC (the blob is not needed); ``name`` names it in errors.

    Raises:
        BitstreamError: ``section`` does not start with :data:`CARRY_MAGIC`, or its info
            is not JSON.
        TruncatedStreamError: ``section`` ends inside the info or its CRC.
        ChecksumError: the info does not match its CRC.
    """
    if section[:4] != CARRY_MAGIC:
        raise BitstreamError(f"{name}: carry section magic missing", hint=_REENCODE)
    n = _U32.unpack_from(section, 4)[0] if len(section) >= 8 else 0
    ij, crc = section[8 : 8 + n], section[8 + n : 12 + n]
    if len(section) < 8 or len(ij) < n or len(crc) < 4:
        raise TruncatedStreamError(f"{name}: carry section is truncated", hint=_CUT_SHORT)
    if _U32.unpack(crc)[0] != crc32(ij):
        raise ChecksumError(f"{name}: carry info CRC mismatch", hint=_CORRUPT)
    try:
        return json.loads(ij)
    except ValueError as exc:
        raise BitstreamError(f"{name}: carry info is malformed ({exc})", hint=_CORRUPT) from exc


def read_carry_info(f: BinaryIO, name: str = "carry section") -> dict[str, Any]:
    """The info JSON of the carry section that starts at the current position of ``f``,
    reading only the info part (not the carried streams). ``name`` names it in errors.

    Raises:
        BitstreamError, TruncatedStreamError, ChecksumError: as :func:`carry_info_of`.
    """
    return _read_carry_head(f, name)[0]


def _read_carry_head(f: BinaryIO, name: str, limit: int | None = None) -> tuple[Any, int]:
    """The info of the carry section at the position of ``f`` and the bytes from the
    section's start to its blob length field; ``limit``: the section's length, if known."""
    head = f.read(8)
    n = _U32.unpack_from(head, 4)[0] if len(head) == 8 and head[:4] == CARRY_MAGIC else 0
    if limit is not None and 8 + n + 4 + 12 > limit:
        raise BitstreamError(f"{name}: carry info overruns its section", hint=_REENCODE)
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
    return _U64.pack(footer_offset) + END_MAGIC


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
    version: int = VERSION,
) -> bytes:
    """header + shard bytes in order + carry section (:func:`carry_bytes`) + tail (the
    local reassembly path; the shards are parsed only for their packet lengths).

    Raises:
        TruncatedStreamError, ChecksumError, BitstreamError: a shard holds a damaged
            packet; an unknown ``version``; a carry section with version 1.
    """
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

    def __init__(self, f: BinaryIO, header: StreamHeader, *, version: int = VERSION) -> None:
        self._f = f
        self.header = header
        self.version = version
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


# --------------------------------------------------------------------------- reader


def _parse_stats(raw: bytes, name: str) -> list[FrameStats]:
    """The footer's ``stats_json`` as :class:`FrameStats` (``name``: the stream, for errors)."""
    try:
        records = json.loads(raw)["frames"]
        if not isinstance(records, list):
            raise TypeError(f"'frames' is a {type(records).__name__}, not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise BitstreamError(f"{name}: footer stats are malformed ({exc})", hint=_FOREIGN) from exc
    stats = []
    for n, record in enumerate(records):
        try:
            stats.append(FrameStats.from_stream(record))
        except (KeyError, TypeError, ValueError) as exc:
            raise BitstreamError(
                f"{name}: footer stats of frame {n} are malformed ({type(exc).__name__}: {exc})",
                hint=_FOREIGN,
            ) from exc
    return stats


class StreamReader:
    """Random access to a stream: ``reader.header``, ``len(reader)``, ``reader[n]``,
    iteration in frame order, the per-frame ``stats`` the encoder recorded
    (:class:`~pipeline.stats.FrameStats`) and the carried streams.

    ``source`` is a path or URI (opened with :func:`pipeline.storage.open_read` and closed
    by :meth:`close`) or a seekable binary file object (left open).

    Raises:
        BadMagicError, UnsupportedVersionError: not a (supported) .rlv stream.
        TruncatedStreamError: the file is cut short (no trailer, footer or header).
        ChecksumError: the header or footer does not match its CRC.
        BitstreamError: a malformed header, footer, stats record or carry reference.
        StorageError: ``source`` cannot be opened.
    """

    def __init__(self, source: str | Path | BinaryIO, name: str | None = None) -> None:
        if isinstance(source, (str, Path)):
            from pipeline import storage

            self.name = name or str(source)
            self._f: BinaryIO = storage.open_read(str(source))
            self._owns = True
        else:
            self.name = name or getattr(source, "name", "stream")
            self._f = source
            self._owns = False
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        f = self._f
        f.seek(0)
        self.header, self.header_size, self.version = parse_header_version(f, self.name)
        end = f.seek(0, io.SEEK_END)
        if end < self.header_size + TRAILER_SIZE:
            raise TruncatedStreamError(
                f"{self.name}: no footer (file is truncated)", hint=_CUT_SHORT
            )
        f.seek(end - TRAILER_SIZE)
        trailer = f.read(TRAILER_SIZE)
        (footer_off,) = _U64.unpack(trailer[:8])
        if trailer[8:] != END_MAGIC or not self.header_size <= footer_off < end - TRAILER_SIZE:
            raise TruncatedStreamError(f"{self.name}: footer missing or truncated", hint=_CUT_SHORT)
        f.seek(footer_off)
        block = f.read(end - TRAILER_SIZE - footer_off)
        if len(block) < 4 or _U32.unpack(block[-4:])[0] != crc32(block[:-4]):
            raise ChecksumError(f"{self.name}: footer CRC mismatch", hint=_CORRUPT)
        body = block[:-4]
        if body[:4] != FOOTER_MAGIC:
            raise BitstreamError(f"{self.name}: footer magic missing", hint="the file is corrupt")
        (count,) = _U64.unpack_from(body, 4)
        pos = 12
        self.index = [
            IndexEntry(*_ENTRY.unpack_from(body, pos + i * _ENTRY.size)) for i in range(count)
        ]
        pos += count * _ENTRY.size
        (slen,) = _U32.unpack_from(body, pos)
        #: The per-frame statistics the encoder recorded, in stream order.
        self.stats: list[FrameStats] = _parse_stats(body[pos + 4 : pos + 4 + slen], self.name)
        pos += 4 + slen
        #: Where the carry section is (None: no section, or a version 1 stream).
        self.carry: CarryRef | None = None
        if self.version >= CARRY_VERSION:
            if len(body) < pos + 16:
                raise BitstreamError(f"{self.name}: footer has no carry fields", hint=_FOREIGN)
            c_off, c_len = _U64.unpack_from(body, pos)[0], _U64.unpack_from(body, pos + 8)[0]
            if c_len:
                if c_off < self.header_size or c_off + c_len != footer_off or c_len < _CARRY_FIXED:
                    raise BitstreamError(
                        f"{self.name}: carry section [{c_off}, {c_off + c_len}) does not end at the footer ({footer_off})",
                        hint="the stream was assembled incompletely; re-encode it",
                    )
                self.carry = CarryRef(c_off, c_len)
        if count != self.header.frame_count:
            raise BitstreamError(
                f"{self.name}: index lists {count} frames, header declares {self.header.frame_count}",
                hint="the stream was assembled incompletely",
            )
        self.footer_offset = footer_off

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, n: int) -> Packet:
        """The packet of the ``n``-th frame (0-based, stream order), read through the index.

        Raises:
            IndexError: ``n`` is out of range.
            TruncatedStreamError, ChecksumError, BitstreamError: a damaged packet, or one
                of another frame than the index says.
        """
        if not 0 <= n < len(self.index):
            raise IndexError(f"frame {n} out of range 0..{len(self.index) - 1}")
        e = self.index[n]
        self._f.seek(e.offset)
        p = read_packet(self._f, f"{self.name} frame {n}")
        if p.frame_index != e.frame_index:
            raise BitstreamError(
                f"{self.name}: index points frame {e.frame_index} at a packet of frame {p.frame_index}",
                hint="the stream is corrupt",
            )
        return p

    def __iter__(self) -> Iterator[Packet]:
        for n in range(len(self)):
            yield self[n]

    def _carry_head(self) -> tuple[dict[str, Any], int]:
        """The carry info and the offset of the blob's length field."""
        assert self.carry is not None
        self._f.seek(self.carry.offset)
        info, size = _read_carry_head(self._f, self.name, self.carry.length)
        return info, self.carry.offset + size

    def carry_info(self) -> dict[str, Any] | None:
        """The carry section's description of the carried streams
        (:meth:`pipeline.media.CarryInfo.from_dict` reads it), or None without a section.

        Raises:
            TruncatedStreamError, ChecksumError, BitstreamError: a damaged carry section.
        """
        if self.carry is None:
            return None
        return self._carry_head()[0]

    def carry_blob(self) -> bytes:
        """The carried streams (a Matroska file; empty when there are none), CRC-checked.

        Raises:
            TruncatedStreamError, ChecksumError, BitstreamError: a damaged carry section.
        """
        if self.carry is None:
            return b""
        _, pos = self._carry_head()
        f = self._f
        f.seek(pos)
        fixed = f.read(12)
        if len(fixed) < 12:
            raise TruncatedStreamError(f"{self.name}: carry section is truncated", hint=_CUT_SHORT)
        (n,) = _U64.unpack_from(fixed, 0)
        (want,) = _U32.unpack_from(fixed, 8)
        if pos + 12 + n != self.carry.offset + self.carry.length:
            raise BitstreamError(
                f"{self.name}: carry blob length does not match its section", hint=_REENCODE
            )
        blob = f.read(n)
        if len(blob) < n:
            raise TruncatedStreamError(f"{self.name}: carry blob is truncated", hint=_CUT_SHORT)
        if crc32(blob) != want:
            raise ChecksumError(f"{self.name}: carry blob CRC mismatch", hint=_CORRUPT)
        return blob

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._owns:
            self._f.close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
