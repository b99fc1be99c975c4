"""The encoder's memory estimate (:mod:`pipeline.memory`): monotone in the frame size,
linear in the batch, read from the kernel's and the cgroup's own files; a batch that does
not fit is made smaller (same bytes), and a frame that does not fit at batch 1 is refused
before anything is written, naming the size, the estimate, the memory and ``--batch``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jobs.bench.pipeline import synthetic_clip
from pipeline.codec import encode_video
from pipeline.config import RefineConfig
from pipeline.errors import InsufficientMemoryError, ResourceError
from pipeline.memory import (
    FIXED_BYTES,
    INTER_BYTES_PER_PIXEL,
    MEASURED,
    SAFETY,
    available_bytes,
    encode_bytes,
    fit_batch,
    frame_bytes,
)
from pipeline.models import get_architecture, load_model

SGA = RefineConfig(method="sga", iters=2, tol=0.0, gop=1).resolved(0.0067)
PLAIN = RefineConfig(method="none", gop=1).resolved(0.0067)


def test_estimate_grows_with_the_frame_and_is_linear_in_the_batch() -> None:
    sizes = [(64, 48), (640, 360), (1280, 720), (1921, 1081), (3840, 2160)]
    est = [encode_bytes(w, h, 1, SGA) for w, h in sizes]
    assert est == sorted(est) and len(set(est)) == len(est)
    # padded to 64: 1921x1081 codes as 1984x1088
    assert frame_bytes(1921, 1081, refine=True) == frame_bytes(1984, 1088, refine=True)
    for w, h in sizes:
        one, two, four = (encode_bytes(w, h, b, SGA) for b in (1, 2, 4))
        step = two - one
        assert step == pytest.approx(SAFETY * frame_bytes(w, h, refine=True), abs=2)
        assert four - one == pytest.approx(3 * step, abs=4)
        assert encode_bytes(w, h, 1, PLAIN) < one  # no autograd state without refinement
    assert encode_bytes(64, 48, 1, SGA) >= SAFETY * FIXED_BYTES
    # a model with twice the channels needs twice the activations
    assert frame_bytes(640, 360, refine=True, channels=128) == 2 * frame_bytes(
        640, 360, refine=True
    )


def test_gop_lockstep_buffers_whole_gops() -> None:
    gop16 = RefineConfig(method="sga", iters=2, tol=0.0, gop=16).resolved(0.0067)
    w, h = 1280, 720
    extra = encode_bytes(w, h, 2, gop16) - encode_bytes(w, h, 2, SGA)
    coded = 1280 * 768  # padded to 64
    want = SAFETY * (2 * 16 * w * h * 3 + 2 * coded * INTER_BYTES_PER_PIXEL)
    assert extra == pytest.approx(want, abs=2)
    # without refinement no GOP is buffered, but P frames still hold their references
    plain16 = RefineConfig(method="none", gop=16).resolved(0.0067)
    assert encode_bytes(w, h, 2, plain16) - encode_bytes(w, h, 2, PLAIN) == pytest.approx(
        SAFETY * 2 * coded * INTER_BYTES_PER_PIXEL, abs=2
    )


def test_every_measured_point_lies_under_the_estimate() -> None:
    for w, h, batch, gop, refined, peak in MEASURED:
        cfg = RefineConfig(method="sga" if refined else "none", iters=3, tol=0.0, gop=gop)
        assert peak < encode_bytes(w, h, batch, cfg.resolved(0.0067)) < 5 * peak


def test_the_issue_sizes_need_what_was_seen() -> None:
    """The issue saw 3.0 GB peak (about 2.1 GB above the loaded model) for 1921x1081 and
    1.9/2.7 GB for 720p at batch 1/2: the estimate (with its margin) covers the frames'
    share, and 4K at the default batch is far beyond a small machine."""
    assert encode_bytes(1921, 1081, 1, SGA) > 2.1e9
    assert encode_bytes(1280, 720, 2, SGA) > encode_bytes(1280, 720, 1, SGA) > 0.9e9
    assert encode_bytes(3840, 2160, 4, SGA) > 16e9


def test_available_memory_is_the_smaller_of_meminfo_and_the_cgroup(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("4000000000\n")
    (v2 / "memory.current").write_text("1000000000\n")
    assert available_bytes(meminfo=meminfo, cgroup=v2) == 3_000_000_000
    (v2 / "memory.max").write_text("max\n")  # no limit: the kernel's figure
    assert available_bytes(meminfo=meminfo, cgroup=v2) == 8_000_000 * 1024
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("2000000000\n")
    (v1 / "memory.usage_in_bytes").write_text("500000000\n")
    assert available_bytes(meminfo=meminfo, cgroup=tmp_path / "v1") == 1_500_000_000
    assert available_bytes(meminfo=tmp_path / "none", cgroup=tmp_path / "none") is None
    real = available_bytes()
    assert real is None or real > 0


def test_a_batch_that_does_not_fit_is_made_smaller() -> None:
    w, h = 1280, 720
    room = (encode_bytes(w, h, 2, SGA) + encode_bytes(w, h, 3, SGA)) // 2
    notes: list[str] = []
    assert fit_batch(w, h, 4, SGA, available=room, warn=notes.append, name="clip.mp4") == 2
    assert len(notes) == 1
    assert "--batch 4" in notes[0] and "--batch 2" in notes[0] and "1280x720" in notes[0]
    assert "clip.mp4" in notes[0]
    assert fit_batch(w, h, 4, SGA, available=10**15, warn=notes.append) == 4
    assert len(notes) == 1  # a batch that fits is kept, silently


def test_a_frame_that_does_not_fit_at_batch_1_is_a_clear_error() -> None:
    w, h = 3840, 2160
    need = encode_bytes(w, h, 1, SGA)
    with pytest.raises(InsufficientMemoryError) as err:
        fit_batch(w, h, 4, SGA, available=need - 1, name="film.mkv")
    msg = str(err.value)
    assert "film.mkv" in msg and "3840x2160" in msg and "--batch 1" in msg
    assert f"{need / 1e9:.1f} GB" in msg and f"{(need - 1) / 1e9:.1f} GB" in msg
    assert "--refine none" in msg
    assert isinstance(err.value, ResourceError) and err.value.exit_code == 8
    assert fit_batch(w, h, 4, SGA, available=need) == 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, object]:
    d = tmp_path_factory.mktemp("memory")
    torch.manual_seed(3)
    net = get_architecture("bmshj2018-factorized").model_class()(N=16, M=24)
    ckpt = d / "tiny.pth"
    torch.save(net.state_dict(), ckpt)
    clip = synthetic_clip(d / "clip.mp4", 4, 64, 48, gop=4, seed=1)
    return clip, load_model(checkpoint=str(ckpt), quality=3)


def test_encode_video_fits_the_batch_and_refuses_before_writing(tiny, tmp_path: Path) -> None:
    clip, model = tiny
    refine = RefineConfig(iters=2, lr=5e-3, tol=0.0, gop=1)
    notes: list[str] = []
    ref = tmp_path / "ref.rlv"
    encode_video(str(clip), str(ref), model, refine, batch=4, warn=notes.append)
    assert notes == []  # a 64x48 encode is unaffected on any machine that runs the tests
    avail = available_bytes()
    assert avail is None or fit_batch(64, 48, 4, refine.resolved(model.identity.lmbda)) == 4

    resolved = refine.resolved(model.identity.lmbda)
    room = encode_bytes(64, 48, 1, resolved, channels=16)
    small = tmp_path / "small.rlv"
    encode_video(
        str(clip), str(small), model, refine, batch=4, warn=notes.append, memory_available=room
    )
    assert len(notes) == 1 and "--batch 1" in notes[0]
    assert small.read_bytes() == ref.read_bytes()  # the batch never changes the bytes

    none = tmp_path / "none.rlv"
    with pytest.raises(InsufficientMemoryError, match="64x48"):
        encode_video(str(clip), str(none), model, refine, batch=4, memory_available=room - 1)
    assert not none.exists() and not list(tmp_path.glob("*.rltmp*"))
