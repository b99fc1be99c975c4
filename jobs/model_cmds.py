"""``relatent train``, ``ship`` and ``export``: the model life cycle (training runs, shipped
weights, exported checkpoints), thin over :mod:`pipeline.training`.
"""

from __future__ import annotations

import argparse

from jobs.console import set_threads
from jobs.refine_options import positive_float

__all__ = ["add_parsers", "cmd_export", "cmd_ship", "cmd_train"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``train``, ``ship`` and ``export`` on the subcommand set ``sub``."""
    _add_train(sub)
    _add_ship(sub)
    _add_export(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train (or resume) a codec model on images or videos")
    p.add_argument(
        "--run-dir", required=True, help="folder of the run; resumes if it holds last.pt"
    )
    p.add_argument("--model", default="bmshj2018-factorized", help="architecture id")
    p.add_argument("--N", type=int, default=64, dest="N", help="channels of the transforms")
    p.add_argument("--M", type=int, default=96, dest="M", help="channels of the latent")
    p.add_argument(
        "--lambda",
        type=positive_float,
        default=0.0067,
        dest="lmbda",
        help="rate-distortion trade-off (CompressAI's scale: MSE x 255^2)",
    )
    p.add_argument("--data", nargs="+", required=True, help="folders of images and/or videos")
    p.add_argument("--exclude", nargs="*", default=[], help="path parts to skip (e.g. val)")
    p.add_argument(
        "--crop", type=int, default=128, help="side of the random training crops (a multiple of 64)"
    )
    p.add_argument("--batch", type=int, default=8, help="crops per training step")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam step size of the networks")
    p.add_argument(
        "--lr-schedule",
        default="cosine",
        choices=["constant", "cosine"],
        help="step size over the run (cosine: decays to 0 at --total-steps)",
    )
    p.add_argument(
        "--warmup-steps", type=int, default=200, help="steps of linear step-size warm-up"
    )
    p.add_argument(
        "--total-steps", type=int, default=20000, help="length of the run (and of the schedule)"
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many more steps")
    p.add_argument(
        "--max-minutes", type=positive_float, default=None, help="stop after this much wall time"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and the weights' init")
    p.add_argument(
        "--quant",
        default="noise",
        choices=["noise", "mixed"],
        help="decoder input while training: noisy latent (CompressAI) or the rounded one (straight-through)",
    )
    p.add_argument("--init-from", default=None, help="start from these weights (fine-tuning)")
    p.add_argument("--log-every", type=int, default=100, help="steps between log lines")
    p.add_argument(
        "--checkpoint-every", type=int, default=250, help="steps between resumable last.pt saves"
    )
    p.add_argument(
        "--snapshot-every", type=int, default=2000, help="steps between kept snapshots/step-N.pth"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar",
    )
    p.set_defaults(func=cmd_train)


def cmd_train(a: argparse.Namespace) -> int:
    """Train (or resume) the run in ``a.run_dir`` and print the step reached."""
    from pipeline.training import TrainConfig, train

    set_threads(a.threads)
    cfg = TrainConfig(
        arch=a.model,
        N=a.N,
        M=a.M,
        lmbda=a.lmbda,
        data=tuple(a.data),
        exclude=tuple(a.exclude),
        crop=a.crop,
        batch=a.batch,
        lr=a.lr,
        lr_schedule=a.lr_schedule,
        warmup_steps=a.warmup_steps,
        total_steps=a.total_steps,
        seed=a.seed,
        init_from=a.init_from,
        quant=a.quant,
        log_every=a.log_every,
        checkpoint_every=a.checkpoint_every,
        snapshot_every=a.snapshot_every,
    )
    state = train(
        cfg,
        a.run_dir,
        max_steps=a.max_steps,
        max_seconds=None if a.max_minutes is None else a.max_minutes * 60,
        device=a.device,
        progress=not a.no_progress,
    )
    print(f"run {a.run_dir}: step {state.step}/{cfg.total_steps}")
    return 0


def _add_ship(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ship", help="export a training run's weights into the package, with a model card"
    )
    p.add_argument("--run-dir", required=True, help="the training run whose weights are shipped")
    p.add_argument(
        "--quality", type=int, required=True, help="rate point number (CompressAI's numbering)"
    )
    p.add_argument(
        "--data",
        default="../shared/data/train (BSDS500, Sun_Hays80, Urban100 subset; no Kodak)",
        help="what the model card says the model was trained on",
    )
    p.add_argument("--default", action="store_true", help="make this the default model")
    p.set_defaults(func=cmd_ship)


def cmd_ship(a: argparse.Namespace) -> int:
    """Copy a run's weights into the package with a model card and print its digest."""
    from pipeline.training import ship_run

    card = ship_run(a.run_dir, a.quality, data_description=a.data, default=a.default)
    print(f"shipped {card['file']} sha256 {card['sha256'][:16]}… ({card['steps']} steps)")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a training run's weights (or a snapshot's) as a CompressAI checkpoint"
    )
    p.add_argument("--run-dir", required=True, help="the training run to export")
    p.add_argument(
        "--out", required=True, help="the .pth file to write (e.g. for --init-from or --checkpoint)"
    )
    p.add_argument(
        "--snapshot",
        default=None,
        help="a snapshots/step-N.pth of the run instead of its last state",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(a: argparse.Namespace) -> int:
    """Write a run's (or snapshot's) weights as a CompressAI checkpoint."""
    from pipeline.training import export_weights

    digest = export_weights(a.run_dir, a.out, a.snapshot)
    print(f"wrote {a.out} sha256 {digest[:16]}…")
    return 0
