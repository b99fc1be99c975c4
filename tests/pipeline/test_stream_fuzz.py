"""Seeded fuzzing of the stream reader and decoder: thousands of damaged and hostile
variants of small real streams (``tests/data``: version 3 with P frames and a carry
section, version 2, version 1; and the version 3 one rewritten as version 4 with two rate
points) go through the library's read and decode path, and only
relatent's own errors (:class:`~pipeline.errors.RelatentError`) may come out, each case
within :data:`CASE_SECONDS`.

The mutations are those of a damaged file (byte flips, truncations) and of a buggy or
hostile writer (:class:`tests.pipeline.rlv_layout.Layout`: one field edited, every CRC,
length and offset recomputed): header values of every wrong type and bound, raw header
JSON edits (deep nesting, bad UTF-8), packet fields and entropy strings, index entries,
the entry count, stats records and raw stats (zlib bombs), the carry fields, the carry
info and blob, the trailer, and every length field set to 0xFFFFFFFF. The seed is fixed,
so a failure names a case that reproduces."""

from __future__ import annotations

import functools
import io
import json
import random
import signal
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pipeline.bitstream import StreamReader
from pipeline.errors import RelatentError
from pipeline.media import CarryInfo
from pipeline.stats import summarize
from tests.conftest import REPO_ROOT
from tests.pipeline.rlv_layout import Layout, canonical

DATA = REPO_ROOT / "tests" / "data"
#: golden_gop.rlv as version 4: rate points its own model (slot 0, every packet) and the
#: shipped q2 (slot 1), so a packet's flags may name either, or a slot it does not have.
RATED = "golden_gop_v4"
#: Mutations per stream (golden_gop: v3, golden_none: v2, v1_tiny: v1, golden_gop_v4: v4).
CASES = {"golden_gop.rlv": 1400, "golden_none.rlv": 900, "v1_tiny.rlv": 300, RATED: 500}
#: The longest any one case may take (seconds); a hang is stopped at 10 times that.
CASE_SECONDS = 2.0
SEED = 20240518
#: The most Python memory one case may allocate (bytes): a hostile length must be refused
#: before anything is allocated for it.
CASE_PEAK_BYTES = 64 * 2**20

HOSTILE: list[Any] = [
    0, -1, 1, 2, 15, 17, 63, 65, 192, 1_000_000_000, 2**31, 2**63, 2**64, -(2**63), 1e308,
    1e-308, -0.0, 0.5, True, False, None, "", "192", "x" * 300, "ab" * 32, "AB" * 32,
    [], [1], [1, 0], [0, 1], [-1, 1], [1, -1], [2**40, 1], ["1", "2"], [1, 2, 3], {},
    {"a": 1}, [[[[[[]]]]]],
]  # fmt: skip
U32_MAX, U64_MAX = 0xFFFFFFFF, 2**64 - 1


def _hostile(rng: random.Random, old: Any = None) -> Any:
    if isinstance(old, int) and not isinstance(old, bool) and rng.random() < 0.3:
        return old + rng.choice([-64, -16, -1, 1, 16, 64])
    return rng.choice(HOSTILE)


def _int_field(rng: random.Random, old: int) -> int:
    return rng.choice([0, 1, old - 1, old + 1, old * 2, 2**31, 2**63, U32_MAX, U64_MAX])


def _edit_json(rng: random.Random, doc: Any) -> Any:
    """``doc`` with one value somewhere inside replaced, deleted or added."""
    if isinstance(doc, dict) and doc and rng.random() < 0.8:
        key = rng.choice(sorted(doc))
        if rng.random() < 0.15:
            return {k: v for k, v in doc.items() if k != key}
        return {**doc, key: _edit_json(rng, doc[key])}
    if isinstance(doc, list) and doc and rng.random() < 0.8:
        i = rng.randrange(len(doc))
        return [*doc[:i], _edit_json(rng, doc[i]), *doc[i + 1 :]]
    if isinstance(doc, dict) and rng.random() < 0.5:
        return {**doc, "extra": _hostile(rng)}
    return _hostile(rng, doc)


