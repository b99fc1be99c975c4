"""Shared state handling and helpers of the pipeline.storage tests.

Every test gets the storage configuration and the S3 client factory restored afterwards.
:func:`blob` makes reproducible random payloads.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from pipeline import storage

__all__ = ["MiB", "blob"]

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _restore_storage_state() -> Iterator[None]:
    config = storage.get_config()
    factory = storage.set_s3_client_factory(None)
    storage.set_s3_client_factory(factory)
    yield
    storage.set_config(config)
    storage.set_s3_client_factory(factory)


def blob(n: int, seed: int = 0) -> bytes:
    """``n`` pseudo-random bytes, the same for the same ``seed``."""
    return random.Random(seed).randbytes(n)
