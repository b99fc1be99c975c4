"""The ``relatent`` command line: a thin layer over the library.

Every subcommand parses its arguments, sets process-wide settings (threads, logging), calls
one library function and prints its result. Errors from the library's hierarchy
(:mod:`pipeline.errors`) become a one-line message on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pipeline.errors import RelatentError

Handler = Callable[[argparse.Namespace], int]


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
        init_from=a.init_from, log_every=a.log_every, checkpoint_every=a.checkpoint_every,
        snapshot_every=a.snapshot_every,
    )
    state = train(
        cfg, a.run_dir, max_steps=a.max_steps,
        max_seconds=None if a.max_minutes is None else a.max_minutes * 60,
        device=a.device, progress=not a.no_progress,
    )
    print(f"run {a.run_dir}: step {state.step}/{cfg.total_steps}")
    return 0


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relatent",
        description="Batch video transcoding with learned image codecs and per-frame latent refinement.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
