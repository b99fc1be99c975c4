"""Carried streams end to end on real files made here with PyAV: several audio tracks with
language tags, a subtitle track, an audio track that starts late, chapters, an attachment,
corrupt audio; and the container: version 2 carry section, version 1 streams still decode,
and the distributed assembler's building blocks give the same bytes as the writer.

Sources are tiny (64x48, 10 frames, < 1 s of audio) so each encode/decode takes a few
seconds. The model is the shipped default when there is one, else the 70 KB random
checkpoint committed for the v1 fixture (carrying does not depend on the model)."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import av
import pytest

from jobs.cli import main
from pipeline import bitstream as bs
from pipeline import errors
from pipeline.errors import CorruptSourceError, UnsupportedStreamError
from pipeline.media import CarryInfo, CarryMuxer, extract_carry
from pipeline.models import load_cards
from tests.conftest import REPO_ROOT
from tests.media import (
    FRAME,
    assert_same_packets,
    first_video_time,
    make_source,
    mkv_source,
    packets_by_stream,
    streams_of,
)

DATA = REPO_ROOT / "tests" / "data"
TINY = DATA / "v1_tiny_weights.pth"  # bmshj2018-factorized N=8 M=8, random (seed 11)


def model_args() -> list[str]:
    return [] if load_cards()["models"] else ["--checkpoint", str(TINY), "--quality", "3"]


def decode_args() -> list[str]:
    return [] if load_cards()["models"] else ["--checkpoint", str(TINY)]


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- library


def test_extract_describes_and_copies_every_stream(tmp_path: Path) -> None:
    src = mkv_source(tmp_path, rotation=90)
    blob, info = extract_carry(src)
    assert blob and info.format == "matroska"
    assert [(s.type, s.codec, s.language) for s in info.streams] == [
        ("audio", "aac", "eng"), ("audio", "mp2", "fra"), ("subtitle", "subrip", "deu"),
        ("attachment", "application/x-truetype-font", None),
    ]  # fmt: skip
    assert [s.title for s in info.streams[:2]] == ["Main", "Doublage"]
    mp2 = info.streams[1]
    assert 0.45 < mp2.start < 0.51 and mp2.packets == 4  # the late track keeps its start
    assert [c["metadata"]["title"] for c in info.chapters] == ["Opening", "End"]
    assert info.metadata["title"] == "A title"
    assert info.video["rotation"] == 90
    assert not info.dropped
    with src.open(
        "rb"
    ) as fh:  # a file object (S3 ranged reads) gives the same, deterministic bytes
        assert extract_carry(fh) == (blob, info)
    # The blob holds the source's packets, byte for byte, at the source's times.
    src_pk, blob_pk = packets_by_stream(src), packets_by_stream(blob)
    assert src_pk.keys() == blob_pk.keys()
    for key in src_pk:
        assert_same_packets(src_pk[key], blob_pk[key], bound=0.001)
    # JSON round trip and manifest rows.
    again = CarryInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert again == info
    rows = info.to_rows()
    assert [(r["type"], r["codec"], r["language"], r["status"]) for r in rows][:2] == [
        ("audio", "aac", "eng", "carried"), ("audio", "mp2", "fra", "carried"),
    ]  # fmt: skip
    assert all(r["bytes"] > 0 and r["duration"] >= 0 for r in rows)
    assert rows[0]["duration"] == pytest.approx(14 * 1024 / 16000, abs=0.07)


def test_frame_range_trims_the_carried_streams(tmp_path: Path) -> None:
    src = mkv_source(tmp_path)
    # Frames [2, 6): video span [0.08 s, 0.24 s).
    blob, info = extract_carry(src, start=Fraction(2, 25), end=Fraction(6, 25))
    assert info.span == ("2/25", "6/25")
    kept = packets_by_stream(blob)
    whole = packets_by_stream(src)
    aac = whole[("audio", "eng")]
    expect = [(t, b) for (t, b) in aac if t < 0.24 and t + 0.064 > 0.08]  # 1024 samples = 64 ms
    assert kept[("audio", "eng")] == expect
    assert ("audio", "fra") not in kept  # starts at 0.5 s, after the span: not carried, recorded
    assert [(s.language, s.packets) for s in info.streams] == [
        ("eng", len(expect)),
        ("deu", 1),
        (None, 0),
    ]
    assert [(d.language, d.kind, d.reason) for d in info.dropped] == [
        ("fra", "empty", "no packets in the coded span")
    ]
    assert [c["metadata"]["title"] for c in info.chapters] == [
        "Opening",
        "End",
    ]  # 0-0.2 s, 0.2-0.4 s
    _, info = extract_carry(src, end=Fraction(4, 25))
    assert [c["metadata"]["title"] for c in info.chapters] == ["Opening"]


def test_corrupt_audio_names_the_stream_or_is_dropped(tmp_path: Path) -> None:
    src = make_source(
        tmp_path / "bad.mkv",
        audio=[{"codec": "aac", "lang": "eng"}, {"codec": "aac", "lang": "spa", "title": "Broken"}],
    )
    data = bytearray(src.read_bytes())
    spa = packets_by_stream(src)[("audio", "spa")]
    for _, payload in spa[2:6]:  # overwrite the payload of four packets, keep the container intact
        off = data.find(payload)
        assert off > 0
        data[off + 2 : off + len(payload)] = b"\xff" * (len(payload) - 2)
    src.write_bytes(bytes(data))
    with pytest.raises(CorruptSourceError) as exc:
        extract_carry(src)
    msg = str(exc.value)
    assert (
        "bad.mkv" in msg and "audio stream #2 (aac, spa)" in msg and "--drop-broken-streams" in msg
    )
    warnings: list[str] = []
    _blob, info = extract_carry(src, drop_broken=True, warn=warnings.append)
    assert [s.language for s in info.streams] == ["eng"]
    assert [(d.index, d.kind, d.language) for d in info.dropped] == [(2, "broken", "spa")]
    assert len(warnings) == 1 and "audio stream #2 (aac, spa)" in warnings[0]
    assert [r["status"] for r in info.to_rows()] == ["carried", "broken"]


def test_output_format_that_cannot_hold_a_stream(tmp_path: Path) -> None:
    blob, info = extract_carry(mkv_source(tmp_path))
    warnings: list[str] = []
    mux = CarryMuxer(blob, info, "mp4", dst="out.mp4", warn=warnings.append)
    assert [s.codec for s in mux.plan] == ["aac", "mp2"]
    assert [s.type for s, _ in mux.skipped] == ["subtitle", "attachment"]
    assert "subtitle stream #3 (subrip, deu)" in warnings[0]
    with pytest.raises(UnsupportedStreamError, match="subtitle stream #3"):
        CarryMuxer(blob, info, "mp4", dst="out.mp4", strict=True)
    assert len(CarryMuxer(blob, info, "matroska", strict=True).plan) == 4


# ----------------------------------------------------------------------------- container


def _tiny_stream_parts() -> tuple[bs.StreamHeader, list[bytes], list[dict]]:
    with bs.StreamReader(DATA / "v1_tiny.rlv") as r:
        header, packets, stats = r.header, list(r), r.stats
    return header, [p.to_bytes() for p in packets], stats


def test_v2_writer_and_assembler_agree_and_v1_is_still_written_and_read(tmp_path: Path) -> None:
    header, pkts, stats = _tiny_stream_parts()
    section = bs.carry_bytes({"streams": [], "note": "x"}, b"blob-bytes")
    f = io.BytesIO()
    w = bs.StreamWriter(f, header)
    for p in pkts:
        w.write(bs.read_packet(io.BytesIO(p)), stats[len(w._entries)])
    w.close(section)
    written = f.getvalue()
    # The distributed path: header + shards + carry + footer computed from lengths alone.
    assert bs.assemble(header, [pkts[0], pkts[1]], stats, section) == written
    hb = header.to_bytes()
    entries = bs.index_for(len(hb), [(i, len(p)) for i, p in enumerate(pkts)])
    body_end = len(hb) + sum(map(len, pkts))
    tail = (
        section
        + bs.footer_bytes(entries, stats, bs.CarryRef(body_end, len(section)))
        + bs.trailer_bytes(body_end + len(section))
    )
    assert hb + b"".join(pkts) + tail == written
    r = bs.StreamReader(io.BytesIO(written))
    assert r.version == 2 and r.carry == bs.CarryRef(body_end, len(section))
    assert r.carry_info() == {"streams": [], "note": "x"} and r.carry_blob() == b"blob-bytes"
    assert bs.carry_info_of(section) == {"streams": [], "note": "x"}
    # Without carry (e.g. --no-carry, or a driver that carries nothing): no section.
    plain = bs.assemble(header, pkts, stats)
    r = bs.StreamReader(io.BytesIO(plain))
    assert r.version == 2 and r.carry is None and r.carry_info() is None and r.carry_blob() == b""
    # Version 1 is still written, byte-identical to the v1 fixture, and read.
    v1 = bs.assemble(header, pkts, stats, version=1)
    assert v1 == (DATA / "v1_tiny.rlv").read_bytes()
    with pytest.raises(errors.BitstreamError):
        bs.assemble(header, pkts, stats, section, version=1)
    # A damaged carry blob is caught by its CRC; the info still reads.
    bad = bytearray(written)
    bad[body_end + len(section) - 3] ^= 1
    r = bs.StreamReader(io.BytesIO(bytes(bad)))
    assert r.carry_info() is not None
    with pytest.raises(errors.ChecksumError):
        r.carry_blob()


def test_v1_stream_still_decodes(tmp_path: Path, capsys) -> None:
    """tests/data/v1_tiny.rlv was written by the version 1 code (commit 2d16d89)."""
    src = DATA / "v1_tiny.rlv"
    code, out, err = run(capsys, "info", src, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["version"] == 1 and info["carry"] is None and info["carried_streams"] == []
    for name in ("v1.mkv", "v1.y4m"):
        code, out, err = run(
            capsys, "decode", src, tmp_path / name, "--checkpoint", TINY, "--no-progress"
        )
        assert code == 0, err
        with av.open(str(tmp_path / name)) as c:
            assert [s.type for s in c.streams] == ["video"]
            assert len(list(c.decode(video=0))) == 2


# ----------------------------------------------------------------------------- CLI round trips


def test_mkv_round_trip_keeps_tracks_languages_packets_and_sync(tmp_path: Path, capsys) -> None:
    src = mkv_source(tmp_path, rotation=90)
    rlv = tmp_path / "film.rlv"
    code, out, err = run(
        capsys, "encode", src, rlv, "--refine", "none", "--no-progress", *model_args()
    )
    assert code == 0, err
    assert "carried     4 stream(s)" in out
    # The distributed driver's call gives the very section `relatent encode` wrote.
    blob, info = extract_carry(src)
    with bs.StreamReader(rlv) as r:
        assert r.carry is not None
        r._f.seek(r.carry.offset)
        assert r._f.read(r.carry.length) == bs.carry_bytes(info.to_dict(), blob)
    code, out, _ = run(capsys, "info", rlv)
    assert code == 0
    assert (
        "aac" in out
        and "eng" in out
        and "mp2" in out
        and "fra" in out
        and "subrip" in out
        and "2 chapter(s)" in out
    )
    code, out, _ = run(capsys, "info", rlv, "--json")
    rows = json.loads(out)["carried_streams"]
    assert [(r["type"], r["codec"], r["language"]) for r in rows][:3] == [
        ("audio", "aac", "eng"),
        ("audio", "mp2", "fra"),
        ("subtitle", "subrip", "deu"),
    ]

    dst = tmp_path / "out.mkv"
    code, out, err = run(capsys, "decode", rlv, dst, "--no-progress", *decode_args())
    assert code == 0, err
    assert streams_of(dst) == [("video", "h264", None), ("audio", "aac", "eng"), ("audio", "mp2", "fra"),
                               ("subtitle", "subrip", "deu"), ("attachment", None, None)]  # fmt: skip
    src_pk, out_pk = packets_by_stream(src), packets_by_stream(dst)
    for key in src_pk:
        assert_same_packets(src_pk[key], out_pk[key])
    assert abs(first_video_time(dst) - first_video_time(src)) < FRAME
    with av.open(str(dst)) as c:
        assert [ch["metadata"]["title"] for ch in c.chapters()] == ["Opening", "End"]
        assert c.metadata["title"] == "A title"
        assert [s.metadata.get("title") for s in c.streams.audio] == ["Main", "Doublage"]
        assert c.streams.audio[1].start_time * c.streams.audio[1].time_base == pytest.approx(
            mp2_start(src), abs=0.002
        )
        assert next(c.decode(video=0)).rotation == 90

    # mp4 cannot hold SubRip or attachments: warned and skipped; --strict fails, nothing left.
    out_dir = tmp_path / "mp4"
    out_dir.mkdir()
    code, out, err = run(
        capsys, "decode", rlv, out_dir / "out.mp4", "--no-progress", *decode_args()
    )
    assert code == 0, err
    assert (
        "warning" in err
        and "subtitle stream #3 (subrip, deu)" in err
        and "attachment stream #4" in err
    )
    got = streams_of(out_dir / "out.mp4")
    assert [(t, lang) for t, _, lang in got[:3]] == [
        ("video", "und"),
        ("audio", "eng"),
        ("audio", "fra"),
    ]
    assert got[1][1] == "aac" and got[2][1] in (
        "mp2",
        "mp3",
    )  # mp4 tags MPEG-1 layer II like layer III
    assert [t for t, _, _ in got[3:]] in ([], ["data"])  # mp4 keeps chapters in a text track
    with av.open(str(out_dir / "out.mp4")) as c:
        assert [ch["metadata"]["title"] for ch in c.chapters()] == ["Opening", "End"]
    out_pk = packets_by_stream(out_dir / "out.mp4")
    for key in [("audio", "eng"), ("audio", "fra")]:
        assert_same_packets(src_pk[key], out_pk[key])
    code, _, err = run(
        capsys, "decode", rlv, out_dir / "strict.mp4", "--strict", "--no-progress", *decode_args()
    )
    assert code == 2 and "strict.mp4" in err and "subtitle stream #3 (subrip, deu)" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["out.mp4"]

    # --video-only and y4m: the video alone.
    code, _, err = run(
        capsys, "decode", rlv, tmp_path / "vo.mkv", "--video-only", "--no-progress", *decode_args()
    )
    assert code == 0, err
    assert streams_of(tmp_path / "vo.mkv") == [("video", "h264", None)]
    code, _, err = run(capsys, "decode", rlv, tmp_path / "v.y4m", "--no-progress", *decode_args())
    assert code == 0 and "video-only" in err
    code, _, err = run(
        capsys, "decode", rlv, tmp_path / "strict.y4m", "--strict", "--no-progress", *decode_args()
    )
    assert code == 2 and "video-only" in err and "--video-only" in err
    assert not (tmp_path / "strict.y4m").exists()


def mp2_start(src: Path) -> float:
    with av.open(str(src)) as c:
        a = c.streams.audio[1]
        return float(a.start_time * a.time_base)


def test_mp4_source_with_mov_text_and_late_audio(tmp_path: Path, capsys) -> None:
    src = make_source(
        tmp_path / "clip.mp4",
        audio=[
            {"codec": "aac", "lang": "eng"},
            {"codec": "aac", "lang": "ita", "start": 8000, "packets": 5},
        ],
        subtitle={"codec": "mov_text", "lang": "deu", "text": b"\x00\x05Hallo"},
    )
    rlv = tmp_path / "clip.rlv"
    code, _out, err = run(
        capsys, "encode", src, rlv, "--refine", "none", "--no-progress", *model_args()
    )
    assert code == 0, err
    dst = tmp_path / "out.mp4"
    code, _, err = run(capsys, "decode", rlv, dst, "--strict", "--no-progress", *decode_args())
    assert code == 0, err
    assert streams_of(dst) == [
        ("video", "h264", "und"),
        ("audio", "aac", "eng"),
        ("audio", "aac", "ita"),
        ("subtitle", "mov_text", "deu"),
    ]
    src_pk, out_pk = packets_by_stream(src), packets_by_stream(dst)
    assert src_pk.keys() == out_pk.keys()
    for key in src_pk:
        assert_same_packets(src_pk[key], out_pk[key], bound=0.001)  # MOV blob: exact time bases
    assert out_pk[("audio", "ita")][0][0] == pytest.approx(0.5, abs=0.07)  # still starts late
    # Matroska cannot hold mov_text: skipped with a warning naming it.
    code, _, err = run(capsys, "decode", rlv, tmp_path / "out.mkv", "--no-progress", *decode_args())
    assert code == 0 and "subtitle stream #3 (mov_text, deu)" in err
    # A frame range that does not start at 0 keeps the source's times: frames [5, 8) are
    # [0.2 s, 0.32 s); the audio packets overlapping it come along, in sync with the video.
    part = tmp_path / "part.rlv"
    code, _, err = run(
        capsys,
        "encode",
        src,
        part,
        "--start",
        "5",
        "--end",
        "8",
        "--refine",
        "none",
        "--no-progress",
        *model_args(),
    )
    assert code == 0, err
    dst = tmp_path / "part.mp4"
    code, _, err = run(capsys, "decode", part, dst, "--no-progress", *decode_args())
    assert code == 0, err
    assert first_video_time(dst) == pytest.approx(0.2, abs=0.001)
    eng = packets_by_stream(dst)[("audio", "eng")]
    assert_same_packets(
        [(t, b) for t, b in src_pk[("audio", "eng")] if 0.2 - 0.064 < t < 0.32], eng, bound=0.001
    )
    assert eng[0][0] <= 0.2 + 0.001 and eng[0][0] + 0.064 > 0.2
    assert streams_of(dst) == [
        ("video", "h264", "und"),
        ("audio", "aac", "eng"),
        ("subtitle", "mov_text", "deu"),
    ]


def test_corrupt_audio_via_cli_fails_cleanly_or_is_dropped(tmp_path: Path, capsys) -> None:
    src = make_source(
        tmp_path / "bad.mkv",
        audio=[{"codec": "aac", "lang": "eng"}, {"codec": "aac", "lang": "spa"}],
    )
    data = bytearray(src.read_bytes())
    for _, payload in packets_by_stream(src)[("audio", "eng")][3:5]:
        off = data.find(payload)
        data[off + 2 : off + len(payload)] = b"\xff" * (len(payload) - 2)
    src.write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(
        capsys, "encode", src, out_dir / "x.rlv", "--refine", "none", "--no-progress", *model_args()
    )
    assert (
        code == 3
        and "bad.mkv" in err
        and "audio stream #1 (aac, eng)" in err
        and "--drop-broken-streams" in err
    )
    assert not list(out_dir.iterdir())
    code, out, err = run(
        capsys,
        "encode",
        src,
        out_dir / "x.rlv",
        "--refine",
        "none",
        "--drop-broken-streams",
        "--no-progress",
        *model_args(),
    )
    assert code == 0, err
    assert "warning" in err and "audio stream #1 (aac, eng)" in err and "dropped 1" in out
    code, out, _ = run(capsys, "info", out_dir / "x.rlv", "--json")
    rows = json.loads(out)["carried_streams"]
    assert [(r["language"], r["status"]) for r in rows] == [("spa", "carried"), ("eng", "broken")]
    code, out, _ = run(
        capsys,
        "encode",
        src,
        out_dir / "y.rlv",
        "--no-carry",
        "--refine",
        "none",
        "--no-progress",
        *model_args(),
    )
    assert code == 0
    with bs.StreamReader(out_dir / "y.rlv") as r:
        assert (
            r.version >= bs.CARRY_VERSION and r.carry is None
        )  # a version with carry, none written
