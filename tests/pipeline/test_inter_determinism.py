"""Determinism of inter-coded (GOP) streams through `relatent encode` with the shipped
weights: the same source and options give byte-identical streams in another process, at
another torch thread count and another batch size, unrefined and refined (campos, sga,
warm starts, an adaptive budget, quality and bitrate targets; a GOP of 4 and the CLI's
default of 16); decoding in
another process at another thread count recovers bit-identical latents (integer symbols
and ``y_hat``) and frames within 1 LSB.

The tests compare runs with each other, never with stored bytes, so they hold whatever the
encoder does (``tests/jobs/test_golden.py`` pins the bytes). Shard layouts and the Ray path:
``tests/cluster/test_gop_shards.py`` and ``tests/cluster/test_distributed.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from pipeline.bitstream import FLAG_INTER, FLAG_REFINED, StreamReader
from pipeline.models import load_cards
from tests.conftest import REPO_ROOT

__all__ = ["CONFIGS", "DECODED", "child_main", "decode_all", "encode_all", "write_clip"]

#: Frames of the clip: 4 whole GOPs of 4 and a short one; a whole GOP of 16 and a short one.
FRAMES = 18

#: `relatent encode` options per case (with the CLI's defaults otherwise: campos, GOP 16).
CONFIGS: dict[str, list[str]] = {
    "gop4-none": ["--refine", "none", "--gop", "4"],
    "gop4-campos": ["--refine", "campos", "--iters", "3", "--lr", "1e-2", "--tol", "0", "--gop", "4"],
    "gop4-sga-warm": [
        "--refine", "sga", "--iters", "3", "--lr", "1e-2", "--tol", "0", "--gop", "4",
        "--warm-start", "--warm-threshold", "1e9",
    ],
    "gop16-campos": ["--iters", "2", "--tol", "0"],
    "gop16-sga-budget": [
        "--refine", "sga", "--iters", "4", "--tol", "0", "--budget-iters-per-frame", "2",
        "--probe", "2",
    ],
    # rate control: every shipped rate point, a lambda per GOP (format version 4)
    "gop4-target-psnr": [
        "--refine", "sga", "--iters", "3", "--tol", "0", "--gop", "4", "--target-psnr", "21.5",
    ],
    "gop4-target-kbps": [
        "--refine", "sga", "--iters", "3", "--tol", "0", "--gop", "4", "--target-kbps", "38",
    ],
}  # fmt: skip

#: The streams decoded in both processes (the decoder does not depend on how the latents
#: were chosen, only on the GOP structure: a GOP of 4 and one of 16).
DECODED = ("gop4-sga-warm", "gop16-campos", "gop4-target-psnr")

#: Batch sizes (frames, or GOPs in lockstep) of the two encodes: this process, the child.
BATCH_HERE, BATCH_CHILD = 3, 1
#: Torch intra-op threads of the two processes (encode and decode).
THREADS_HERE, THREADS_CHILD = 2, 1


def write_clip(path: Path, n: int = FRAMES, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    """A ``w`` x ``h`` H.264 clip (4:4:4, near-lossless) of ``n`` frames at 25 fps: a static
    texture, a square moving one pixel per frame and faint noise, so that most frames are
    coded as P frames and refinement has something to change."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [
            128 + 90 * np.sin(xx / 5.0),
            128 + 90 * np.cos(yy / 4.0),
            128 + 60 * np.sin((xx + yy) / 7.0),
        ],
        -1,
    )
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv444p"
        s.options = {"crf": "4", "preset": "ultrafast"}
        for t in range(n):
            img = base.copy()
            img[10:22, 8 + t : 20 + t] = (230, 40, 40)
            img = np.clip(img + rng.normal(0, 1.5, img.shape), 0, 255).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = t
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def encode_all(src: Path, out: Path, batch: int) -> dict[str, Path]:
    """`relatent encode` of ``src`` with every case of :data:`CONFIGS` into ``out``."""
    from jobs.cli import main

    out.mkdir(parents=True, exist_ok=True)
    streams = {}
    for name, opts in CONFIGS.items():
        dst = out / f"{name}.rlv"
        argv = ["encode", str(src), str(dst), "--batch", str(batch), "--no-progress", *opts]
        code = main(argv)
        assert code == 0, f"relatent {' '.join(argv)} exited {code}"
        streams[name] = dst
    return streams


def decode_all(streams: dict[str, Path], out: Path) -> dict[str, Path]:
    """Decode every stream (``pipeline.decoder.decode_stream``, the path of `relatent
    decode`) at the current torch thread count; per stream an ``.npz`` in ``out`` with the
    integer symbols ``[F, M, Hy, Wy]``, ``y_hat`` ``[F, M, Hy, Wy]`` and ``rgb`` ``[F, h, w, 3]``."""
    from pipeline.decoder import decode_stream

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, src in streams.items():
        frames = list(decode_stream(str(src)))
        assert all(d.symbols is not None for d in frames)
        files[name] = out / f"{name}.npz"
        np.savez(
            files[name],
            symbols=np.stack([d.symbols for d in frames]),
            y_hat=np.stack([d.y_hat[0].cpu().numpy() for d in frames]),
            rgb=np.stack([d.rgb for d in frames]),
            index=np.array([d.index for d in frames]),
        )
    return files


