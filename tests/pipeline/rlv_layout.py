"""An .rlv stream taken apart into its fields and put back together with every CRC, length
and offset recomputed: what a buggy or hostile writer produces. The stream and fuzz tests
edit one field of a :class:`Layout` and :meth:`Layout.build` the rest consistently, using the
format module's own CRC and struct helpers (:mod:`pipeline.bitstream`).

``overrides`` replace a computed length/offset field by a raw value after everything else
is laid out (e.g. ``{"packet_len": (1, 0xFFFFFFFF)}``), so a single length can lie while
every CRC still holds."""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.bitstream import (
    CARRY_MAGIC,
    END_MAGIC,
    ENTRY_STRUCT,
    FOOTER_MAGIC,
    INTER_VERSION,
    MAGIC,
    PACKET_SYNC,
    U32,
    U64,
    StreamReader,
    crc32,
)

__all__ = ["Layout", "canonical"]


def canonical(obj: Any) -> bytes:
    """JSON as the writer makes it (keys sorted, no whitespace)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Layout:
    """The fields of one stream. ``entries`` None: the index is computed from the packets;
    ``stats`` is the stats JSON before compression (compressed for version 3)."""

    version: int
    header: bytes
    bodies: list[bytes]
    info: bytes | None
    blob: bytes
    stats: bytes
    entries: list[tuple[int, int, int]] | None = None
    stats_raw: bytes | None = None  # the stored stats bytes, as is (no compression)
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes) -> Layout:
        """The fields of the valid stream ``data``."""
        r = StreamReader(io.BytesIO(data))
        (n,) = U32.unpack_from(data, 10)
        header = data[14 : 14 + n]
        bodies = []
        for e in r.index:
            (bl,) = U32.unpack_from(data, e.offset + 2)
            bodies.append(data[e.offset + 6 : e.offset + 6 + bl])
        info, blob = None, b""
        if r.carry is not None:
            o = r.carry.offset
            (il,) = U32.unpack_from(data, o + 4)
            info = data[o + 8 : o + 8 + il]
            (bl,) = U64.unpack_from(data, o + 12 + il)
            blob = data[o + 24 + il : o + 24 + il + bl]
        fo = r.footer_offset
        pos = fo + 12 + ENTRY_STRUCT.size * len(r.index)
        (sl,) = U32.unpack_from(data, pos)
        stats = data[pos + 4 : pos + 4 + sl]
        if r.version >= INTER_VERSION:
            stats = zlib.decompress(stats)
        return cls(r.version, header, bodies, info, blob, stats)

    def copy(self, **changes: Any) -> Layout:
        """A copy with ``changes`` (lists and dicts copied, so edits do not leak)."""
        base = replace(self, bodies=list(self.bodies), overrides=dict(self.overrides))
        if self.entries is not None:
            base.entries = list(self.entries)
        return replace(base, **changes)

    def header_json(self) -> dict[str, Any]:
        """The header JSON, parsed."""
        return json.loads(self.header)

    def build(self) -> bytes:
        """The stream: every CRC recomputed, lengths and offsets from the fields unless
        ``overrides`` name them (``json_len``, ``packet_len`` (i, value), ``info_len``,
        ``blob_len``, ``count``, ``stats_len``, ``carry_offset``, ``carry_length``,
        ``footer_offset``)."""
        ov = self.overrides
        out = bytearray(MAGIC + struct.pack("<H", self.version))
        out += U32.pack(ov.get("json_len", len(self.header))) + self.header
        out += U32.pack(crc32(self.header))
        entries = []
        for i, body in enumerate(self.bodies):
            off = len(out)
            ln = ov["packet_len"][1] if ov.get("packet_len", (None,))[0] == i else len(body)
            out += PACKET_SYNC + U32.pack(ln) + body + U32.pack(crc32(body))
            (frame,) = U64.unpack_from(body, 0) if len(body) >= 8 else (i,)
            entries.append((frame, off, len(out) - off))
        c_off, c_len = 0, 0
        if self.info is not None:
            c_off = len(out)
            out += CARRY_MAGIC + U32.pack(ov.get("info_len", len(self.info))) + self.info
            out += U32.pack(crc32(self.info))
            out += U64.pack(ov.get("blob_len", len(self.blob))) + U32.pack(crc32(self.blob))
            out += self.blob
            c_len = len(out) - c_off
        footer_off = len(out)
        ents = self.entries if self.entries is not None else entries
        stats = self.stats_raw
        if stats is None:
            stats = zlib.compress(self.stats, 9) if self.version >= INTER_VERSION else self.stats
        block = bytearray(FOOTER_MAGIC + U64.pack(ov.get("count", len(ents))))
        for e in ents:
            block += ENTRY_STRUCT.pack(*e)
        block += U32.pack(ov.get("stats_len", len(stats))) + stats
        if self.version >= 2:
            block += U64.pack(ov.get("carry_offset", c_off))
            block += U64.pack(ov.get("carry_length", c_len))
        out += block + U32.pack(crc32(bytes(block)))
        out += U64.pack(ov.get("footer_offset", footer_off)) + END_MAGIC
        return bytes(out)
