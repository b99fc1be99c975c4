"""``relatent submit`` / ``relatent jobs`` against a real Ray head started by this module
(``ray start --head`` on 127.0.0.1 with the dashboard and token authentication, its own
temp dir and ports, stopped by pid at the end so concurrent Ray clusters on the machine are
untouched): a tiny clip is encoded end to end through the Jobs API and decodes; the same
work resubmitted is a no-op reporting the same id; status/logs/stop work; failures exit
with the job's code; unreachable, unauthenticated and wrong-version clusters give errors
that name the address. The option-to-entrypoint mapping is checked without a cluster."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from cluster import submission as sj
from jobs.cli import main

# --------------------------------------------------------------------------- helpers


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def write_clip(path: Path, n: int = 8, w: int = 64, h: int = 48, gop: int = 4) -> Path:
    from jobs.bench.pipeline import synthetic_clip

    return synthetic_clip(path, n, w, h, gop=gop)


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _session_tree(leader: int) -> list:
    """Every process of the session ``leader`` started, plus their descendants (job
    drivers run in sessions of their own)."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == leader:
                procs[p.pid] = p
                for c in p.children(recursive=True):
                    procs[c.pid] = c
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return list(procs.values())


def stop_cluster(leader: int) -> None:
    import psutil

    procs = _session_tree(leader)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


