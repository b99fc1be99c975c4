"""``relatent bench pipeline``: what the distributed pipeline costs over the bare codec.

Measured side by side on this machine, same model, refinement iterations and resolution:

* **standalone**: ``encode_video`` (what ``relatent encode`` runs) in 1 process, and in
  ``actors`` processes at once (one clip each), one torch thread per process - the ideal
  the pipeline is compared with. Timed from the first frame to the last (model loaded).
* **pipeline**: ``relatent transcode`` of the same clips on an embedded local Ray with 1
  and with ``actors`` actors. ``e2e`` includes actor start-up (process + model load +
  warm-up) and the commit; ``steady`` is every frame over the window from the first actor
  ready to the last shard done (conservative: later actors' start-up counts against it).
* **efficiency** = pipeline frames/s / standalone frames/s with the same parallelism;
  **scaling** = pipeline frames/s with ``actors`` actors / with 1 actor.
* **driver RSS**: peak RSS of a driver process (joined to the same cluster) transcoding a
  clip and a clip 10x longer (``--refine none``, so the driver, not the codec, dominates).

Writes ``pipeline.json``, ``pipeline.md`` and ``pipeline.png`` under ``--out``.
Unless ``--checkpoint`` is given the model is a randomly initialised
``bmshj2018-factorized`` with N=64, M=96 (speed does not depend on training).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jobs.bench.lib import REPO, md_table, provenance, provenance_md, write_json

__all__ = [
    "PipelineProtocol",
    "add_parser",
    "cmd_pipeline",
    "driver_rss",
    "pipeline",
    "random_checkpoint",
    "run",
    "standalone",
    "synthetic_clip",
]


@dataclass(frozen=True)
class PipelineProtocol:
    """What a ``bench pipeline`` run measures (recorded in pipeline.json): clips of
    ``frames`` frames at ``width`` x ``height``, ``iters`` refinement iterations at step
    ``lr``, ``actors`` actors (and standalone processes), shards of ``shard_frames``,
    encoder ``batch``, and the short clip of the driver-memory probe (``rss_frames``)."""

    frames: int = 32  # per clip
    width: int = 128
    height: int = 96
    iters: int = 5
    lr: float = 5e-3
    actors: int = 2
    shard_frames: int = 8
    batch: int = 4
    rss_frames: int = 16  # the short clip of the RSS probe (the long one is 10x)


def synthetic_clip(path: Path, n: int, w: int, h: int, gop: int = 8, seed: int = 0) -> Path:
    """An H.264 clip (``path``, returned) of ``n`` frames of ``w`` x ``h`` at 25 frames/s:
    moving gradients plus noise, a keyframe every ``gop`` frames."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = gop
        s.options = {"crf": "18", "preset": "ultrafast", "keyint_min": str(gop), "scenecut": "0"}
        yy, xx = np.mgrid[0:h, 0:w]
        for t in range(n):
            base = np.stack(
                [(xx * 2 + t * 3) % 256, (yy * 3 + t) % 256, (xx + yy + 2 * t) % 256], -1
            )
            img = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = t
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def random_checkpoint(path: Path) -> Path:
    """A randomly initialised ``bmshj2018-factorized`` (N=64, M=96, seed 0) saved to ``path``
    (returned): speed does not depend on training."""
    import torch

    from pipeline.models import get_architecture

    torch.manual_seed(0)
    net = get_architecture("bmshj2018-factorized").model_class()(N=64, M=96)
    torch.save(net.state_dict(), path)
    return path


def standalone(clips: list[Path], tmp: Path, ckpt: Path, p: PipelineProtocol) -> dict[str, Any]:
    """``encode_video`` in ``len(clips)`` processes at once (:mod:`jobs.bench.pipeline_standalone`);
    frames/s over the joint window.

    Raises:
        RuntimeError: a standalone encode failed.
    """
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobs.bench.pipeline_standalone",
                str(c),
                str(tmp / f"sa-{i}.rlv"),
                str(ckpt),
                str(p.iters),
                str(p.lr),
                str(p.batch),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, c in enumerate(clips)
    ]
    outs = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"standalone encode failed (exit {proc.returncode})")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    window = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    frames = sum(o["frames"] for o in outs)
    return {"processes": len(clips), "frames": frames, "seconds": window, "fps": frames / window}


