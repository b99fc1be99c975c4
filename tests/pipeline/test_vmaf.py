"""VMAF through imageio-ffmpeg's libvmaf (:mod:`pipeline.vmaf`): identical frames score
about 100, more distortion scores lower, odd sizes are padded, bad input is refused with
ConfigError, and a missing or broken ffmpeg is a clear error. The measurements skip when
imageio-ffmpeg is not installed (the ``dev`` extra installs it, so CI runs them)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError, RelatentError, ResourceError
from pipeline.vmaf import MIN_SIZE, ffmpeg_exe, vmaf_scores


def needs_ffmpeg() -> None:
    pytest.importorskip("imageio_ffmpeg", reason="pip install 'relatent[vmaf]'")


def box_blur(frames: np.ndarray, radius: int) -> np.ndarray:
    """``frames`` [N, H, W, 3] uint8 blurred by a (2r+1)^2 box (edges replicated)."""
    x = frames.astype(np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        p = np.pad(x, pad, mode="edge")
        c = np.cumsum(p, axis=axis)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
        n = x.shape[axis]
        hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        x = (hi - lo) / (2 * radius + 1)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def clip_like(n: int = 8, h: int = 72, w: int = 96, seed: int = 0) -> np.ndarray:
    """A synthetic video [n, h, w, 3] uint8: smooth texture and edges panning 2 px a frame."""
    rng = np.random.default_rng(seed)
    big = box_blur(rng.integers(0, 256, (1, h, w + 2 * n, 3), dtype=np.uint8), 2)[0]
    yy, xx = np.mgrid[0:h, 0 : w + 2 * n]
    edges = (((xx // 12) + (yy // 12)) % 2 * 90).astype(np.int64)[..., None]
    scene = np.clip(big.astype(np.int64) // 2 + edges + 40, 0, 255).astype(np.uint8)
    return np.stack([scene[:, 2 * i : 2 * i + w] for i in range(n)])


def test_identical_frames_score_about_100() -> None:
    needs_ffmpeg()
    v = clip_like()
    scores = vmaf_scores(v, v.copy())
    assert len(scores) == len(v)
    assert all(0 <= s <= 100 for s in scores)
    assert np.mean(scores) >= 99, scores


def test_more_blur_scores_lower() -> None:
    needs_ffmpeg()
    v = clip_like()
    same, mild, strong = (np.mean(vmaf_scores(v, b)) for b in (v, box_blur(v, 1), box_blur(v, 3)))
    assert same > mild > strong, (same, mild, strong)
    assert strong < 90


def test_iterables_of_frames_score_like_arrays() -> None:
    needs_ffmpeg()
    v = clip_like(n=4)
    b = box_blur(v, 1)
    assert vmaf_scores(iter(list(v)), (f for f in b), threads=2) == vmaf_scores(v, b)


@pytest.mark.parametrize(("h", "w"), [(29, 37), (MIN_SIZE - 1, 40), (40, 40)])
def test_odd_sizes_are_padded(h: int, w: int) -> None:
    needs_ffmpeg()
    v = clip_like(n=4, h=h, w=w)
    scores = vmaf_scores(v, v)
    assert len(scores) == 4 and np.mean(scores) >= 95, scores  # tiny frames: less than 99
    assert np.mean(vmaf_scores(v, box_blur(v, 2))) < np.mean(scores)


def frames(n: int = 2, h: int = 24, w: int = 32) -> np.ndarray:
    return np.zeros((n, h, w, 3), np.uint8)


@pytest.mark.parametrize(
    ("refs", "recs", "match"),
    [
        (frames(), frames(3), "more frames"),
        (frames(3), frames(), "more frames"),
        (frames(), frames(w=34), "frames are 34x24 but the reference frames 32x24"),
        (frames(), frames().astype(np.float32), "not \\[H, W, 3\\] uint8"),
        (frames(h=16), frames(h=16), f"at least {MIN_SIZE}x{MIN_SIZE}"),
        (frames(0), frames(0), "no frames"),
        (frames()[0], frames()[0], "not \\[N, H, W, 3\\]"),
        (frames()[..., :1], frames()[..., :1], "not \\[H, W, 3\\] uint8"),
    ],
)
def test_bad_input_is_a_config_error(refs: np.ndarray, recs: np.ndarray, match: str) -> None:
    needs_ffmpeg()
    with pytest.raises(ConfigError, match=match) as exc:
        vmaf_scores(refs, recs)
    assert exc.value.exit_code == 2


def test_threads_below_one_are_refused() -> None:
    with pytest.raises(ConfigError, match="threads 0"):
        vmaf_scores(frames(), frames(), threads=0)


def test_missing_imageio_ffmpeg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import raises ImportError
    with pytest.raises(ResourceError, match=r"pip install 'relatent\[vmaf\]'") as exc:
        vmaf_scores(frames(), frames())
    assert exc.value.exit_code == 8


def fake_ffmpeg(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "ffmpeg"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_an_ffmpeg_without_libvmaf_is_a_resource_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_ffmpeg()
    exe = fake_ffmpeg(tmp_path, "echo \"[AVFilterGraph] No such filter: 'libvmaf'\" >&2; exit 8")
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", exe)
    assert ffmpeg_exe() == exe
    with pytest.raises(ResourceError, match="built without libvmaf"):
        vmaf_scores(frames(), frames())


def test_an_ffmpeg_failure_names_ffmpeg_and_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_ffmpeg()
    monkeypatch.setenv(
        "IMAGEIO_FFMPEG_EXE", fake_ffmpeg(tmp_path, "echo 'disk on fire' >&2; exit 3")
    )
    with pytest.raises(RelatentError, match=r"ffmpeg's libvmaf exited 3.*disk on fire"):
        vmaf_scores(frames(), frames())
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", fake_ffmpeg(tmp_path, "exec sleep 5"))
    with pytest.raises(RelatentError, match="ran past its timeout of 1 s"):
        vmaf_scores(frames(), frames(), timeout=1)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", fake_ffmpeg(tmp_path, "exit 0"))  # writes no log
    with pytest.raises(RelatentError, match=r"log vmaf\.json is unreadable"):
        vmaf_scores(frames(), frames())


def test_the_temporary_files_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs_ffmpeg()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    v = clip_like(n=2, h=24, w=32)
    vmaf_scores(v, v)
    with pytest.raises(ConfigError):
        vmaf_scores(v, v[:1])
    assert list(tmp_path.iterdir()) == []