def child_main(argv: list[str]) -> None:
    """The other process: ``argv[0]`` is JSON with ``threads``, ``batch``, ``src``, ``out``
    and ``decode`` (stream name -> path). Sets the torch thread count, encodes every case
    and decodes the given streams; prints JSON with the paths it wrote."""
    import torch

    args = json.loads(argv[0])
    torch.set_num_threads(int(args["threads"]))
    out = Path(args["out"])
    streams = encode_all(Path(args["src"]), out / "enc", int(args["batch"]))
    decoded = decode_all({k: Path(v) for k, v in args["decode"].items()}, out / "dec")
    result = {
        "threads": torch.get_num_threads(),
        "streams": {k: str(v) for k, v in streams.items()},
        "decoded": {k: str(v) for k, v in decoded.items()},
    }
    print(json.dumps(result))


def run_child(args: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`child_main` in a fresh interpreter; its JSON result."""
    code = (
        "import sys\n"
        "from tests.pipeline.test_inter_determinism import child_main\n"
        "child_main(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Any]:
    """Every case encoded here (``THREADS_HERE`` threads, batch ``BATCH_HERE``) and in a
    child process (``THREADS_CHILD`` threads, batch ``BATCH_CHILD``), which also decodes
    this process's streams; this process decodes them too, at its own thread count."""
    if not load_cards()["models"]:
        pytest.skip("no shipped weights in this checkout")
    from pipeline.models import fixed_threads

    d = tmp_path_factory.mktemp("inter-determinism")
    src = write_clip(d / "clip.mp4")
    with fixed_threads(THREADS_HERE):
        here = encode_all(src, d / "here" / "enc", BATCH_HERE)
    child = run_child({
        "threads": THREADS_CHILD,
        "batch": BATCH_CHILD,
        "src": str(src),
        "out": str(d / "child"),
        "decode": {k: str(here[k]) for k in DECODED},
    })  # fmt: skip
    assert child["threads"] == THREADS_CHILD
    with fixed_threads(THREADS_HERE):
        decoded_here = decode_all({k: here[k] for k in DECODED}, d / "here" / "dec")
    return {
        "here": here,
        "child": {k: Path(v) for k, v in child["streams"].items()},
        "decoded_here": decoded_here,
        "decoded_child": {k: Path(v) for k, v in child["decoded"].items()},
    }


def flags_of(stream: Path) -> list[int]:
    """The packet flags of every frame of ``stream``."""
    with StreamReader(str(stream)) as r:
        return [p.flags for p in r]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bytes_identical_across_processes_threads_and_batch_sizes(
    runs: dict[str, Any], name: str
) -> None:
    here, child = runs["here"][name], runs["child"][name]
    assert here.read_bytes() == child.read_bytes(), (
        f"{name}: `relatent encode` wrote other bytes with {THREADS_CHILD} thread(s) and batch "
        f"{BATCH_CHILD} in another process than with {THREADS_HERE} and batch {BATCH_HERE}"
    )
    # The comparison is of inter-coded, refined streams: P frames in every GOP after its
    # first frame and, when refinement is on, P frames whose refined latents were coded.
    flags = flags_of(here)
    gop = 4 if name.startswith("gop4") else 16
    with StreamReader(str(here)) as r:
        assert r.version == (5 if "target" in name else 3)  # midpoint rate points: version 5
        assert r.header.gop == gop and len(r) == FRAMES
    assert not any(f & FLAG_INTER for f in flags[::gop])
    whole = range(0, FRAMES - gop + 1, gop)  # the GOPs with all their frames
    assert all(any(f & FLAG_INTER for f in flags[s + 1 : s + gop]) for s in whole)
    refined_p = any(f & FLAG_REFINED and f & FLAG_INTER for f in flags)
    assert refined_p == (not name.endswith("none"))


@pytest.mark.parametrize("name", DECODED)
def test_decoding_elsewhere_gives_identical_latents_and_frames_within_one_lsb(
    runs: dict[str, Any], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a = np.load(runs["decoded_here"][name])
    b = np.load(runs["decoded_child"][name])
    assert list(a["index"]) == list(b["index"]) == list(range(FRAMES))
    assert a["symbols"].dtype == b["symbols"].dtype and np.array_equal(a["symbols"], b["symbols"])
    assert a["y_hat"].tobytes() == b["y_hat"].tobytes(), f"{name}: y_hat is not bit-identical"
    diff = np.abs(a["rgb"].astype(np.int16) - b["rgb"].astype(np.int16))
    assert diff.max() <= 1, f"{name}: decoded frames differ by {diff.max()} (8-bit values)"
    with capsys.disabled():
        print(
            f"\n[{name}] 8-bit values differing between {THREADS_HERE} and {THREADS_CHILD} "
            f"decode threads: {int((diff > 0).sum())} of {diff.size}"
        )
