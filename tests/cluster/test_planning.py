"""Planning, configuration and the actor/commit work functions, in-process (no Ray)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cluster import manifest as mf
from cluster.commit import CommitSpec, commit_video
from cluster.config import (
    ClusterConfig,
    TranscodeJob,
    actor_device,
    actor_options,
    helper_task_options,
)
from cluster.planning import output_key, plan_ranges, source_stem, video_id
from cluster.prepare import prepare_video
from cluster.shard import ShardEncoder, validate_staged
from pipeline.config import RefineConfig
from pipeline.errors import ConfigError, EmptySourceError
from pipeline.models import load_model
from tests.cluster.conftest import REFINE

# --------------------------------------------------------------------------- cuts


def test_plan_ranges_snaps_to_nearby_keyframes() -> None:
    assert plan_ranges(16, (0, 6, 12), 4) == [(0, 6), (6, 12), (12, 16)]
    assert plan_ranges(100, range(0, 100, 10), 32) == [(0, 30), (30, 60), (60, 100)]
    assert plan_ranges(130, range(0, 130, 10), 32) == [(0, 30), (30, 60), (60, 90), (90, 130)]


def test_plan_ranges_without_keyframes_cuts_on_target_and_merges_the_tail() -> None:
    assert plan_ranges(10, (0,), 4) == [(0, 4), (4, 10)]  # tail of 6 <= 1.5 * 4
    assert plan_ranges(13, (0,), 4) == [(0, 4), (4, 8), (8, 13)]
    assert plan_ranges(3, (0,), 32) == [(0, 3)]
    assert plan_ranges(8, (), 1) == [(i, i + 1) for i in range(8)]


def test_plan_ranges_all_intra_cuts_exactly() -> None:
    assert plan_ranges(12, range(12), 4, slack=0.5) == [(0, 4), (4, 8), (8, 12)]


def test_plan_ranges_covers_every_frame_once() -> None:
    for n in (1, 7, 31, 64, 129):
        for k in (1, 3, 16):
            r = plan_ranges(n, range(0, n, 5), k)
            assert r[0][0] == 0 and r[-1][1] == n
            assert all(a < b for a, b in r)
            assert all(r[i][1] == r[i + 1][0] for i in range(len(r) - 1))


@pytest.mark.parametrize("grid", [2, 3, 4, 8, 16])
def test_plan_ranges_on_a_grid_cut_only_on_multiples(grid: int) -> None:
    for n in (1, 7, 31, 64, 129):
        for target in (1, 3, 5, 16, 40):
            for kf in (range(0, n, 4), range(0, n, 5), ()):
                r = plan_ranges(n, kf, target, grid=grid)
                assert r[0][0] == 0 and r[-1][1] == n
                assert all(r[i][1] == r[i + 1][0] for i in range(len(r) - 1))
                assert all(s % grid == 0 for s, _ in r), (n, target, kf, r)


def test_plan_ranges_on_a_grid_prefers_keyframes_then_the_target() -> None:
    # multiples of 8 within reach of 32 +- 16: 16..48; keyframe 40 is one of them
    assert plan_ranges(100, range(0, 100, 10), 32, grid=8) == [(0, 40), (40, 80), (80, 100)]
    # grid 5 and keyframes every 10: the keyframes nearest the target
    assert plan_ranges(100, range(0, 100, 10), 32, grid=5) == [(0, 30), (30, 60), (60, 100)]
    # no keyframe on the grid: the multiple nearest the target (ties: the earlier)
    assert plan_ranges(40, (0, 7, 21), 10, grid=4) == [
        (0, 8),
        (8, 16),
        (16, 24),
        (24, 32),
        (32, 40),
    ]
    assert plan_ranges(40, (0, 7, 21), 11, grid=4) == [(0, 12), (12, 24), (24, 40)]
    # shards shorter than the grid: one grid group each
    assert plan_ranges(20, (), 3, grid=8) == [(0, 8), (8, 16), (16, 20)]
    assert plan_ranges(16, range(0, 16, 4), 4, grid=1) == plan_ranges(16, range(0, 16, 4), 4)


def test_plan_ranges_rejects_empty() -> None:
    with pytest.raises(EmptySourceError):
        plan_ranges(0, (), 4)
    with pytest.raises(ConfigError):
        plan_ranges(4, (), 0)
    with pytest.raises(ConfigError):
        plan_ranges(4, (), 2, grid=0)


# --------------------------------------------------------------------------- config


def test_actor_options_map_config_to_ray_resources() -> None:
    opts = actor_options(ClusterConfig(actors=4, gpus_per_actor=0.25, cpus_per_actor=2))
    assert opts == {
        "num_cpus": 2,
        "num_gpus": 0.25,
        "max_restarts": 0,
        "max_task_retries": 0,
        "max_concurrency": 1,
    }
    cpu = actor_options(ClusterConfig(memory_per_actor=2 << 30))
    assert "num_gpus" not in cpu and cpu["memory"] == 2 << 30
    assert helper_task_options()["num_cpus"] == 0


def test_actor_device() -> None:
    assert actor_device(ClusterConfig(gpus_per_actor=0.5), cuda_available=True) == "cuda"
    assert actor_device(ClusterConfig(gpus_per_actor=0.5), cuda_available=False) == "cpu"
    assert actor_device(ClusterConfig(), cuda_available=True) == "cpu"
    with pytest.raises(ConfigError):
        actor_device(ClusterConfig(device="cuda"), cuda_available=False)


@pytest.mark.parametrize(
    "cfg",
    [
        ClusterConfig(actors=0),
        ClusterConfig(gpus_per_actor=1.5),
        ClusterConfig(gpus_per_actor=-1),
        ClusterConfig(max_inflight=0),
        ClusterConfig(device="tpu"),
    ],
)
def test_cluster_config_rejects_bad_values(cfg: ClusterConfig) -> None:
    with pytest.raises(ConfigError):
        cfg.validate()


def test_job_validation() -> None:
    with pytest.raises(ConfigError):
        TranscodeJob(sources=(), out="x").validate()
    with pytest.raises(ConfigError):
        TranscodeJob(sources=("a", "a"), out="x").validate()
    with pytest.raises(ConfigError):
        TranscodeJob(sources=("a",), out="x", shard_frames=0).validate()
    TranscodeJob(sources=("a",), out="x").validate()


def test_output_keys_are_deterministic(checkpoint: Path) -> None:
    model = load_model(checkpoint=str(checkpoint), quality=3)
    ident = model.identity
    r = REFINE.resolved(ident.lmbda)
    assert video_id("s3://b/x/clip.mp4", ident, r) == video_id("s3://b/x/clip.mp4", ident, r)
    assert video_id("s3://b/x/clip.mp4", ident, r).startswith("clip-")
    other = RefineConfig(iters=3, lr=5e-3, tol=0).resolved(ident.lmbda)
    assert output_key("s3://b/clip.mp4", ident, r) != output_key("s3://b/clip.mp4", ident, other)
    assert output_key("s3://b/clip.mp4", ident, r) != output_key("s3://b/y/clip.mp4", ident, r)
    assert source_stem("/a/b/My Clip (1).MP4") == "My_Clip_1"


# --------------------------------------------------------------------------- work


@pytest.fixture(scope="module")
def model(checkpoint: Path):
    return load_model(checkpoint=str(checkpoint), quality=3)


def _run_local(
    src: Path, out: Path, model, shard_frames: int, order=lambda x: x
) -> tuple[dict, list]:
    ident = model.identity
    refine = REFINE.resolved(ident.lmbda)
    plan = prepare_video(str(src), str(out), ident, refine)
    specs = plan.shards(shard_frames, 0.5, refine, ident.weights_sha256, batch=3)
    enc = ShardEncoder(model)
    outcomes = [enc.encode(s) for s in order(specs)]
    summary = commit_video(CommitSpec(plan, tuple((s.start, s.end) for s in specs), ident, refine))
    return summary, outcomes


@pytest.mark.parametrize("shard_frames", [3, 5, 16])
def test_shards_reassemble_byte_identical_to_single_process_encode(
    tmp_path: Path, clips, references, model, shard_frames: int
) -> None:
    summary, _ = _run_local(
        clips["a"], tmp_path, model, shard_frames, order=lambda s: list(reversed(s))
    )
    assert Path(summary["stream"]).read_bytes() == references["a"]
    assert summary["frames"] == 16 and summary["stream_bytes"] == len(references["a"])
    # staging is gone, the manifest is there
    assert not list((tmp_path / "_staging").rglob("*.rlvs"))
    rows = mf.read_rows(str(tmp_path / f"{summary['video_id']}.manifest.parquet")).to_pylist()
    assert [r["frame_index"] for r in rows] == list(range(16))
    data = references["a"]
    for r in rows:  # offsets point at the packets
        assert data[r["byte_offset"] : r["byte_offset"] + 2] == b"PK"
    assert sum(r["byte_length"] for r in rows) == summary["totals"]["packet_bytes"]
    assert rows[0]["byte_offset"] == summary["header_bytes"]


#: Warm starts and an adaptive budget on a grid of 3 (the clips' GOP is 4, so most grid
#: points are not keyframes): every frame's bytes depend on its group.
WARM_BUDGET = RefineConfig(
    iters=6, lr=5e-3, tol=0.0, warm_start=True, grid=3, warm_threshold=1e9, budget=3, probe=2
)


@pytest.mark.parametrize("shard_frames", [2, 5, 7, 16])
def test_warm_start_streams_are_identical_across_shard_layouts_and_retries(
    tmp_path: Path, clips, model, shard_frames: int
) -> None:
    from pipeline.codec import encode_video

    ident = model.identity
    refine = WARM_BUDGET.resolved(ident.lmbda)
    ref = tmp_path / "ref.rlv"  # `relatent encode`
    summary_ref = encode_video(str(clips["a"]), str(ref), model, WARM_BUDGET, batch=2)
    assert any(f.warm for f in summary_ref.frames)
    # every frame was probed and given its share (tol 0: all of it); the frames of this clip
    # are alike, so the shares are even (uneven shares: tests/pipeline/test_refine.py)
    assert all(f.iters == f.allocated >= WARM_BUDGET.probe for f in summary_ref.frames)
    out = tmp_path / "out"
    plan = prepare_video(str(clips["a"]), str(out), ident, refine)
    specs = plan.shards(shard_frames, 0.5, refine, ident.weights_sha256, batch=3)
    assert all(s.start % 3 == 0 for s in specs)
    enc = ShardEncoder(model)
    for s in reversed(specs):
        enc.encode(s)
    # a retry: one shard's staged result is lost and it is encoded again, alone
    victim = specs[len(specs) // 2]
    staged = Path(victim.shard_uri).read_bytes()
    Path(victim.sidecar_uri).unlink()
    Path(victim.shard_uri).unlink()
    assert not ShardEncoder(model).encode(victim).reused
    assert Path(victim.shard_uri).read_bytes() == staged
    summary = commit_video(CommitSpec(plan, tuple((s.start, s.end) for s in specs), ident, refine))
    assert Path(summary["stream"]).read_bytes() == ref.read_bytes()
    assert summary["totals"]["iters"] == sum(f.iters for f in summary_ref.frames)
    assert summary["totals"]["iters_per_frame"] == summary["totals"]["iters"] / 16


def test_shards_off_the_grid_are_refused(tmp_path: Path, clips, model) -> None:
    ident = model.identity
    refine = WARM_BUDGET.resolved(ident.lmbda)
    plan = prepare_video(str(clips["a"]), str(tmp_path), ident, refine)
    spec = plan.shards(16, 0.5, refine, ident.weights_sha256, batch=3)[0]
    bad = replace(spec, start=4, end=8)
    with pytest.raises(ConfigError, match="grid of 3 frames"):
        ShardEncoder(model).encode(bad)
    assert not Path(bad.shard_uri).exists()


def test_staged_shards_are_validated_and_reused(tmp_path: Path, clips, references, model) -> None:
    ident = model.identity
    refine = REFINE.resolved(ident.lmbda)
    plan = prepare_video(str(clips["a"]), str(tmp_path), ident, refine)
    specs = plan.shards(5, 0.5, refine, ident.weights_sha256, batch=4)
    enc = ShardEncoder(model)
    first = [enc.encode(s) for s in specs]
    assert not any(o.reused for o in first)
    # A corrupt shard (bytes changed after its sidecar was written) is not reused.
    bad = Path(specs[1].shard_uri)
    bad.write_bytes(bad.read_bytes()[:-3] + b"xyz")
    assert validate_staged(specs[1]) is None
    # A sidecar without its shard is not reused either.
    Path(specs[2].shard_uri).unlink()
    second = [enc.encode(s) for s in specs]
    assert [o.reused for o in second] == [True, False, False] + [True] * (len(specs) - 3)
    summary = commit_video(CommitSpec(plan, tuple((s.start, s.end) for s in specs), ident, refine))
    assert Path(summary["stream"]).read_bytes() == references["a"]
    # A committed video is skipped; a changed config is not.
    assert prepare_video(str(clips["a"]), str(tmp_path), ident, refine).skipped
    other = RefineConfig(iters=1, tol=0).resolved(ident.lmbda)
    assert not prepare_video(str(clips["a"]), str(tmp_path), ident, other).skipped


def test_manifest_summary(tmp_path: Path, clips, model) -> None:
    summary, _ = _run_local(clips["b"], tmp_path, model, 4)
    read = mf.read_summary(str(tmp_path / f"{summary['video_id']}.manifest.parquet"))
    assert read == json.loads(json.dumps(summary))
    assert read["model"]["weights_sha256"] == model.identity.weights_sha256
    assert read["config_hash"] == REFINE.resolved(model.identity.lmbda).hash()
    assert read["source"] == str(clips["b"]) and read["source_etag"]
    assert read["width"] == 80 and read["height"] == 64 and read["shards"] == 3
    assert mf.read_summary(str(tmp_path / "missing.parquet")) is None
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    assert mf.read_summary(str(tmp_path / "junk.parquet")) is None


def test_audio_is_carried_like_relatent_encode(tmp_path: Path, model) -> None:
    from pipeline.codec import encode_video
    from tests.cluster.conftest import write_clip_with_audio

    src = write_clip_with_audio(tmp_path / "tone.mp4")
    encode_video(str(src), str(tmp_path / "ref.rlv"), model, REFINE)
    summary, _ = _run_local(src, tmp_path / "out", model, 4)
    assert Path(summary["stream"]).read_bytes() == (tmp_path / "ref.rlv").read_bytes()
    assert summary["carry_bytes"] > 3000  # the AAC track is in the stream


def test_failure_classification_and_summary_table() -> None:
    from cluster.results import JobReport, VideoResult, is_deterministic
    from pipeline.errors import CorruptSourceError, ModelError, StorageError

    assert is_deterministic(CorruptSourceError("x"))
    assert is_deterministic(ModelError("x"))
    assert not is_deterministic(StorageError("x"))  # transient: retried
    assert not is_deterministic(RuntimeError("x"))
    ok = VideoResult("a.mp4", "a-1", status="committed", frames=16, shards=4, stream_bytes=100)
    bad = VideoResult("b.mp4", "b-2", status="failed", error="b.mp4: truncated")
    report = JobReport("j", [ok, bad], seconds=2.0, frames_encoded=16)
    table = report.table()
    assert "a-1" in table and "committed" in table and "8.00 frames/s" in table
    assert "FAILED b-2 (b.mp4): b.mp4: truncated" in table
    assert not report.ok and report.failed == [bad]
    assert report.to_dict()["fps"] == 8.0
