"""The video section of ``relatent bench rd``: the shared clips coded *as video*.

The main section (:mod:`jobs.bench.rd`) codes evenly spaced clip frames, each on its own: no
use for inter coding. This section takes the first ``--video-frames`` (default
:data:`~jobs.bench.rd_protocol.DEFAULT_VIDEO_FRAMES`) **consecutive** frames of each clip under
``--video`` (downscaled like the main section's clip frames: long side 256, never upscaled,
even sizes; :func:`jobs.bench.lib.clip_run`) and codes them with:

* ``relatent-intra``: ``relatent encode --gop 1 --refine none``;
* ``relatent-inter``: ``relatent encode --refine none`` (the CLI's default GOP);
* ``relatent-inter-refined``: ``relatent encode`` with every refinement option at its CLI
  default (:func:`cli_configs` parses an empty command line with the encode command's own
  option definitions, so the run measures whatever the defaults are when it runs);

each at every shipped rate point, through the library path of ``relatent encode``
(:func:`pipeline.codec.encode_frames` with a :class:`~pipeline.codec.FrameEncoder`, frames in
coding order, one process per clip, curve and rate point, one torch thread each); and with
``x264-gop-420`` / ``x265-gop-420`` (their default GOP and B-frames, preset medium, only crf
varied, the frames as one sequence) and ``x265-intra-420`` (keyint 1).

Rate: relatent = the frames' packet bytes / (frames x pixels) (stream header and footer
excluded); x264/x265 = the stream's bytes without SEI / (frames x pixels). Quality: RGB PSNR,
BT.601 Y PSNR and MS-SSIM per frame, averaged over the frames. BD-rates (``bjontegaard``
pchip) of every curve against ``x265-gop-420`` and ``relatent-intra``, per clip, on the pooled
curves (per-setting means over every frame of every clip) and averaged over the clips
(:mod:`jobs.bench.rd_video_report`, which also writes ``rd_video.json``, ``rd_video.md`` and
``rd_video.png``). Separate files, so a run of this section alone leaves rd.json untouched.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench import lib as bl
from jobs.bench.rd_encode import CRF_SWEEPS, cached_model, classic_task, pool_map
from jobs.bench.rd_protocol import Protocol, clip_entry

__all__ = [
    "BATCH",
    "CLASSIC",
    "CURVES",
    "cli_configs",
    "encode_clip_item",
    "load_clips",
    "run",
    "video_items",
]

#: relatent's curves, in table order.
CURVES = ("relatent-intra", "relatent-inter", "relatent-inter-refined")
#: The classic codecs of the section (labels of :data:`jobs.bench.lib.AV_CODECS`).
CLASSIC = ("x264-gop-420", "x265-gop-420", "x265-intra-420")
#: ``relatent encode``'s default ``--batch`` (bytes do not depend on it: determinism contract).
BATCH = 4


def cli_configs() -> dict[str, Any]:
    """The :class:`~pipeline.config.RefineConfig` of each relatent curve, from the refinement
    options of ``relatent encode`` (:func:`jobs.refine_options.add_refine_options`) parsed
    from ``--gop 1 --refine none``, ``--refine none`` and an empty command line.

    Raises:
        ConfigError: the CLI's defaults do not validate (a bug).
    """
    from jobs.refine_options import add_refine_options, refine_from_args

    def parse(argv: list[str]) -> Any:
        p = argparse.ArgumentParser(add_help=False)
        add_refine_options(p)
        return refine_from_args(p.parse_args(argv))

    return {
        "relatent-intra": parse(["--gop", "1", "--refine", "none"]),
        "relatent-inter": parse(["--refine", "none"]),
        "relatent-inter-refined": parse([]),
    }


def load_clips(video: Path, proto: Protocol) -> dict[str, dict[str, Any]]:
    """The first ``proto.video_frames`` consecutive frames of the first ``proto.clips`` clips
    (``*.mp4`` under ``video``, name order), downscaled to ``proto.long_side``: clip stem ->
    ``frames`` ((name, HxWx3 uint8) pairs, named ``stem#index``), source, indices, size,
    native size and content. Empty when the folder is absent or holds no clip.

    Raises:
        InputError: a clip cannot be opened or decoded.
    """
    if not video.is_dir() or proto.clips == 0:
        return {}
    out = {}
    for f in sorted(video.glob("*.mp4"))[: proto.clips]:
        idx, frames, info = bl.clip_run(f, proto.video_frames, proto.long_side, start=0)
        out[f.stem] = clip_entry(f, idx, frames, info)
    return out


def video_items(
    clips: dict[str, dict[str, Any]],
    cards: list[dict[str, Any]],
    configs: dict[str, Any],
    device: str,
) -> list[dict[str, Any]]:
    """One encode item per clip x rate point x curve (see :func:`encode_clip_item`), the
    costliest (refined, large) first."""
    items = []
    for clip, v in clips.items():
        for c in cards:
            for curve, cfg in configs.items():
                items.append(
                    {
                        "dataset": clip,
                        "curve": curve,
                        "arch": c["arch"],
                        "quality": int(c["quality"]),
                        "config": cfg,
                        "names": [n for n, _ in v["frames"]],
                        "rgbs": [im for _, im in v["frames"]],
                        "device": device,
                    }
                )

    def cost(it: dict[str, Any]) -> float:
        h, w = it["rgbs"][0].shape[:2]
        return len(it["rgbs"]) * h * w * (1 + (it["config"].iters if it["config"].active else 0))

    return sorted(items, key=lambda it: -cost(it))


def encode_clip_item(item: dict[str, Any]) -> dict[str, Any]:
    """One clip, one rate point, one curve: the frames coded in order as ``relatent encode``
    codes them. Runs in a worker process.

    ``item`` holds ``rgbs`` (HxWx3 uint8 frames of one size), ``names``, ``arch``,
    ``quality``, ``config`` (a RefineConfig), ``curve``, ``dataset`` and ``device``. Returns
    ``records`` (one per frame: bytes and bpp of its packet, RGB / Y PSNR in dB, MS-SSIM,
    frame type, refinement iterations and seconds) and the encode's wall ``seconds``.

    Raises:
        ModelError: the model does not load.
        ConfigError: the config does not suit the model (e.g. a GOP with a hyperprior model).
    """
    from pipeline.codec import FrameEncoder, encode_frames

    model = cached_model(item["arch"], item["quality"], item.get("device", "cpu"))
    t0 = time.perf_counter()
    enc = FrameEncoder(model, item["config"])
    out = list(encode_frames(enc, ((rgb, i, i) for i, rgb in enumerate(item["rgbs"])), BATCH))
    secs = time.perf_counter() - t0
    h, w = item["rgbs"][0].shape[:2]
    recs = []
    for name, e in zip(item["names"], out, strict=True):
        s = e.stats
        recs.append(
            {
                "dataset": item["dataset"],
                "frame": name,
                "codec": item["curve"],
                "setting": item["quality"],
                "arch": item["arch"],
                "frame_type": s.frame_type,
                "bytes": int(s.bytes),
                "bpp": 8.0 * int(s.bytes) / (h * w),  # unrounded (the stats round bpp)
                "psnr": float(s.psnr),
                "psnr_y": float(s.psnr_y),
                "ms_ssim": float(s.ms_ssim),
                "iters": int(s.iters),
                "refine_seconds": float(s.refine_seconds),
                "rd_before": float(s.rd_before),
                "rd_after": float(s.rd_after),
            }
        )
    return {
        "dataset": item["dataset"],
        "curve": item["curve"],
        "quality": item["quality"],
        "seconds": secs,
        "records": recs,
    }


def run(
    video: Path,
    out: Path,
    proto: Protocol,
    log: Any = print,
    configs: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The video section (see the module docstring): encodes, analysis, and
    ``rd_video.json`` / ``rd_video.md`` / ``rd_video.png`` under ``out``. ``configs``
    (curve -> RefineConfig) replaces :func:`cli_configs` (tests). Returns the results, or
    None (nothing written) when ``video`` holds no clip.

    Raises:
        InputError: no shipped model, or an unreadable clip.
        ModelError: a shipped model does not load.
    """
    from jobs.bench.rd import shipped_cards
    from jobs.bench.rd_video_report import analyse_video, write_video_outputs
    from pipeline.models import load_cards

    t0 = time.perf_counter()
    clips = load_clips(video, proto)
    if not clips:
        log(f"bench rd: video section skipped: no clip under {video}")
        return None
    configs = configs or cli_configs()
    cards = shipped_cards(proto)
    default_arch = load_cards().get("default_arch")
    cards = [c for c in cards if c["arch"] == default_arch] or cards
    prov = bl.provenance("relatent bench rd --sections video", asdict(proto))
    log(
        f"bench rd: video section, {len(clips)} clip(s) x {proto.video_frames} consecutive frames; "
        "classic codecs ..."
    )
    tasks = [(clip, v["frames"], label) for clip, v in clips.items() for label in CLASSIC]
    records: list[dict[str, Any]] = []
    for dataset, label, secs, recs in pool_map(classic_task, tasks, proto.jobs):
        records += recs
        log(f"  {dataset} {label}: {len({r['setting'] for r in recs})} points in {secs:.1f} s")
    t_classic = time.perf_counter() - t0
    items = video_items(clips, cards, configs, proto.device)
    log(f"bench rd: video section, {len(items)} relatent encodes on {proto.jobs} process(es) ...")
    encodes = []
    for k, res in enumerate(pool_map(encode_clip_item, items, proto.jobs), 1):
        rs = res["records"]
        records += rs
        encodes.append({k_: v for k_, v in res.items() if k_ != "records"})
        log(
            f"  [{k}/{len(items)}] {res['dataset']} {res['curve']} q{res['quality']}: "
            f"{np.mean([r['bpp'] for r in rs]):.4f} bpp {np.mean([r['psnr'] for r in rs]):.2f} dB, "
            f"{sum(r['frame_type'] == 'P' for r in rs)} P frames, "
            f"{np.mean([r['iters'] for r in rs]):.1f} it/frame ({res['seconds']:.0f} s; "
            f"elapsed {(time.perf_counter() - t0) / 60:.1f} min)"
        )
    results: dict[str, Any] = {
        "provenance": prov,
        "protocol": {
            "frames": proto.video_frames,
            "first_frame": 0,
            "long_side": proto.long_side,
            "clips": proto.clips,
            "qualities": [int(c["quality"]) for c in cards],
            "arch": cards[0]["arch"],
            "jobs": proto.jobs,
            "device": proto.device,
            "batch": BATCH,
            "classic": list(CLASSIC),
            "crf": {
                bl.AV_CODECS[k]["codec"]: list(CRF_SWEEPS[bl.AV_CODECS[k]["codec"]])
                for k in CLASSIC
            },
            "codec_options": {
                k: bl.codec_options(bl.AV_CODECS[k]["codec"], 27, bl.AV_CODECS[k]["intra"])
                for k in CLASSIC
            },
            "rate": "relatent: packet bytes / (frames x pixels), stream header and footer excluded; "
            "x264/x265: stream bytes without SEI / (frames x pixels)",
        },
        "refine": {curve: {**asdict(cfg), "hash": cfg.hash()} for curve, cfg in configs.items()},
        "clips": {k: {k_: v[k_] for k_ in v if k_ != "frames"} for k, v in clips.items()},
        "encodes": sorted(encodes, key=lambda e: (e["dataset"], e["curve"], e["quality"])),
        "records": sorted(
            records, key=lambda r: (r["dataset"], r["codec"], str(r["setting"]), r["frame"])
        ),
    }
    results.update(
        analyse_video(records, {k: [n for n, _ in v["frames"]] for k, v in clips.items()})
    )
    total = time.perf_counter() - t0
    results["seconds"] = {"total": total, "classic": t_classic, "relatent": total - t_classic}
    write_video_outputs(results, out)
    log(f"bench rd: video section done in {total / 60:.1f} min -> {out / 'rd_video.md'}")
    return results
