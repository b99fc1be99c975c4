"""Every header, footer and carry field of a stream is checked against its bounds
(:mod:`pipeline.bitstream.schema`, docs/bitstream.md "Field bounds"), and every length
against the file before anything is allocated for it: a damaged or hostile stream gives a
:class:`~pipeline.errors.BitstreamError` (exit 4) naming the stream and the field, never a
traceback, a huge allocation or a wrong output.

The streams are real ones (``tests/data``) with one field edited and every CRC recomputed
(:class:`tests.pipeline.rlv_layout.Layout`), and the inputs of ``../shared/cases``
(``rlv-header-fields-unvalidated``, ``rlv-footer-fields-unvalidated``), run as their
CASE.md says: ``relatent info`` and ``relatent decode`` to a scratch folder."""

from __future__ import annotations

import io
import json
import re
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from jobs.cli import main
from pipeline.bitstream import StreamHeader, StreamReader, parse_header
from pipeline.bitstream.schema import (
    ARCH_KINDS,
    HEADER_RULES,
    MAX_DIMENSION,
    MAX_HEADER_BYTES,
    MAX_JSON_DEPTH,
    MAX_PIXELS,
    padded_sizes,
)
from pipeline.errors import BitstreamError, TruncatedStreamError
from tests.conftest import REPO_ROOT
from tests.pipeline.rlv_layout import Layout, canonical

DATA = REPO_ROOT / "tests" / "data"
CASES = REPO_ROOT.parent / "shared" / "cases"
GOP = Layout.parse((DATA / "golden_gop.rlv").read_bytes())  # v3, P frames, a carry section
NONE = Layout.parse((DATA / "golden_none.rlv").read_bytes())  # v2


def _edit_header(lay: Layout, **fields: Any) -> Layout:
    return lay.copy(header=canonical({**lay.header_json(), **fields}))


def _read(data: bytes) -> StreamReader:
    """Read ``data`` as ``relatent info`` does: header, stats, carry info and blob, packets."""
    r = StreamReader(io.BytesIO(data), name="s.rlv")
    r.carry_info()
    r.carry_blob()
    list(r)
    return r


def _edit_pts(lay: Layout, frame: int, pts: int) -> Layout:
    bodies = list(lay.bodies)
    body = bytearray(bodies[frame])
    struct.pack_into("<q", body, 8, pts)
    bodies[frame] = bytes(body)
    return lay.copy(bodies=bodies)


def _read_file(path: str) -> None:
    with StreamReader(path, name="s.rlv") as r:
        r.carry_info()
        r.carry_blob()
        list(r)


def _refused(data: bytes, match: str) -> BitstreamError:
    with pytest.raises(BitstreamError, match=match) as info:
        _read(data)
    assert str(info.value).startswith("s.rlv: ")
    return info.value


# --------------------------------------------------------------------------- the cases

HEADER_CASES = {
    "time_base_1_0.rlv": "header field 'time_base' is invalid (0 is not in 1..2147483647)",
    "weights_sha256_null.rlv": "header field 'weights_sha256' is invalid (None is not 64",
    "padded_width_string.rlv": "header field 'padded_width' is invalid ('192' is not an integer)",
    "padded_width_bad.rlv": "header field 'padded_width' is invalid (-64 is not in 1..",
    "header_json_deep_nesting.rlv": "header is malformed (nested deeper than 16 levels)",
    "padded_height_1e6.rlv": "header field 'padded_height' is invalid (1000000 is not in 1..",
    "width_0.rlv": "header field 'width' is invalid (0 is not in 1..65536)",
    "width_minus1.rlv": "header field 'width' is invalid (-1 is not in 1..65536)",
    "width_1e9.rlv": "header field 'width' is invalid (1000000000 is not in 1..65536)",
}
FOOTER_CASES = {
    # The edit that made the stats "not JSON" set the index count to 1 (the header says 3).
    "stats_not_json.rlv": "index lists 1 frames, header declares 3",
    "stats_not_utf8.rlv": "footer stats are malformed ('utf-8' codec can't decode",
    "stats_no_frames_key.rlv": "footer stats are malformed (not an object with a 'frames' list)",
    "stats_frame_missing_bpp.rlv": "footer stats of frame 0 are malformed (field 'bpp' is missing)",
    "stats_bytes_string.rlv": "footer stats of frame 0 are malformed (field 'bytes': 'many' is not an integer)",
    "index_count_overruns.rlv": "index lists 8589934595 frames, header declares 3",
    "index_offset_2p63.rlv": "index entry 2 points outside the stream",
}  # fmt: skip
ALL_CASES = [("rlv-header-fields-unvalidated", f, m) for f, m in HEADER_CASES.items()] + [
    ("rlv-footer-fields-unvalidated", f, m) for f, m in FOOTER_CASES.items()
]


