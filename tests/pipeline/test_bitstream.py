"""The .rlv container: round trips, shards, random access, and every corruption case."""

from __future__ import annotations

import io
import json
import struct
from fractions import Fraction

import pytest

from pipeline.bitstream import (
    FLAG_REFINED,
    MAGIC,
    Packet,
    StreamHeader,
    StreamReader,
    StreamWriter,
    assemble,
    crc32,
    iter_packets,
    stream_tail,
    trailer_bytes,
)
from pipeline.errors import (
    BadMagicError,
    BitstreamError,
    ChecksumError,
    TruncatedStreamError,
    UnsupportedVersionError,
)
from pipeline.stats import FrameStats


def make_header(frames: int = 5) -> StreamHeader:
    return StreamHeader(
        arch="bmshj2018-factorized",
        quality=3,
        lmbda=0.0067,
        weights_sha256="ab" * 32,
        tables_sha256="cd" * 32,
        width=100,
        height=60,
        padded_width=128,
        padded_height=64,
        frame_rate=Fraction(30000, 1001),
        time_base=Fraction(1, 30000),
        frame_count=frames,
        color={"matrix": "bt709", "range": "limited"},
        refine={"method": "campos", "iters": 5},
        refine_hash="0123456789abcdef",
        latent_kind="factorized",
    )


def make_packets(n: int = 5) -> list[Packet]:
    return [
        Packet(
            i,
            1001 * i,
            (bytes([i]) * (7 + i), b"\x00\xff" * i),
            0xDEAD0000 + i,
            FLAG_REFINED if i % 2 else 0,
        )
        for i in range(n)
    ]


def frame_stats(p: Packet) -> FrameStats:
    n = len(p.to_bytes())
    return FrameStats(
        index=p.frame_index, pts=p.pts, bytes=n, bpp=8 * n / 6000, psnr=30.5, psnr_y=31.25,
        ms_ssim=0.9, rd_before=1.5, rd_after=1.25, iters=5, refined=p.refined,
    )  # fmt: skip


def write_stream(header: StreamHeader, packets: list[Packet]) -> bytes:
    buf = io.BytesIO()
    w = StreamWriter(buf, header)
    for p in packets:
        w.write(p, frame_stats(p))
    w.close()
    return buf.getvalue()


def test_round_trip_and_random_access() -> None:
    header, packets = make_header(), make_packets()
    data = write_stream(header, packets)
    assert data.startswith(MAGIC)
    with StreamReader(io.BytesIO(data)) as r:
        assert r.header == header
        assert r.header.frame_rate == Fraction(30000, 1001)
        assert len(r) == 5
        assert r[3] == packets[3]  # random access through the index
        assert list(r) == packets
        assert r[1].refined and not r[0].refined
        assert [s.index for s in r.stats] == [0, 1, 2, 3, 4]
        assert r.stats == [frame_stats(p) for p in packets]


def test_shards_concatenate_into_the_same_stream() -> None:
    header, packets = make_header(), make_packets()
    stats = [frame_stats(p) for p in packets]
    shards = [
        b"".join(p.to_bytes() for p in packets[:2]),
        b"".join(p.to_bytes() for p in packets[2:]),
    ]
    assert assemble(header, shards, stats) == write_stream(header, packets)
    assert [p for _, p in iter_packets(shards[1])] == packets[2:]


def test_writer_refuses_out_of_order_and_missing_frames() -> None:
    w = StreamWriter(io.BytesIO(), make_header(2))
    w.write(make_packets()[1])
    with pytest.raises(BitstreamError, match="frame order"):
        w.write(make_packets()[0])
    with pytest.raises(BitstreamError, match="declares 2 frames but 1"):
        w.close()


def test_wrong_magic() -> None:
    data = write_stream(make_header(), make_packets())
    with pytest.raises(BadMagicError, match=r"not an \.rlv stream"):
        StreamReader(io.BytesIO(b"GARBAGE!" + data[8:]))


def test_unsupported_version() -> None:
    data = bytearray(write_stream(make_header(), make_packets()))
    struct.pack_into("<H", data, len(MAGIC), 99)
    with pytest.raises(UnsupportedVersionError, match="version 99"):
        StreamReader(io.BytesIO(bytes(data)))


def test_header_crc_mismatch() -> None:
    data = bytearray(write_stream(make_header(), make_packets()))
    data[20] ^= 0x01  # inside the header JSON
    with pytest.raises(ChecksumError, match="header CRC"):
        StreamReader(io.BytesIO(bytes(data)))


def test_packet_crc_mismatch_names_the_frame() -> None:
    data = write_stream(make_header(), make_packets())
    r = StreamReader(io.BytesIO(data))
    off = r.index[2].offset + 30  # inside frame 2's body
    bad = bytearray(data)
    bad[off] ^= 0x40
    r2 = StreamReader(io.BytesIO(bytes(bad)))
    assert r2[1] == make_packets()[1]
    with pytest.raises(ChecksumError, match="frame 2"):
        r2[2]


@pytest.mark.parametrize("cut", [4, 30, -5, -40])
def test_truncation(cut: int) -> None:
    data = write_stream(make_header(), make_packets())
    with pytest.raises((TruncatedStreamError, ChecksumError)):
        StreamReader(io.BytesIO(data[:cut]))


def test_empty_file_is_truncated() -> None:
    with pytest.raises(TruncatedStreamError, match="too short"):
        StreamReader(io.BytesIO(b""))


def test_stream_reader_opens_paths(tmp_path) -> None:
    p = tmp_path / "s.rlv"
    p.write_bytes(write_stream(make_header(), make_packets()))
    with StreamReader(str(p)) as r:
        assert len(r) == 5


def test_stream_tail_is_what_the_writer_appends() -> None:
    header, packets = make_header(), make_packets()
    data = write_stream(header, packets)
    hb = header.to_bytes()
    lengths = [(p.frame_index, len(p.to_bytes())) for p in packets]
    entries, tail = stream_tail(len(hb), lengths, [frame_stats(p) for p in packets])
    assert data.endswith(tail) and len(data) == len(hb) + sum(n for _, n in lengths) + len(tail)
    assert entries == StreamReader(io.BytesIO(data)).index


def test_malformed_footer_stats_name_the_stream_and_frame() -> None:
    header, packets = make_header(2), make_packets(2)
    body = header.to_bytes() + b"".join(p.to_bytes() for p in packets)
    entries = StreamReader(io.BytesIO(write_stream(header, packets))).index
    records = [frame_stats(p).to_stream() for p in packets]
    del records[1]["psnr"]  # frame 1's record lacks a field; the footer CRC is valid
    stats_json = json.dumps({"frames": records}).encode()
    block = (
        b"RLVI" + struct.pack("<Q", len(entries))
        + b"".join(struct.pack("<QQI", e.frame_index, e.offset, e.length) for e in entries)
        + struct.pack("<I", len(stats_json)) + stats_json + bytes(16)
    )  # fmt: skip
    stream = body + block + struct.pack("<I", crc32(block)) + trailer_bytes(len(body))
    with pytest.raises(BitstreamError, match=r"named\.rlv: footer stats of frame 1 are malformed"):
        StreamReader(io.BytesIO(stream), name="named.rlv")
