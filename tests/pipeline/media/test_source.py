"""pipeline.media.source: the kinds of source (path, file:// URI, file objects) and the
errors for missing, empty, non-media and audio-only sources.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.errors import EmptySourceError, NotVideoError, SourceNotFoundError
from pipeline.media import probe, read_frames
from tests.conftest import data_file
from tests.pipeline.media.clips import CARPHONE, decode_all


def test_file_uri_and_file_object_sources() -> None:
    path = data_file(*CARPHONE)
    by_path = probe(path)
    by_uri = probe(path.resolve().as_uri())
    with path.open("rb") as fh:
        by_obj = probe(fh)
        obj_frames = decode_all(fh, start=5, end=8, info=by_obj)
    assert by_uri.source == path.resolve().as_uri()
    for other in (by_uri, by_obj):
        assert dataclasses.replace(other, source=by_path.source) == by_path
    bio = io.BytesIO(path.read_bytes())
    bio_frames = decode_all(bio, start=5, end=8)
    path_frames = decode_all(path, start=5, end=8, info=by_path)
    for a, b, c in zip(path_frames, obj_frames, bio_frames, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_missing_and_empty_sources(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceNotFoundError, match=r"nope\.mp4"):
        probe(missing)
    with pytest.raises(SourceNotFoundError, match=r"nope\.mp4"):
        read_frames(missing.as_uri())
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(EmptySourceError, match=r"empty\.mp4"):
        probe(empty)
    with pytest.raises(EmptySourceError):
        probe(io.BytesIO())


@pytest.mark.parametrize("name", ["notes.txt", "notes.mp4", "notes"])
def test_text_file_is_not_video(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("this is a shopping list, not a video\n" * 50)
    with pytest.raises(NotVideoError, match=name):
        probe(path)


@pytest.mark.parametrize(
    "suffix,fmt,codec,sample_fmt",
    [(".wav", "wav", "pcm_s16le", "s16"), (".m4a", "mp4", "aac", "fltp")],
)
def test_audio_only_is_not_video(
    tmp_path: Path, suffix: str, fmt: str, codec: str, sample_fmt: str
) -> None:
    path = tmp_path / f"tone{suffix}"
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream(codec, rate=16000, layout="mono")
        samples = (np.sin(np.arange(4096) / 5) * 0.3).astype(np.float32)
        if sample_fmt == "s16":
            samples = (samples * 32767).astype(np.int16)
        fr = av.AudioFrame.from_ndarray(samples[None, :], format=sample_fmt, layout="mono")
        fr.sample_rate, fr.pts = 16000, 0
        for pk in [*st.encode(fr), *st.encode(None)]:
            out.mux(pk)
    with pytest.raises(NotVideoError, match=rf"tone\{suffix}.*has no video stream.*audio"):
        probe(path)
