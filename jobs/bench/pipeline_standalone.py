"""Worker process of ``relatent bench pipeline``: the bare codec, no Ray.

Run as ``python -m jobs.bench.pipeline_standalone SRC DST CHECKPOINT ITERS LR BATCH`` (from
the repository root): encodes the video ``SRC`` to the stream ``DST`` with
:func:`pipeline.codec.encode_video` (what ``relatent encode`` runs) on one torch thread, the
model loaded from ``CHECKPOINT`` at quality 3, ``campos`` refinement at exactly ``ITERS``
iterations with step size ``LR`` and batch ``BATCH``. Prints one JSON line: ``start`` and
``end`` (wall-clock seconds since the epoch, from the first frame to the last, model already
loaded) and ``frames``. Several run side by side give the standalone frames/s the pipeline
is compared with (:func:`jobs.bench.pipeline.standalone`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from jobs.refine_options import positive_float

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Encode, then print ``{"start", "end", "frames"}`` as one JSON line; exit status 0.

    Raises:
        InputError: the source cannot be read.
        ModelError: the checkpoint does not load.
        ConfigError: an invalid refinement setting.
    """
    parser = argparse.ArgumentParser(prog="python -m jobs.bench.pipeline_standalone")
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("checkpoint")
    parser.add_argument("iters", type=int)
    parser.add_argument("lr", type=positive_float)
    parser.add_argument("batch", type=int)
    a = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from pipeline.codec import encode_video
    from pipeline.config import RefineConfig
    from pipeline.models import load_model

    model = load_model(checkpoint=a.checkpoint, quality=3, device="cpu")
    refine = RefineConfig(iters=a.iters, lr=a.lr, tol=0.0)
    t0 = time.time()
    s = encode_video(a.src, a.dst, model, refine, batch=a.batch)
    print(json.dumps({"start": t0, "end": time.time(), "frames": len(s.frames)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
