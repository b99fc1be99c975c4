"""pipeline.media.decode: still images, exact frame ranges (seeking, fallbacks, other
containers) and damaged video.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.errors import CorruptSourceError
from pipeline.media import VideoInfo, probe, read_frames
from pipeline.media.decode import RangeDecoder
from tests.conftest import data_file
from tests.pipeline.media.clips import BIKES, CARPHONE, decode_all, to_u8


@pytest.fixture(scope="module")
def bikes_head() -> tuple[Path, VideoInfo, list[np.ndarray]]:
    """bikes.mp4 decoded from the start up to frame 150 (keyframes at 0, 30, 76, 137)."""
    path = data_file(*BIKES)
    info = probe(path)
    return path, info, decode_all(path, end=150, info=info)


def test_still_png_is_one_exact_frame() -> None:
    path = data_file("kodak", "kodim23.png")
    info = probe(path)
    assert info.is_still and info.frame_count == 1 and info.keyframes == (0,)
    assert info.frame_rate == 1 and info.color.matrix == "rgb"
    (frame,) = list(read_frames(path, info=info))
    from PIL import Image

    with Image.open(path) as im:
        ref = np.asarray(im.convert("RGB"))
    assert frame.rgb.dtype == np.float32 and frame.rgb.flags.c_contiguous
    assert np.array_equal(to_u8(frame.rgb), ref)


# --------------------------------------------------------------------------- range decoding


@pytest.mark.parametrize("start,end", [(35, 45), (130, 140), (137, 139), (75, 78)])
def test_range_equals_decoding_from_start(
    bikes_head: tuple[Path, VideoInfo, list[np.ndarray]],
    start: int,
    end: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, info, full = bikes_head
    decoded_pts: list[int] = []
    original = RangeDecoder.frames

    def spy(self: RangeDecoder, *args: object) -> Iterator[av.VideoFrame]:
        for f in original(self, *args):  # type: ignore[arg-type]
            decoded_pts.append(f.pts)
            yield f

    monkeypatch.setattr(RangeDecoder, "frames", spy)
    got = list(read_frames(path, start, end, info=info))
    assert [f.index for f in got] == list(range(start, end))
    assert [f.pts for f in got] == list(info.pts[start:end])
    for f in got:
        assert f.rgb.shape == (272, 640, 3) and f.rgb.dtype == np.float32
        assert np.array_equal(f.rgb, full[f.index])
    # It seeked: decoding began at the keyframe at or before start, not at frame 0.
    keyframe = max(k for k in info.keyframes if k <= start)
    first_decoded = min(info.pts.index(p) for p in decoded_pts)
    assert first_decoded == keyframe > 0
    assert len(decoded_pts) <= end - keyframe + 4


def test_range_without_seekable_keyframe_and_from_file_object() -> None:
    path = data_file(*CARPHONE)
    info = probe(path)
    full = decode_all(path, end=110, info=info)
    assert len(full) == 110
    tail = list(read_frames(io.BytesIO(path.read_bytes()), 100, 110, info=info))
    assert [f.index for f in tail] == list(range(100, 110))
    assert all(np.array_equal(f.rgb, full[f.index]) for f in tail)
    assert not np.array_equal(full[100], full[109])  # the frames do differ


@pytest.mark.parametrize(
    "fmt,suffix,codec,options",
    [
        ("matroska", ".mkv", "libx264", {"preset": "ultrafast", "bf": "2", "keyint": "10"}),
        ("webm", ".webm", "libvpx-vp9", {"cpu-used": "8", "deadline": "realtime"}),
        # AVI has no presentation timestamps: frames are counted in decode order.
        ("avi", ".avi", "mpeg4", {"bf": "2"}),
    ],
)
def test_other_containers_ranges_and_frame_identity(
    tmp_path: Path, fmt: str, suffix: str, codec: str, options: dict[str, str]
) -> None:
    base = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    shifted = [np.roll(base, k, axis=1) for k in range(40)]  # frame k is base shifted by k
    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream(codec, rate=25)
        st.width, st.height, st.pix_fmt, st.gop_size = 64, 48, "yuv420p", 10
        st.options = options
        for k, img in enumerate(shifted):
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts = k
            for pk in st.encode(fr):
                out.mux(pk)
        for pk in st.encode(None):
            out.mux(pk)
    info = probe(path)
    assert info.frame_count == 40 and info.frame_rate == 25
    assert list(info.pts) == sorted(set(info.pts)) and len(info.keyframes) >= 4
    full = decode_all(path, info=info)
    refs = [s.astype(np.float32) / 255 for s in shifted]
    for k, rgb in enumerate(full):  # every frame is identified correctly
        assert int(np.argmin([np.abs(rgb - r).mean() for r in refs])) == k
    part = list(read_frames(path, 23, 33, info=info))
    assert [f.index for f in part] == list(range(23, 33))
    assert all(np.array_equal(f.rgb, full[f.index]) for f in part)


# --------------------------------------------------------------------------- errors


def test_damaged_video_raises_while_decoding(tmp_path: Path) -> None:
    data = bytearray(data_file(*CARPHONE).read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = bytes(b ^ 0xFF for b in data[mid : mid + 3000])
    path = tmp_path / "flipped.mp4"
    path.write_bytes(bytes(data))
    info = probe(path)  # the index is intact
    assert info.frame_count == 120
    with pytest.raises(CorruptSourceError, match=r"flipped\.mp4"):
        for _ in read_frames(path, info=info):
            pass
