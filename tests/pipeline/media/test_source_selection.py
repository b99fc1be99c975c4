"""Incomplete or ambiguous sources (issue 18, kind 4): which video stream is coded when
there are several (default-flagged, else the largest; ``--video-stream N``; a warning names
the others; carry excludes the coded one), and sources that end before what their container
declares (frame counts, durations) or have no index: refused as truncated, exit 3, nothing
written. Real files made through PyAV and the shared cases in ``../shared/cases``."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pytest

from jobs.cli import main
from pipeline.bitstream import StreamReader
from pipeline.errors import ConfigError, CorruptSourceError
from pipeline.media import extract_carry, probe, read_frames
from tests.conftest import REPO_ROOT

CASES = REPO_ROOT.parent / "shared" / "cases"
EARLY = "ends early: (the frames present cover|its streams end at)"


def case_file(case: str, name: str) -> Path:
    p = CASES / case / name
    if not p.exists():
        pytest.skip(f"shared case {p} is absent")
    return p


def videos(
    path: Path | io.RawIOBase,
    sizes: Sequence[tuple[int, int]],
    *,
    titles: Sequence[str] = (),
    default: set[int] | None = None,
    audio_s: float = 0.0,
    frames: int = 6,
    fmt: str | None = None,
    options: dict[str, str] | None = None,
    codec: str = "libx264",
) -> Path:
    """One video stream per ``sizes`` entry (each frame a flat grey of its own level), 25
    fps; ``default``: the streams flagged default (Matroska without inference); ``audio_s``:
    an AAC track of that length."""
    opts = dict(options or {})
    if default is not None:  # Matroska: write the flags as given
        opts["default_mode"] = "passthrough"
    target = str(path) if isinstance(path, Path) else path
    with av.open(target, "w", format=fmt, options=opts) as out:
        streams = []
        for k, (w, h) in enumerate(sizes):
            v = out.add_stream(codec, rate=25)
            v.width, v.height, v.pix_fmt = w, h, "yuv420p"
            if k < len(titles):
                v.metadata["title"] = titles[k]
            if default is not None:
                flag = av.stream.Disposition.default if k in default else 0
                v.disposition = av.stream.Disposition(flag)
            streams.append(v)
        a = out.add_stream("aac", rate=16000, layout="mono") if audio_s else None
        for i in range(frames):
            for k, v in enumerate(streams):
                level = (40 * k + 8 * i) % 256
                f = av.VideoFrame.from_ndarray(
                    np.full((v.height, v.width, 3), level, np.uint8), format="rgb24"
                )
                f.pts = i
                for p in v.encode(f):
                    out.mux(p)
        for v in streams:
            for p in v.encode(None):
                out.mux(p)
        if a is not None:
            fs, pts = a.codec_context.frame_size, 0
            while pts < audio_s * 16000:
                fr = av.AudioFrame.from_ndarray(
                    np.zeros((1, fs), np.float32), format="fltp", layout="mono"
                )
                fr.sample_rate, fr.pts = 16000, pts
                pts += fs
                for p in a.encode(fr):
                    out.mux(p)
            for p in a.encode(None):
                out.mux(p)
    return path


def cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


# --------------------------------------------------------------------------- stream choice


def test_case_two_video_streams_codes_the_default_main_track() -> None:
    src = case_file("second-video-stream-main-track-dropped", "two_video.mkv")
    info = probe(src)
    assert (info.width, info.height, info.frame_count, info.stream_index) == (96, 64, 6, 1)
    assert info.left_out == ('video stream #0 (h264 32x32, "preview")',)
    preview = probe(src, video_stream=0)
    assert (preview.width, preview.height, preview.stream_index) == (32, 32, 0)
    assert preview.left_out == ('video stream #1 (h264 96x64, "main", default)',)
    # decoding follows the probe's choice
    assert [f.rgb.shape for f in read_frames(src, 0, 2, info=preview)] == [(32, 32, 3)] * 2
    assert [f.rgb.shape for f in read_frames(src, 0, 2, info=info)] == [(64, 96, 3)] * 2
    with pytest.raises(
        ConfigError, match=r"--video-stream 5: there is no stream #5.*#1 \(h264 96x64"
    ):
        probe(src, video_stream=5)


def test_case_two_video_streams_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = case_file("second-video-stream-main-track-dropped", "two_video.mkv")
    rlv = tmp_path / "v.rlv"
    assert main(["encode", str(src), str(rlv), "--refine", "none", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert (
        f'relatent encode: warning: {src}: video stream #0 (h264 32x32, "preview") is not coded '
        "(stream #1 is; choose with --video-stream N)"
    ) in err
    with StreamReader(str(rlv)) as r:
        assert (r.header.width, r.header.height, r.header.frame_count) == (96, 64, 6)
        assert r.header.source["video_stream"] == 1
    y4m = tmp_path / "v.y4m"
    assert main(["decode", str(rlv), str(y4m), "--no-progress"]) == 0
    assert y4m.read_bytes().startswith(b"YUV4MPEG2 W96 H64 ")
    assert y4m.read_bytes().count(b"FRAME") == 6

    small = tmp_path / "p.rlv"
    args = ["--refine", "none", "--no-progress", "--video-stream"]
    assert main(["encode", str(src), str(small), *args, "0"]) == 0
    with StreamReader(str(small)) as r:
        assert (r.header.width, r.header.height, r.header.source["video_stream"]) == (32, 32, 0)
    assert '#1 (h264 96x64, "main", default) is not coded' in capsys.readouterr().err
    bad = tmp_path / "bad.rlv"
    assert main(["encode", str(src), str(bad), *args, "7"]) == 2
    assert "--video-stream 7: there is no stream #7" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.rlv", "v.rlv", "v.y4m"]


def test_default_flag_wins_else_the_largest(tmp_path: Path) -> None:
    sizes = [(32, 32), (96, 64), (64, 48)]
    none_flagged = probe(videos(tmp_path / "a.mkv", sizes, default=set()))
    assert (none_flagged.stream_index, none_flagged.width) == (1, 96)
    assert none_flagged.left_out == ("video stream #0 (h264 32x32)", "video stream #2 (h264 64x48)")
    flagged = probe(videos(tmp_path / "b.mkv", sizes, default={2}))
    assert (flagged.stream_index, flagged.width, flagged.height) == (2, 64, 48)
    two_flagged = probe(videos(tmp_path / "c.mkv", sizes, default={0, 2}))
    assert (two_flagged.stream_index, two_flagged.width) == (2, 64)
    # FFmpeg's MP4 muxer flags the first track of a kind default (enabled): that one is coded
    mp4 = probe(videos(tmp_path / "d.mp4", [(32, 32), (96, 64)]))
    assert (mp4.stream_index, mp4.width) == (0, 32)
    assert mp4.left_out == ("video stream #1 (h264 96x64)",)
    single = probe(videos(tmp_path / "e.mkv", [(64, 48)]))
    assert (single.stream_index, single.left_out) == (0, ())


def test_carry_excludes_the_coded_stream_and_states_the_other(tmp_path: Path) -> None:
    src = videos(tmp_path / "two.mkv", [(32, 32), (96, 64)], default={1}, audio_s=0.3)
    for chosen, other in ((None, 0), (0, 1), (1, 0)):
        _, info = extract_carry(src, video_stream=chosen)
        assert info.video["index"] == (1 if chosen is None else chosen)
        assert [(s.index, s.type) for s in info.streams] == [(2, "audio")]
        assert [(d.index, d.type, d.kind) for d in info.dropped] == [
            (other, "video", "unsupported")
        ]
        assert "other video streams are not carried" in info.dropped[0].reason
    with pytest.raises(ConfigError, match=r"stream #2 is audio, not a video stream"):
        extract_carry(src, video_stream=2)


# --------------------------------------------------------------------------- truncation


def test_case_truncated_mkv_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = case_file("truncated-mkv-accepted", "trunc_mid.mkv")
    with pytest.raises(CorruptSourceError) as exc:
        probe(src)
    assert "the file ends early: the frames present cover 0.72 s of the declared 1.2 s" in str(
        exc.value
    )
    assert "18 video frames present" in str(exc.value)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["encode", str(src), str(out / "t.rlv"), "--refine", "none", "--no-progress"]) == 3
    assert "ends early" in capsys.readouterr().err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "fmt", "options", "codec", "message"),
    [
        ("a.mkv", None, None, "libx264", rf"{EARLY} [\d.]+ s of the declared (1\.2|2\.5\d*) s"),
        ("a.webm", None, None, "libvpx", rf"{EARLY} [\d.]+ s of the declared 1\.2 s"),
        ("a.flv", None, None, "flv", r"its streams end at [\d.]+ s of the declared 2\.\d+ s"),
        ("a.avi", None, None, "mpeg4", r"only \d+ of the 30 video frames listed in its index"),
        (
            "f.mp4",
            None,
            {"movflags": "faststart"},
            "libx264",
            r"only \d+ of the 30 video frames listed in its index are present",
        ),
        (
            "e.mp4",
            None,
            None,
            "libx264",
            r"truncated file \(its 'moov' box ends at byte \d+ but the file has \d+ bytes\)",
        ),
    ],
)
def test_truncated_containers_refused(
    tmp_path: Path, name: str, fmt: str | None, options: dict | None, codec: str, message: str
) -> None:
    audio = 2.5 if name.endswith((".mkv", ".flv")) else 0.0
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    full = videos(
        tmp_path / name, [(64, 48)], frames=30, audio_s=audio, fmt=fmt, options=options, codec=codec
    )
    assert probe(full).frame_count == 30  # complete: accepted
    part = cut(full, tmp_path / f"cut-{name}", 0.9 if name == "f.mp4" else 0.7)
    with pytest.raises(CorruptSourceError, match=message):
        probe(part)
    with pytest.raises(CorruptSourceError, match="truncated"):  # a file object (as from S3)
        probe(io.BytesIO(part.read_bytes()))


def test_mp4_without_index_says_truncated_not_no_video(tmp_path: Path) -> None:
    full = videos(tmp_path / "a.mp4", [(64, 48)], frames=30)
    data = full.read_bytes()
    moov = data.rindex(b"moov") - 4  # FFmpeg writes the index last
    (tmp_path / "no_moov.mp4").write_bytes(data[:moov])
    with pytest.raises(CorruptSourceError, match=r"truncated file \(it has no 'moov' box"):
        probe(tmp_path / "no_moov.mp4")


def test_complete_sources_with_undeclared_or_longer_streams_accepted(tmp_path: Path) -> None:
    # audio longer than the video: the container's duration is the audio's
    longer = probe(videos(tmp_path / "a.mkv", [(64, 48)], frames=10, audio_s=2.0))
    assert longer.frame_count == 10
    # a Matroska file written as a live stream declares no duration: nothing to check
    buf = io.BytesIO()

    class Live(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[no-untyped-def, override]
            buf.write(b)
            return len(b)

    videos(Live(), [(64, 48)], frames=10, fmt="matroska")  # type: ignore[arg-type]
    live = tmp_path / "live.mkv"
    live.write_bytes(buf.getvalue())
    assert probe(live).frame_count == 10
