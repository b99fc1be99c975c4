"""Inter-coded (GOP) streams assembled from shards, in-process (the actor's and the
committer's work functions, no Ray): whatever the shard layout, the shard batch size and the
order in which shards are coded, the stream is byte-identical to `relatent encode`'s
(``pipeline.codec.encode_video``), refined P frames included. The same through Ray:
``tests/cluster/test_distributed.py::test_gop_streams_on_ray_match_relatent_encode``."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.commit import CommitSpec, commit_video
from cluster.prepare import prepare_video
from cluster.shard import ShardEncoder
from pipeline.bitstream import FLAG_INTER, FLAG_REFINED, StreamReader
from pipeline.codec import encode_video
from pipeline.config import RefineConfig
from pipeline.models import load_cards, load_model

__all__: list[str] = []

#: Refined GOP configs, each with two shard sizes that cut the 16-frame clip ``a`` (a
#: keyframe every 4 frames) into different layouts. GOP 3 puts most cuts off the clip's
#: keyframes (the actor decodes from the keyframe before its range); GOP 4 with warm starts
#: makes every frame's refinement depend on the frame before it.
CASES = [
    pytest.param(
        RefineConfig(iters=2, lr=1e-2, tol=0.0, gop=3),
        (3, 7),
        [[0, 3, 6, 9, 12], [0, 6]],
        id="campos-gop3",
    ),
    pytest.param(
        RefineConfig(
            method="sga", iters=2, lr=1e-2, tol=0.0, gop=4, warm_start=True, warm_threshold=1e9
        ),
        (4, 8),
        [[0, 4, 8, 12], [0, 8]],
        id="sga-warm-gop4",
    ),
]


@pytest.fixture(scope="module")
def shipped():
    """The shipped q3 weights: refinement of real latents wins on some frames and not on
    others, so the stream mixes refined and unrefined P frames."""
    if not any(c["quality"] == 3 for c in load_cards()["models"]):
        pytest.skip("no shipped q3 weights in this checkout")
    return load_model(quality=3)


@pytest.mark.parametrize(("refine", "shard_frames", "layouts"), CASES)
def test_gop_streams_are_identical_across_shard_layouts(
    tmp_path: Path,
    clips: dict[str, Path],
    shipped,
    refine: RefineConfig,
    shard_frames: tuple[int, int],
    layouts: list[list[int]],
) -> None:
    src = clips["a"]
    ref = tmp_path / "ref.rlv"  # `relatent encode`, its default batch
    encode_video(str(src), str(ref), shipped, refine)
    with StreamReader(str(ref)) as r:
        flags = [p.flags for p in r]
    # inter-coded and refined: the comparisons below can fail on either
    assert not any(f & FLAG_INTER for f in flags[:: refine.gop]) and any(
        f & FLAG_INTER for f in flags
    )
    assert any(f & FLAG_REFINED and f & FLAG_INTER for f in flags)
    ident = shipped.identity
    resolved = refine.resolved(ident.lmbda)
    for sf, batch, want in zip(shard_frames, (1, 3), layouts, strict=True):
        out = tmp_path / f"out{sf}"
        plan = prepare_video(str(src), str(out), ident, resolved)
        specs = plan.shards(sf, 0.5, resolved, ident.weights_sha256, batch=batch)
        assert [s.start for s in specs] == want  # cut on the GOP, in different layouts
        enc = ShardEncoder(shipped)
        for s in reversed(specs):  # last shard first: no state may leak between shards
            assert not enc.encode(s).reused
        summary = commit_video(
            CommitSpec(plan, tuple((s.start, s.end) for s in specs), ident, resolved)
        )
        assert Path(summary["stream"]).read_bytes() == ref.read_bytes(), (
            f"shards {want} (batch {batch}) assembled another stream than `relatent encode`"
        )


def test_a_no_carry_stream_from_shards_records_the_title_as_encode_does(
    tmp_path: Path, shipped
) -> None:
    """``--no-carry``: the header itself records the source's container title (display
    metadata), on the distributed path as in ``relatent encode``, byte for byte."""
    from tests.conftest import REPO_ROOT

    src = REPO_ROOT / "tests" / "data" / "golden_src.mkv"  # 6 frames, a container title
    refine = RefineConfig(method="none", gop=3)
    ref = tmp_path / "ref.rlv"
    encode_video(str(src), str(ref), shipped, refine, carry=False)
    with StreamReader(str(ref)) as r:
        assert (r.header.display or {}).get("title")  # what the test is about
    ident = shipped.identity
    resolved = refine.resolved(ident.lmbda)
    plan = prepare_video(str(src), str(tmp_path / "out"), ident, resolved, carry=False)
    specs = plan.shards(3, 0.5, resolved, ident.weights_sha256, batch=2)
    enc = ShardEncoder(shipped)
    for s in specs:
        enc.encode(s)
    summary = commit_video(
        CommitSpec(plan, tuple((s.start, s.end) for s in specs), ident, resolved)
    )
    assert Path(summary["stream"]).read_bytes() == ref.read_bytes()


def test_a_midpoint_from_shards_is_encodes_stream_and_a_mixed_version_is_refused(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """A midpoint coded alone (``--quality 2.5``) is a version-5 stream that lists it as
    its one rate point: assembled from shards it is `relatent encode`'s, byte for byte.
    A commit whose tail would be of another version than the staged header (the driver
    and the actors disagreeing on the rate points) fails, and nothing is committed."""
    import dataclasses

    from pipeline.errors import BitstreamError
    from pipeline.models import shipped_qualities

    if not {2, 3} <= set(shipped_qualities("bmshj2018-factorized")):
        pytest.skip("no shipped q2 and q3 in this checkout")
    mid = load_model("bmshj2018-factorized", 2.5)
    refine = RefineConfig(method="none", gop=4)
    src = clips["a"]
    ref = tmp_path / "ref.rlv"
    encode_video(str(src), str(ref), mid, refine)
    ident = mid.identity
    resolved = refine.resolved(ident.lmbda)
    for name, commit_ident in (("ok", ident), ("mixed", dataclasses.replace(ident, quality=3))):
        out = tmp_path / name
        plan = prepare_video(str(src), str(out), ident, resolved)
        specs = plan.shards(8, 0.5, resolved, ident.weights_sha256, batch=2)
        enc = ShardEncoder(mid)
        for s in specs:
            enc.encode(s)
        spec = CommitSpec(plan, tuple((s.start, s.end) for s in specs), commit_ident, resolved)
        if name == "ok":
            summary = commit_video(spec)
            assert Path(summary["stream"]).read_bytes() == ref.read_bytes()
            with StreamReader(summary["stream"]) as r:
                assert r.version == 5 and r.header.quality == 2.5
            assert summary["container_version"] == 5
        else:
            with pytest.raises(BitstreamError, match="staged header is format version 5"):
                commit_video(spec)
            assert not Path(plan.paths.stream).exists()
            assert not Path(plan.paths.manifest).exists()