def pipeline(
    clips: list[Path], out: Path, ckpt: Path, p: PipelineProtocol, actors: int
) -> dict[str, Any]:
    """``relatent transcode``'s job on the running local Ray with ``actors`` actors:
    end-to-end and steady frames/s, and the start-up time of the first actor (s).

    Raises:
        RuntimeError: the job failed (its report in the message).
    """
    from cluster.config import ClusterConfig, ModelSpec, TranscodeJob
    from cluster.driver import run_job
    from pipeline.config import RefineConfig

    events: list[tuple[float, str, dict[str, Any]]] = []
    job = TranscodeJob(
        sources=tuple(str(c) for c in clips),
        out=str(out),
        model=ModelSpec(checkpoint=str(ckpt), quality=3),
        refine=RefineConfig(iters=p.iters, lr=p.lr, tol=0.0),
        shard_frames=p.shard_frames,
        batch=p.batch,
        cluster=ClusterConfig(actors=actors, max_inflight=2),
        job_id=f"bench-{actors}",
    )
    report = run_job(job, on_event=lambda e, f: events.append((time.monotonic(), e, f)))
    if not report.ok:
        raise RuntimeError(report.table())
    ready = [t for t, e, _ in events if e == "actor_ready"]
    done = [t for t, e, _ in events if e == "shard_done"]
    # Conservative steady rate: every frame over the window from the FIRST actor ready to
    # the last shard (start-up of later actors counts against the pipeline).
    window = max(done) - min(ready)
    return {
        "actors": actors,
        "frames": report.frames_encoded,
        "seconds": report.seconds,
        "fps": report.frames_encoded / report.seconds,
        "startup_seconds": min(ready) - events[0][0],
        "steady_fps": report.frames_encoded / window if window > 0 else None,
    }


