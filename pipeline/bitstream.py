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
source's non-video streams, copied (see :mod:`pipeline.carry`); ``carry_offset`` and
``carry_length`` are 0 when there is none.

A *shard* is a run of whole packets for a frame range. Concatenating header + shards in
frame order + carry section + footer gives a complete stream; the footer is computed from
packet lengths and the carry section's length alone (:func:`footer_bytes`), so reassembly
never has to parse shard bytes.
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

MAGIC = b"\x89RLV\r\n\x1a\n"
VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
#: First version with a carry section (and the carry fields in the footer).
CARRY_VERSION = 2
PACKET_SYNC = b"PK"
CARRY_MAGIC = b"RLVC"
FOOTER_MAGIC = b"RLVI"
END_MAGIC = b"RLVE"
TRAILER_SIZE = 12  # footer_offset:u64 + END_MAGIC

FLAG_REFINED = 0x01

_HEAD = struct.Struct("<HI")
_PKT_HEAD = struct.Struct("<2sI")
_BODY_FIXED = struct.Struct("<QqBIB")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ENTRY = struct.Struct("<QQI")


def crc32(data: bytes) -> int:
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
        d = asdict(self)
        d["frame_rate"] = [self.frame_rate.numerator, self.frame_rate.denominator]
        d["time_base"] = [self.time_base.numerator, self.time_base.denominator]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StreamHeader:
        d = dict(d)
        d["frame_rate"] = Fraction(*d["frame_rate"])
        d["time_base"] = Fraction(*d["time_base"])
        return cls(**d)

    def to_bytes(self, version: int = VERSION) -> bytes:
        _check_version(version)
        body = _canonical_json(self.to_json())
        return MAGIC + _HEAD.pack(version, len(body)) + body + _U32.pack(crc32(body))


def _check_version(version: int) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise BitstreamError(
            f"cannot write .rlv format version {version}",
            hint=f"use one of {SUPPORTED_VERSIONS}",
        )


def parse_header(f: BinaryIO, name: str = "stream") -> tuple[StreamHeader, int]:
    """Read the header at the start of ``f``; return it and its size in bytes."""
    header, size, _ = parse_header_version(f, name)
    return header, size


def parse_header_version(f: BinaryIO, name: str = "stream") -> tuple[StreamHeader, int, int]:
    """Like :func:`parse_header`, also returning the stream's format version."""
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        if len(magic) < len(MAGIC):
            raise TruncatedStreamError(f"{name} is too short to be an .rlv stream", hint="the file is empty or truncated")
        raise BadMagicError(f"{name} is not an .rlv stream (wrong magic bytes)", hint="pass a file written by relatent encode")
    head = f.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise TruncatedStreamError(f"{name}: header is truncated", hint="the file was cut short; re-encode or re-download it")
    version, n = _HEAD.unpack(head)
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(
            f"{name} uses .rlv format version {version}; this relatent reads {SUPPORTED_VERSIONS}",
            hint="upgrade relatent to a version that supports it",
        )
    body = f.read(n)
    crc = f.read(4)
    if len(body) < n or len(crc) < 4:
        raise TruncatedStreamError(f"{name}: header is truncated", hint="the file was cut short; re-encode or re-download it")
    if _U32.unpack(crc)[0] != crc32(body):
        raise ChecksumError(f"{name}: header CRC mismatch", hint="the file is corrupt; re-encode or re-download it")
    try:
        header = StreamHeader.from_json(json.loads(body))
    except (ValueError, TypeError, KeyError) as exc:
        raise BitstreamError(f"{name}: header is malformed ({exc})", hint="the file is corrupt or from an incompatible writer") from exc
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
        return bool(self.flags & FLAG_REFINED)

    def to_bytes(self) -> bytes:
        parts = [_BODY_FIXED.pack(self.frame_index, self.pts, self.flags, self.latent_crc, len(self.strings))]
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
        raise BitstreamError(f"{where}: malformed packet ({exc})", hint="the stream is corrupt") from exc
    return Packet(frame_index, pts, tuple(strings), latent_crc, flags)


