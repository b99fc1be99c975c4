"""Fixtures of the cluster tests: a tiny random model checkpoint, tiny synthetic clips
(written with PyAV, short GOPs so shard cuts land on keyframes) and their single-process
reference streams (``relatent encode``'s code path), against which every distributed
output is compared byte for byte."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from jobs.bench.pipeline import synthetic_clip
from pipeline.codec import encode_video
from pipeline.config import RefineConfig
from pipeline.models import get_architecture, load_model

#: Refinement used by every cluster test: a few real iterations, no early stop (floats as
#: the CLI parses them: the hash is type-sensitive).
REFINE = RefineConfig(iters=2, lr=5e-3, tol=0.0)


def write_clip(
    path: Path, n: int = 16, w: int = 64, h: int = 48, gop: int = 4, seed: int = 0
) -> Path:
    """An H.264 clip of moving gradients with a keyframe every ``gop`` frames."""
    return synthetic_clip(path, n, w, h, gop=gop, seed=seed)


def write_clip_with_audio(path: Path, n: int = 12, w: int = 64, h: int = 48) -> Path:
    """An H.264 clip with an AAC sine-tone track (the track goes into the carry section)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = 4
        s.options = {"preset": "ultrafast"}
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        yy, xx = np.mgrid[0:h, 0:w]
        for t in range(n):
            img = np.stack([(xx * 4 + t * 5) % 256, (yy * 5) % 256, (xx + yy) % 256], -1).astype(
                np.uint8
            )
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = t
            for p in s.encode(f):
                c.mux(p)
        for k in range(0, 16000 * n // 25, 1024):
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(k, k + 1024) / 16000)
            af = av.AudioFrame.from_ndarray(
                tone.astype(np.float32)[None], format="fltp", layout="mono"
            )
            af.sample_rate, af.pts = 16000, k
            for p in a.encode(af):
                c.mux(p)
        for st in (s, a):
            for p in st.encode(None):
                c.mux(p)
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cluster-ckpt")
    torch.manual_seed(7)
    net = get_architecture("bmshj2018-factorized").model_class()(N=16, M=24)
    path = d / "factorized.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "a": write_clip(d / "a.mp4", n=16, seed=1),
        "b": write_clip(d / "b.mp4", n=12, w=80, h=64, gop=5, seed=2),
        "long": write_clip(d / "long.mp4", n=24, seed=3),
    }


def encode_reference(uri: str, checkpoint: Path, dst: Path) -> bytes:
    """`relatent encode` of an S3 source (read through ``storage.open_read``, so the carry
    section names the source by its URI, as the distributed path does)."""
    from pipeline import storage

    model = load_model(checkpoint=str(checkpoint), quality=3)
    with storage.open_read(uri) as f:
        encode_video(f, str(dst), model, REFINE)
    return dst.read_bytes()


@pytest.fixture(scope="session")
def references(clips, checkpoint, tmp_path_factory) -> dict[str, bytes]:
    """The single-process stream of every clip (what `relatent encode` writes)."""
    d = tmp_path_factory.mktemp("refs")
    model = load_model(checkpoint=str(checkpoint), quality=3)
    out = {}
    for name, src in clips.items():
        dst = d / f"{name}.rlv"
        encode_video(str(src), str(dst), model, REFINE)
        out[name] = dst.read_bytes()
    return out