@pytest.mark.parametrize(("case", "file", "message"), ALL_CASES, ids=[c[1] for c in ALL_CASES])
def test_case_info_and_decode_exit_4_naming_the_field_and_write_nothing(
    case: str,
    file: str,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = CASES / case
    if not (folder / file).exists():
        pytest.skip(f"{folder / file} is absent")
    monkeypatch.chdir(folder)  # CASE.md runs from the case's folder
    out = tmp_path / "out"
    out.mkdir()
    capsys.readouterr()
    for argv in (["info", file], ["decode", file, str(out / "o.y4m"), "--no-progress"]):
        tracemalloc.start()
        try:
            code = main(argv)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        err = capsys.readouterr().err
        assert code == 4, err
        assert err == f"relatent {argv[0]}: error: {file}: {err.split(': ', 3)[3]}"
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
        assert peak < 8 * 2**20, f"{argv[0]} allocated {peak / 2**20:.1f} MiB"
        assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- header


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("arch", "cheng2020-anchor", "header field 'arch' is invalid ('cheng2020-anchor' is not one of"),
        ("arch", None, "header field 'arch' is invalid (None is not one of"),
        ("quality", -1, "header field 'quality' is invalid (-1 is not in 0..64)"),
        ("quality", True, "header field 'quality' is invalid (True is not an integer)"),
        ("lmbda", -0.5, "header field 'lmbda' is invalid (-0.5 is not a finite number in [0.0, inf])"),
        ("lmbda", 1e999, "header is malformed (Infinity is not a JSON number)"),
        ("weights_sha256", "AB" * 32, "header field 'weights_sha256' is invalid"),
        ("tables_sha256", "ab" * 31, "header field 'tables_sha256' is invalid"),
        ("width", 65537, "header field 'width' is invalid (65537 is not in 1..65536)"),
        ("height", 2.5, "header field 'height' is invalid (2.5 is not an integer)"),
        ("padded_width", 80, "header field 'padded_width' is invalid (80 is not 64 (width 64, factorized))"),
        ("padded_height", 32, "header field 'padded_height' is invalid (32 is not 48 or 64 (height 48, factorized))"),
        ("frame_rate", [25, 0], "header field 'frame_rate' is invalid (0 is not in 1..2147483647)"),
        ("frame_rate", [-25, 1], "header field 'frame_rate' is invalid (-25 is not in 1.."),
        ("frame_rate", [25], "header field 'frame_rate' is invalid ([25] is not [numerator, denominator])"),
        ("time_base", [1, 2**31], "header field 'time_base' is invalid (2147483648 is not in 1..2147483647)"),
        ("frame_count", 0, "header field 'frame_count' is invalid (0 is not in 1..2147483647)"),
        ("frame_count", 7, "index lists 6 frames, header declares 7"),
        ("frame_count", 10_000, "header field 'frame_count' is invalid (10000 frames cannot fit in"),
        ("color", [], "header field 'color' is invalid (a list, not an object)"),
        ("color", {"matrix": 601}, "header field 'color' is invalid (601 is not a string"),
        ("color", {"bit_depth": 64}, "header field 'color' is invalid (64 is not in 1..32)"),
        ("refine", "none", "header field 'refine' is invalid (a str, not an object)"),
        ("refine_hash", "xyz", "header field 'refine_hash' is invalid ('xyz' is not 16 lowercase hex digits)"),
        ("latent_kind", "scale-hyperprior", "header field 'latent_kind' is invalid (bmshj2018-factorized is factorized)"),
        ("latent_kind", "hyper", "header field 'latent_kind' is invalid ('hyper' is not one of"),
        ("source", None, "header field 'source' is invalid (a NoneType, not an object)"),
        ("gop", 0, "header field 'gop' is invalid (0 is not in 1..100000)"),
        ("gop", 100_001, "header field 'gop' is invalid (100001 is not in 1..100000)"),
        ("extra", 1, "header has an unknown field 'extra'"),
    ],
)  # fmt: skip
def test_header_fields_out_of_bounds_are_refused_by_name(
    field: str, value: Any, message: str
) -> None:
    _refused(_edit_header(GOP, **{field: value}).build(), re.escape(message))


