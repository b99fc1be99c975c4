"""The distributed transcoder on a real local Ray cluster (one per module) with moto S3.

Every output is compared byte for byte with the single-process `relatent encode` stream of
the same clip, model and config (``references``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import pytest
import ray

from cluster import manifest as mf
from cluster.config import ClusterConfig, ModelSpec, TranscodeJob
from cluster.driver import run_job
from jobs.transcode import add_parser, cmd_transcode
from pipeline import storage
from pipeline.codec import encode_video
from pipeline.decoder import decode_video
from pipeline.errors import ClusterError
from pipeline.models import load_model
from tests.cluster.conftest import REFINE, encode_reference
from tests.conftest import REPO_ROOT
from tests.media import (
    FRAME,
    assert_same_packets,
    corrupt_track,
    first_video_time,
    make_source,
    mkv_source,
    packets_by_stream,
    streams_of,
)

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def ray_local(s3_server):
    # Started after the S3 fixture, so the workers inherit its endpoint and credentials.
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def make_job(sources, out, checkpoint, **kw) -> TranscodeJob:
    cluster = kw.pop("cluster", ClusterConfig(actors=2, max_inflight=2))
    return TranscodeJob(
        sources=tuple(str(s) for s in sources),
        out=str(out),
        model=ModelSpec(checkpoint=str(checkpoint), quality=3),
        refine=REFINE,
        shard_frames=kw.pop("shard_frames", 4),
        batch=3,
        cluster=cluster,
        **kw,
    )


def upload(path: Path, uri: str) -> str:
    storage.write_bytes(uri, path.read_bytes())
    return uri


def test_batch_with_bad_member_local_and_s3_sources(
    ray_local, tmp_path, clips, references, checkpoint, s3_prefix
) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(clips["a"].read_bytes()[:300])  # an mp4 cut short: no moov
    s3_b = upload(clips["b"], s3_prefix + "in/b.mp4")
    out = tmp_path / "out"
    events: list[tuple[str, dict]] = []
    report = run_job(
        make_job([clips["a"], s3_b, bad], out, checkpoint),
        on_event=lambda e, f: events.append((e, f)),
    )
    by_src = {v.source: v for v in report.videos}
    a, b, broken = by_src[str(clips["a"])], by_src[s3_b], by_src[str(bad)]
    assert a.status == "committed" and b.status == "committed"
    assert Path(a.stream).read_bytes() == references["a"]  # file -> file
    assert Path(b.stream).read_bytes() == encode_reference(
        s3_b, checkpoint, tmp_path / "b.rlv"
    )  # s3 -> file
    assert broken.status == "failed" and "broken.mp4" in broken.error
    assert not report.ok and report.failed == [broken]
    # the failure is recorded; no manifest or stream for it
    err = json.loads((out / "_errors" / f"{broken.video_id}.json").read_text())
    assert err["source"] == str(bad) and err["error"]
    assert not (out / f"{broken.video_id}.manifest.parquet").exists()
    assert not (out / f"{broken.video_id}.rlv").exists()
    # manifests are complete and staging is clean
    rows = mf.read_rows(a.manifest).to_pylist()
    assert [r["frame_index"] for r in rows] == list(range(16))
    assert {r["shard"] for r in rows} == {0, 1, 2, 3}
    assert all(r["node"] for r in rows)
    summ = mf.read_summary(b.manifest)
    assert summ["source"] == s3_b and summ["stream_bytes"] == Path(b.stream).stat().st_size
    assert not list((out / "_staging").rglob("*.*"))
    assert report.frames_encoded == 28 and report.shards_reused == 0
    names = [e for e, _ in events]
    assert names[0] == "job_started" and names[-1] == "job_finished"
    assert names.count("video_committed") == 2 and names.count("video_failed") == 1
    assert "FAILED" in report.table()
    # A rerun skips the committed videos and only retries the broken one.
    again = run_job(make_job([clips["a"], s3_b, bad], out, checkpoint))
    assert [v.status for v in again.videos] == ["skipped", "skipped", "failed"]
    assert again.frames_encoded == 0


def test_file_and_s3_sources_to_s3(
    ray_local, tmp_path, clips, references, checkpoint, s3_prefix
) -> None:
    s3_a = upload(clips["a"], s3_prefix + "in/a.mp4")
    out = s3_prefix + "out"
    report = run_job(make_job([s3_a, clips["b"]], out, checkpoint, shard_frames=5, job_id="s3job"))
    assert report.ok, report.table()
    a, b = report.videos
    assert a.stream.startswith("s3://")
    s3_ref = encode_reference(s3_a, checkpoint, tmp_path / "a.rlv")
    assert storage.read_bytes(a.stream) == s3_ref  # s3 -> s3
    assert storage.read_bytes(b.stream) == references["b"]  # file -> s3
    assert mf.read_summary(a.manifest)["source_etag"] == storage.stat(s3_a).etag
    assert storage.list_prefix(out + "/_staging/") == []
    assert mf.read_rows(b.manifest).num_rows == 12
    # The actors' Ray metrics reach the node's Prometheus endpoint.
    assert scrape_metric("ray_relatent_frames_encoded_total", 'job="s3job"', expect=28) == 28
    assert scrape_metric("ray_relatent_bytes_written_total", 'job="s3job"') > 0
    assert scrape_metric("ray_relatent_refine_seconds_total", 'job="s3job"') > 0


def scrape_metric(name: str, label: str, expect: float | None = None, timeout: float = 60) -> float:
    """Sum of a metric's samples carrying ``label`` on this node's metrics endpoint, once
    it reaches ``expect`` (or is non-zero): every actor process exports on its own period."""
    port = ray._private.worker._global_node.metrics_export_port
    deadline = time.monotonic() + timeout
    total = 0.0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") and label in line
        )
        if (expect is None and total) or (expect is not None and total >= expect):
            return total
        time.sleep(2)
    return total


def test_actor_sigkill_mid_job_is_byte_identical(
    ray_local, tmp_path, clips, references, checkpoint
) -> None:
    pids: dict[int, int] = {}
    killed: list[int] = []

    def hook(event: str, f: dict) -> None:
        if event == "actor_ready":
            pids[f["actor"]] = f["pid"]
        if event == "shard_done" and not killed:
            # This actor still holds its second in-flight shard (max_inflight=2).
            os.kill(f["pid"], signal.SIGKILL)
            killed.append(f["pid"])

    report = run_job(make_job([clips["long"]], tmp_path, checkpoint), on_event=hook)
    assert killed, "the job finished before an actor could be killed"
    assert report.ok, report.table()
    assert Path(report.videos[0].stream).read_bytes() == references["long"]
    assert report.actor_deaths >= 1 and report.shard_retries >= 1
    assert report.actors_started >= 3  # a replacement was started
    assert_only_outputs(tmp_path)


def assert_only_outputs(out: Path) -> None:
    """After a job with kills: no temporary file left (issue 18 kind 7), no staging folder
    of a committed video, and outputs with the umask's mode (0644 under 022)."""
    assert not list(out.rglob("*.rltmp"))
    assert not [p for p in (out / "_staging").glob("*") if p.is_dir()]
    umask = os.umask(0)
    os.umask(umask)
    for p in [*out.glob("*.rlv"), *out.glob("*.manifest.parquet")]:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def _cli_args(*argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["transcode", *argv])


