"""The ``relatent`` command line: a thin layer over the library.

Every subcommand parses its arguments, sets process-wide settings (threads, logging), calls
one library function and prints its result. The subcommands live in :mod:`jobs.codec_cmds`
(encode, decode, info), :mod:`jobs.transcode`, :mod:`jobs.catalog`, :mod:`jobs.submit`
(submit, jobs), :mod:`jobs.model_cmds` (train, ship, export) and :mod:`jobs.bench`.

:func:`main` is the only place where errors become exit codes: an error from the library's
hierarchy (:mod:`pipeline.errors`) becomes a one-line message on stderr and its class's
``exit_code`` (2 config, 3 source, 4 bitstream, 5 model, 6 storage, 7 cluster); Ctrl-C
exits 130, SIGTERM 143 (both after removing the temporary file of an unfinished output). Building the parser imports neither torch nor ray (``relatent --help`` starts
fast); each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from types import FrameType

from jobs import codec_cmds, model_cmds
from pipeline.errors import RelatentError

__all__ = ["build_parser", "main"]


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


def _add_bench(sub: argparse._SubParsersAction) -> None:
    """Register ``relatent bench`` and every benchmark (:mod:`jobs.bench`)."""
    from jobs import bench

    bench.add_parser(sub)


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that ``finally`` blocks (the temporary files
    of atomic writes) run before the process exits 143 (128 + SIGTERM)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` for the block (main thread only; the previous
    handler is restored afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The ``relatent`` parser with every subcommand (each sets ``func``, its handler)."""
    parser = argparse.ArgumentParser(
        prog="relatent",
        description="Batch video transcoding with learned image codecs and per-frame latent refinement.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    codec_cmds.add_parsers(sub)
    from jobs import transcode

    transcode.add_parser(sub)
    from jobs import catalog

    catalog.add_parser(sub)
    from jobs import submit

    submit.add_submit_parser(sub)
    submit.add_jobs_parser(sub)
    model_cmds.add_parsers(sub)
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``relatent`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    _quiet_dependency_noise()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _sigterm_unwinds():
            return int(args.func(args) or 0)
    except RelatentError as exc:
        print(f"relatent {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"relatent {args.command}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"relatent {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except BrokenPipeError:  # the reader of stdout went away (``relatent info x | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python docs' recipe
        return 0


if __name__ == "__main__":
    sys.exit(main())