def read_packet(f: BinaryIO, where: str = "stream") -> Packet:
    head = f.read(_PKT_HEAD.size)
    if len(head) < _PKT_HEAD.size:
        raise TruncatedStreamError(f"{where}: packet header is truncated", hint="the stream was cut short; re-encode or re-download it")
    sync, n = _PKT_HEAD.unpack(head)
    if sync != PACKET_SYNC:
        raise BitstreamError(f"{where}: lost packet sync", hint="the stream is corrupt or was assembled out of order")
    body = f.read(n)
    crc = f.read(4)
    if len(body) < n or len(crc) < 4:
        raise TruncatedStreamError(f"{where}: packet is truncated", hint="the stream was cut short; re-encode or re-download it")
    if _U32.unpack(crc)[0] != crc32(body):
        raise ChecksumError(f"{where}: packet CRC mismatch", hint="the stream is corrupt; re-encode or re-download it")
    return _parse_body(body, where)


def iter_packets(data: bytes, where: str = "shard") -> Iterator[tuple[int, Packet]]:
    """Yield ``(offset, packet)`` for each packet of a shard (or any run of packets)."""
    f = io.BytesIO(data)
    while f.tell() < len(data):
        off = f.tell()
        yield off, read_packet(f, f"{where} @{off}")


# --------------------------------------------------------------------------- footer


@dataclass(frozen=True)
class IndexEntry:
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
    stats: Sequence[dict[str, Any]] | None = None,
    carry: CarryRef | None = None,
    *,
    version: int = VERSION,
) -> bytes:
    """The footer (without the trailer). ``carry`` locates the carry section, which sits
    right after the last packet (offset = end of the packets); None means no section.
    ``version`` must be the header's."""
    _check_version(version)
    stats_json = _canonical_json({"frames": list(stats or [])})
    parts = (
        [FOOTER_MAGIC, _U64.pack(len(entries))]
        + [_ENTRY.pack(e.frame_index, e.offset, e.length) for e in entries]
        + [_U32.pack(len(stats_json)), stats_json]
    )
    if version >= CARRY_VERSION:
        parts += [_U64.pack(carry.offset if carry else 0), _U64.pack(carry.length if carry else 0)]
    elif carry is not None and carry.length:
        raise BitstreamError("format version 1 has no carry section", hint="write version 2 or drop the carried streams")
    block = b"".join(parts)
    return block + _U32.pack(crc32(block))


# --------------------------------------------------------------------------- carry section


def carry_bytes(info: dict[str, Any], blob: bytes | None = None) -> bytes:
    """The carry section: ``info`` (canonical JSON: the description of the carried streams,
    :meth:`pipeline.carry.CarryInfo.to_dict`) and ``blob`` (the streams themselves, a
    Matroska file; may be empty). Each part has its own CRC, so ``info`` is read without
    reading the blob."""
    ij = _canonical_json(info)
    blob = blob or b""
    return b"".join(
        [CARRY_MAGIC, _U32.pack(len(ij)), ij, _U32.pack(crc32(ij)), _U64.pack(len(blob)), _U32.pack(crc32(blob)), blob]
    )


_CARRY_FIXED = len(CARRY_MAGIC) + 4 + 4 + 8 + 4  # everything but info_json and blob


def carry_info_of(section: bytes) -> dict[str, Any]:
    """The info JSON of a carry section made by :func:`carry_bytes` (e.g. a staged one, for
    a manifest: ``CarryInfo.from_dict(carry_info_of(section)).to_rows()``)."""
    if section[:4] != CARRY_MAGIC or len(section) < _CARRY_FIXED:
        raise BitstreamError("not a carry section (magic missing)", hint="pass bytes made by carry_bytes")
    (n,) = _U32.unpack_from(section, 4)
    ij = section[8 : 8 + n]
    if len(ij) < n or len(section) < 8 + n + 4 or _U32.unpack_from(section, 8 + n)[0] != crc32(ij):
        raise ChecksumError("carry section: info CRC mismatch or truncated", hint="re-create the section")
    return json.loads(ij)


