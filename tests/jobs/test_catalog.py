"""``relatent catalog`` end to end: a catalog in moto's S3 (real HTTP), a real local Ray
(one per module), tiny synthetic clips and tiny random models.

A second run encodes nothing; a changed source is re-encoded alone; a changed model
re-encodes everything; a dry run writes nothing; a video leased by another live run is
left to it; two concurrent runs encode every video exactly once and every manifest is
valid."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from typing import Any

import pytest
import ray
import torch

from cluster import leases
from cluster import manifest as mf
from cluster.report import verify_report
from jobs.bench.pipeline import synthetic_clip
from jobs.cli import main
from pipeline import storage
from pipeline.bitstream import StreamReader
from pipeline.models import get_architecture

pytestmark = pytest.mark.timeout(400)

#: Everything but the model: one actor, one shard per clip, one refinement iteration.
ENCODE = ("--iters", "1", "--tol", "0", "--shard-frames", "16", "--actors", "1", "--no-progress")


@pytest.fixture(scope="module")
def ray_local(s3_server):
    # Started after the S3 fixture, so the workers inherit its endpoint and credentials.
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("catalog-models")
    paths = []
    for seed in (7, 8):
        torch.manual_seed(seed)
        net = get_architecture("bmshj2018-factorized").model_class()(N=16, M=24)
        torch.save(net.state_dict(), d / f"m{seed}.pth")
        paths.append(str(d / f"m{seed}.pth"))
    return paths


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[bytes]:
    d = tmp_path_factory.mktemp("catalog-clips")
    return [
        synthetic_clip(d / f"c{i}.mp4", 6, 64, 48, gop=3, seed=10 + i).read_bytes()
        for i in range(5)
    ]


def catalog(src: str, out: str, model: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """Run ``relatent catalog`` through the CLI (``--json``); the exit code and its output."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(
            ["catalog", src, "--out", out, "--checkpoint", model, "--quality", "3", *ENCODE,
             "--json", *extra]
        )  # fmt: skip
    text = buf.getvalue()
    return code, json.loads(text) if text.strip() else {}


def by_status(report: dict[str, Any], status: str) -> set[str]:
    return {v["source"] for v in report["videos"] if v["status"] == status}


def stored_report(report: dict[str, Any]) -> dict[str, Any]:
    """The run report as written to storage (format and checksum verified)."""
    return verify_report(storage.read_bytes(report["report"]))


def assert_valid(out: str, video: dict[str, Any]) -> dict[str, Any]:
    """The video's manifest is a commit record of the current source, and its stream is
    whole: every packet reads back (checksums) and the sizes agree."""
    summary = mf.read_summary(storage.join(out, f"{video['video_id']}.manifest.parquet"))
    assert summary is not None, video
    src = storage.stat(video["source"])
    assert summary["source"] == video["source"] and summary["source_etag"] == src.etag
    assert storage.stat(summary["stream"]).size == summary["stream_bytes"]
    assert (
        len(mf.read_rows(storage.join(out, f"{video['video_id']}.manifest.parquet")))
        == summary["frames"]
    )
    with StreamReader(summary["stream"]) as r:
        assert r.header.frame_count == summary["frames"] == len(list(r))
    return summary


def snapshot(prefix: str) -> dict[str, str]:
    return {o.uri: o.etag for o in storage.list_prefix(prefix)}


@pytest.fixture(scope="module")
def encoded(ray_local, s3_server, clips, models) -> dict[str, Any]:
    """A catalog of three clips (one in a sub-folder) after its first run with model 0."""
    base = s3_server.uri(f"catalog-{time.time_ns()}") + "/"
    src, out = base + "catalog/", base + "rlv/"
    for name, data in zip(("a.mp4", "b.mkv", "sub/c.mp4"), clips, strict=False):
        storage.write_bytes(src + name, data)
    storage.write_bytes(src + "notes.txt", b"not a video")
    code, report = catalog(src, out, models[0])
    return {"base": base, "src": src, "out": out, "code": code, "report": report}


def test_first_run_encodes_all_and_a_second_run_nothing(encoded, models, capsys) -> None:
    first, src, out = encoded["report"], encoded["src"], encoded["out"]
    assert encoded["code"] == 0
    assert first["counts"]["listed"] == 3 and first["counts"]["encoded"] == 3  # notes.txt skipped
    assert all(v["reasons"] == ["missing"] for v in first["videos"])
    assert first["job"]["actors_started"] == 1 and first["frames_encoded"] == 18
    assert first["bytes"]["stream_encoded"] == sum(
        assert_valid(out, v)["stream_bytes"] for v in first["videos"]
    )
    assert stored_report(first)["run_id"] == first["run_id"]
    assert storage.list_prefix(out + leases.LEASES_DIR + "/") == []  # every lease released
    outputs = snapshot(out)

    code, second = catalog(src, out, models[0])
    assert code == 0
    assert second["counts"] | {"listed": 3} == {
        "listed": 3, "stale": 0, "skipped": 3, "current": 3, "done_elsewhere": 0, "encoded": 0,
        "failed": 0, "leased": 0,
    }  # fmt: skip
    assert second["job"] is None  # no driver run at all
    after = snapshot(out)
    assert {u: e for u, e in after.items() if "/_runs/" not in u} == {
        u: e for u, e in outputs.items() if "/_runs/" not in u
    }
    assert (
        len([u for u in after if "/_runs/" in u]) == len([u for u in outputs if "/_runs/" in u]) + 1
    )


