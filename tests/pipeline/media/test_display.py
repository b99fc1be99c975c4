"""How frames are displayed survives encode and decode whatever is carried (issue 18 kind 2):
rotation (the display matrix), sample aspect ratio, field order, colour tags, bit depth and
the container title are recorded in the stream header's ``display``/``color`` and written
back to every output that can hold them; PNG and Y4M frames are rotated as ffmpeg's
``autorotate`` would, and what an output cannot hold is warned about.

Sources are real files written with PyAV (libx264), and the inputs of
``../shared/cases/rotation-lost-without-carry`` and ``../shared/cases/anamorphic-sar-lost``
run as their CASE.md says. Values are read back from the decoded outputs with PyAV."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from jobs.cli import main
from pipeline.bitstream import StreamReader
from pipeline.errors import BitstreamError, ConfigError
from pipeline.media import ColorInfo, DisplayInfo, VideoInfo, probe
from pipeline.media.display import orient, orientation_of, output_notes
from pipeline.models import load_cards
from tests.conftest import REPO_ROOT
from tests.pipeline.rlv_layout import Layout, canonical

DATA = REPO_ROOT / "tests" / "data"
CASES = REPO_ROOT.parent / "shared" / "cases"
TINY = DATA / "v1_tiny_weights.pth"  # bmshj2018-factorized N=8 M=8, random (seed 11)


def model_args() -> list[str]:
    return [] if load_cards()["models"] else ["--checkpoint", str(TINY), "--quality", "3"]


def decode_args() -> list[str]:
    return [] if load_cards()["models"] else ["--checkpoint", str(TINY)]


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def make_video(
    path: Path,
    *,
    pix_fmt: str = "yuv420p",
    frames: int = 2,
    size: tuple[int, int] = (64, 48),
    rotation: tuple[float, bool] | None = None,
    sar: Fraction | None = None,
    x264: str | None = None,
    field_order: int | None = None,
    color: tuple[int, int, int, int] | None = None,
) -> Path:
    """A small libx264 video: ``rotation`` = (degrees counter-clockwise, hflip) for the
    display matrix; ``color`` = (primaries, transfer, matrix, range) H.273 codes."""
    w, h = size
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        cc = s.codec_context
        if color is not None:
            cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = color
        if sar is not None:
            cc.sample_aspect_ratio = sar
        if field_order is not None:
            cc.field_order = field_order
        if rotation is not None:
            s.set_display_rotation(rotation[0], hflip=rotation[1])
        if x264:
            s.options = {"x264-params": x264}
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(frames):
            rgb = np.stack([(xx * 4 + i * 9) % 256, (yy * 5) % 256, np.full_like(xx, 60)], -1)
            f = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            f = f.reformat(format=pix_fmt)
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    return path


def encode(capsys: pytest.CaptureFixture[str], src: Path, rlv: Path, *extra: str) -> str:
    code, _, err = run(
        capsys, "encode", src, rlv, "--refine", "none", "--no-progress", *extra, *model_args()
    )
    assert code == 0, err
    return err


def decode(capsys: pytest.CaptureFixture[str], rlv: Path, dst: Path) -> str:
    code, _, err = run(capsys, "decode", rlv, dst, "--no-progress", *decode_args())
    assert code == 0, err
    return err


def first_frame(path: Path) -> av.VideoFrame:
    with av.open(str(path)) as c:
        return next(c.decode(video=0))


def matrix_of(frame: av.VideoFrame) -> list[int]:
    return np.frombuffer(bytes(frame.side_data["DISPLAYMATRIX"]), dtype=np.int32).tolist()


def y4m_params(path: Path) -> list[str]:
    return path.read_bytes().split(b"\n", 1)[0].decode().split()


def png_size(folder: Path) -> tuple[int, int]:
    f = first_frame(sorted(folder.glob("frame_*.png"))[0])
    return f.width, f.height


# --------------------------------------------------------------------------- the cases


def case_file(case: str, name: str) -> Path:
    p = CASES / case / name
    if not p.exists():
        pytest.skip(f"{p} is absent")
    return p


@pytest.mark.parametrize(
    ("carry", "outputs"),
    [(True, ("mp4", "png")), (False, ("mkv", "y4m"))],
    ids=["carry", "no-carry"],
)
def test_case_rotation_kept_without_audio_and_without_carry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], carry: bool, outputs: tuple[str, ...]
) -> None:
    src = case_file("rotation-lost-without-carry", "rotate90_noaudio.mp4")
    rlv = tmp_path / "r.rlv"
    encode(capsys, src, rlv, *([] if carry else ["--no-carry"]))
    with StreamReader(rlv) as r:
        assert r.header.display == {"rotation": 90}
    for suffix in outputs:
        dst = tmp_path / (f"r.{suffix}" if suffix != "png" else "rpng")
        if suffix == "png":
            dst.mkdir()
        decode(capsys, rlv, dst)
        if suffix in ("mp4", "mkv"):
            assert first_frame(dst).rotation == 90
        elif suffix == "png":
            assert png_size(dst) == (64, 96)  # rotated, as ffmpeg's autorotate
        else:
            assert y4m_params(dst)[1:3] == ["W64", "H96"]
    code, out, _ = run(capsys, "info", rlv)
    assert code == 0 and "display     rotated 90° counter-clockwise (shown 64x96)" in out


@pytest.mark.parametrize(
    ("carry", "suffix"), [(True, "mkv"), (False, "mp4")], ids=["carry", "no-carry"]
)
def test_case_title_kept_without_audio_and_without_carry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], carry: bool, suffix: str
) -> None:
    src = case_file("rotation-lost-without-carry", "title_noaudio.mkv")
    rlv = tmp_path / "t.rlv"
    encode(capsys, src, rlv, *([] if carry else ["--no-carry"]))
    with StreamReader(rlv) as r:  # with carry the carry section holds the tags
        assert r.header.display == ({} if carry else {"title": "My Title"})
    decode(capsys, rlv, tmp_path / f"t.{suffix}")
    with av.open(str(tmp_path / f"t.{suffix}")) as c:
        assert c.metadata.get("title") == "My Title"


def test_case_anamorphic_sar_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = case_file("anamorphic-sar-lost", "anamorphic_sar.mp4")
    rlv = tmp_path / "a.rlv"
    encode(capsys, src, rlv)
    with StreamReader(rlv) as r:
        assert r.header.display == {"sar": [32, 27]}
    for suffix in ("mp4", "mkv"):  # as CASE.md reads them back
        decode(capsys, rlv, tmp_path / f"a.{suffix}")
        with av.open(str(tmp_path / f"a.{suffix}")) as c:
            st = c.streams.video[0]
            assert st.sample_aspect_ratio == Fraction(32, 27)
            assert Fraction(st.codec_context.width, st.codec_context.height) * Fraction(
                32, 27
            ) == Fraction(16, 9)
    (tmp_path / "apng").mkdir()
    decode(capsys, rlv, tmp_path / "apng")
    with av.open(str(sorted((tmp_path / "apng").glob("*.png"))[0])) as c:
        assert c.streams.video[0].sample_aspect_ratio == Fraction(32, 27)  # pHYs
    code, out, _ = run(capsys, "info", rlv)
    assert code == 0 and "SAR 32:27 (DAR 16:9)" in out
    _, out, _ = run(capsys, "info", rlv, "--json")
    assert json.loads(out)["display"]["dar"] == "16:9"


# --------------------------------------------------------------------------- built sources


def test_interlaced_field_order_kept_or_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_video(tmp_path / "bff.mkv", x264="bff=1", field_order=3)
    rlv = tmp_path / "i.rlv"
    encode(capsys, src, rlv, "--no-carry")
    with StreamReader(rlv) as r:
        assert r.header.display == {"field_order": "bb"}
    for suffix in ("mkv", "mp4"):  # coded interlaced, bottom field first (mp4: in the H.264)
        decode(capsys, rlv, tmp_path / f"i.{suffix}")
        with av.open(str(tmp_path / f"i.{suffix}")) as c:
            assert c.streams.video[0].codec_context.field_order == 3
            assert next(c.decode(video=0)).interlaced_frame
    decode(capsys, rlv, tmp_path / "i.y4m")
    assert "Ib" in y4m_params(tmp_path / "i.y4m")
    with av.open(str(tmp_path / "i.y4m")) as c:
        assert c.streams.video[0].codec_context.field_order == 3
    notes = output_notes(DisplayInfo(field_order="bb"), None, "png", "d")
    assert notes == [
        "d: the source is interlaced (bb) but PNG frames cannot be flagged: written as woven "
        "progressive frames (decode to .mkv or .mp4 to keep the field order)"
    ]
    _, out, _ = run(capsys, "info", rlv)
    assert "interlaced, field order bb (bottom field first)" in out


def test_hdr_10bit_source_written_10bit_with_its_colour_tags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # BT.2020 primaries (9), PQ transfer (16), BT.2020 NCL matrix (9), limited range.
    src = make_video(tmp_path / "pq.mp4", pix_fmt="yuv420p10le", color=(9, 16, 9, 1))
    rlv = tmp_path / "pq.rlv"
    encode(capsys, src, rlv, "--no-carry")
    decode(capsys, rlv, tmp_path / "pq.mkv")
    with av.open(str(tmp_path / "pq.mkv")) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.pix_fmt, cc.color_primaries, cc.color_trc, cc.colorspace) == (
            "yuv420p10le", 9, 16, 9,
        )  # fmt: skip
    err = decode(capsys, rlv, tmp_path / "pq.y4m")
    assert "C444p10" in y4m_params(tmp_path / "pq.y4m")
    assert "Y4M cannot hold the colour tags (primaries bt2020, transfer smpte2084)" in err
    (tmp_path / "png").mkdir()
    err = decode(capsys, rlv, tmp_path / "png")
    f = first_frame(sorted((tmp_path / "png").glob("*.png"))[0])
    assert (f.color_primaries, f.color_trc) == (9, 16)  # cICP
    assert "PNG frames are 8-bit RGB (the source has 10-bit samples)" in err
    _, out, _ = run(capsys, "info", rlv)
    assert "10-bit source, primaries bt2020, transfer smpte2084" in out


def test_rotation_with_mirror_and_free_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_video(tmp_path / "m.mp4", rotation=(270, True), sar=Fraction(4, 3))
    rlv = tmp_path / "m.rlv"
    encode(capsys, src, rlv, "--no-carry")
    with StreamReader(rlv) as r:
        assert r.header.display == {"rotation": 270, "hflip": True, "sar": [4, 3]}
    decode(capsys, rlv, tmp_path / "m.mkv")
    assert matrix_of(first_frame(tmp_path / "m.mkv")) == matrix_of(first_frame(src))
    decode(capsys, rlv, tmp_path / "m.y4m")
    params = y4m_params(tmp_path / "m.y4m")
    assert params[1:3] == ["W48", "H64"] and "A3:4" in params  # quarter turn: SAR inverted
    # The y4m holds the decoded frames as they display.
    with av.open(str(tmp_path / "m.y4m")) as c:
        shown = next(c.decode(video=0)).to_ndarray(format="rgb24")
    with av.open(str(tmp_path / "m.mkv")) as c:
        coded = next(c.decode(video=0)).to_ndarray(format="rgb24")
    expect = orient(coded, DisplayInfo(rotation=270, hflip=True))
    assert np.abs(shown.astype(int) - expect.astype(int)).mean() < 6  # 4:2:0 vs 4:4:4

    free = make_video(tmp_path / "free.mkv", rotation=(30, False))
    rlv = tmp_path / "free.rlv"
    err = encode(capsys, free, rlv, "--no-carry")
    assert "is not a rotation by a multiple of 90 degrees" in err
    decode(capsys, rlv, tmp_path / "free.mkv")
    assert matrix_of(first_frame(tmp_path / "free.mkv")) == matrix_of(first_frame(free))
    err = decode(capsys, rlv, tmp_path / "free.y4m")
    assert "display matrix (not a quarter turn) is not applied" in err
    assert y4m_params(tmp_path / "free.y4m")[1:3] == ["W64", "H48"]


# --------------------------------------------------------------------------- units


# fftools/ffmpeg_filter.c (autorotate): theta = clockwise degrees from the display matrix,
# then transpose (cclock_flip = plain transpose, clock = + hflip, cclock = + vflip,
# clock_flip = + both), hflip/vflip for 180, vflip for a mirrored 0.
def _ffmpeg_autorotate(a: np.ndarray, m: list[int]) -> np.ndarray:
    ccw = float(np.degrees(np.arctan2(m[1] / 65536, m[0] / 65536)))  # -av_display_rotation_get
    theta = (round(ccw)) % 360  # get_rotation(): -rotation_get, normalised
    t = a.transpose(1, 0, 2)
    if theta == 90:
        return t[:, ::-1] if not m[3] > 0 else t
    if theta == 270:
        return t[::-1, ::-1] if m[3] < 0 else t[::-1]
    if theta == 180:
        out = a[:, ::-1] if m[0] < 0 else a
        return out[::-1] if m[4] < 0 else out
    return a[::-1] if m[4] < 0 else a


@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_orientation_read_from_pyav_matrices_and_applied_as_ffmpeg_does(
    tmp_path: Path, rotation: int, hflip: bool
) -> None:
    src = make_video(tmp_path / "o.mkv", frames=1, rotation=(rotation, hflip))
    frame = first_frame(src) if (rotation or hflip) else None
    m = matrix_of(frame) if frame is not None else [65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30]
    assert orientation_of(m) == (rotation, hflip)
    assert probe(src).display == DisplayInfo(rotation=rotation, hflip=hflip)
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(orient(a, DisplayInfo(rotation, hflip)), _ffmpeg_autorotate(a, m))


def test_orientation_of_refuses_other_matrices() -> None:
    one, w = 65536, 1 << 30
    assert orientation_of([0, -one, 0, one, 0, 0, 96 * one, 0, w]) == (90, False)  # translation
    assert orientation_of([56756, -32768, 0, 32768, 56756, 0, 0, 0, w]) is None  # 30 degrees
    assert orientation_of([2 * one, 0, 0, 0, 2 * one, 0, 0, 0, w]) is None  # a scale
    assert orientation_of([one, 0, 0, 0, one, 0, 0, 0]) is None


def test_display_info_round_trips_and_refuses_bad_values() -> None:
    d = DisplayInfo(90, True, None, Fraction(32, 27), "tb", "T")
    assert d.to_dict() == {"rotation": 90, "hflip": True, "sar": [32, 27], "field_order": "tb", "title": "T"}  # fmt: skip
    assert DisplayInfo.from_dict(d.to_dict()) == d
    assert DisplayInfo().to_dict() == {} and DisplayInfo.from_dict(None) == DisplayInfo()
    assert DisplayInfo(sar=Fraction(1)).to_dict() == {}
    for bad in ({"rotation": 45}, {"field_order": "x"}, {"sar": [0, 1]}, {"sar": "1:1"}):
        with pytest.raises(ConfigError):
            DisplayInfo.from_dict(bad)
    colour = ColorInfo("bt601", "limited", "unknown", "unknown", 8)
    info = VideoInfo("s", 64, 48, Fraction(25), Fraction(1, 25), 1, "yuv420p", colour, False,
                     (0,), (0,), display=d, display_notes=("n",))  # fmt: skip
    assert VideoInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


GOLDEN = Layout.parse((DATA / "golden_none.rlv").read_bytes())


@pytest.mark.parametrize(
    ("display", "message"),
    [
        ({"rotation": 45}, "'rotation': 45 is not one of 0, 90, 180, 270"),
        ({"rotation": "90"}, "'rotation': '90' is not one of"),
        ({"sar": [0, 1]}, "'sar': 0 is not in 1..2147483647"),
        ({"field_order": "top"}, "'field_order': 'top' is not one of"),
        ({"matrix": [1, 2]}, "'matrix': [1, 2] is not a list of 9 integers"),
        ({"matrix": [0] * 8 + [2**31]}, "'matrix': 2147483648 is not in"),
        ({"matrix": [0] * 9, "rotation": 90}, "'matrix' comes without 'rotation' and 'hflip'"),
        ({"hflip": 1}, "'hflip': 1 is not true or false"),
        ({"title": "x" * 5000}, "'title': 'xxxx"),
        ({"zoom": 2}, "unknown key 'zoom'"),
        ([], "a list, not an object"),
    ],
)
def test_header_display_bounds(display: object, message: str) -> None:
    data = GOLDEN.copy(header=canonical({**GOLDEN.header_json(), "display": display})).build()
    with pytest.raises(BitstreamError, match="header field 'display' is invalid") as info:
        StreamReader(io.BytesIO(data), name="s.rlv")
    assert message in str(info.value)


def test_header_display_applied_to_a_golden_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A stream made before (no display key) given one: it is applied.
    if not any(c["quality"] == 3 for c in load_cards()["models"]):
        pytest.skip("no shipped q3 weights in this checkout")
    lay = GOLDEN.copy(
        header=canonical({**GOLDEN.header_json(), "display": {"rotation": 180, "sar": [2, 1]}})
    )
    rlv = tmp_path / "g.rlv"
    rlv.write_bytes(lay.build())
    decode(capsys, rlv, tmp_path / "g.mkv")
    with av.open(str(tmp_path / "g.mkv")) as c:
        assert c.streams.video[0].sample_aspect_ratio == Fraction(2, 1)
        assert abs(next(c.decode(video=0)).rotation) == 180
