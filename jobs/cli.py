"""The ``relatent`` command line: a thin layer over the library.

Every subcommand parses its arguments, sets process-wide settings (threads, logging), calls
one library function and prints its result. Errors from the library's hierarchy
(:mod:`pipeline.errors`) become a one-line message on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence

from jobs.refine_options import add_refine_options
from pipeline.errors import RelatentError

Handler = Callable[[argparse.Namespace], int]


# Warnings our dependencies print on every run that a user cannot act on: CompressAI 1.2.8
# decorates functions with ``torch.jit.script`` (deprecated in recent torch), and the encoder's
# oneDNN-off block (:mod:`pipeline.codec`, for determinism) makes torch mention Intel GPUs.
# pyproject.toml filters the same two messages for pytest.
_DEPENDENCY_NOISE: tuple[tuple[str, type[Warning]], ...] = (
    (r"`torch\.jit\.script` is deprecated", FutureWarning),
    (r"TF32 acceleration on top of oneDNN", UserWarning),
)


def _quiet_dependency_noise() -> None:
    """Hide :data:`_DEPENDENCY_NOISE` in this process (the CLI's own, process-wide setting)."""
    for message, category in _DEPENDENCY_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


# --------------------------------------------------------------------------- train


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train (or resume) a codec model on images or videos")
    p.add_argument("--run-dir", required=True, help="folder of the run; resumes if it holds last.pt")
    p.add_argument("--model", default="bmshj2018-factorized", help="architecture id")
    p.add_argument("--N", type=int, default=64, dest="N")
    p.add_argument("--M", type=int, default=96, dest="M")
    p.add_argument("--lambda", type=float, default=0.0067, dest="lmbda")
    p.add_argument("--data", nargs="+", required=True, help="folders of images and/or videos")
    p.add_argument("--exclude", nargs="*", default=[], help="path parts to skip (e.g. val)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine"])
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--total-steps", type=int, default=20000)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many more steps")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quant", default="noise", choices=["noise", "mixed"],
                   help="decoder input while training: noisy latent (CompressAI) or the rounded one (straight-through)")
    p.add_argument("--init-from", default=None, help="start from these weights (fine-tuning)")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--snapshot-every", type=int, default=2000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)


def _cmd_train(a: argparse.Namespace) -> int:
    from pipeline.training import TrainConfig, train

    _set_threads(a.threads)
    cfg = TrainConfig(
        arch=a.model, N=a.N, M=a.M, lmbda=a.lmbda, data=tuple(a.data), exclude=tuple(a.exclude),
        crop=a.crop, batch=a.batch, lr=a.lr, lr_schedule=a.lr_schedule,
        warmup_steps=a.warmup_steps, total_steps=a.total_steps, seed=a.seed,
        init_from=a.init_from, quant=a.quant, log_every=a.log_every, checkpoint_every=a.checkpoint_every,
        snapshot_every=a.snapshot_every,
    )
    state = train(
        cfg, a.run_dir, max_steps=a.max_steps,
        max_seconds=None if a.max_minutes is None else a.max_minutes * 60,
        device=a.device, progress=not a.no_progress,
    )
    print(f"run {a.run_dir}: step {state.step}/{cfg.total_steps}")
    return 0


# --------------------------------------------------------------------------- encode


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="architecture id (default: the shipped default)")
    p.add_argument("--quality", type=int, default=None, help="rate point of the shipped weights")
    p.add_argument("--checkpoint", default=None, help="CompressAI state dict: path, file:// or s3:// URI")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")