@pytest.mark.parametrize("field", ["arch", "width", "frame_rate", "weights_sha256", "color"])
def test_missing_header_fields_are_named(field: str) -> None:
    d = {k: v for k, v in GOP.header_json().items() if k != field}
    _refused(GOP.copy(header=canonical(d)).build(), f"header field '{field}' is missing")


def test_gop_needs_version_3_and_the_header_must_be_an_object() -> None:
    _refused(
        _edit_header(NONE, gop=3).build(),
        re.escape("header field 'gop' is invalid (gop > 1 needs format version 3, not 2)"),
    )
    _refused(NONE.copy(header=b"[1, 2]").build(), "header is a JSON list, not an object")


_OWN = {k: GOP.header_json()[k] for k in ("quality", "lmbda", "weights_sha256", "tables_sha256")}


def _rated(lay: Layout, points: Any) -> Layout:
    """``lay`` as a version-4 stream with the header's ``rate_points`` set to ``points``."""
    return _edit_header(lay, rate_points=points).copy(version=4)


def _other(quality: int, **changes: Any) -> dict[str, Any]:
    """A rate point entry other than the header's own model."""
    return {**_OWN, "quality": quality, "weights_sha256": f"{quality:064x}", **changes}


def test_a_version_4_header_with_its_own_model_as_the_one_rate_point_is_read() -> None:
    r = _read(_rated(GOP, [_OWN]).build())
    assert r.version == 4 and r.header.rate_points == (_OWN,) and r.header.gop > 1
    r = _read(_rated(NONE, [_OWN | {"quality": NONE.header_json()["quality"]}]).build())
    assert r.version == 4 and r.header.gop == 1  # version 4 need not have a GOP


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([{**_OWN, "quality": 9}], "(entry 0 has quality 9, the header 3 (slot 0 is the header's model))"),
        ([{**_OWN, "lmbda": 0.5}], "(entry 0 has lmbda 0.5, the header 0.0067"),
        ([_other(5), _OWN], "(entry 0 has quality 5, the header 3"),
        ([_OWN, {**_OWN, "weights_sha256": "0" * 64}], "(qualities [3, 3] are not distinct)"),
        ([_OWN] + [_other(q) for q in range(4, 12)], "(9 entries, not 1..8)"),
        ([], "(0 entries, not 1..8)"),
        ({"0": _OWN}, "(a dict, not a list)"),
        ([_OWN, [1]], "(entry 1: a list, not an object)"),
        ([_OWN, _other(4, extra=1)], "(entry 1: unknown key 'extra')"),
        ([_OWN, {k: v for k, v in _other(4).items() if k != "tables_sha256"}], "(entry 1: 'tables_sha256' is missing)"),
        ([_OWN, _other(65)], "(entry 1: 'quality': 65 is not in 0..64)"),
        ([_OWN, {**_other(4), "quality": True}], "(entry 1: 'quality': True is not an integer)"),
        ([_OWN, _other(4, lmbda=0)], "(entry 1: 'lmbda': 0 is not above 0)"),
        ([_OWN, _other(4, lmbda="1")], "(entry 1: 'lmbda': '1' is not a number)"),
        ([_OWN, _other(4, weights_sha256="AB" * 32)], "(entry 1: 'weights_sha256': 'ABAB"),
        ([_OWN, _other(4, tables_sha256=None)], "(entry 1: 'tables_sha256': None is not 64 lowercase hex digits)"),
    ],
)  # fmt: skip
def test_rate_points_are_checked_entry_by_entry(points: Any, message: str) -> None:
    _refused(
        _rated(GOP, points).build(), re.escape(f"header field 'rate_points' is invalid {message}")
    )


