"""Reading .rlv streams: :class:`StreamReader` (random access to packets, the recorded
per-frame stats and the carried streams) and the footer's stats parser."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.bitstream.format import (
    CARRY_FIXED_SIZE,
    CARRY_VERSION,
    END_MAGIC,
    ENTRY_STRUCT,
    FOOTER_MAGIC,
    HINT_CORRUPT,
    HINT_CUT_SHORT,
    HINT_FOREIGN,
    HINT_REENCODE,
    INTER_VERSION,
    TRAILER_SIZE,
    U32,
    U64,
    CarryRef,
    IndexEntry,
    Packet,
    check_packet_slot,
    crc32,
    parse_header_version,
    read_carry_head,
    read_packet,
)
from pipeline.bitstream.schema import MIN_PACKET_BYTES, check_stats_record, loads_bounded
from pipeline.errors import BitstreamError, ChecksumError, TruncatedStreamError
from pipeline.stats import FrameStats

__all__ = ["STATS_BYTES_PER_FRAME", "StreamReader", "max_footer_bytes"]


#: Largest footer stats accepted per frame (bytes; inflated, for a version-3 stream), plus
#: 64 KiB for the whole block.
STATS_BYTES_PER_FRAME = 4096
_STATS_SLACK = 65536
#: The footer's fixed fields: magic, count, stats_len, carry fields, CRC (bytes).
_FOOTER_FIXED = 4 + 8 + 4 + 16 + 4


def max_footer_bytes(frames: int) -> int:
    """The largest footer (magic to CRC) a reader accepts for a stream of ``frames``
    frames: the index, the stats bound and the fixed fields."""
    return _FOOTER_FIXED + frames * (ENTRY_STRUCT.size + STATS_BYTES_PER_FRAME) + _STATS_SLACK


def _inflate_stats(raw: bytes, frames: int, name: str) -> bytes:
    """The zlib-compressed stats of a version-3 footer, inflated with a bound (so a hostile
    stream cannot make the reader allocate more than ~4 KiB a frame)."""
    limit = STATS_BYTES_PER_FRAME * max(1, frames) + _STATS_SLACK
    try:
        d = zlib.decompressobj()
        out = d.decompress(raw, limit)
        if d.unconsumed_tail or not d.eof:
            raise zlib.error("larger than its bound, or cut short")
    except zlib.error as exc:
        raise BitstreamError(
            f"{name}: footer stats do not inflate ({exc})", hint=HINT_FOREIGN
        ) from exc
    return out


def _parse_stats(raw: bytes, frames: int, name: str) -> list[FrameStats]:
    """The footer's ``stats_json`` as :class:`FrameStats` (at most one record per frame of
    the ``frames``; ``name``: the stream, for errors)."""
    doc = loads_bounded(raw, "footer stats are", name)
    records = doc.get("frames") if isinstance(doc, dict) else None
    if not isinstance(records, list) or len(records) > frames:
        why = (
            f"{len(records)} records for {frames} frames"
            if isinstance(records, list)
            else "not an object with a 'frames' list"
        )
        raise BitstreamError(f"{name}: footer stats are malformed ({why})", hint=HINT_FOREIGN)
    stats = []
    for n, record in enumerate(records):
        check_stats_record(record, n, name)
        try:
            stats.append(FrameStats.from_stream(record))
        except (KeyError, TypeError, ValueError) as exc:
            raise BitstreamError(
                f"{name}: footer stats of frame {n} are malformed ({type(exc).__name__}: {exc})",
                hint=HINT_FOREIGN,
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
        f, name = self._f, self.name
        f.seek(0)
        self.header, self.header_size, self.version = parse_header_version(f, name)
        end = f.seek(0, io.SEEK_END)
        fc = self.header.frame_count
        # Every frame takes a packet and an index entry: bound frame_count by the file.
        if self.header_size + fc * (MIN_PACKET_BYTES + ENTRY_STRUCT.size) + TRAILER_SIZE > end:
            if end < self.header_size + TRAILER_SIZE:
                raise TruncatedStreamError(
                    f"{name}: no footer (file is truncated)", hint=HINT_CUT_SHORT
                )
            raise BitstreamError(
                f"{name}: header field 'frame_count' is invalid ({fc} frames cannot fit in "
                f"{end} bytes)",
                hint=HINT_FOREIGN,
            )
        f.seek(end - TRAILER_SIZE)
        trailer = f.read(TRAILER_SIZE)
        (footer_off,) = U64.unpack(trailer[:8])
        if trailer[8:] != END_MAGIC or not self.header_size <= footer_off < end - TRAILER_SIZE:
            raise TruncatedStreamError(f"{name}: footer missing or truncated", hint=HINT_CUT_SHORT)
        size = end - TRAILER_SIZE - footer_off
        if size > max_footer_bytes(fc):
            raise BitstreamError(
                f"{name}: footer of {size} bytes is above the bound for {fc} frames "
                f"({max_footer_bytes(fc)})",
                hint=HINT_FOREIGN,
            )
        f.seek(footer_off)
        block = f.read(size)
        if len(block) < 4 or U32.unpack(block[-4:])[0] != crc32(block[:-4]):
            raise ChecksumError(f"{name}: footer CRC mismatch", hint=HINT_CORRUPT)
        body = block[:-4]
        if body[:4] != FOOTER_MAGIC:
            raise BitstreamError(f"{name}: footer magic missing", hint="the file is corrupt")
        tail = 16 if self.version >= CARRY_VERSION else 0  # the carry fields
        if len(body) < 12 + 4 + tail:
            raise BitstreamError(
                f"{name}: footer is too short ({len(body)} bytes)", hint=HINT_FOREIGN
            )
        (count,) = U64.unpack_from(body, 4)
        if count != fc:
            raise BitstreamError(
                f"{name}: index lists {count} frames, header declares {fc}",
                hint="the stream was assembled incompletely",
            )
        pos = 12 + count * ENTRY_STRUCT.size
        if pos + 4 + tail > len(body):
            raise BitstreamError(
                f"{name}: footer index of {count} entries overruns the footer", hint=HINT_FOREIGN
            )
        self.index = [
            IndexEntry(*ENTRY_STRUCT.unpack_from(body, 12 + i * ENTRY_STRUCT.size))
            for i in range(count)
        ]
        (slen,) = U32.unpack_from(body, pos)
        if pos + 4 + slen + tail != len(body):
            raise BitstreamError(
                f"{name}: footer stats length {slen} does not fit the footer "
                f"({len(body) - pos - 4 - tail} bytes left)",
                hint=HINT_FOREIGN,
            )
        raw = body[pos + 4 : pos + 4 + slen]
        if self.version >= INTER_VERSION:
            raw = _inflate_stats(raw, fc, name)
        elif slen > STATS_BYTES_PER_FRAME * fc + _STATS_SLACK:
            raise BitstreamError(f"{name}: footer stats are above their bound", hint=HINT_FOREIGN)
        #: The per-frame statistics the encoder recorded, in stream order.
        self.stats: list[FrameStats] = _parse_stats(raw, fc, name)
        pos += 4 + slen
        #: Where the carry section is (None: no section, or a version 1 stream).
        self.carry: CarryRef | None = None
        packets_end = footer_off
        if self.version >= CARRY_VERSION:
            c_off, c_len = U64.unpack_from(body, pos)[0], U64.unpack_from(body, pos + 8)[0]
            if c_len or c_off:
                if (
                    c_off < self.header_size
                    or c_off + c_len != footer_off
                    or c_len < CARRY_FIXED_SIZE
                ):
                    raise BitstreamError(
                        f"{name}: carry section [{c_off}, {c_off + c_len}) does not end at the footer ({footer_off})",
                        hint="the stream was assembled incompletely; re-encode it",
                    )
                self.carry = CarryRef(c_off, c_len)
                packets_end = c_off
        self._check_index(packets_end)
        self.footer_offset = footer_off

    def _check_index(self, packets_end: int) -> None:
        """Every index entry inside ``[header_size, packets_end)``, in frame order, without
        overlaps, at least a minimal packet long."""
        prev_end, prev_frame = self.header_size, -1
        for n, e in enumerate(self.index):
            if not (
                e.offset >= prev_end
                and e.offset + e.length <= packets_end
                and e.length >= MIN_PACKET_BYTES
            ):
                raise BitstreamError(
                    f"{self.name}: index entry {n} points outside the stream "
                    f"([{e.offset}, {e.offset + e.length}) is not within [{prev_end}, {packets_end}))",
                    hint=HINT_FOREIGN,
                )
            if e.frame_index <= prev_frame:
                raise BitstreamError(
                    f"{self.name}: index entry {n} has frame {e.frame_index}, not above "
                    f"the previous entry's {prev_frame}",
                    hint=HINT_FOREIGN,
                )
            prev_end, prev_frame = e.offset + e.length, e.frame_index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, n: int) -> Packet:
        """The packet of the ``n``-th frame (0-based, stream order), read through the index.

        Raises:
            IndexError: ``n`` is out of range.
            TruncatedStreamError, ChecksumError, BitstreamError: a damaged packet, one
                of another frame than the index says, or one naming a rate point slot the
                header does not have (:func:`~pipeline.bitstream.check_packet_slot`).
        """
        if not 0 <= n < len(self.index):
            raise IndexError(f"frame {n} out of range 0..{len(self.index) - 1}")
        e = self.index[n]
        self._f.seek(e.offset)
        p = read_packet(self._f, f"{self.name} frame {n}", e.length)
        if p.frame_index != e.frame_index:
            raise BitstreamError(
                f"{self.name}: index points frame {e.frame_index} at a packet of frame {p.frame_index}",
                hint="the stream is corrupt",
            )
        check_packet_slot(p, self.header, self.name)
        return p

    def __iter__(self) -> Iterator[Packet]:
        for n in range(len(self)):
            yield self[n]

    def _carry_head(self) -> tuple[dict[str, Any], int]:
        """The carry info and the offset of the blob's length field."""
        assert self.carry is not None
        self._f.seek(self.carry.offset)
        info, size = read_carry_head(self._f, self.name, self.carry.length)
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
            raise TruncatedStreamError(
                f"{self.name}: carry section is truncated", hint=HINT_CUT_SHORT
            )
        (n,) = U64.unpack_from(fixed, 0)
        (want,) = U32.unpack_from(fixed, 8)
        if pos + 12 + n != self.carry.offset + self.carry.length:
            raise BitstreamError(
                f"{self.name}: carry blob length does not match its section", hint=HINT_REENCODE
            )
        blob = f.read(n)
        if len(blob) < n:
            raise TruncatedStreamError(f"{self.name}: carry blob is truncated", hint=HINT_CUT_SHORT)
        if crc32(blob) != want:
            raise ChecksumError(f"{self.name}: carry blob CRC mismatch", hint=HINT_CORRUPT)
        return blob

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._owns:
            self._f.close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