def _add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode a video or image to an .rlv stream")
    p.add_argument("src", help="video or still image (path or URI)")
    p.add_argument("dst", help="output .rlv stream")
    _add_model_args(p)
    add_refine_options(p)
    p.add_argument("--batch", type=int, default=4, help="frames refined together (with --warm-start/--budget-iters-per-frame: grid groups in lockstep)")
    p.add_argument("--start", type=int, default=0, help="first frame")
    p.add_argument("--end", type=int, default=None, help="end frame (exclusive)")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse frames larger than this many pixels")
    p.add_argument("--no-carry", action="store_true", help="code the video only; do not carry audio, subtitles, chapters and metadata")
    p.add_argument("--drop-broken-streams", action="store_true", help="leave corrupt audio tracks out (with a warning) instead of failing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_encode)


def _cmd_encode(a: argparse.Namespace) -> int:
    from jobs.refine_options import refine_from_args
    from pipeline.codec import encode_video
    from pipeline.frames import DEFAULT_MAX_PIXELS, probe
    from pipeline.models import load_model

    refine = refine_from_args(a)
    model = load_model(a.model, a.quality, a.checkpoint, device=a.device)
    info = probe(a.src)
    total = (info.frame_count if a.end is None else a.end) - a.start
    bar = _progress(total, "encode", a.no_progress)
    summary = encode_video(
        a.src, a.dst, model, refine, batch=a.batch, start=a.start, end=a.end,
        max_pixels=a.max_pixels or DEFAULT_MAX_PIXELS,
        on_frame=lambda s: bar.update(1) if bar else None,
        carry=not a.no_carry, drop_broken=a.drop_broken_streams, warn=_warn("encode"),
    )
    if bar:
        bar.close()
    fr = summary.frames
    n = len(fr)
    print(
        f"{a.dst}: {n} frames, {summary.total_bytes} bytes, "
        f"{sum(f['bpp'] for f in fr) / n:.4f} bpp, {sum(f['psnr'] for f in fr) / n:.2f} dB PSNR, "
        f"{sum(f['refined'] for f in fr)}/{n} refined, {sum(f['iters'] for f in fr) / n:.1f} iterations/frame, {summary.seconds:.1f} s "
        f"({model.identity.describe()})"
    )
    if summary.carry is not None:
        c = summary.carry
        print(f"carried     {len(c.streams)} stream(s), {c.total_bytes} bytes, {len(c.chapters)} chapter(s)"
              + (f"; dropped {len(c.dropped)}" if c.dropped else ""))
    return 0


def _warn(command: str) -> Callable[[str], None]:
    def warn(msg: str) -> None:
        print(f"relatent {command}: warning: {msg}", file=sys.stderr)

    return warn


def _progress(total: int, desc: str, disabled: bool):  # type: ignore[no-untyped-def]
    if disabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True)


# --------------------------------------------------------------------------- decode


def _add_decode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="decode an .rlv stream to .y4m (exact), .mp4/.mkv (viewing) or a PNG folder")
    p.add_argument("src", help="input .rlv stream")
    p.add_argument("dst", help="out.y4m, out.mp4, out.mkv, or a folder for PNG frames")
    p.add_argument("--checkpoint", default=None, help="weights the stream needs, when not shipped")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--video-only", action="store_true", help="write the video alone, without the carried audio/subtitles")
    p.add_argument("--strict", action="store_true", help="fail if the output cannot hold a carried stream (default: skip it with a warning; .y4m/PNG hold none)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_decode)


def _cmd_decode(a: argparse.Namespace) -> int:
    from pipeline.bitstream import StreamReader
    from pipeline.codec import decode_video

    _set_threads(a.threads)
    with StreamReader(a.src) as r:
        header = r.header
    bar = _progress(header.frame_count, "decode", a.no_progress)
    summary = decode_video(
        a.src, a.dst, a.checkpoint, a.device, video_only=a.video_only, strict=a.strict,
        warn=_warn("decode"), on_frame=lambda d: bar.update(1) if bar else None,
    )
    if bar:
        bar.close()
    print(f"{a.dst}: {summary.frames} frames {header.width}x{header.height} @ {header.frame_rate} fps")
    if summary.carried or summary.skipped:
        print(f"carried     {', '.join(c.describe() for c in summary.carried) or 'nothing'}"
              + (f"; skipped {len(summary.skipped)}" if summary.skipped else ""))
    return 0


# --------------------------------------------------------------------------- info


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a stream's header, size and quality summary")
    p.add_argument("src")
    p.add_argument("--frames", action="store_true", help="print the per-frame table")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)