def test_driver_killed_then_rerun_reuses_staged_shards(
    ray_local, tmp_path, clips, references, checkpoint
) -> None:
    out = tmp_path / "out"
    argv = [
        str(clips["long"]), "--out", str(out), "--checkpoint", str(checkpoint), "--quality", "3",
        "--iters", "2", "--refine", "campos", "--lr", "5e-3", "--tol", "0", "--batch", "3", "--shard-frames", "4", "--gop", "1",
        "--actors", "2", "--address", ray_local, "--no-progress", "--log-level", "info",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.transcode", *argv],
        cwd=REPO_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    done = 0
    deadline = time.monotonic() + 240
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if '"event": "shard_done"' in line:
                done += 1
                if done == 2:
                    break
            assert time.monotonic() < deadline
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert done == 2, "the driver finished or died before it could be killed"
    staged = sorted(p.name for p in (out / "_staging").rglob("shard-*.json"))
    assert len(staged) >= 2
    assert not list(out.glob("*.manifest.parquet"))

    events: list[dict] = []
    args = _cli_args(*argv[:-3], "--no-progress", "--report", str(tmp_path / "report.json"))
    rc = cmd_transcode(args, on_event=lambda e, f: events.append(f) if e == "shard_done" else None)
    assert rc == 0
    reused = [f for f in events if f["reused"]]
    assert len(reused) >= len(staged)  # every shard staged before the kill was reused
    assert len(events) == 6 and sum(not f["reused"] for f in events) == 6 - len(reused)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["shards_reused"] == len(reused)
    stream = next(out.glob("*.rlv"))
    assert stream.read_bytes() == references["long"]
    assert_only_outputs(out)


def test_gpu_actors_on_a_cluster_without_gpus_wait_then_fail_naming_the_cluster(
    ray_local, tmp_path, clips, checkpoint
) -> None:
    """Scale from zero: no GPU now is not an error (an autoscaler may add GPU nodes), but no
    actor within --actor-start-timeout is, naming the cluster and what the actors need."""
    events: list[tuple[str, dict]] = []
    job = make_job(
        [clips["a"]], tmp_path, checkpoint,
        cluster=ClusterConfig(actors=1, gpus_per_actor=0.5, actor_start_timeout=2),
    )  # fmt: skip
    with pytest.raises(ClusterError) as exc:
        run_job(job, on_event=lambda e, f: events.append((e, f)))
    msg = str(exc.value)
    assert ray_local in msg and "GPU: 0.5" in msg and "CPU: 1" in msg and "within 2 s" in msg
    assert "--actor-start-timeout" in exc.value.hint
    waiting = [f for e, f in events if e == "waiting_for_gpus"]
    assert waiting and "waiting up to actor_start_timeout" in waiting[0]["message"]
    assert [e for e, _ in events if e == "actor_ready"] == []
    # the pending video is recorded as failed; nothing is committed
    (err,) = (tmp_path / "_errors").glob("*.json")
    assert "no encoder actor started" in json.loads(err.read_text())["error"]
    assert not list(tmp_path.glob("*.manifest.parquet")) and not list(tmp_path.glob("*.rlv"))


def test_carried_streams_through_transcode_s3_to_s3(
    ray_local, tmp_path, checkpoint, s3_prefix, capsys
) -> None:
    """Issue 8 through `relatent transcode` on local Ray and S3: two audio tracks with
    language tags (one starting late), a subtitle, chapters and an attachment come back
    from `decode` byte for byte and in sync; the manifest lists them."""
    src = mkv_source(tmp_path)
    uri = upload(src, s3_prefix + "in/film.mkv")
    out = s3_prefix + "out"
    rc = cmd_transcode(_cli_args(
        uri, "--out", out, "--checkpoint", str(checkpoint), "--quality", "3", "--iters", "2",
        "--refine", "campos", "--lr", "5e-3", "--tol", "0", "--batch", "3", "--shard-frames", "4", "--gop", "1", "--actors", "2",
        "--address", ray_local, "--no-progress",
    ))  # fmt: skip
    table = capsys.readouterr().out
    assert rc == 0, table
    (rlv,) = [o.uri for o in storage.list_prefix(out) if o.uri.endswith(".rlv")]
    data = storage.read_bytes(rlv)
    assert data == encode_reference(uri, checkpoint, tmp_path / "ref.rlv")  # = relatent encode
    summary = mf.read_summary(rlv[: -len(".rlv")] + ".manifest.parquet")
    src_pk = packets_by_stream(src)
    rows = summary["carried_streams"]
    assert [(r["type"], r["codec"], r["language"]) for r in rows] == [
        ("audio", "aac", "eng"), ("audio", "mp2", "fra"), ("subtitle", "subrip", "deu"),
        ("attachment", "application/x-truetype-font", ""),
    ]  # fmt: skip
    for r in rows[:3]:
        payloads = src_pk[(r["type"], r["language"])]
        assert r["bytes"] == sum(len(b) for _, b in payloads) and r["packets"] == len(payloads)
    assert rows[0]["duration"] == pytest.approx(14 * 1024 / 16000, abs=0.07)
    assert rows[1]["duration"] == pytest.approx(4 * 1152 / 16000, abs=0.08)
    assert summary["dropped_streams"] == []

    local = tmp_path / "film.rlv"
    local.write_bytes(data)
    dst = tmp_path / "film-out.mkv"
    decode_video(str(local), str(dst), str(checkpoint))
    assert streams_of(dst) == [
        ("video", "h264", None), ("audio", "aac", "eng"), ("audio", "mp2", "fra"),
        ("subtitle", "subrip", "deu"), ("attachment", None, None),
    ]  # fmt: skip
    out_pk = packets_by_stream(dst)
    assert out_pk.keys() == src_pk.keys()
    for key in src_pk:
        assert_same_packets(src_pk[key], out_pk[key])  # byte-identical, within one frame
    assert abs(first_video_time(dst) - first_video_time(src)) < FRAME
    with av.open(str(dst)) as c:
        assert [ch["metadata"]["title"] for ch in c.chapters()] == ["Opening", "End"]
        fra = c.streams.audio[1]
        assert float(fra.start_time * fra.time_base) == pytest.approx(0.5, abs=FRAME)


def test_corrupt_audio_fails_the_video_or_is_dropped_with_the_flag(
    ray_local, tmp_path, checkpoint, capsys
) -> None:
    src = make_source(
        tmp_path / "bad.mkv",
        audio=[{"codec": "aac", "lang": "eng"}, {"codec": "aac", "lang": "spa"}],
    )
    corrupt_track(src, ("audio", "eng"))
    out = tmp_path / "out"
    argv = [
        str(src), "--out", str(out), "--checkpoint", str(checkpoint), "--quality", "3",
        "--iters", "2", "--refine", "campos", "--lr", "5e-3", "--tol", "0", "--batch", "3", "--shard-frames", "4", "--gop", "1",
        "--actors", "1", "--address", ray_local, "--no-progress",
    ]  # fmt: skip
    assert cmd_transcode(_cli_args(*argv)) == 1
    table = capsys.readouterr().out
    assert "FAILED" in table and "audio stream #1 (aac, eng)" in table
    assert "--drop-broken-streams" in table
    (err,) = (out / "_errors").glob("*.json")
    assert "audio stream #1 (aac, eng)" in json.loads(err.read_text())["error"]
    assert not list(out.glob("*.manifest.parquet")) and not list(out.glob("*.rlv"))

    assert cmd_transcode(_cli_args(*argv, "--drop-broken-streams")) == 0
    table = capsys.readouterr().out
    assert "WARNING" in table and "audio stream #1 (aac, eng) is corrupt" in table
    (manifest,) = out.glob("*.manifest.parquet")
    summary = mf.read_summary(str(manifest))
    assert [(r["language"], r["status"]) for r in summary["carried_streams"]] == [
        ("spa", "carried")
    ]
    (drop,) = summary["dropped_streams"]
    assert (drop["index"], drop["type"], drop["codec"], drop["language"], drop["status"]) == (
        1, "audio", "aac", "eng", "broken",
    )  # fmt: skip
    assert "decoding the packet" in drop["reason"]
    assert not (out / "_errors" / err.name).exists()  # the commit clears the old error record
    # byte-identical to `relatent encode --drop-broken-streams`
    ref = tmp_path / "ref.rlv"
    encode_video(str(src), str(ref), load_model(checkpoint=str(checkpoint), quality=3), REFINE,
                 drop_broken=True, warn=lambda m: None)  # fmt: skip
    assert Path(summary["stream"]).read_bytes() == ref.read_bytes()


def test_warm_start_and_budget_on_ray_match_relatent_encode(
    ray_local, tmp_path, clips, checkpoint
) -> None:
    """Warm starts and an adaptive budget through the Ray path (grid-aligned shards on two
    actors): the same bytes as `relatent encode`, and the manifest reports the iterations."""
    from pipeline.config import RefineConfig

    refine = RefineConfig(
        iters=6, lr=5e-3, tol=0.0, warm_start=True, grid=3, warm_threshold=1e9, budget=3, probe=2
    )
    ref = tmp_path / "ref.rlv"
    encode_video(
        str(clips["a"]), str(ref), load_model(checkpoint=str(checkpoint), quality=3), refine
    )
    job = TranscodeJob(
        sources=(str(clips["a"]),),
        out=str(tmp_path / "out"),
        model=ModelSpec(checkpoint=str(checkpoint), quality=3),
        refine=refine,
        shard_frames=4,
        batch=2,
        cluster=ClusterConfig(actors=2, max_inflight=2),
    )
    report = run_job(job)
    (v,) = report.videos
    assert v.status == "committed" and Path(v.stream).read_bytes() == ref.read_bytes()
    rows = mf.read_rows(v.manifest).to_pylist()
    starts = [
        r["frame_index"]
        for r in rows
        if r["frame_index"] == 0 or r["shard"] != rows[r["frame_index"] - 1]["shard"]
    ]
    assert len(starts) > 1 and all(s % 3 == 0 for s in starts)  # several shards, cut on the grid
    summ = mf.read_summary(v.manifest)
    assert summ["totals"]["iters_per_frame"] == 3.0 and summ["refine"]["warm_start"] is True


@pytest.mark.parametrize(
    ("refine_kw", "shard_frames", "starts"),
    [
        ({"method": "none", "gop": 3}, 5, [0, 6, 12]),
        # two GOPs a shard (batch 2: in lockstep); lr 0.2: this random model's latents gain
        # only at large steps, so refined P frames are coded
        (
            {"iters": 3, "lr": 0.2, "tol": 0.0, "gop": 4, "warm_start": True, "warm_threshold": 1e9},
            9, [0, 8],
        ),
    ],
)  # fmt: skip
def test_gop_streams_on_ray_match_relatent_encode(
    ray_local, tmp_path, clips, checkpoint, refine_kw, shard_frames, starts
) -> None:
    """Inter-coded streams through the Ray path: shards cut on the GOP (shard_frames is not a
    multiple of it) in several layouts, two actors, the same bytes as `relatent encode`; a
    version-3 stream. In-process, more layouts: tests/cluster/test_gop_shards.py."""
    from pipeline.bitstream import FLAG_INTER, FLAG_REFINED, StreamReader
    from pipeline.config import RefineConfig

    refine = RefineConfig(**refine_kw)
    ref = tmp_path / "ref.rlv"
    encode_video(
        str(clips["a"]), str(ref), load_model(checkpoint=str(checkpoint), quality=3), refine
    )
    job = TranscodeJob(
        sources=(str(clips["a"]),),
        out=str(tmp_path / "out"),
        model=ModelSpec(checkpoint=str(checkpoint), quality=3),
        refine=refine,
        shard_frames=shard_frames,
        batch=2,
        cluster=ClusterConfig(actors=2, max_inflight=2),
    )
    (v,) = run_job(job).videos
    assert v.status == "committed" and Path(v.stream).read_bytes() == ref.read_bytes()
    with StreamReader(v.stream) as r:
        assert r.version == 3 and r.header.gop == refine.gop
        flags = [p.flags for p in r]
    assert any(f & FLAG_INTER for f in flags)
    assert any(f & FLAG_INTER and f & FLAG_REFINED for f in flags) == refine.active
    rows = mf.read_rows(v.manifest).to_pylist()
    shard_starts = [
        r["frame_index"]
        for r in rows
        if r["frame_index"] == 0 or r["shard"] != rows[r["frame_index"] - 1]["shard"]
    ]
    assert shard_starts == starts  # cut on the GOP
    assert mf.read_summary(v.manifest)["container_version"] == 3


def test_bad_s3_credentials_exit_6_on_every_path(
    ray_local, tmp_path, clips, checkpoint, s3_server, s3_prefix, capsys
) -> None:
    """Storage refusing the job's credentials is the storage error's exit code (6, README),
    not 1 (some videos failed): moto then checks signatures, and the session's keys were
    never issued (403 InvalidAccessKeyId). Inside a Ray task (the prepare task reading the
    source: the error arrives wrapped in a RayTaskError) and on the driver (the checkpoint)."""
    from jobs.cli import main

    src = upload(clips["a"], s3_prefix + "in/a.mp4")
    ckpt = upload(checkpoint, s3_prefix + "ckpt.pth")
    out = s3_prefix + "out/"
    base = ["transcode", src, "--out", out, "--quality", "3", "--iters", "2", "--tol", "0",
            "--actors", "1", "--shard-frames", "8", "--no-progress"]  # fmt: skip
    with s3_server.enforce_auth():
        for ck in (str(checkpoint), ckpt):  # task path, then driver path
            assert main([*base, "--checkpoint", ck]) == 6
            out_s, err = capsys.readouterr()
            denied = src if ck == str(checkpoint) else ckpt
            line = (
                f"relatent transcode: error: cannot (stat|read) {re.escape(denied)}: access denied"
            )
            assert re.search(line, err) and "check the AWS credentials" in err, err
            assert "Traceback" not in err and "testing" not in out_s + err
    assert [u for u in storage.list_prefix(out) if u.endswith((".rlv", ".parquet"))] == []


def test_a_midpoint_quality_on_ray_matches_relatent_encode(ray_local, tmp_path, clips) -> None:
    """``--quality 2.5`` through the Ray path: the actors build the midpoint of the shipped
    q2 and q3 from their weights, pinned to the driver's digest, and code the same bytes as
    `relatent encode` (a version-5 stream of one rate point)."""
    from pipeline.bitstream import StreamReader
    from pipeline.config import RefineConfig
    from pipeline.models import shipped_qualities

    if not {2, 3} <= set(shipped_qualities("bmshj2018-factorized")):
        pytest.skip("no shipped q2 and q3 in this checkout")
    refine = RefineConfig(method="none", grid=4)
    ref = tmp_path / "ref.rlv"
    encode_video(str(clips["b"]), str(ref), load_model("bmshj2018-factorized", 2.5), refine)
    job = TranscodeJob(
        sources=(str(clips["b"]),),
        out=str(tmp_path / "out"),
        model=ModelSpec(arch="bmshj2018-factorized", quality=2.5),
        refine=refine,
        shard_frames=5,
        batch=2,
        cluster=ClusterConfig(actors=2, max_inflight=2),
    )
    (v,) = run_job(job).videos
    assert v.status == "committed" and Path(v.stream).read_bytes() == ref.read_bytes()
    with StreamReader(v.stream) as r:
        assert r.version == 5 and r.header.quality == 2.5
    assert {row["rate_point"] for row in mf.read_rows(v.manifest).to_pylist()} == {2.5}
