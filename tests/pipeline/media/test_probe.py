"""pipeline.media.probe: sizes, rates, timestamps and keyframes of real clips, the info dicts,
truncated files, and the frame range and size checks.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest

from pipeline.errors import ConfigError, CorruptSourceError, FrameTooLargeError
from pipeline.media import DEFAULT_MAX_PIXELS, ColorInfo, VideoInfo, probe, read_frames
from tests.conftest import data_file
from tests.pipeline.media.clips import BIKES, BUNNY, CARPHONE


def test_probe_real_clips() -> None:
    info = probe(data_file(*CARPHONE))
    assert (info.width, info.height, info.frame_count) == (176, 144, 120)
    assert info.frame_rate == Fraction(30000, 1001)
    assert info.time_base == Fraction(1, 30000)
    assert info.pts == tuple(i * 1001 for i in range(120))
    assert info.keyframes == (0,)
    assert info.pix_fmt == "yuv420p" and not info.is_still
    # Untagged SD: BT.601 limited range.
    assert (info.color.matrix, info.color.range, info.color.bit_depth) == ("bt601", "limited", 8)

    bikes = probe(data_file(*BIKES))
    assert (bikes.width, bikes.height, bikes.frame_count) == (640, 272, 250)
    assert bikes.frame_rate == 25
    assert bikes.keyframes == (0, 30, 76, 137, 187, 242)
    assert list(bikes.pts) == sorted(bikes.pts) and len(set(bikes.pts)) == 250


def test_probe_picks_video_stream_next_to_audio_and_hd_default_matrix() -> None:
    path = data_file(*BUNNY)
    with av.open(str(path)) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}
    info = probe(path)
    assert (info.width, info.height, info.frame_count) == (1280, 720, 132)
    assert info.color.matrix == "bt709"  # untagged, 720 lines -> BT.709
    (first,) = list(read_frames(path, 0, 1, info=info))
    assert first.rgb.shape == (720, 1280, 3) and first.index == 0


def test_info_dicts_round_trip() -> None:
    info = probe(data_file(*CARPHONE))
    d = info.to_dict()
    assert d["frame_rate"] == "30000/1001"
    assert VideoInfo.from_dict(d) == info
    assert ColorInfo.from_dict(info.color.to_dict()) == info.color
    with pytest.raises(ConfigError):
        ColorInfo.from_dict({"matrix": "bt709"})
    with pytest.raises(ConfigError):
        ColorInfo("smpte240m", "limited", "unknown", "unknown", 8)


def test_truncated_video_is_corrupt(tmp_path: Path) -> None:
    data = data_file(*CARPHONE).read_bytes()
    half = tmp_path / "half.mp4"  # the index (moov) is at the end: it is cut off
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptSourceError, match=r"half\.mp4"):
        probe(half)

    # Index at the front: the frames listed in it are missing.
    faststart = tmp_path / "faststart.mp4"
    with (
        av.open(str(data_file(*CARPHONE))) as inp,
        av.open(
            str(faststart), "w", format="mp4", container_options={"movflags": "faststart"}
        ) as out,
    ):
        ost = out.add_stream_from_template(inp.streams.video[0])
        for pk in inp.demux(inp.streams.video[0]):
            if pk.dts is not None:
                pk.stream = ost
                out.mux(pk)
    assert probe(faststart).frame_count == 120
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 6 // 10])
    with pytest.raises(CorruptSourceError, match=r"cut\.mp4.*truncated"):
        probe(cut)


# --------------------------------------------------------------------------- range and size checks


@pytest.mark.parametrize("start,end", [(-1, 5), (0, 121), (10, 10), (20, 5)])
def test_bad_ranges_are_config_errors(start: int, end: int) -> None:
    path = data_file(*CARPHONE)
    with pytest.raises(ConfigError, match="carphone"):
        read_frames(path, start, end)


def test_max_pixels() -> None:
    path = data_file(*CARPHONE)
    with pytest.raises(FrameTooLargeError) as exc:
        read_frames(path, max_pixels=176 * 144 - 1)
    msg = str(exc.value)
    assert "176x144" in msg and str(176 * 144 - 1) in msg and "--max-pixels" in msg
    assert "carphone" in msg
    assert len(list(read_frames(path, 0, 2, max_pixels=176 * 144))) == 2
    assert DEFAULT_MAX_PIXELS == 8192 * 4352
    with pytest.raises(ConfigError):
        read_frames(path, max_pixels=0)