def _cmd_info(a: argparse.Namespace) -> int:
    import json

    from pipeline.bitstream import StreamReader
    from pipeline.carry import CarryInfo

    with StreamReader(a.src) as r:
        h = r.header
        stats = r.stats
        size = r.footer_offset
        version = r.version
        carry_dict = r.carry_info()
    carry = CarryInfo.from_dict(carry_dict) if carry_dict is not None else None
    n = len(stats)
    summary = {
        "frames": n,
        "bytes": sum(s["bytes"] for s in stats),
        "bpp": sum(s["bpp"] for s in stats) / n if n else 0.0,
        "psnr": sum(s["psnr"] for s in stats) / n if n else 0.0,
        "psnr_y": sum(s["psnr_y"] for s in stats) / n if n else 0.0,
        "ms_ssim": sum(s["ms_ssim"] for s in stats) / n if n else 0.0,
        "refined": sum(bool(s["refined"]) for s in stats),
    }
    if a.json:
        out = {"header": h.to_json(), "summary": summary, "version": version,
               "carry": carry.to_dict() if carry else None, "carried_streams": carry.to_rows() if carry else []}
        if a.frames:
            out["frames"] = stats
        print(json.dumps(out, indent=2))
        return 0
    print(f"stream      {a.src} ({size} bytes before the index, format version {version})")
    print(f"model       {h.arch} q{h.quality} lambda {h.lmbda} weights sha256 {h.weights_sha256[:16]}…")
    print(f"video       {h.width}x{h.height} (coded {h.padded_width}x{h.padded_height}), {h.frame_rate} fps, time base {h.time_base}")
    print(f"frames      {h.frame_count}")
    print(f"color       {h.color}")
    print(f"refinement  {h.refine} (hash {h.refine_hash})")
    print(
        f"summary     {summary['bytes']} bytes, {summary['bpp']:.4f} bpp, PSNR {summary['psnr']:.2f} dB "
        f"(Y {summary['psnr_y']:.2f}), MS-SSIM {summary['ms_ssim']:.4f}, {summary['refined']}/{n} refined"
    )
    _print_carry(carry)
    if a.frames:
        print(f"{'frame':>6} {'pts':>8} {'bytes':>8} {'bpp':>8} {'psnr':>8} {'ms_ssim':>8} {'rd_before':>10} {'rd_after':>10} {'iters':>6} refined")
        for s in stats:
            print(
                f"{s['index']:>6} {s['pts']:>8} {s['bytes']:>8} {s['bpp']:>8.4f} {s['psnr']:>8.3f} {s['ms_ssim']:>8.5f} "
                f"{s['rd_before']:>10.5f} {s['rd_after']:>10.5f} {s['iters']:>6} {s['refined']}"
            )
    return 0


def _print_carry(carry) -> None:  # type: ignore[no-untyped-def]
    if carry is None:
        print("carried     none (video only)")
        return
    print(f"carried     {len(carry.streams)} stream(s), {carry.total_bytes} bytes, {len(carry.chapters)} chapter(s)"
          + (f", stored as {carry.format}" if carry.format else ""))
    rows = carry.to_rows()
    if rows:
        print(f"{'#':>4} {'type':<10} {'codec':<10} {'lang':<5} {'duration':>9} {'bytes':>10} {'status':<11} title/reason")
    for r in rows:
        print(f"{r['index']:>4} {r['type']:<10} {r['codec']:<10} {r['language'] or 'und':<5} {r['duration']:>8.3f}s "
              f"{r['bytes']:>10} {r['status']:<11} {r['title'] or r['reason']}")


# --------------------------------------------------------------------------- ship / bench


def _add_ship(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ship", help="export a training run's weights into the package, with a model card")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--quality", type=int, required=True, help="rate point number (CompressAI's numbering)")
    p.add_argument("--data", default="../shared/data/train (BSDS500, Sun_Hays80, Urban100 subset; no Kodak)")
    p.add_argument("--default", action="store_true", help="make this the default model")
    p.set_defaults(func=_cmd_ship)


def _cmd_ship(a: argparse.Namespace) -> int:
    from pipeline.training import ship_run

    card = ship_run(a.run_dir, a.quality, data_description=a.data, default=a.default)
    print(f"shipped {card['file']} sha256 {card['sha256'][:16]}… ({card['steps']} steps)")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a training run's weights (or a snapshot's) as a CompressAI checkpoint")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out", required=True, help="the .pth file to write (e.g. for --init-from or --checkpoint)")
    p.add_argument("--snapshot", default=None, help="a snapshots/step-N.pth of the run instead of its last state")
    p.set_defaults(func=_cmd_export)


def _cmd_export(a: argparse.Namespace) -> int:
    from pipeline.training import export_weights

    digest = export_weights(a.run_dir, a.out, a.snapshot)
    print(f"wrote {a.out} sha256 {digest[:16]}…")
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that write JSON, Markdown and plots to docs/benchmarks")
    bsub = p.add_subparsers(dest="bench", required=True)
    from jobs import bench_all, bench_models, bench_pipeline, bench_rd, bench_speed

    bench_models.add_parser(bsub)
    bench_pipeline.add_parser(bsub)
    bench_rd.add_parser(bsub)
    bench_speed.add_parser(bsub)
    bench_all.add_parser(bsub)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relatent",
        description="Batch video transcoding with learned image codecs and per-frame latent refinement.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_encode(sub)
    from jobs import transcode

    transcode.add_parser(sub)
    from jobs import catalog

    catalog.add_parser(sub)
    from jobs import submit

    submit.add_submit_parser(sub)
    submit.add_jobs_parser(sub)
    _add_decode(sub)
    _add_info(sub)
    _add_train(sub)
    _add_ship(sub)
    _add_export(sub)
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_dependency_noise()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RelatentError as exc:
        print(f"relatent {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"relatent {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
