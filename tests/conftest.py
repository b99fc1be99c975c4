"""Shared fixtures. Real data lives in ../shared/data relative to the repository root
(override with RELATENT_DATA); tests that need it skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ("tests.s3server",)

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RELATENT_DATA", REPO_ROOT.parent / "shared" / "data"))


def data_file(*parts: str) -> Path:
    """Path of a shared data file; skips the calling test when it is missing."""
    p = DATA_DIR.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data {p} is absent")
    return p


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's exit status once everything is reported, without the
    interpreter's teardown: native threads of Ray and torch have crashed it (SIGSEGV after
    "1071 passed", once in CI), which turned a green run red. Not under xdist workers."""
    import sys

    status = config.stash.get(_EXIT_STATUS, None)
    if status is None or hasattr(config, "workerinput"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()
