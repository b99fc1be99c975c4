"""The ``relatent`` command line: a thin layer over the library.

Every subcommand parses its arguments, sets process-wide settings (threads, logging), calls
one library function and prints its result. The subcommands live in :mod:`jobs.codec_cmds`
(encode, decode, info), :mod:`jobs.transcode`, :mod:`jobs.catalog`, :mod:`jobs.submit`
(submit, jobs), :mod:`jobs.model_cmds` (train, ship, export), :mod:`jobs.quality_cmds`
(vmaf) and :mod:`jobs.bench`.

:func:`main` is the only place where errors become exit codes: an error from the library's
hierarchy (:mod:`pipeline.errors`) becomes a one-line message on stderr and its class's
``exit_code`` (2 config, 3 source, 4 bitstream, 5 model, 6 storage, 7 cluster, 8 memory:
:mod:`pipeline.memory`, 9 a quality floor under ``--strict``); Ctrl-C
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

__all__ = ["DefaultsHelpFormatter", "build_parser", "main", "version_text"]


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


# --------------------------------------------------------------------------- help


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with ``(default: X)`` after the help of every option that has
    a real default (not None, False or an empty list) and whose help does not already say
    what its default is (the help text then contains the word "default")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or (isinstance(default, (list, tuple)) and not default)
            or "default" in text.lower()
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def version_text() -> str:
    """What ``relatent --version`` prints: the installed package's version (from its
    metadata), the ``.rlv`` format versions this build writes and reads, the manifest
    format, and the versions of the libraries the format depends on. Imports neither torch
    nor ray (versions come from package metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    from cluster.planning import MANIFEST_FORMAT
    from pipeline.bitstream import (
        INTER_VERSION,
        MIDPOINT_VERSION,
        RATE_VERSION,
        SUPPORTED_VERSIONS,
        VERSION,
    )

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    reads = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
    return (
        f"relatent {installed('relatent')}\n"
        f".rlv format: writes version {VERSION} (all-intra, --gop 1), {INTER_VERSION} "
        f"(--gop > 1), {RATE_VERSION} (rate points chosen per GOP) and {MIDPOINT_VERSION} (rate "
        f"points that include a midpoint); reads versions {reads}\n"
        f"manifests: {MANIFEST_FORMAT}; shard sidecars: relatent-shard/1\n"
        f"compressai {installed('compressai')}, torch {installed('torch')}, "
        f"ray {installed('ray')}, av {installed('av')}"
    )


class _VersionAction(argparse.Action):
    """``--version``: print :func:`version_text` and exit 0 (computed only when asked)."""

    def __init__(
        self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw: object
    ) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS,
            help="print the version, the .rlv format versions written and read, and exit",
        )  # fmt: skip

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:  # fmt: skip
        print(version_text())
        parser.exit()


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The ``relatent`` parser with every subcommand (each sets ``func``, its handler); the
    help of every command shows the options' defaults (:class:`DefaultsHelpFormatter`)."""
    parser = argparse.ArgumentParser(
        prog="relatent",
        description="Batch video transcoding with learned image codecs and per-frame latent refinement.",
    )
    parser.add_argument("--version", action=_VersionAction)
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
    from jobs import quality_cmds

    quality_cmds.add_parsers(sub)
    _add_bench(sub)
    for p in _parsers(parser):
        p.formatter_class = DefaultsHelpFormatter
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