class Head:
    def __init__(self, address: str, token: str, leader: int, temp_dir: Path) -> None:
        self.address, self.token, self.leader, self.temp_dir = address, token, leader, temp_dir


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    """One Ray head for the module, with token authentication (a fresh token passed in
    ``RAY_AUTH_TOKEN``: the user's ~/.ray/auth_token is neither read nor written)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rlt-submit-"))
    token = secrets.token_hex(16)
    (gcs, dash, agent_http, agent_grpc, rt_env, metrics, client_srv, node_mgr, obj_mgr) = (
        free_ports(9)
    )
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(bindir / "ray"),
        "start",
        "--head",
        "--node-ip-address",
        "127.0.0.1",
        "--dashboard-host",
        "127.0.0.1",
        "--port",
        str(gcs),
        "--dashboard-port",
        str(dash),
        "--dashboard-agent-listen-port",
        str(agent_http),
        "--dashboard-agent-grpc-port",
        str(agent_grpc),
        "--runtime-env-agent-port",
        str(rt_env),
        "--metrics-export-port",
        str(metrics),
        "--ray-client-server-port",
        str(client_srv),
        "--node-manager-port",
        str(node_mgr),
        "--object-manager-port",
        str(obj_mgr),
        "--num-cpus",
        "2",
        "--num-gpus",
        "0",
        "--temp-dir",
        str(temp_dir),
        "--disable-usage-stats",
        "--include-dashboard",
        "true",
    ]
    log = (temp_dir / "start.log").open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    leader = proc.pid
    address = f"http://127.0.0.1:{dash}"
    saved = {
        k: os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
    }
    try:
        if proc.wait(timeout=180) != 0:
            pytest.fail("ray start failed:\n" + (temp_dir / "start.log").read_text()[-3000:])
        os.environ["RAY_AUTH_TOKEN"] = token
        os.environ.pop("RAY_AUTH_MODE", None)
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        _wait_for_agent(address, token)
        yield Head(address, token, leader, temp_dir)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop_cluster(leader)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_agent(address: str, token: str) -> None:
    """The dashboard answers before the node's job agent is up; a trivial job proves both."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 120
    while True:
        try:
            sid = client.submit_job(
                entrypoint="true", submission_id=f"probe-{secrets.token_hex(4)}"
            )
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)
    while not client.get_job_status(sid).is_terminal():
        time.sleep(0.5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random CompressAI model (the job must not depend on shipped weights)."""
    import torch

    from pipeline.models import get_architecture

    torch.manual_seed(7)
    net = get_architecture("bmshj2018-factorized").model_class()(N=16, M=24)
    path = tmp_path_factory.mktemp("submit-ckpt") / "factorized.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("submit-clip") / "tiny.mp4")


@pytest.fixture(scope="module")
def work(tmp_path_factory, clip, checkpoint) -> list[str]:
    """The submit arguments of the end-to-end job (without --address / --wait)."""
    out = tmp_path_factory.mktemp("submit-out")
    return [
        str(clip),
        "--out",
        str(out),
        "--checkpoint",
        str(checkpoint),
        "--quality",
        "3",
        "--iters",
        "2",
        "--tol",
        "0",
        "--lr",
        "0.005",
        "--shard-frames",
        "4",
        "--actors",
        "1",
        "--max-inflight",
        "2",
    ]


@pytest.fixture(scope="module")
def done(head, work) -> dict:
    """The end-to-end job, submitted once with --wait (shared by the tests that inspect it)."""
    code = main(["submit", *work, "--address", head.address, "--wait"])
    return {"code": code, "out": Path(work[work.index("--out") + 1])}


def _sid(text: str) -> str:
    ids = {w for w in text.replace(":", " ").split() if w.startswith(sj.ID_PREFIX)}
    assert len(ids) == 1, text
    return ids.pop()


# --------------------------------------------------------------------------- no cluster


def _dry(capsys, *args: object) -> dict:
    code, out, err = run(capsys, "submit", *args, "--dry-run")
    assert code == 0, err
    return json.loads(out)


def test_submission_id_is_derived_from_the_work(capsys, tmp_path) -> None:
    base = ["a.mp4", "s3://bkt/b.mkv", "--out", "s3://bkt/out/", "--iters", "2"]
    d = _dry(capsys, *base)
    sid = d["submission_id"]
    assert sid.startswith("relatent-") and len(sid) == len("relatent-") + 16
    # sizing options and source order do not change the work
    same = _dry(
        capsys,
        "s3://bkt/b.mkv",
        "a.mp4",
        *base[2:],
        "--actors",
        "8",
        "--gpus-per-actor",
        "0.25",
        "--max-inflight",
        "4",
        "--max-attempts",
        "5",
        "--batch",
        "8",
        "--log-level",
        "info",
    )
    assert same["submission_id"] == sid
    # what changes the output does
    for change in (
        ["--iters", "3"],
        ["--model", "mbt2018-mean"],
        ["--quality", "4"],
        ["--shard-frames", "16"],
        ["--refine", "none"],
        ["--lambda", "0.01"],
        ["--no-carry"],
        ["--checkpoint", "s3://bkt/w.pth"],
    ):
        assert _dry(capsys, *base, *change)["submission_id"] != sid, change
    assert _dry(capsys, "a.mp4", "--out", "s3://bkt/out/", "--iters", "2")["submission_id"] != sid
    # local paths are made absolute: the job's cwd is not ours
    assert d["work"]["sources"][0] == str(Path("a.mp4").absolute())


def test_entrypoint_forwards_sizing_and_runtime_env(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RLT_FROM_CLIENT", "here")
    d = _dry(
        capsys,
        "s3://bkt/a.mp4",
        "--out",
        "s3://bkt/out/",
        "--actors",
        "8",
        "--gpus-per-actor",
        "0.25",
        "--cpus-per-actor",
        "2",
        "--shard-frames",
        "16",
        "--max-inflight",
        "3",
        "--no-carry",
        "--env",
        "AWS_REGION=eu-west-1",
        "--env",
        "RLT_FROM_CLIENT",
        "--runtime-env-json",
        '{"env_vars": {"A": "1"}, "pip": ["x"]}',
    )
    ep = d["entrypoint"].split()
    assert ep[:3] == ["relatent", "transcode", "s3://bkt/a.mp4"]
    for flag, value in (
        ("--actors", "8"),
        ("--gpus-per-actor", "0.25"),
        ("--cpus-per-actor", "2.0"),
        ("--shard-frames", "16"),
        ("--max-inflight", "3"),
        ("--address", "auto"),
        ("--job-id", d["submission_id"]),
    ):
        assert ep[ep.index(flag) + 1] == value, flag
    assert "--no-progress" in ep and "--no-carry" in ep and "--num-cpus" not in ep
    # the method's defaults travel resolved, so the cluster's own defaults cannot change them
    assert (ep[ep.index("--tol") + 1], ep[ep.index("--lr") + 1]) == ("0.0", "0.02")
    assert (
        "--no-carry" not in _dry(capsys, "s3://bkt/a.mp4", "--out", "s3://bkt/out/")["entrypoint"]
    )
    env = d["runtime_env"]["env_vars"]
    assert env == {
        "PYTHONUNBUFFERED": "1",
        "AWS_REGION": "eu-west-1",
        "RLT_FROM_CLIENT": "here",
        "A": "1",
    }
    assert d["runtime_env"]["pip"] == ["x"] and "working_dir" not in d["runtime_env"]

    repo = Path(__file__).resolve().parents[2]
    wd = _dry(capsys, "s3://bkt/a.mp4", "--out", "s3://bkt/out/", "--working-dir", repo)
    assert wd["entrypoint"].startswith("python -m jobs.transcode s3://bkt/a.mp4 ")
    assert wd["runtime_env"]["working_dir"] == str(repo) and ".git" in wd["runtime_env"]["excludes"]
    assert (
        wd["submission_id"]
        == _dry(capsys, "s3://bkt/a.mp4", "--out", "s3://bkt/out/")["submission_id"]
    )

    code, _, err = run(
        capsys, "submit", "a.mp4", "--out", "o", "--working-dir", tmp_path, "--dry-run"
    )
    assert code == 2 and str(tmp_path) in err
    code, _, err = run(
        capsys, "submit", "a.mp4", "--out", "o", "--gpus-per-actor", "1.5", "--dry-run"
    )
    assert code == 2 and "--gpus-per-actor" in err


def test_unreachable_address_is_named(capsys) -> None:
    (port,) = free_ports(1)
    code, _, err = run(capsys, "submit", "a.mp4", "--out", "o", "--address", f"127.0.0.1:{port}")
    assert code == 7
    assert f"cannot reach the Ray dashboard at http://127.0.0.1:{port}" in err
    code, _, err = run(
        capsys, "jobs", "status", "relatent-x", "--address", f"http://127.0.0.1:{port}"
    )
    assert code == 7 and f"127.0.0.1:{port}" in err
    code, _, err = run(capsys, "jobs", "logs", "x", "--address", "ray://127.0.0.1:10001")
    assert code == 2 and "ray://127.0.0.1:10001" in err


def test_version_mismatch_is_refused(capsys) -> None:
    class Fake(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"version": "4", "ray_version": "2.59.0"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        addr = f"http://127.0.0.1:{srv.server_address[1]}"
        code, _, err = run(capsys, "submit", "a.mp4", "--out", "o", "--address", addr)
        assert code == 7
        import ray

        assert f"{addr} runs Ray 2.59.0, this client runs Ray {ray.__version__}" in err
    finally:
        srv.shutdown()


# --------------------------------------------------------------------------- real cluster


def test_submit_wait_encodes_end_to_end(done, capsys) -> None:
    assert done["code"] == 0
    streams = list(done["out"].glob("*.rlv"))
    manifests = list(done["out"].glob("*.manifest.parquet"))
    assert len(streams) == 1 and len(manifests) == 1
    from jobs.cli import main as cli_main

    assert cli_main(["info", str(streams[0]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["header"]["frame_count"] == 8 and info["summary"]["frames"] == 8
    assert (info["header"]["width"], info["header"]["height"]) == (64, 48)


def test_resubmit_is_a_noop(done, head, work, capsys) -> None:
    assert done["code"] == 0
    code, out, _ = run(capsys, "submit", *work, "--address", head.address)
    sid = _sid(out)
    assert code == 0 and "already exists" in out and "SUCCEEDED" in out
    # sizing options are not part of the work: still the same job
    code, out2, _ = run(
        capsys, "submit", *work, "--actors", "2", "--address", head.address, "--wait"
    )
    assert code == 0 and _sid(out2) == sid and "already exists" in out2 and "differs" in out2
    client, _, _ = sj.connect(head.address)
    assert [j.submission_id for j in client.list_jobs()].count(sid) == 1
    # the Jobs API itself refuses the id again (HTTP 500 "already exists") ...
    with pytest.raises(RuntimeError) as exc:
        client.submit_job(entrypoint="true", submission_id=sid)
    assert sj.is_duplicate(exc.value)


def test_concurrent_submitter_race_reports_the_winner(
    done, head, work, capsys, monkeypatch
) -> None:
    """A submitter that looked before the other one submitted gets "already exists" from
    the API and reports the existing job."""
    real = sj.get_job
    calls = []

    def first_miss(client, address, sid):  # type: ignore[no-untyped-def]
        calls.append(sid)
        return None if len(calls) == 1 else real(client, address, sid)

    monkeypatch.setattr(sj, "get_job", first_miss)
    code, out, _ = run(capsys, "submit", *work, "--address", head.address)
    assert code == 0 and "already exists" in out and len(calls) == 2


def test_jobs_status_logs_list(done, head, work, capsys) -> None:
    code, out, _ = run(capsys, "submit", *work, "--address", head.address)
    sid = _sid(out)
    code, out, _ = run(capsys, "jobs", "status", sid, "--address", head.address)
    assert code == 0 and "SUCCEEDED" in out and "relatent transcode" in out
    code, out, _ = run(capsys, "jobs", "status", sid, "--address", head.address, "--json")
    doc = json.loads(out)
    assert (
        doc["status"] == "SUCCEEDED"
        and doc["submission_id"] == sid
        and doc["driver_exit_code"] == 0
    )
    code, out, _ = run(capsys, "jobs", "logs", sid, "--address", head.address)
    assert code == 0 and "tiny-" in out  # transcode's summary table names the video
    code, out, _ = run(capsys, "jobs", "list", "--address", head.address)
    assert code == 0 and sid in out and "probe-" not in out
    code, out, _ = run(capsys, "jobs", "stop", sid, "--address", head.address)
    assert code == 0 and "already ended" in out
    code, _, err = run(
        capsys, "jobs", "status", "relatent-0000000000000000", "--address", head.address
    )
    assert code == 2 and "no job relatent-0000000000000000" in err and head.address in err


def test_jobs_stop_running_job(head, capsys) -> None:
    client, _, _ = sj.connect(head.address)
    sid = client.submit_job(
        entrypoint="sleep 120", submission_id=f"relatent-sleep-{secrets.token_hex(3)}"
    )
    code, out, _ = run(capsys, "jobs", "stop", sid, "--address", head.address, "--wait")
    assert code == 0 and "STOPPED" in out
    code, out, _ = run(capsys, "jobs", "logs", sid, "--address", head.address, "--follow")
    assert code == 1  # a stopped job is not a success


def test_failed_job_exits_with_its_code_and_can_be_resubmitted(
    head, clip, tmp_path, capsys
) -> None:
    args = [
        str(clip),
        "--out",
        str(tmp_path / "out"),
        "--checkpoint",
        str(tmp_path / "missing.pth"),
        "--quality",
        "3",
        "--iters",
        "1",
        "--actors",
        "1",
        "--address",
        head.address,
    ]
    code, out, err = run(capsys, "submit", *args, "--wait")
    sid = _sid(out)
    assert code not in (0, 7), (out, err)
    assert f"job {sid} on {head.address}: FAILED" in err and f"exit code {code}" in err
    code2, out, err = run(capsys, "submit", *args)
    assert code2 == code and "already exists" in out and "--resubmit-failed" in err
    code3, out, _ = run(capsys, "submit", *args, "--resubmit-failed")
    assert code3 == 0 and f"submitted job {sid}" in out  # (left to fail again on its own)


def test_authentication_errors_name_the_address(head, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    code, _, err = run(capsys, "jobs", "list", "--address", head.address)
    assert (
        code == 7 and f"the Ray cluster at {head.address} rejected the authentication token" in err
    )
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    code, _, err = run(capsys, "jobs", "list", "--address", head.address)
    assert (
        code == 7 and f"the Ray cluster at {head.address} requires an authentication token" in err
    )
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    token_file = Path(head.temp_dir) / "token"
    token_file.write_text(head.token + "\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    code, _, err = run(capsys, "jobs", "list", "--address", head.address)
    assert code == 0, err