def test_changed_source_then_changed_model(encoded, clips, models, capsys) -> None:
    src, out = encoded["src"], encoded["out"]
    ids = {v["source"]: v["video_id"] for v in encoded["report"]["videos"]}
    changed = src + "b.mkv"
    storage.write_bytes(changed, clips[3])  # new content, same key: a new ETag
    # A run that died while encoding it left an expired lease behind.
    dead = leases.acquire(out, ids[changed], changed, "crashed-run", ttl=5, now=time.time() - 60)
    assert dead.lease is not None

    code, report = catalog(src, out, models[0])
    assert code == 0
    assert by_status(report, "encoded") == {changed}
    assert by_status(report, "current") == set(ids) - {changed}
    (video,) = [v for v in report["videos"] if v["source"] == changed]
    assert video["reasons"] == ["source changed"] and video["video_id"] == ids[changed]
    assert report["leases"]["taken_over"] == [
        {"video_id": ids[changed], "from_run": "crashed-run", "damaged": False}
    ]
    assert leases.read(out, ids[changed]) is None
    assert_valid(out, video)

    code, report = catalog(src, out, models[1])  # another checkpoint
    assert code == 0
    assert by_status(report, "encoded") == set(ids)
    assert all(v["reasons"] == ["model changed"] for v in report["videos"])
    assert not set(ids.values()) & {v["video_id"] for v in report["videos"]}  # new output keys
    for v in report["videos"]:
        assert assert_valid(out, v)["model"]["weights_sha256"] == report["model"]["weights_sha256"]
    # Both models' outputs now exist side by side, each current for its own model.
    for m in models:
        code, again = catalog(src, out, m)
        assert code == 0 and again["counts"]["encoded"] == 0 and again["counts"]["current"] == 3


def test_dry_run_prints_the_plan_and_writes_nothing(encoded, clips, models, capsys) -> None:
    src, out = encoded["src"], encoded["out"]
    extra = src + "new/d.mov"
    storage.write_bytes(extra, clips[4])
    try:
        before = snapshot(encoded["base"])
        code, plan = catalog(src, out, models[0], "--dry-run")
        assert code == 0 and plan["dry_run"] and plan["counts"]["stale"] == 1
        actions = {v["source"]: (v["action"], *v["reasons"]) for v in plan["videos"]}
        assert actions.pop(extra) == ("encode", "missing")
        assert set(actions.values()) == {("skip", "current")}

        code, plan = catalog(src, out, models[0], "--dry-run", "--iters", "2")
        assert code == 0
        assert {tuple(v["reasons"]) for v in plan["videos"] if v["source"] != extra} == {
            ("config changed",)
        }
        code, plan = catalog(src, out, models[0], "--dry-run", "--quality", "4")
        assert code == 0
        assert {tuple(v["reasons"]) for v in plan["videos"] if v["source"] != extra} == {
            ("model changed", "config changed")  # the rate point sets the refinement lambda
        }
        assert snapshot(encoded["base"]) == before  # no lease, report or output written
        code = main(["catalog", src, "--out", out, "--checkpoint", models[0], "--quality", "3",
                     *ENCODE, "--dry-run"])  # fmt: skip
        text = capsys.readouterr().out
        assert code == 0 and "encode  missing" in text and extra in text and "dry run" in text
    finally:
        storage.delete(extra)


def test_video_leased_by_a_live_run_is_left_to_it(encoded, clips, models, capsys) -> None:
    src, out = encoded["src"], encoded["out"]
    extra = src + "e.mp4"
    storage.write_bytes(extra, clips[4])
    try:
        _, plan = catalog(src, out, models[0], "--dry-run")
        (vid,) = [v["video_id"] for v in plan["videos"] if v["source"] == extra]
        other = leases.acquire(out, vid, extra, "other-run", ttl=600)
        code, report = catalog(src, out, models[0])
        assert code == 0
        assert by_status(report, "leased") == {extra} and report["counts"]["encoded"] == 0
        (video,) = [v for v in report["videos"] if v["source"] == extra]
        assert video["holder"] == "other-run" and report["job"] is None
        assert leases.read(out, vid) == other.lease.info  # not touched
        assert not storage.exists(storage.join(out, f"{vid}.manifest.parquet"))
    finally:
        storage.delete(extra)
        storage.delete(leases.lease_uri(out, vid))


