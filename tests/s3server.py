"""A real S3 endpoint on 127.0.0.1 for tests: moto's ThreadedMotoServer.

Use it from any test module with either of::

    pytest_plugins = ("tests.s3server",)        # then ask for the fixtures by name

    from tests.s3server import s3_server, s3_prefix  # noqa: F401

Fixtures
    ``s3_server`` (session): starts the server on a free port, points the standard AWS
    environment at it (dummy credentials, ``AWS_ENDPOINT_URL``, no profile or config
    files) for the whole session, creates a bucket and yields an :class:`S3Server`.
    Everything is restored and the server stopped at the end. Separate processes (Ray
    workers) reach it too: it is real HTTP and the environment is inherited.
    ``s3_prefix`` (function): a fresh ``s3://bucket/<unique>/`` prefix for one test.

:meth:`S3Server.enforce_auth` switches moto to real signature and IAM checks for a
block, which is how tests get genuine 403 answers.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

BUCKET = "relatent-test"

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_UNSET = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL_S3",
)


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts)])

    def client(self, **kwargs: Any) -> Any:
        """A plain boto3 client on this server (for assertions the storage API does not offer)."""
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.endpoint, **kwargs)

    def _post(self, path: str, body: bytes = b"") -> bytes:
        # Not form-encoded: moto reads the raw body (Flask would parse a form away).
        req = urllib.request.Request(
            self.endpoint + path,
            data=body,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read()

    @contextlib.contextmanager
    def enforce_auth(self) -> Iterator[None]:
        """Within the block, moto checks signatures and IAM permissions like AWS does.

        Credentials moto has never issued are then rejected with 403 InvalidAccessKeyId.
        """
        self._post("/moto-api/reset-auth", b"0")
        try:
            yield
        finally:
            self._post("/moto-api/reset-auth", b"inf")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    from pipeline import storage

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        with pytest.MonkeyPatch.context() as mp:
            for name, value in _ENV.items():
                mp.setenv(name, value)
            for name in _UNSET:
                mp.delenv(name, raising=False)
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            storage.reset_s3_clients()
            info = S3Server(endpoint=endpoint, bucket=BUCKET)
            info.client().create_bucket(Bucket=BUCKET)
            try:
                yield info
            finally:
                storage.reset_s3_clients()
    finally:
        server.stop()


@pytest.fixture
def s3_prefix(s3_server: S3Server) -> str:
    """A fresh, empty prefix (with a trailing slash) for one test."""
    return s3_server.uri(f"t-{uuid.uuid4().hex[:12]}") + "/"
