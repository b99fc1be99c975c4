"""relatent's one-machine library: read media, code frames with fixed learned codecs and
per-frame latent refinement, write and read ``.rlv`` streams, on local files or S3.

The public face is :data:`__all__`; each name is imported from its module on first use
(PEP 562), so ``import pipeline`` (and ``pipeline.storage``, ``pipeline.config``) stays light:
torch loads only when a model, the codec or refinement is touched.

Typical use::

    from pipeline import RefineConfig, encode_video, decode_video, load_model

    model = load_model()  # the shipped default weights
    summary = encode_video("in.mp4", "out.rlv", model, RefineConfig(method="sga", lr=2e-2, tol=0))
    decode_video("out.rlv", "out.mkv")

Errors all derive from :class:`RelatentError` (the tree is drawn in :mod:`pipeline.errors`).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_HOME = {
    "RefineConfig": "pipeline.config",
    "FrameStats": "pipeline.stats",
    "StatsSummary": "pipeline.stats",
    "summarize": "pipeline.stats",
    "load_model": "pipeline.models",
    "LoadedModel": "pipeline.models",
    "ModelIdentity": "pipeline.models",
    "FrameEncoder": "pipeline.codec",
    "FrameDecoder": "pipeline.decoder",
    "encode_video": "pipeline.codec",
    "RateController": "pipeline.ratecontrol",
    "rate_point_models": "pipeline.ratecontrol",
    "vmaf_scores": "pipeline.vmaf",
    "decode_video": "pipeline.decoder",
    "decode_stream": "pipeline.decoder",
    "StreamHeader": "pipeline.bitstream",
    "StreamReader": "pipeline.bitstream",
    "StreamWriter": "pipeline.bitstream",
    "probe": "pipeline.media",
    "read_frames": "pipeline.media",
    "write_frames": "pipeline.media",
    "VideoInfo": "pipeline.media",
    "ColorInfo": "pipeline.media",
    "RelatentError": "pipeline.errors",
    "ConfigError": "pipeline.errors",
    "InputError": "pipeline.errors",
    "BitstreamError": "pipeline.errors",
    "ModelError": "pipeline.errors",
    "StorageError": "pipeline.errors",
    "ClusterError": "pipeline.errors",
}

__version__ = "0.1.0"

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