def test_missing_catalog_is_an_input_error(encoded, models, capsys) -> None:
    code = main(["catalog", encoded["base"] + "nothing-here/", "--out", encoded["out"],
                 "--checkpoint", models[0], "--quality", "3", *ENCODE])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3 and "nothing-here" in err and "no videos" in err


def test_concurrent_runs_encode_each_video_once(
    ray_local, s3_server, clips, models, capsys
) -> None:
    """Two catalog runs started together on the same catalog (threads of one process,
    each the full CLI entrypoint): each good video is encoded by exactly one of them, the
    other reports it leased or done; a broken file fails (exit 1) and is never committed."""
    base = s3_server.uri(f"concurrent-{time.time_ns()}") + "/"
    src, out = base + "catalog/", base + "rlv/"
    good = [src + f"v{i}.mp4" for i in range(3)]
    for uri, data in zip(good, clips, strict=False):
        storage.write_bytes(uri, data)
    broken = src + "broken.mp4"
    storage.write_bytes(broken, clips[0][:300])  # cut short: no moov atom
    codes: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def run(name: str) -> None:
        barrier.wait()
        codes[name] = main(
            ["catalog", src, "--out", out, "--checkpoint", models[0], "--quality", "3",
             *ENCODE, "--run-id", name, "--plan-threads", "1"]
        )  # fmt: skip

    threads = [threading.Thread(target=run, args=(n,)) for n in ("run-x", "run-y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    capsys.readouterr()
    reports = {}
    for o in storage.list_prefix(out + "_runs/"):
        r = verify_report(storage.read_bytes(o.uri))
        reports[r["run_id"]] = r
    assert set(reports) == {"run-x", "run-y"}
    for uri in good:
        statuses = sorted(
            next(v["status"] for v in r["videos"] if v["source"] == uri) for r in reports.values()
        )
        assert statuses.count("encoded") == 1, (uri, statuses)
        assert set(statuses) <= {"encoded", "leased", "done-elsewhere", "current"}, statuses
        (winner,) = [r for r in reports.values() if uri in by_status(r, "encoded")]
        (video,) = [v for v in winner["videos"] if v["source"] == uri]
        assert assert_valid(out, video)["job_id"] == f"catalog-{winner['run_id']}"
    assert sum(r["counts"]["encoded"] for r in reports.values()) == len(good)
    failed_in = [r for r in reports.values() if broken in by_status(r, "failed")]
    assert failed_in, "the broken file must fail in the run that claimed it"
    for r in reports.values():
        assert codes[r["run_id"]] == (1 if r in failed_in else 0)
        assert broken not in by_status(r, "encoded")
    assert all("broken.mp4" in f["source"] and f["error"] for r in failed_in for f in r["failures"])
    assert storage.list_prefix(out + leases.LEASES_DIR + "/") == []


def test_local_catalog_lists_videos_only_and_not_its_own_output(tmp_path, clips, models) -> None:
    """A folder catalog: recursive, by extension (case-insensitive), hidden files and an
    output folder inside the catalog left out. Planning alone needs no Ray."""
    src = tmp_path / "media"
    (src / "deep" / "er").mkdir(parents=True)
    (src / "deep" / "er" / "x.MP4").write_bytes(clips[0])
    (src / "y.mkv").write_bytes(clips[1])
    (src / ".hidden.mp4").write_bytes(clips[2])
    (src / "readme.txt").write_text("no")
    out = src / "rlv"
    (out / "_staging").mkdir(parents=True)
    (out / "_staging" / "z.mp4").write_bytes(clips[2])  # under --out: never a source
    code, plan = catalog(str(src), str(out), models[0], "--dry-run")
    assert code == 0
    assert [v["source"] for v in plan["videos"]] == [
        str(src / "deep" / "er" / "x.MP4"),
        str(src / "y.mkv"),
    ]
    code, plan = catalog(str(src), str(out), models[0], "--dry-run", "--ext", "mkv")
    assert [v["source"] for v in plan["videos"]] == [str(src / "y.mkv")]
    assert sorted(p.name for p in out.rglob("*")) == ["_staging", "z.mp4"]  # nothing written


def test_run_level_error_writes_the_report_and_releases_leases(encoded, clips, models, capsys):
    """No actor can start (GPUs asked of a CPU-only cluster): the driver gives up with a
    ClusterError (exit 7); the report records it and the claimed video as failed."""
    src, out = encoded["src"], encoded["out"]
    extra = src + "gpu-only.mp4"
    storage.write_bytes(extra, clips[4])
    try:
        code = main(["catalog", src, "--out", out, "--checkpoint", models[0], "--quality", "3",
                     *ENCODE, "--gpus-per-actor", "1", "--actor-start-timeout", "3"])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 7 and "no encoder actor started" in err
        uri = err.split("report: ", 1)[1].split()[0]
        report = verify_report(storage.read_bytes(uri))
        assert report["error"]["type"] == "ClusterError"
        assert by_status(report, "failed") == {extra} and report["counts"]["current"] == 3
        assert storage.list_prefix(out + leases.LEASES_DIR + "/") == []
    finally:
        storage.delete(extra)
