"""pipeline.storage.uri: URI parsing and joining, and the scheme checks the verbs apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import storage
from pipeline.errors import ConfigError


def test_uri_helpers() -> None:
    assert (
        storage.is_s3("s3://b/k") and not storage.is_s3("/tmp/x") and not storage.is_s3("file:///x")
    )
    assert storage.join("s3://b", "a/", "/c.mp4") == "s3://b/a/c.mp4"
    assert storage.join("s3://b/p/", "x") == "s3://b/p/x"
    assert storage.join("file:///data", "x", "y") == "file:///data/x/y"
    assert storage.join("/data", "x", "/y") == "/data/x/y"
    assert storage.local_path("file:///tmp/a%20b.mp4") == Path("/tmp/a b.mp4")
    assert storage.local_path("rel/x") == Path("rel/x")
    with pytest.raises(ConfigError):
        storage.local_path("s3://b/k")
    with pytest.raises(ConfigError, match="gs://"):
        storage.read_bytes("gs://b/k")
    with pytest.raises(ConfigError):
        storage.read_bytes("s3://bucket-only")
