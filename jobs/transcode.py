"""``relatent transcode SRC... --out DST``: the distributed transcoder's entry point.

With no ``--address`` it starts an embedded local Ray (bound to 127.0.0.1, no dashboard);
with one it joins that cluster (``auto`` = the cluster this machine belongs to). This is
the only place that initialises Ray and sets process-wide settings (logging).

Exit codes: 0 when every video committed or was already done; 1 when some videos failed
(each has ``<out>/_errors/<id>.json`` and a line in the summary table); a job-level error
(bad options, unloadable model, storage refusing the credentials or permissions anywhere,
a Ray task included: 6) exits with its :mod:`pipeline.errors` code via the CLI. A job of
one source exits as ``relatent encode`` would when the source does not fit the options:
2 (e.g. ``--target-psnr`` out of reach on its first frame, or ``--target-kbps`` outside
what the rate points can spend on it), or 9 (frames below
``--min-psnr`` with ``--strict``); nothing of that video is committed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from cluster.config import ClusterConfig, ModelSpec, TranscodeJob
from jobs.codec_cmds import add_video_stream_option
from jobs.refine_options import (
    add_refine_options,
    add_target_options,
    non_negative_float,
    positive_float,
    rate_point_number,
    refine_kwargs,
)
from pipeline.config import RefineConfig

__all__ = [
    "add_encode_options",
    "add_parser",
    "add_runtime_options",
    "cmd_transcode",
    "init_ray",
    "job_from_args",
    "main",
    "ray_session",
    "setup_logging",
]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``relatent transcode`` to ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "transcode",
        help="encode many videos on a Ray cluster: frame shards on actors, ordered reassembly",
    )
    p.add_argument("src", nargs="+", help="source videos (paths, file:// or s3:// URIs)")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix")
    add_encode_options(p)
    add_runtime_options(p)
    p.add_argument("--job-id", default="transcode", help="label for logs and metrics")
    p.add_argument(
        "--report", default=None, help="also write the job report as JSON here (path or URI)"
    )
    p.set_defaults(func=cmd_transcode)
    return p


def add_encode_options(p: argparse.ArgumentParser) -> None:
    """The model, refinement, quality target, shard layout, actor sizing and carry options
    (shared by ``transcode``, ``catalog`` and ``submit``; :func:`job_from_args` reads
    them)."""
    p.add_argument("--model", default=None, help="architecture id (default: the shipped default)")
    p.add_argument(
        "--quality",
        type=rate_point_number,
        default=None,
        help="rate point: a shipped quality, or a midpoint between two (e.g. 2.5: their "
        "weights averaged; docs/ratecontrol.md) (default: the shipped default)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="CompressAI state dict: path or URI (default: the shipped weights)",
    )
    add_refine_options(p)
    add_target_options(p)
    p.add_argument("--batch", type=int, default=4, help="frames refined together in an actor")
    p.add_argument("--shard-frames", type=int, default=32, help="target frames per shard")
    p.add_argument(
        "--actors", type=int, default=None, help="encoder actors (default: CPUs / --cpus-per-actor)"
    )
    p.add_argument(
        "--gpus-per-actor",
        type=non_negative_float,
        default=0.0,
        help="GPUs each encoder actor reserves; fractions share a GPU (0.25: four actors a GPU; 0: CPU actors)",
    )
    p.add_argument(
        "--cpus-per-actor",
        type=non_negative_float,
        default=1.0,
        help="CPUs each encoder actor reserves (the encoder codes with one torch thread)",
    )
    p.add_argument("--max-inflight", type=int, default=2, help="shards queued per actor")
    p.add_argument("--max-attempts", type=int, default=3, help="attempts per shard")
    p.add_argument(
        "--no-carry", action="store_true", help="drop the sources' audio/subtitle streams"
    )
    p.add_argument(
        "--drop-broken-streams",
        action="store_true",
        help="leave corrupt audio tracks out (a warning, recorded in the manifest) instead of "
        "failing the video",
    )
    add_video_stream_option(p)
    p.add_argument(
        "--start",
        type=int,
        default=0,
        help="first frame to code, as encode's (a span given names its own outputs)",
    )
    p.add_argument(
        "--end", type=int, default=None, help="end frame, exclusive (default: the last frame)"
    )
    p.add_argument(
        "--actor-start-timeout",
        type=positive_float,
        default=600.0,
        help="seconds to wait for the first encoder actor (e.g. while an autoscaler adds GPU "
        "nodes) before failing the job",
    )


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """Where the job runs (Ray address or embedded) and how it reports progress."""
    p.add_argument(
        "--address",
        default=None,
        help="join this Ray cluster (ray://host:10001, or auto inside a Ray job; default: an embedded local Ray)",
    )
    p.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)"
    )
    p.add_argument("--log-level", default="warning", help="structured (JSON) event log level")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none is drawn when stderr is not a terminal)",
    )


def job_from_args(
    a: argparse.Namespace, sources: tuple[str, ...] | None = None, job_id: str | None = None
) -> TranscodeJob:
    """The job the options of :func:`add_encode_options` describe (``sources`` and
    ``job_id`` default to ``a.src`` and ``a.job_id``).

    Raises:
        ConfigError: an option is out of range or the options contradict each other (a
            target quality with ``--lambda`` or ``--quality``, two targets, ``--strict``
            without ``--min-psnr``: :func:`jobs.refine_options.check_targets`).
    """
    actors = a.actors or max(
        1, int((a.num_cpus or os.cpu_count() or 1) // max(a.cpus_per_actor, 1e-9))
    )
    return TranscodeJob(
        sources=tuple(a.src) if sources is None else tuple(sources),
        out=a.out,
        model=ModelSpec(arch=a.model, quality=a.quality, checkpoint=a.checkpoint),
        refine=RefineConfig(**refine_kwargs(a)),
        shard_frames=a.shard_frames,
        batch=a.batch,
        cluster=ClusterConfig(
            actors=actors,
            cpus_per_actor=a.cpus_per_actor,
            gpus_per_actor=a.gpus_per_actor,
            max_inflight=a.max_inflight,
            max_attempts=a.max_attempts,
            actor_start_timeout=a.actor_start_timeout,
        ),
        carry=not a.no_carry,
        drop_broken=a.drop_broken_streams,
        job_id=a.job_id if job_id is None else job_id,
        video_stream=getattr(a, "video_stream", None),
        start=getattr(a, "start", 0),
        end=getattr(a, "end", None),
        min_psnr=getattr(a, "min_psnr", None),
        strict=getattr(a, "strict", False),
    ).validate()


def init_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to (``address``) or start (embedded) Ray. Returns whether this call did it
    (an already-connected process keeps its connection). An embedded Ray runs with token
    authentication (``RAY_AUTH_MODE=token`` unless the environment sets it), chosen
    explicitly so that Ray does not print its token-authentication warning.

    Raises:
        ConnectionError: Ray's own error when the cluster at ``address`` cannot be joined.
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # Ray 2.60 turns token authentication on for a new local cluster and warns about it
        # on every run unless the mode is chosen explicitly (RAY_AUTH_MODE, Ray's documented
        # switch: docs.ray.io/en/latest/ray-security/token-auth.html). Choose the same
        # secure mode it would pick, silently; a user's own RAY_AUTH_MODE wins. Ray reads
        # the mode once per process, so it is re-read here as Ray's own default does.
        if "RAY_AUTH_MODE" not in os.environ:
            from ray._raylet import Config

            os.environ["RAY_AUTH_MODE"] = "token"
            Config.initialize("")
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    return True


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Ray for the ``with`` block (:func:`init_ray`), shut down at its end when this call
    started it.

    Raises:
        ConnectionError: Ray's own error when the cluster at ``address`` cannot be joined.
    """
    started = init_ray(address, num_cpus)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def setup_logging(level: str) -> None:
    """Send the ``relatent.cluster`` structured (JSON) event log to stderr at ``level``
    (a :mod:`logging` level name, any case); idempotent."""
    logger = logging.getLogger("relatent.cluster")
    if not any(getattr(h, "_relatent", False) for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        h._relatent = True  # type: ignore[attr-defined]
        logger.addHandler(h)
        logger.propagate = False
    logger.setLevel(level.upper())


def cmd_transcode(a: argparse.Namespace, on_event: Any = None) -> int:
    """Run ``relatent transcode`` (see the module doc); the exit code (0, or 1 when some
    videos failed).

    Raises:
        ConfigError: bad options.
        ModelError: the model cannot be loaded.
        ClusterError: no encoder actor could start.
        StorageError: the ``--report`` file cannot be written.
        AccessDeniedError: storage refused the credentials or permissions (in any task:
            the job stops).
    """
    from cluster.driver import run_job
    from pipeline import storage

    setup_logging(a.log_level)
    job = job_from_args(a)
    with ray_session(a.address, a.num_cpus):
        report = run_job(job, on_event=on_event, progress=not a.no_progress and sys.stderr.isatty())
    print(report.table())
    if a.report:
        storage.write_bytes(a.report, json.dumps(report.to_dict(), indent=1).encode())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.transcode SRC... --out DST`` (the entrypoint of a ``relatent
    submit --working-dir`` job): ``relatent transcode`` through :func:`jobs.cli.main`."""
    from jobs.cli import main as cli_main

    return cli_main(["transcode", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