def test_rate_points_and_version_4_need_each_other() -> None:
    _refused(
        _edit_header(GOP, rate_points=[_OWN]).build(),
        re.escape(
            "header field 'rate_points' is invalid (rate points need format version 4, not 3)"
        ),
    )
    _refused(
        GOP.copy(version=4).build(),
        re.escape("header field 'rate_points' is missing (format version 4 needs rate points)"),
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested deeper than 16 levels"),
        (b"\xff\xfe{}", "'utf-8' codec can't decode byte 0xff"),
        (b'{"width": NaN}', "NaN is not a JSON number"),
        (b"{", "Expecting property name"),
    ],
)
def test_header_json_is_parsed_strictly(raw: bytes, message: str) -> None:
    _refused(GOP.copy(header=raw).build(), rf"s\.rlv: header is malformed \(.*{re.escape(message)}")


def test_a_deep_header_inside_strings_is_not_nesting() -> None:
    """Brackets inside JSON strings do not count towards the depth bound."""
    d = {**GOP.header_json(), "source": {"pix_fmt": "[" * 1000 + "{" * 1000}}
    r = _read(GOP.copy(header=canonical(d)).build())
    assert r.header.source["pix_fmt"].startswith("[[[")


def test_header_bounds_accept_the_largest_frames_and_padding_of_every_kind() -> None:
    """The bounds themselves are accepted (parse_header alone: no packets needed)."""
    base = GOP.header_json()

    def header(**fields: Any) -> StreamHeader:
        return parse_header(io.BytesIO(_edit_header(GOP, **fields).build()))[0]

    assert header(width=MAX_DIMENSION, padded_width=MAX_DIMENSION).width == 65536
    h = header(width=MAX_DIMENSION, height=MAX_PIXELS // MAX_DIMENSION, padded_width=65536, padded_height=4096)  # fmt: skip
    assert h.width * h.height == MAX_PIXELS == 2**28
    with pytest.raises(BitstreamError, match=r"width \* height is above 268435456"):
        header(width=MAX_DIMENSION, height=4097, padded_width=65536, padded_height=4160)
    assert header(padded_height=64).padded_height == 64  # factorized, padded to 64 (before)
    assert padded_sizes(48, "factorized") == (48, 64)
    assert padded_sizes(48, "mean-scale-hyperprior") == (64,)
    assert padded_sizes(1, "scale-hyperprior") == (64,) and padded_sizes(65, "factorized") == (
        80,
        128,
    )
    assert header(frame_rate=[2**31 - 1, 1], time_base=[1, 2**31 - 1]).time_base.denominator == 2**31 - 1  # fmt: skip
    assert header(gop=100_000, color={}, source={}, quality=0).gop == 100_000
    assert base["arch"] == "bmshj2018-factorized"


def test_the_header_length_is_bounded_before_reading() -> None:
    lay = GOP.copy(overrides={"json_len": 0xFFFFFFFF})
    msg = f"header length 4294967295 is above the bound of {MAX_HEADER_BYTES} bytes"
    _refused(lay.build(), re.escape(msg))


def test_every_header_field_has_a_rule_and_every_arch_is_known() -> None:
    """A new header field needs its bounds here; the schema knows the registry's models."""
    from dataclasses import fields

    from pipeline.models import ARCHITECTURES

    assert {f.name for f in fields(StreamHeader)} == set(HEADER_RULES)
    assert {a: arch.kind for a, arch in ARCHITECTURES.items()} == ARCH_KINDS


def test_valid_streams_of_every_version_are_still_read() -> None:
    for name in ("golden_gop.rlv", "golden_sga.rlv", "golden_none.rlv", "v1_tiny.rlv"):
        data = (DATA / name).read_bytes()
        assert Layout.parse(data).build() == data  # the test layout is the format
        r = _read(data)
        assert len(r) == r.header.frame_count == len(r.stats)


# --------------------------------------------------------------------------- lengths


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("json_len", 0xFFFFFFFF, "header length 4294967295 is above the bound"),
        ("packet_len", (2, 0xFFFFFFFF), "frame 2: packet length 4294967305 differs from its index entry's"),
        ("info_len", 0xFFFFFFFF, "carry info overruns its section"),
        ("blob_len", 2**64 - 1, "carry blob length does not match its section"),
        ("count", 2**64 - 1, "index lists 18446744073709551615 frames, header declares 6"),
        ("stats_len", 0xFFFFFFFF, "footer stats length 4294967295 does not fit the footer"),
        ("carry_offset", 2**64 - 1, "carry section .* does not end at the footer"),
        ("carry_length", 2**64 - 1, "carry section .* does not end at the footer"),
        ("footer_offset", 2**64 - 1, "footer missing or truncated"),
        ("footer_offset", 0, "footer missing or truncated"),
    ],
)  # fmt: skip
def test_hostile_lengths_are_refused_before_anything_is_allocated(
    key: str, value: Any, message: str, tmp_path: Path
) -> None:
    """Read from a real file (a buffered read allocates the length asked for): the reader
    allocates under 1 MiB for a 15 KB stream whatever a length field says."""
    path = tmp_path / "s.rlv"
    path.write_bytes(GOP.copy(overrides={key: value}).build())
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match=message):
            _read_file(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak / 2**20:.1f} MiB"