def driver_rss(
    clip: Path, out: Path, ckpt: Path, address: str, shard_frames: int
) -> dict[str, Any]:
    """Peak RSS (MiB) of a driver process (:mod:`jobs.bench.pipeline_rss`) joined to the
    cluster at ``address``, transcoding ``clip`` with ``--refine none``.

    Raises:
        RuntimeError: the probe failed (its stderr in the message).
    """
    res = subprocess.run(
        [
            sys.executable, "-m", "jobs.bench.pipeline_rss",
            str(clip), str(out), str(ckpt), address, str(shard_frames),
        ],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if res.returncode:
        raise RuntimeError(f"RSS probe failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(
    out: Path, p: PipelineProtocol | None = None, checkpoint: str | None = None
) -> dict[str, Any]:
    """Every measurement of ``p`` (default protocol) with ``checkpoint`` (default: a random
    model), on an embedded local Ray unless one is running; writes pipeline.json /
    pipeline.md / pipeline.png under ``out`` and returns the results.

    Raises:
        RuntimeError: a standalone encode, the pipeline job or the RSS probe failed.
    """
    import ray

    p = p or PipelineProtocol()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as td:
        tmp = Path(td)
        ckpt = Path(checkpoint) if checkpoint else random_checkpoint(tmp / "model.pth")
        clips = [
            synthetic_clip(tmp / f"clip{i}.mp4", p.frames, p.width, p.height, seed=i)
            for i in range(p.actors)
        ]
        res: dict[str, Any] = {
            "protocol": asdict(p),
            "model": str(checkpoint or "random bmshj2018-factorized N=64 M=96"),
        }
        res["standalone_1"] = standalone(clips[:1], tmp, ckpt, p)
        res[f"standalone_{p.actors}"] = standalone(clips, tmp, ckpt, p)
        started = not ray.is_initialized()
        if started:
            ray.init(
                num_cpus=p.actors,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
            )
        try:
            res["pipeline_1"] = pipeline(clips[:1], tmp / "out1", ckpt, p, 1)
            res[f"pipeline_{p.actors}"] = pipeline(clips, tmp / f"out{p.actors}", ckpt, p, p.actors)
            address = ray.get_runtime_context().gcs_address
            short = synthetic_clip(tmp / "rss-short.mp4", p.rss_frames, 64, 48)
            long = synthetic_clip(tmp / "rss-long.mp4", p.rss_frames * 10, 64, 48)
            res["rss_short"] = driver_rss(short, tmp / "rss1", ckpt, address, 4)
            res["rss_long"] = driver_rss(long, tmp / "rss10", ckpt, address, 4)
        finally:
            if started:
                ray.shutdown()
    n = p.actors
    pn, p1 = res[f"pipeline_{n}"], res["pipeline_1"]
    sn, s1 = res[f"standalone_{n}"], res["standalone_1"]
    res["ratios"] = {
        f"efficiency_e2e_{n}_actors": pn["fps"] / sn["fps"],
        f"efficiency_steady_{n}_actors": (pn["steady_fps"] or 0) / sn["fps"],
        "efficiency_e2e_1_actor": p1["fps"] / s1["fps"],
        "efficiency_steady_1_actor": (p1["steady_fps"] or 0) / s1["fps"],
        f"scaling_e2e_{n}_over_1": pn["fps"] / p1["fps"],
        f"scaling_steady_{n}_over_1": (pn["steady_fps"] or 0) / (p1["steady_fps"] or 1),
        f"standalone_scaling_{n}_over_1": sn["fps"] / s1["fps"],
        "driver_rss_long_over_short": res["rss_long"]["peak_rss_mib"]
        / res["rss_short"]["peak_rss_mib"],
    }
    res["provenance"] = provenance("relatent bench pipeline", asdict(p))
    write_json(out / "pipeline.json", res)
    _write_md(out / "pipeline.md", res, p)
    _plot(out / "pipeline.png", res, p)
    return res


def _write_md(path: Path, res: dict[str, Any], p: PipelineProtocol) -> None:
    """``pipeline.md``: the runs, the ratios, the driver-memory probe and the provenance."""
    n = p.actors
    rows = []
    for key in ("standalone_1", f"standalone_{n}", "pipeline_1", f"pipeline_{n}"):
        r = res[key]
        rows.append([
            key, r["frames"], f"{r['seconds']:.1f}", f"{r['fps']:.2f}",
            f"{r['steady_fps']:.2f}" if r.get("steady_fps") else "-",
            f"{r['startup_seconds']:.1f}" if "startup_seconds" in r else "-",
        ])  # fmt: skip
    ratios = [[k, f"{v:.3f}"] for k, v in res["ratios"].items()]
    rss = [
        ["short", res["rss_short"]["frames"], f"{res['rss_short']['peak_rss_mib']:.0f}"],
        ["10x longer", res["rss_long"]["frames"], f"{res['rss_long']['peak_rss_mib']:.0f}"],
    ]
    prov = res["provenance"]
    load = prov.get("machine", {}).get("load_average")
    lines = [
        "# Pipeline efficiency (`relatent bench pipeline`)",
        "",
        f"{p.frames} frames per clip at {p.width}x{p.height}, {p.iters} refinement iterations "
        f"(lr {p.lr}), shards of {p.shard_frames} frames, batch {p.batch}; model: {res['model']}. "
        f"Load average when the results were written: {load} on "
        f"{prov.get('machine', {}).get('cores')} cores.",
        "",
        "Read the ratios against `standalone_scaling`: it is what two plain `encode_video` "
        "processes achieve side by side on this machine at the same time. When other jobs share "
        "the cores (load average above the core count) neither the standalone nor the pipeline "
        "runs get the cores they ask for, and the ratios measure contention, not the pipeline; "
        "rerun on an idle machine for the issue-4 targets.",
        "",
        *md_table(
            ["run", "frames", "seconds", "frames/s (e2e)", "frames/s (steady)", "actor start-up s"],
            rows,
        ),
        "",
        *md_table(["ratio", "value"], ratios),
        "",
        "Targets from issue 4: efficiency >= 0.90 with 2 actors on 2 cores; 2 actors over 1 >= 1.8x; "
        "driver RSS of a 10x longer video <= 1.2x.",
        "",
        *md_table(["driver RSS probe", "frames", "peak RSS MiB"], rss),
        "",
        *provenance_md(prov),
        "",
    ]
    path.write_text("\n".join(lines))


def _plot(path: Path, res: dict[str, Any], p: PipelineProtocol) -> None:
    """``pipeline.png``: end-to-end and steady frames/s of each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = p.actors
    keys = ["standalone_1", "pipeline_1", f"standalone_{n}", f"pipeline_{n}"]
    fps = [res[k]["fps"] for k in keys]
    steady = [res[k].get("steady_fps") or res[k]["fps"] for k in keys]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = range(len(keys))
    ax.bar([i - 0.2 for i in x], fps, 0.4, label="end to end")
    ax.bar([i + 0.2 for i in x], steady, 0.4, label="steady (pipeline)")
    ax.set_xticks(list(x), keys, rotation=15)
    ax.set_ylabel("frames/s")
    ax.set_title(f"{p.width}x{p.height}, {p.iters} iters")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``pipeline`` on the ``bench`` subcommand's subparsers; returns its parser."""
    d = PipelineProtocol()
    p = sub.add_parser(
        "pipeline", help="distributed pipeline efficiency, scaling and driver memory"
    )
    p.add_argument(
        "--out",
        default=str(REPO / "docs" / "benchmarks"),
        help="where pipeline.json / pipeline.md / pipeline.png go",
    )
    p.add_argument("--checkpoint", default=None, help="model weights (default: random N=64/M=96)")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per synthetic clip")
    p.add_argument("--width", type=int, default=d.width, help="clip width (pixels)")
    p.add_argument("--height", type=int, default=d.height, help="clip height (pixels)")
    p.add_argument("--iters", type=int, default=d.iters, help="refinement iterations per frame")
    p.add_argument(
        "--actors", type=int, default=d.actors, help="actors (and standalone processes, clips)"
    )
    p.add_argument(
        "--shard-frames", type=int, default=d.shard_frames, help="frames per pipeline shard"
    )
    p.set_defaults(func=cmd_pipeline)
    return p


def cmd_pipeline(a: argparse.Namespace) -> int:
    """``relatent bench pipeline``: measure, write the files, print the ratios.

    Raises:
        RuntimeError: see :func:`run`.
    """
    p = PipelineProtocol(
        frames=a.frames, width=a.width, height=a.height, iters=a.iters, actors=a.actors,
        shard_frames=a.shard_frames,
    )  # fmt: skip
    res = run(Path(a.out), p, a.checkpoint)
    for k, v in res["ratios"].items():
        print(f"{k}: {v:.3f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="relatent bench")
    add_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["pipeline", *sys.argv[1:]])
    sys.exit(args.func(args))
