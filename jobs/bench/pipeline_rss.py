"""Worker process of ``relatent bench pipeline``: the driver's peak memory.

Run as ``python -m jobs.bench.pipeline_rss SRC OUT CHECKPOINT ADDRESS SHARD_FRAMES`` (from
the repository root): joins the running Ray cluster at ``ADDRESS``, transcodes the video
``SRC`` into the folder ``OUT`` with 2 actors, ``--refine none`` (so the driver, not the
codec, dominates), the model from ``CHECKPOINT`` at quality 3 and shards of
``SHARD_FRAMES`` frames, and prints one JSON line: ``frames`` and ``peak_rss_mib`` (this
driver process's peak resident set, ``ru_maxrss``, MiB). Exit status 1 when the job fails
(its report on stderr).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Transcode, then print ``{"frames", "peak_rss_mib"}`` as one JSON line.

    Raises:
        ClusterError: the Ray cluster at ``ADDRESS`` is unreachable.
    """
    parser = argparse.ArgumentParser(prog="python -m jobs.bench.pipeline_rss")
    parser.add_argument("src")
    parser.add_argument("out")
    parser.add_argument("checkpoint")
    parser.add_argument("address")
    parser.add_argument("shard_frames", type=int)
    a = parser.parse_args(argv)

    import ray

    from cluster.config import ClusterConfig, ModelSpec, TranscodeJob
    from cluster.driver import run_job
    from pipeline.config import RefineConfig

    ray.init(address=a.address, log_to_driver=False)
    job = TranscodeJob(
        sources=(a.src,),
        out=a.out,
        model=ModelSpec(checkpoint=a.checkpoint, quality=3),
        refine=RefineConfig(method="none"),
        shard_frames=a.shard_frames,
        cluster=ClusterConfig(actors=2),
    )
    r = run_job(job)
    if not r.ok:
        print(r.table(), file=sys.stderr)
        return 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": r.frames_encoded, "peak_rss_mib": peak}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