def index_for(header_size: int, packet_lengths: Iterable[tuple[int, int]]) -> list[IndexEntry]:
    """Index of packets laid out after a header: ``packet_lengths`` yields
    ``(frame_index, length)`` in stream order."""
    entries, off = [], header_size
    for idx, ln in packet_lengths:
        entries.append(IndexEntry(idx, off, ln))
        off += ln
    return entries


def assemble(
    header: StreamHeader,
    shards: Sequence[bytes],
    stats: Sequence[dict[str, Any]] | None = None,
    carry: bytes | None = None,
    *,
    version: int = VERSION,
) -> bytes:
    """header + shard bytes in order + carry section (:func:`carry_bytes`) + footer (the
    local reassembly path)."""
    hb = header.to_bytes(version)
    lengths = [(p.frame_index, len(p.to_bytes())) for s in shards for _, p in iter_packets(s)]
    body = b"".join(shards)
    entries = index_for(len(hb), lengths)
    carry = carry or b""
    ref = CarryRef(len(hb) + len(body), len(carry)) if carry else None
    footer_off = len(hb) + len(body) + len(carry)
    return hb + body + carry + footer_bytes(entries, stats, ref, version=version) + trailer_bytes(footer_off)


def trailer_bytes(footer_offset: int) -> bytes:
    return _U64.pack(footer_offset) + END_MAGIC


# --------------------------------------------------------------------------- writer


class StreamWriter:
    """Writes a stream to a binary file object: header now, packets as they come, footer
    at :meth:`close`. Atomicity (temp file + rename) is the caller's job
    (:func:`pipeline.storage.open_write`)."""

    def __init__(self, f: BinaryIO, header: StreamHeader, *, version: int = VERSION) -> None:
        self._f = f
        self.header = header
        self.version = version
        hb = header.to_bytes(version)
        f.write(hb)
        self._pos = len(hb)
        self._entries: list[IndexEntry] = []
        self._stats: list[dict[str, Any]] = []

    def write(self, packet: Packet, stats: dict[str, Any] | None = None) -> int:
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
        """Write the carry section (``carry``, from :func:`carry_bytes`; version 2 only),
        the footer and the trailer."""
        if len(self._entries) != self.header.frame_count:
            raise BitstreamError(
                f"stream declares {self.header.frame_count} frames but {len(self._entries)} were written",
                hint="this is a bug in the caller",
            )
        ref = None
        if carry:
            if self.version < CARRY_VERSION:
                raise BitstreamError("format version 1 has no carry section", hint="write version 2 or drop the carried streams")
            self._f.write(carry)
            ref = CarryRef(self._pos, len(carry))
            self._pos += len(carry)
        self._f.write(footer_bytes(self._entries, self._stats, ref, version=self.version))
        self._f.write(trailer_bytes(self._pos))


# --------------------------------------------------------------------------- reader