def _edit_bytes(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    kind = rng.randrange(4)
    if kind == 0 and b:  # a few bytes changed
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:  # cut
        del b[rng.randrange(len(b) + 1) :]
    elif kind == 2:  # something inserted: deep nesting, bad UTF-8, NaN, a huge number
        ins = rng.choice([b"[" * 5000, b"{" * 100, b"\xff\xfe", b"NaN", b"1e999", b"9" * 5000])
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = ins
    else:  # all of it replaced
        b = bytearray(rng.choice([b"", b"null", b"[]", b"\x00" * 16, b"[" * 100_000]))
    return bytes(b)


# --------------------------------------------------------------------------- mutations

_BOMBS: list[bytes] = []


def _bombs() -> list[bytes]:
    """Compressed stats that inflate to 50 MB of zeros, 1 MB of ``[`` or binary garbage."""
    if not _BOMBS:
        _BOMBS.extend(
            zlib.compress(b, 9) for b in (b"\x00" * 50_000_000, b"[" * 1_000_000, b"\xff" * 64)
        )
    return _BOMBS


def _flip(rng: random.Random, data: bytes, lay: Layout) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def _truncate(rng: random.Random, data: bytes, lay: Layout) -> bytes:
    return data[: rng.randrange(len(data))]


def _header_value(rng: random.Random, data: bytes, lay: Layout) -> bytes:
    return lay.copy(header=canonical(_edit_json(rng, lay.header_json()))).build()


def _header_raw(rng: random.Random, data: bytes, lay: Layout) -> bytes:
    return lay.copy(header=_edit_bytes(rng, lay.header)).build()


def _lengths(rng: random.Random, data: bytes, lay: Layout) -> bytes:
    keys = ["json_len", "packet_len", "count", "stats_len", "footer_offset"]
    if lay.version >= 2:
        keys += ["carry_offset", "carry_length"]
    if lay.info is not None:
        keys += ["info_len", "blob_len"]
    key = rng.choice(keys)
    wide = key in ("count", "footer_offset", "carry_offset", "carry_length", "blob_len")
    value = rng.choice([U32_MAX, U64_MAX if wide else U32_MAX, 0, 1, rng.randrange(2 * len(data))])
    if key == "packet_len":
        value = (rng.randrange(len(lay.bodies)), min(value, U32_MAX))
    return lay.copy(overrides={key: value}).build()


def _packet(rng: random.Random, data: bytes, lay: Layout) -> bytes:
    i = rng.randrange(len(lay.bodies))
    body = bytearray(lay.bodies[i])
    kind = rng.randrange(3)
    if kind == 0:  # a fixed field: frame_index, pts, flags, latent_crc, string count
        fmt, off = rng.choice([("<Q", 0), ("<q", 8), ("<B", 16), ("<I", 17), ("<B", 21)])
        lim = 2 ** (8 * struct.calcsize(fmt))
        value = rng.choice([0, 1, 2, 3, 255, i + 1, lim // 2 - 1, lim - 1]) % lim
        if fmt == "<q" and value >= lim // 2:
            value -= lim
        struct.pack_into(fmt, body, off, value)
    elif kind == 1 and len(body) >= 26:  # the first string's length
        struct.pack_into("<I", body, 22, rng.choice([0, 1, U32_MAX, len(body)]))
    else:  # the entropy-coded bytes (the decoder sees them)
        body = bytearray(bytes(body[:26]) + _edit_bytes(rng, bytes(body[26:])))
    bodies = list(lay.bodies)
    bodies[i] = bytes(body)
    return lay.copy(bodies=bodies).build()


def _index(rng: random.Random, data: bytes, lay: Layout) -> bytes:
    valid = Layout.parse(data)
    entries = [(e.frame_index, e.offset, e.length) for e in StreamReader(io.BytesIO(data)).index]
    i, j = rng.randrange(len(entries)), rng.randrange(3)
    e = list(entries[i])
    e[j] = _int_field(rng, e[j]) % (U32_MAX + 1 if j == 2 else U64_MAX + 1)
    entries[i] = (e[0], e[1], e[2])
    if rng.random() < 0.2:
        entries = entries[: rng.randrange(len(entries))]
    return valid.copy(entries=entries).build()


def _stats(rng: random.Random, data: bytes, lay: Layout) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return lay.copy(stats=canonical(_edit_json(rng, json.loads(lay.stats)))).build()
    if kind == 1:
        return lay.copy(stats=_edit_bytes(rng, lay.stats)).build()
    if kind == 2:  # a zlib bomb, or stats that inflate to garbage
        return lay.copy(stats_raw=rng.choice(_bombs())).build()
    return lay.copy(stats_raw=_edit_bytes(rng, zlib.compress(lay.stats, 9))).build()


def _carry(rng: random.Random, data: bytes, lay: Layout) -> bytes:
    if lay.info is None:
        return _lengths(rng, data, lay)
    kind = rng.randrange(3)
    if kind == 0:
        return lay.copy(info=canonical(_edit_json(rng, json.loads(lay.info)))).build()
    if kind == 1:
        return lay.copy(info=_edit_bytes(rng, lay.info)).build()
    return lay.copy(blob=_edit_bytes(rng, lay.blob)).build()


MUTATIONS: list[Callable[[random.Random, bytes, Layout], bytes]] = [
    _flip, _truncate, _header_value, _header_value, _header_raw, _lengths, _packet, _packet,
    _index, _stats, _carry, _carry,
]  # fmt: skip


@functools.cache
def _q2() -> Any:
    """The shipped q2 of golden_gop's architecture (skips the caller when not shipped)."""
    from pipeline.models import find_card, load_model

    arch = Layout.parse((DATA / "golden_gop.rlv").read_bytes()).header_json()["arch"]
    if find_card(arch, 2) is None:
        pytest.skip(f"no shipped {arch} q2 weights in this checkout")
    return load_model(arch, 2)


def _stream(name: str) -> bytes:
    """The valid stream ``name``: a file of tests/data, or :data:`RATED` made from one."""
    if name != RATED:
        return (DATA / name).read_bytes()
    lay = Layout.parse((DATA / "golden_gop.rlv").read_bytes())
    h = lay.header_json()
    keys = ("quality", "lmbda", "weights_sha256", "tables_sha256")
    i = _q2().identity
    points = [{k: h[k] for k in keys}, {k: getattr(i, k) for k in keys}]
    return lay.copy(version=4, header=canonical({**h, "rate_points": points})).build()


def _cases(name: str, n: int) -> Iterator[tuple[str, bytes]]:
    data = _stream(name)
    lay = Layout.parse(data)
    rng = random.Random(f"{SEED}:{name}")
    for k in range(n):
        mutate = MUTATIONS[k % len(MUTATIONS)]
        yield f"{name} case {k} ({mutate.__name__})", mutate(rng, data, lay)


# --------------------------------------------------------------------------- the path


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Stop a case that hangs (SIGALRM: the main thread only)."""

    def stop(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _read_and_decode(src: str, decoders: dict[str, Any]) -> int:
    """What ``relatent info`` and ``decode`` do with the stream file ``src``, short of
    writing a file: the header, stats and carry info read and described, the carry blob
    and every packet read, every packet entropy-decoded (symbols CRC checked) with the
    model the header names. Returns the peak of Python's allocations while reading (bytes;
    the decoding is not traced: it is slow under tracing, and allocates by the header's
    sizes, which the reader has bounded)."""
    from pipeline.decoder import FrameDecoder

    tracemalloc.start()
    try:
        r = StreamReader(src)
        packets = _read_all(r)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    with r:
        shas = [p["weights_sha256"] for p in r.header.rate_points] or [r.header.weights_sha256]
        models = [decoders.get(sha) for sha in shas]
        if None not in models:
            dec = FrameDecoder(models, r.header)
            for p in packets:
                dec.advance(p)
    return peak


def _read_all(r: StreamReader) -> list[Any]:
    """Everything ``info`` reads and prints, then the packets (the reader is closed on an
    error)."""
    try:
        h = r.header
        json.dumps(h.to_json())
        assert f"{h.weights_sha256[:16]} {h.width}x{h.height} {h.frame_rate} {h.time_base}"
        summarize(r.stats)
        info = r.carry_info()
        if info is not None:
            CarryInfo.from_dict(info).to_rows()
            r.carry_blob()
        return list(r)
    except BaseException:
        r.close()
        raise


@pytest.fixture(scope="module")
def decoders() -> dict[str, Any]:
    """The shipped models the golden streams need (and :data:`RATED`'s q2, when shipped),
    by weights sha256."""
    from pipeline.decoder import model_for_stream
    from pipeline.models import find_card

    with StreamReader(str(DATA / "golden_gop.rlv")) as r:
        models = [model_for_stream(r.header)]
    if find_card(r.header.arch, 2) is not None:
        models.append(_q2())
    return {m.identity.weights_sha256: m for m in models}


def test_valid_streams_pass_the_path(decoders: dict[str, Any], tmp_path: Path) -> None:
    """The unmutated streams go through the path without an error (the harness works)."""
    for name in CASES:
        if name == RATED and len(decoders) < 2:
            continue  # no shipped q2
        src = tmp_path / "valid.rlv"
        src.write_bytes(_stream(name))
        _read_and_decode(str(src), decoders)


@pytest.mark.parametrize("name", sorted(CASES))
def test_damaged_and_hostile_streams_raise_only_relatent_errors(
    name: str, decoders: dict[str, Any], tmp_path: Path
) -> None:
    """Each case is written to a file and read through :class:`StreamReader` as the CLI
    does (a buffered file: a read of a hostile length would allocate it); the reading
    may not allocate more than :data:`CASE_PEAK_BYTES`."""
    failures: list[str] = []
    slow: list[str] = []
    kinds: dict[str, int] = {}
    src = tmp_path / "fuzz.rlv"
    t_all = time.perf_counter()
    for label, data in _cases(name, CASES[name]):
        src.write_bytes(data)
        t0 = time.perf_counter()
        peak = 0
        try:
            with _deadline(10 * CASE_SECONDS):
                peak = _read_and_decode(str(src), decoders)
        except RelatentError as exc:
            kind = type(exc).__name__
            kinds[kind] = kinds.get(kind, 0) + 1
        except BaseException as exc:  # anything else is the bug looked for
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{label}: {type(exc).__name__}: {exc!s:.200}")
        if peak > CASE_PEAK_BYTES:
            failures.append(f"{label}: allocated {peak / 2**20:.0f} MiB")
        dt = time.perf_counter() - t0
        if dt > CASE_SECONDS:
            slow.append(f"{label}: {dt:.2f} s")
    assert not failures, f"{len(failures)} cases escaped:\n" + "\n".join(failures[:30])
    assert not slow, "cases slower than the bound:\n" + "\n".join(slow[:30])
    # The mutations reach the checks: most cases are refused, by several kinds of error.
    assert sum(kinds.values()) > CASES[name] // 2, kinds
    assert {"BitstreamError", "ChecksumError", "TruncatedStreamError"} <= set(kinds), kinds
    print(f"{name}: {CASES[name]} cases in {time.perf_counter() - t_all:.1f} s, errors {kinds}")


def test_the_cases_are_seeded() -> None:
    """The same seed gives the same cases (a failure reproduces)."""
    a = [d for _, d in _cases("golden_gop.rlv", 40)]
    b = [d for _, d in _cases("golden_gop.rlv", 40)]
    assert a == b and len(set(a)) > 30
