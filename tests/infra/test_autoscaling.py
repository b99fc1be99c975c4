"""A relatent run on an autoscaling Ray cluster whose head takes no work (``CPU: 0``) and
whose GPU worker type starts at 0 nodes, like infra/aws/cluster.yaml and the KubeRay
manifests. The workers are Ray's fake multi-node provider: real raylets on this machine,
started and stopped by the real autoscaler. They advertise a GPU but have no CUDA.

How the cluster is started matters on a shared machine. ``ray.cluster_utils.AutoscalingCluster``
cannot be used here: its ``start()``/``shutdown()`` run ``ray stop --force``, which kills every
Ray process on the machine, and its config template (``fake_multi_node/example.yaml``) is not
in the 2.60 wheel. So the head is started here the way ``AutoscalingCluster.start`` does it
(``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...``, autoscaler update every
second), but with its own temp dir and ports, and it is stopped by pid.

Scale-down needs ``use_node_id_as_ip`` in the provider config: the v1
autoscaler finds idle nodes by IP, every fake node has this machine's IP, and the option keys
them by node id instead (the fake provider names its nodes by the ids it gives them).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobs.test_submit import free_ports, stop_cluster, write_clip

pytestmark = pytest.mark.timeout(600)


class Cluster:
    def __init__(self, gcs: str, leader: int) -> None:
        self.gcs, self.leader = gcs, leader

    def gpu_workers(self) -> int:
        from ray._raylet import GcsClient

        info = GcsClient(address=self.gcs).get_all_node_info(timeout=10)
        return sum(1 for n in info.values() if n.state == 0 and n.resources_total.get("GPU", 0) > 0)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    temp_dir = Path(tempfile.mkdtemp(prefix="rlt-autoscale-"))
    gcs, agent, client_srv, rt_env, metrics, node_mgr, obj_mgr = free_ports(7)
    config = {
        "cluster_name": "relatent-fake",
        "max_workers": 2,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": f"127.0.0.1:{gcs}",
            "disable_launch_config_check": True,
            "disable_node_updaters": True,
            "use_node_id_as_ip": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "available_node_types": {
            "ray.head.default": {"resources": {}, "node_config": {}, "max_workers": 0},
            "worker.gpu": {
                "resources": {"CPU": 1, "GPU": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            },
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
    (temp_dir / "autoscaler.json").write_text(json.dumps(config))
    env = {
        **os.environ,
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_FAKE_CLUSTER": "1",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    bindir = Path(sys.executable).parent
    cmd = [
        str(bindir / "ray"),
        "start",
        "--head",
        f"--autoscaling-config={temp_dir / 'autoscaler.json'}",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(gcs),
        "--num-cpus",
        "0",
        "--num-gpus",
        "0",
        "--include-dashboard",
        "false",
        "--dashboard-agent-listen-port",
        str(agent),
        "--ray-client-server-port",
        str(client_srv),
        "--runtime-env-agent-port",
        str(rt_env),
        "--metrics-export-port",
        str(metrics),
        "--node-manager-port",
        str(node_mgr),
        "--object-manager-port",
        str(obj_mgr),
        "--temp-dir",
        str(temp_dir),
        "--disable-usage-stats",
    ]
    log = (temp_dir / "start.log").open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        if proc.wait(timeout=180) != 0:
            pytest.fail("ray start failed:\n" + (temp_dir / "start.log").read_text()[-3000:])
        yield Cluster(f"127.0.0.1:{gcs}", proc.pid)
    finally:
        stop_cluster(proc.pid)
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    import torch

    from pipeline.models import get_architecture

    d = tmp_path_factory.mktemp("autoscale-in")
    torch.manual_seed(7)
    net = get_architecture("bmshj2018-factorized").model_class()(N=16, M=24)
    torch.save(net.state_dict(), d / "factorized.pth")
    return {"clip": write_clip(d / "clip.mp4"), "checkpoint": d / "factorized.pth"}


class Sampler:
    """The number of live GPU workers, sampled every half second in a thread."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a GCS hiccup: skip the sample
                self.counts.append(self.cluster.gpu_workers())
            self._stop.wait(0.5)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def wait_for(self, count: int, timeout: float) -> None:
        """Poll until the latest sample is ``count`` (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        n = len(self.counts)
        while time.monotonic() < deadline:
            if len(self.counts) > n and self.counts[-1] == count:
                return
            time.sleep(0.5)
        pytest.fail(
            f"still {self.counts[-1:]} GPU workers after {timeout} s (want {count}): {self.counts}"
        )


def transcode(cluster: Cluster, inputs: dict[str, Path], out: Path, *args: str) -> tuple[int, str]:
    """Run the driver: a separate process that joins the cluster, as `relatent submit` would."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.transcode", str(inputs["clip"]), "--out", str(out),
         "--checkpoint", str(inputs["checkpoint"]), "--quality", "3", "--iters", "2", "--tol", "0",
         "--actors", "1", "--shard-frames", "4", "--address", cluster.gcs, "--no-progress",
         "--log-level", "info", *args],
        env=env, capture_output=True, text=True, timeout=480,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def events(log: str, name: str) -> list[dict]:
    return [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith("{") and f'"event": "{name}"' in line
    ]


def test_gpu_run_scales_from_zero_up_and_back_to_zero(cluster, inputs, tmp_path) -> None:
    """Scale from zero: the driver starts on a cluster with no GPU (and a head that takes no
    work), warns and waits; the autoscaler adds one GPU worker for the one GPU actor, which
    falls back to the CPU (fake GPUs have no CUDA); the job commits; the idle worker is
    removed after the idle timeout."""
    assert cluster.gpu_workers() == 0
    out = tmp_path / "out"
    with Sampler(cluster) as sampler:
        code, log = transcode(
            cluster, inputs, out, "--gpus-per-actor", "1", "--actor-start-timeout", "300"
        )
        assert code == 0, log[-3000:]
        during = list(sampler.counts)
        sampler.wait_for(0, timeout=180)
    assert during and during[0] == 0, during  # 0 workers when the job started
    assert max(during) == 1, during  # one node for the one actor
    assert sampler.counts[-1] == 0, sampler.counts  # and back to 0 once idle
    (waiting,) = events(log, "waiting_for_gpus")
    assert "cluster has no GPUs now; waiting up to actor_start_timeout" in waiting["message"]
    ready = events(log, "actor_ready")
    assert ready and all(r["device"] == "cpu" for r in ready)
    (committed,) = events(log, "video_committed")
    assert Path(committed["stream"]).stat().st_size == committed["bytes"] > 0
    assert len(list(out.glob("*.manifest.parquet"))) == 1