def test_a_footer_larger_than_its_bound_is_not_read() -> None:
    data = GOP.build()
    lay = GOP.copy(stats_raw=b"x" * (6 * 4096 + 65536 + 1))
    _refused(lay.build(), r"footer of \d+ bytes is above the bound for 6 frames")
    assert len(data) < 20_000


@pytest.mark.parametrize(
    ("entry", "value", "message"),
    [
        (0, (0, 5, 100), r"index entry 0 points outside the stream \(\[5, 105\) is not within \[\d+, \d+\)\)"),
        (3, (3, 2**63, 100), "index entry 3 points outside the stream"),
        (5, (5, None, 10), "index entry 5 points outside the stream"),
        (4, (3, None, None), "index entry 4 has frame 3, not above the previous entry's 3"),
        (1, (1, None, 0xFFFFFFFF), "index entry 1 points outside the stream"),
    ],
)  # fmt: skip
def test_index_entries_stay_inside_the_packets_in_order(
    entry: int, value: tuple, message: str
) -> None:
    entries = [
        (e.frame_index, e.offset, e.length) for e in StreamReader(io.BytesIO(GOP.build())).index
    ]
    entries[entry] = tuple(
        v if v is not None else old for v, old in zip(value, entries[entry], strict=True)
    )
    _refused(GOP.copy(entries=entries).build(), message)


def test_a_packet_shorter_than_its_index_entry_is_refused() -> None:
    bodies = list(GOP.bodies)
    bodies[1] = bodies[1] + b"\x00"  # one byte more than its entry: the entries are kept
    entries = [
        (e.frame_index, e.offset, e.length) for e in StreamReader(io.BytesIO(GOP.build())).index
    ]
    data = GOP.copy(bodies=bodies, entries=entries).build()
    with pytest.raises(BitstreamError, match=re.escape("s.rlv frame 1: packet length 189 differs from its index entry's 188")):  # fmt: skip
        _read(data)


# --------------------------------------------------------------------------- footer stats


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: {"frames": [*s["frames"][:2], "x", *s["frames"][3:]]}, "footer stats of frame 2 are malformed (a str, not an object)"),
        (lambda s: {"frames": [{**s["frames"][0], "refined": 1}]}, "footer stats of frame 0 are malformed (field 'refined': 1 is not true or false)"),
        (lambda s: {"frames": [{**s["frames"][0], "psnr": None}]}, "field 'psnr': None is not a number"),
        (lambda s: {"frames": [{**s["frames"][0], "bpp": -1}]}, "field 'bpp': -1 is not a finite number in [0.0, inf]"),
        (lambda s: {"frames": [{**s["frames"][0], "type": "B"}]}, "field 'type': 'B' is neither 'I' nor 'P'"),
        (lambda s: {"frames": s["frames"] * 2}, "footer stats are malformed (12 records for 6 frames)"),
        (lambda s: {"frames": {}}, "footer stats are malformed (not an object with a 'frames' list)"),
        (lambda s: [], "footer stats are malformed (not an object with a 'frames' list)"),
    ],
)  # fmt: skip
def test_footer_stats_records_are_checked_field_by_field(edit: Any, message: str) -> None:
    for lay in (GOP, NONE):  # zlib-compressed (v3) and plain (v2)
        stats = canonical(edit(json.loads(lay.stats)))
        _refused(lay.copy(stats=stats).build(), re.escape(message))


def test_footer_stats_bombs_and_infinities_are_refused() -> None:
    import zlib

    bomb = zlib.compress(b" " * 10_000_000, 9)
    _refused(GOP.copy(stats_raw=bomb).build(), "footer stats do not inflate")
    inf = NONE.stats.replace(b'"bpp":', b'"bpp":1e999,"x":', 1)
    _refused(NONE.copy(stats=inf).build(), re.escape("field 'bpp': inf is not a finite number"))


