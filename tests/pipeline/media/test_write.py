"""pipeline.media.write: PNG folders, Y4M and MP4/MKV outputs round trip, and failures leave
nothing behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.media import ColorInfo, VideoInfo, probe, read_frames, write_frames
from tests.conftest import data_file
from tests.pipeline.media.clips import CARPHONE, to_u8


@pytest.fixture(scope="module")
def carphone_u8() -> tuple[VideoInfo, list[np.ndarray]]:
    path = data_file(*CARPHONE)
    info = probe(path)
    return info, [to_u8(f.rgb) for f in read_frames(path, 0, 8, info=info)]


def test_write_png_folder_is_exact(tmp_path: Path, carphone_u8: tuple[VideoInfo, list]) -> None:
    info, imgs = carphone_u8
    dst = tmp_path / "out"
    write_frames(dst, imgs[:3], frame_rate=info.frame_rate)
    assert sorted(p.name for p in dst.iterdir()) == [f"frame_{i:06d}.png" for i in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary leftovers
    for i, img in enumerate(imgs[:3]):
        (frame,) = list(read_frames(dst / f"frame_{i:06d}.png"))
        assert np.array_equal(to_u8(frame.rgb), img)
    # Rewriting a previous output folder replaces it.
    write_frames(dst, imgs[3:5], frame_rate=info.frame_rate)
    assert sorted(p.name for p in dst.iterdir()) == ["frame_000000.png", "frame_000001.png"]
    # A folder with other content is never replaced.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="mine"):
        write_frames(tmp_path / "mine", imgs[:1], frame_rate=info.frame_rate)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_write_y4m_round_trip(tmp_path: Path, carphone_u8: tuple[VideoInfo, list]) -> None:
    info, imgs = carphone_u8
    dst = tmp_path / "out.y4m"
    write_frames(dst, imgs, frame_rate=info.frame_rate, color=info.color)
    back = probe(dst)
    assert back.frame_count == len(imgs) and back.frame_rate == info.frame_rate
    assert back.pix_fmt == "yuv444p" and back.color.range == "limited"
    for img, frame in zip(imgs, read_frames(dst, info=back), strict=True):
        diff = np.abs(frame.rgb * 255 - img)
        assert diff.max() <= 2.0 and diff.mean() < 0.6

    # Full range, 10 bit, and a matrix that is not the height default (Y4M cannot store
    # it): exact again once the matrix is supplied.
    color = ColorInfo("bt709", "full", "bt709", "bt709", 10)
    dst10 = tmp_path / "out10.y4m"
    write_frames(dst10, imgs[:2], frame_rate=info.frame_rate, color=color)
    back = probe(dst10)
    assert back.pix_fmt == "yuv444p10le" and back.color.range == "full"
    assert back.color.matrix == "bt601"  # the SD default a reader assumes
    fixed = dataclasses.replace(back, color=color)
    for img, frame in zip(imgs[:2], read_frames(dst10, info=fixed), strict=True):
        assert np.abs(frame.rgb * 255 - img).max() <= 1.0
    wrong = next(iter(read_frames(dst10, 0, 1, info=back))).rgb
    assert np.abs(wrong * 255 - imgs[0]).max() > 4


def test_write_mp4_keeps_count_rate_and_pts(
    tmp_path: Path, carphone_u8: tuple[VideoInfo, list]
) -> None:
    info, imgs = carphone_u8
    dst = tmp_path / "out.mp4"
    pts = [p + 5005 for p in info.pts[: len(imgs)]]  # an offset start is kept too
    write_frames(
        dst, imgs, frame_rate=info.frame_rate, time_base=info.time_base, pts=pts, color=info.color
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    back = probe(dst)
    assert back.frame_count == len(imgs)
    assert back.frame_rate == Fraction(30000, 1001)
    assert back.time_base == info.time_base
    assert list(back.pts) == pts
    assert (back.color.matrix, back.color.range, back.pix_fmt) == ("bt601", "limited", "yuv420p")
    for img, frame in zip(imgs, read_frames(dst, info=back), strict=True):
        mse = np.mean((frame.rgb * 255 - img) ** 2)
        assert 10 * np.log10(255**2 / mse) > 34

    # Matroska keeps the count and rate; its timestamps are in milliseconds.
    mkv = tmp_path / "out.mkv"
    write_frames(mkv, imgs[:4], frame_rate=info.frame_rate, time_base=info.time_base, pts=pts[:4])
    back = probe(mkv)
    assert back.frame_count == 4 and back.frame_rate == info.frame_rate
    assert [p * back.time_base for p in back.pts] == [
        Fraction(round(p * info.time_base * 1000), 1000) for p in pts[:4]
    ]


def test_write_failures_leave_nothing(tmp_path: Path, carphone_u8: tuple[VideoInfo, list]) -> None:
    _, imgs = carphone_u8

    def broken() -> Iterator[np.ndarray]:
        yield imgs[0]
        yield imgs[1]
        raise RuntimeError("upstream failed")

    for name in ("a.mp4", "b.y4m", "c"):
        with pytest.raises(RuntimeError, match="upstream failed"):
            write_frames(tmp_path / name, broken(), frame_rate=Fraction(25))
    with pytest.raises(ConfigError, match=r"frame 1 .*float32"):
        write_frames(
            tmp_path / "d.mp4", [imgs[0], imgs[1].astype(np.float32)], frame_rate=Fraction(25)
        )
    with pytest.raises(ConfigError, match="odd size"):
        write_frames(tmp_path / "e.mp4", [imgs[0][:, :-1]], frame_rate=Fraction(25))
    with pytest.raises(ConfigError, match=r"\.avi"):
        write_frames(tmp_path / "f.avi", imgs[:1], frame_rate=Fraction(25))
    assert list(tmp_path.iterdir()) == []
