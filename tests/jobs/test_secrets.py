"""Secrets are never printed (issue 18, kind 8): ``relatent submit --dry-run`` and every
message of submit / jobs redact secret-looking environment values and the user
information of URLs, while the job still gets the real values. (The exit code of storage
authentication failures on Ray is tested in tests/cluster/test_distributed.py.)"""

from __future__ import annotations

import json
import socket

import pytest

from cluster import submission as sj
from jobs.cli import main
from tests.conftest import DATA_DIR

CASE = DATA_DIR.parent / "cases" / "submit-dry-run-prints-secrets" / "CASE.md"

KEY_ID = "AKIAFAKE000000000001"
SECRET = "FakeSecret/DoNotLeak"
TOKEN = "FakeSessionToken-DoNotLeak"
DB_PASSWORD = "hunter2-DoNotLeak"
URL_PASSWORD = "pa55-DoNotLeak"


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_submit_dry_run_redacts_the_case(capsys, monkeypatch) -> None:
    """../shared/cases/submit-dry-run-prints-secrets, as its CASE.md runs it, plus a
    password variable, a database URL and a pip URL with credentials."""
    if not CASE.exists():
        pytest.skip(f"{CASE} is absent")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    base = ["submit", "s3://media/in/a.mp4", "--out", "s3://media/out/", "--dry-run"]
    envs = ["--env", "AWS_ACCESS_KEY_ID", "--env", "AWS_SECRET_ACCESS_KEY", "--env",
            "AWS_SESSION_TOKEN", "--env", f"DB_PASSWORD={DB_PASSWORD}",
            "--env", f"DATABASE_URL=postgres://app:{URL_PASSWORD}@db:5432/x",
            "--env", "AWS_REGION=eu-west-1"]  # fmt: skip
    extra = json.dumps({"pip": [f"git+https://bot:{URL_PASSWORD}@git.example/x.git"]})
    code, out, err = run(capsys, *base, *envs, "--runtime-env-json", extra)
    assert code == 0, err
    for leak in (SECRET, TOKEN, DB_PASSWORD, URL_PASSWORD, KEY_ID):
        assert leak not in out and leak not in err, leak
    doc = json.loads(out)
    env = doc["runtime_env"]["env_vars"]
    assert env == {
        "PYTHONUNBUFFERED": "1",
        "AWS_ACCESS_KEY_ID": "*" * 16 + "0001",  # an identity, shown as `aws configure list` does
        "AWS_SECRET_ACCESS_KEY": "<redacted>",
        "AWS_SESSION_TOKEN": "<redacted>",
        "DB_PASSWORD": "<redacted>",
        "DATABASE_URL": "postgres://<redacted>@db:5432/x",
        "AWS_REGION": "eu-west-1",
    }
    assert doc["runtime_env"]["pip"] == ["git+https://<redacted>@git.example/x.git"]
    # what is shown changes, not the work: the id is that of the same work without --env
    code, out2, _ = run(capsys, *base)
    assert code == 0 and json.loads(out2)["submission_id"] == doc["submission_id"]


def test_the_job_still_gets_the_real_values(monkeypatch) -> None:
    import argparse

    from jobs import submit

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    p = argparse.ArgumentParser()
    submit.add_submit_parser(p.add_subparsers())
    a = p.parse_args(
        ["submit", "s3://b/a.mp4", "--out", "s3://b/o/", "--env", "AWS_SECRET_ACCESS_KEY"]
    )
    sub = sj.build_submission(submit.description_from_args(a))
    assert sub.runtime_env["env_vars"]["AWS_SECRET_ACCESS_KEY"] == SECRET


def test_bad_env_item_does_not_echo_its_value(capsys) -> None:
    code, out, err = run(capsys, "submit", "s3://b/a.mp4", "--out", "s3://b/o/", "--env",
                         f"MY SECRET={SECRET}", "--dry-run")  # fmt: skip
    assert code == 2 and "--env 'MY SECRET=...'" in err, err
    assert SECRET not in out + err


@pytest.mark.parametrize(
    ("name", "secret"),
    [("AWS_SECRET_ACCESS_KEY", True), ("aws_session_token", True), ("GITHUB_TOKEN", True),
     ("DB_PASSWORD", True), ("MYSQL_PWD_PASSWD", True), ("STRIPE_API_KEY", True),
     ("GPG_PASSPHRASE", True), ("GOOGLE_APPLICATION_CREDENTIALS", True),
     ("SSH_PRIVATE", True), ("AWS_REGION", False), ("PYTHONUNBUFFERED", False),
     ("RAY_ADDRESS", False), ("PWD", False)],
)  # fmt: skip
def test_secret_names(name: str, secret: bool) -> None:
    assert sj.is_secret_name(name) is secret
    assert (sj.redact_value(name, "value-1234") == "<redacted>") is secret


def test_redact_text_and_values() -> None:
    assert sj.redact_text("see https://u:p@h:8265/x and s3://bkt/k") == (
        "see https://<redacted>@h:8265/x and s3://bkt/k"
    )
    assert sj.redact_text("token abc123 in abc123", ["abc123", "ab"]) == (
        "token <redacted> in <redacted>"
    )
    assert sj.redact_value("AWS_ACCESS_KEY_ID", KEY_ID) == "*" * 16 + "0001"
    assert sj.redact_value("AWS_ACCESS_KEY_ID", "abc") == "<redacted>"
    assert sj.redacted({"a": [{"Token": 5, "x": f"u {SECRET}"}]}, [SECRET]) == {
        "a": [{"Token": "<redacted>", "x": "u <redacted>"}]
    }


def test_cluster_errors_do_not_show_address_passwords(capsys) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused at once
    address = f"http://admin:{URL_PASSWORD}@127.0.0.1:{port}"
    code, out, err = run(capsys, "jobs", "list", "--address", address)
    assert code == 7, err
    assert f"http://<redacted>@127.0.0.1:{port}" in err and URL_PASSWORD not in out + err
    code, _, err = run(capsys, "submit", "s3://b/a.mp4", "--out", "s3://b/o/", "--address",
                       f"ray://admin:{URL_PASSWORD}@head:10001")  # fmt: skip
    assert code == 2 and "ray://<redacted>@head:10001" in err and URL_PASSWORD not in err
