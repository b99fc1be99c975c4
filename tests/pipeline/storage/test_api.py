"""pipeline.storage's public verbs over both backends: compare-and-swap semantics (local
and S3, the same assertions), and the lazy import of boto3."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.errors import PreconditionFailedError
from tests.conftest import REPO_ROOT

pytest_plugins = ("tests.s3server",)


def test_local_use_does_not_import_boto3(tmp_path: Path) -> None:
    code = (
        "import sys; from pipeline import storage as s;"
        f"s.write_bytes({str(tmp_path / 'a')!r}, b'x'); s.list_prefix({str(tmp_path)!r});"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


@pytest.fixture(params=["local", "s3"])
def cas_prefix(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "cas") + "/"
    return request.getfixturevalue("s3_prefix")


def test_compare_and_swap_semantics(cas_prefix: str) -> None:
    uri = cas_prefix + "_leases/v.json"
    e1 = storage.put_if_absent(uri, b"one")
    assert storage.read_versioned(uri) == (b"one", e1)
    with pytest.raises(PreconditionFailedError, match=re.escape("v.json")):
        storage.put_if_absent(uri, b"two")
    assert storage.read_bytes(uri) == b"one"

    e2 = storage.replace_if_match(uri, b"three", e1)
    assert e2 != e1 and storage.read_versioned(uri) == (b"three", e2)
    with pytest.raises(PreconditionFailedError, match=r"changed|precondition"):
        storage.replace_if_match(uri, b"stale writer", e1)  # e1 is no longer current
    with pytest.raises(PreconditionFailedError):
        storage.delete_if_match(uri, e1)
    assert storage.read_bytes(uri) == b"three"

    storage.delete_if_match(uri, e2)
    assert not storage.exists(uri)
    with pytest.raises(PreconditionFailedError, match="no longer exists"):
        storage.replace_if_match(uri, b"four", e2)
    with pytest.raises(PreconditionFailedError, match="no longer exists"):
        storage.delete_if_match(uri, e2)
    assert storage.put_if_absent(uri, b"five") == storage.read_versioned(uri)[1]
    # Nothing but the object itself is left behind (no temporary or lock files).
    assert [o.uri for o in storage.list_prefix(cas_prefix)] == [uri]