class StreamReader:
    """Random access to a stream: ``reader.header``, ``len(reader)``, ``reader[n]``,
    iteration in frame order, and the per-frame ``stats`` the encoder recorded."""

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
            raise TruncatedStreamError(f"{self.name}: no footer (file is truncated)", hint="re-encode or re-download it")
        f.seek(end - TRAILER_SIZE)
        trailer = f.read(TRAILER_SIZE)
        (footer_off,) = _U64.unpack(trailer[:8])
        if trailer[8:] != END_MAGIC or not self.header_size <= footer_off < end - TRAILER_SIZE:
            raise TruncatedStreamError(f"{self.name}: footer missing or truncated", hint="the stream was cut short; re-encode or re-download it")
        f.seek(footer_off)
        block = f.read(end - TRAILER_SIZE - footer_off)
        if len(block) < 4 or _U32.unpack(block[-4:])[0] != crc32(block[:-4]):
            raise ChecksumError(f"{self.name}: footer CRC mismatch", hint="the file is corrupt; re-encode or re-download it")
        body = block[:-4]
        if body[:4] != FOOTER_MAGIC:
            raise BitstreamError(f"{self.name}: footer magic missing", hint="the file is corrupt")
        (count,) = _U64.unpack_from(body, 4)
        pos = 12
        self.index = [IndexEntry(*_ENTRY.unpack_from(body, pos + i * _ENTRY.size)) for i in range(count)]
        pos += count * _ENTRY.size
        (slen,) = _U32.unpack_from(body, pos)
        self.stats: list[dict[str, Any]] = json.loads(body[pos + 4 : pos + 4 + slen])["frames"]
        pos += 4 + slen
        #: Where the carry section is (None: no section, or a version 1 stream).
        self.carry: CarryRef | None = None
        if self.version >= CARRY_VERSION:
            if len(body) < pos + 16:
                raise BitstreamError(f"{self.name}: footer has no carry fields", hint="the file is corrupt or from an incompatible writer")
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
        if not 0 <= n < len(self.index):
            raise IndexError(f"frame {n} out of range 0..{len(self.index) - 1}")
        e = self.index[n]
        self._f.seek(e.offset)
        p = read_packet(self._f, f"{self.name} frame {n}")
        if p.frame_index != e.frame_index:
            raise BitstreamError(f"{self.name}: index points frame {e.frame_index} at a packet of frame {p.frame_index}", hint="the stream is corrupt")
        return p

    def __iter__(self) -> Iterator[Packet]:
        for n in range(len(self)):
            yield self[n]

    def _carry_head(self) -> tuple[dict[str, Any], int]:
        """The carry info and the offset of the blob's length field."""
        assert self.carry is not None
        f = self._f
        f.seek(self.carry.offset)
        head = f.read(8)
        if len(head) < 8 or head[:4] != CARRY_MAGIC:
            raise BitstreamError(f"{self.name}: carry section magic missing", hint="the file is corrupt; re-encode it")
        (n,) = _U32.unpack_from(head, 4)
        if 8 + n + 4 + 12 > self.carry.length:
            raise BitstreamError(f"{self.name}: carry info overruns its section", hint="the file is corrupt; re-encode it")
        ij = f.read(n)
        crc = f.read(4)
        if len(ij) < n or len(crc) < 4:
            raise TruncatedStreamError(f"{self.name}: carry section is truncated", hint="re-encode or re-download it")
        if _U32.unpack(crc)[0] != crc32(ij):
            raise ChecksumError(f"{self.name}: carry info CRC mismatch", hint="the file is corrupt; re-encode or re-download it")
        try:
            info = json.loads(ij)
        except ValueError as exc:
            raise BitstreamError(f"{self.name}: carry info is malformed ({exc})", hint="the file is corrupt") from exc
        return info, self.carry.offset + 8 + n + 4

    def carry_info(self) -> dict[str, Any] | None:
        """The carry section's description of the carried streams
        (:meth:`pipeline.carry.CarryInfo.from_dict` reads it), or None without a section."""
        if self.carry is None:
            return None
        return self._carry_head()[0]

    def carry_blob(self) -> bytes:
        """The carried streams (a Matroska file; empty when there are none), CRC-checked."""
        if self.carry is None:
            return b""
        _, pos = self._carry_head()
        f = self._f
        f.seek(pos)
        fixed = f.read(12)
        if len(fixed) < 12:
            raise TruncatedStreamError(f"{self.name}: carry section is truncated", hint="re-encode or re-download it")
        (n,) = _U64.unpack_from(fixed, 0)
        (want,) = _U32.unpack_from(fixed, 8)
        if pos + 12 + n != self.carry.offset + self.carry.length:
            raise BitstreamError(f"{self.name}: carry blob length does not match its section", hint="the file is corrupt; re-encode it")
        blob = f.read(n)
        if len(blob) < n:
            raise TruncatedStreamError(f"{self.name}: carry blob is truncated", hint="re-encode or re-download it")
        if crc32(blob) != want:
            raise ChecksumError(f"{self.name}: carry blob CRC mismatch", hint="the file is corrupt; re-encode or re-download it")
        return blob

    def close(self) -> None:
        if self._owns:
            self._f.close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