# --------------------------------------------------------------------------- carry section


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ([1, 2], "carry info is a JSON list, not an object"),
        (7, "carry info is a JSON int, not an object"),
        ({"streams": "x"}, "carry info field 'streams' is invalid (stream: a str, not a list)"),
        ({"streams": [5]}, "carry info field 'streams' is invalid (stream entry 0: a int, not an object)"),
        ({"format": "avi"}, "carry info field 'format' is invalid ('avi' is not one of None, 'matroska', 'mov')"),
        ({"metadata": {"title": 5}}, "carry info field 'metadata' is invalid (5 is not a string"),
        ({"chapters": [{"id": 1, "start": 0, "end": 5, "time_base": "1/0"}]}, "carry info field 'chapters' is invalid (chapter entry 0: 'time_base': '1/0' has a denominator below 1)"),
        ({"video": {"rotation": "90"}}, "carry info field 'video' is invalid ('rotation': '90' is not a number)"),
        ({"chapters": [{"id": 1, "start": 5, "end": 4, "time_base": "1/1000"}]}, "carry info field 'chapters' is invalid (chapter entry 0: end 4 is before start 5)"),
        ({"chapters": [{"id": 1, "start": -1, "end": 4, "time_base": "1/1000"}]}, "carry info field 'chapters' is invalid (chapter entry 0: 'start': -1 is not in 0.."),
        ({"span": [None]}, "carry info field 'span' is invalid ([None] is not [start, end])"),
        ({"dropped": [{"index": 1}]}, "carry info field 'dropped' is invalid (dropped stream entry 0: 'type' is missing)"),
    ],
)  # fmt: skip
def test_carry_info_of_the_wrong_shape_is_refused(info: Any, message: str) -> None:
    doc = info if not isinstance(info, dict) else {**json.loads(GOP.info or b"{}"), **info}
    _refused(GOP.copy(info=canonical(doc)).build(), re.escape(message))


def test_carry_blob_indexes_must_name_the_blob_streams() -> None:
    doc = json.loads(GOP.info or b"{}")
    doc["streams"][0]["blob_index"] = 3
    _refused(
        GOP.copy(info=canonical(doc)).build(),
        re.escape("carry info field 'streams' is invalid (blob_index values [3] are not 0..0)"),
    )


def test_info_of_a_stream_whose_carry_info_is_a_list_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The AttributeError of the report: ``info`` on a carry section of the wrong type."""
    path = tmp_path / "s.rlv"
    path.write_bytes(GOP.copy(info=b"[]").build())
    assert main(["info", str(path)]) == 4
    err = capsys.readouterr().err
    assert f"{path}: carry info is a JSON list, not an object" in err


def test_decode_refuses_a_bad_blob_colour_or_timestamps_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = GOP.blob[:64] + bytes(len(GOP.blob) - 64)  # CRC recomputed: a hostile writer
    cases = {
        "blob.rlv": (GOP.copy(blob=blob), "o.mkv", "the carry blob"),
        "pts.rlv": (
            _edit_pts(GOP, 2, 0),
            "o.mkv",
            "frame 2 has pts 0 after 40 (timestamps must increase)",
        ),
        "color.rlv": (
            _edit_header(GOP, color={"matrix": "xyz", "range": "limited", "bit_depth": 8}),
            "o.y4m",
            "header field 'color' is invalid (colour matrix 'xyz' is not one of",
        ),
    }
    for name, (lay, out, message) in cases.items():
        src, dst = tmp_path / name, tmp_path / "out" / out
        dst.parent.mkdir(exist_ok=True)
        src.write_bytes(lay.build())
        code = main(["decode", str(src), str(dst), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 4 and message in err, err
        # the stream's fields name the stream; the carry muxer names the output it serves
        assert err.startswith(
            f"relatent decode: error: {dst if out == 'o.mkv' and name == 'blob.rlv' else src}: "
        ), err
        assert list(dst.parent.iterdir()) == []


def test_a_truncated_carry_section_is_a_truncation() -> None:
    data = GOP.build()
    r = StreamReader(io.BytesIO(data))
    assert r.carry is not None
    with pytest.raises(TruncatedStreamError):
        StreamReader(io.BytesIO(data[: r.carry.offset + 10]))
