"""What a new user trips over (issue 18, kind 9): ``--version``, help and defaults on every
option, output names that do not depend on how a path was typed, byte counts named the
same everywhere, ``info`` on a folder (the README's first command), ``encode`` from S3, and
no Ray token-authentication warning."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from cluster.config import TranscodeJob
from cluster.planning import canonical_source, video_id
from jobs.bench.pipeline import synthetic_clip
from jobs.cli import build_parser, main
from jobs.refine_options import refine_from_args
from pipeline import storage
from pipeline.bitstream import StreamReader
from pipeline.codec import encode_video
from pipeline.config import RefineConfig
from pipeline.errors import ConfigError
from pipeline.models import ModelIdentity, get_architecture, load_model
from tests.conftest import REPO_ROOT

GOLDEN = REPO_ROOT / "tests" / "data"


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- --version


def test_version_names_the_package_and_the_formats_without_torch() -> None:
    probe = (
        "import sys\nfrom jobs.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
        "print('heavy', sorted(m for m in ('torch', 'ray', 'compressai') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[0] == f"relatent {version('relatent')}"
    assert (
        "writes version 2 (all-intra, --gop 1), 3 (--gop > 1), 4 (rate points chosen per "
        "GOP) and 5 (rate points that include a midpoint); reads versions 1, 2, 3, 4, 5" in out
    )
    assert f"compressai {version('compressai')}" in out
    assert "exit 0" in out and "heavy []" in out


# --------------------------------------------------------------------------- help


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_of_every_command_has_help() -> None:
    found = list(_options(build_parser()))
    assert len(found) > 150  # every command, bench included, was walked
    missing = [(" ".join(p), a.option_strings or a.dest) for p, a in found if not a.help]
    assert missing == []


def _help(*command: str) -> str:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices[command[0]]
            break
    for name in command[1:]:
        sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[
            name
        ]
    return " ".join(sub.format_help().split())


def test_help_shows_the_defaults() -> None:
    enc = _help("encode")
    assert "--batch BATCH frames refined together" in enc
    assert "lockstep) (default: 4)" in enc
    assert "seed of the relaxation noise (default: 0)" in enc
    assert "default 0.001 for campos, 0 for sga" in enc  # --tol, per method
    assert "(default: None)" not in enc and "(default: False)" not in enc
    tr = _help("transcode")
    assert "target frames per shard (default: 32)" in tr
    assert "(default: 1.0)" in tr  # --cpus-per-actor
    assert "(default: 64)" in _help("train")  # --N


# --------------------------------------------------------------------------- output ids


IDENT = ModelIdentity("bmshj2018-factorized", 3, 0.0067, "a" * 64, "b" * 64)
REFINE = RefineConfig(iters=2, lr=5e-3, tol=0.0).resolved(0.0067)


def test_the_output_id_does_not_depend_on_the_spelling(tmp_path, monkeypatch) -> None:
    (tmp_path / "in").mkdir()
    clip = tmp_path / "in" / "clip.mp4"
    clip.write_bytes(b"x")
    (tmp_path / "link.mp4").symlink_to(clip)
    monkeypatch.chdir(tmp_path)
    spellings = [
        "in/clip.mp4", "./in/clip.mp4", "in//clip.mp4", "in/../in/clip.mp4", str(clip),
        f"file://{clip}",
    ]  # fmt: skip
    ids = {video_id(s, IDENT, REFINE) for s in spellings}
    assert ids == {video_id(str(clip.resolve()), IDENT, REFINE)}
    assert canonical_source("./in/clip.mp4") == str(clip.resolve())
    # a symlink is the file it points to (its name is its own: the stem differs)
    assert video_id("link.mp4", IDENT, REFINE).split("-")[1] == ids.pop().split("-")[1]
    s3 = {video_id(s, IDENT, REFINE) for s in ("s3://b/x/clip.mp4", "S3://b//x/./clip.mp4")}
    assert len(s3) == 1


def test_ids_of_canonical_spellings_are_those_of_earlier_runs() -> None:
    """Computed with the code before canonical ids: absolute paths and clean S3 URIs keep
    their names, so no committed output is encoded again."""
    assert video_id("s3://b/x/clip.mp4", IDENT, REFINE) == "clip-482c5b01ceae"
    assert video_id("/nonexistent-relatent/clip.mp4", IDENT, REFINE) == "clip-69658f34894e"


def test_a_source_listed_twice_under_two_spellings_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"'a\.mp4' and '\./a\.mp4'"):
        TranscodeJob(sources=("a.mp4", "./a.mp4"), out="o").validate()
    with pytest.raises(ConfigError, match="listed twice"):
        TranscodeJob(sources=("a.mp4", f"file://{tmp_path}/a.mp4"), out="o").validate()
    TranscodeJob(sources=("a.mp4", "b/a.mp4"), out="o").validate()


# --------------------------------------------------------------------------- byte counts


def test_info_names_every_byte_count_and_they_add_up(capsys) -> None:
    stream = GOLDEN / "golden_gop.rlv"
    code, out, _ = run_cli(capsys, "info", stream, "--json")
    assert code == 0
    doc = json.loads(out)
    sizes, summary = doc["sizes"], doc["summary"]
    with StreamReader(str(stream)) as r:
        packets = sum(e.length for e in r.index)
        header = r.header
    assert sizes["file"] == stream.stat().st_size == summary["file_bytes"]
    assert sizes["packets"] == packets == summary["packet_bytes"] == summary["bytes"]
    assert sizes["file"] == sizes["header"] + sizes["packets"] + sizes["carry"] + sizes["footer"]
    assert sizes["carry"] > 0  # the golden stream carries an audio track
    pixels = header.width * header.height
    assert summary["bpp"] == pytest.approx(
        sum(8 * s["bytes"] / pixels for s in _frames(capsys, stream)) / header.frame_count
    )
    code, out, _ = run_cli(capsys, "info", stream)
    assert (
        f"size        {sizes['file']} file bytes = {sizes['header']} header + {packets} packet + "
        f"{sizes['carry']} carry + {sizes['footer']} index/footer"
    ) in out
    assert f"summary     {packets} packet bytes, {summary['bpp']:.4f} bpp from packet bytes" in out
    # header objects read as "key value" pairs, not Python dicts
    color = next(ln for ln in out.splitlines() if ln.startswith("color "))
    refine = next(ln for ln in out.splitlines() if ln.startswith("refinement "))
    assert "{" not in color and "'" not in color and "matrix " in color, color
    assert "'" not in refine and "method " in refine, refine


def test_counts_read_as_english() -> None:
    from jobs.console import count

    assert (count(1, "frame"), count(0, "frame"), count(6, "frame")) == (
        "1 frame",
        "0 frames",
        "6 frames",
    )


def _frames(capsys, stream: Path) -> list[dict]:
    code, out, _ = run_cli(capsys, "info", stream, "--json", "--frames")
    assert code == 0
    return json.loads(out)["frames"]


def test_info_takes_a_folder_and_several_streams(capsys, tmp_path) -> None:
    for name in ("golden_gop.rlv", "golden_none.rlv"):
        (tmp_path / name).write_bytes((GOLDEN / name).read_bytes())
    (tmp_path / "_staging").mkdir()
    (tmp_path / "_staging" / "shard-000000000-000000004.rlvs").write_bytes(b"not listed")
    code, out, _ = run_cli(capsys, "info", f"{tmp_path}/")
    assert code == 0
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("stream ")] == [
        str(tmp_path / "golden_gop.rlv"),
        str(tmp_path / "golden_none.rlv"),
    ]
    code, out, _ = run_cli(capsys, "info", tmp_path, "--json")
    assert [d["stream"] for d in json.loads(out)] == [
        str(tmp_path / "golden_gop.rlv"),
        str(tmp_path / "golden_none.rlv"),
    ]
    code, out, _ = run_cli(capsys, "info", tmp_path / "golden_gop.rlv", "--json")
    assert json.loads(out)["stream"] == str(tmp_path / "golden_gop.rlv")  # one: an object
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "info", tmp_path / "empty")
    assert code == 3 and f"{tmp_path / 'empty'}: no .rlv stream in this folder" in err
    # a damaged stream among good ones: reported, the others still shown, exit 4
    (tmp_path / "golden_fake.rlv").write_bytes(b"not a stream")
    code, out, err = run_cli(capsys, "info", f"{tmp_path}/")
    assert code == 4 and "golden_fake.rlv" in err and "1 of 3 streams could not be read" in err
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("stream ")] == [
        str(tmp_path / "golden_gop.rlv"),
        str(tmp_path / "golden_none.rlv"),
    ]


def test_the_readme_first_command_reads_the_out_folder() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    first = next(ln for ln in readme.splitlines() if ln.startswith("scripts/setup.sh &&"))
    assert "relatent info out/" in first and "*" not in first


# --------------------------------------------------------------------------- encode from S3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("usability")
    torch.manual_seed(5)
    net = get_architecture("bmshj2018-factorized").model_class()(N=16, M=24)
    ckpt = d / "tiny.pth"
    torch.save(net.state_dict(), ckpt)
    return synthetic_clip(d / "clip.mp4", 6, 64, 48, gop=3, seed=2), ckpt


def test_encode_reads_an_s3_source(capsys, tiny, s3_prefix, tmp_path) -> None:
    clip, ckpt = tiny
    uri = storage.join(s3_prefix, "in", "clip.mp4")
    storage.write_bytes(uri, clip.read_bytes())
    opts = ["--checkpoint", ckpt, "--quality", "3", "--iters", "2", "--tol", "0", "--gop", "3"]
    dst = tmp_path / "s3.rlv"
    code, out, err = run_cli(capsys, "encode", uri, dst, *opts)
    assert code == 0, err
    # the same bytes as the library reading the object through storage.open_read (what the
    # distributed path does: the carry section names the source by its URI)
    model = load_model(checkpoint=str(ckpt), quality=3)
    ref = tmp_path / "ref.rlv"
    refine = refine_from_args(build_parser().parse_args(["encode", uri, str(ref), *map(str, opts)]))
    with storage.open_read(uri) as f:
        encode_video(f, str(ref), model, refine)
    assert dst.read_bytes() == ref.read_bytes()
    with StreamReader(str(dst)) as r:
        assert r.header.frame_count == 6
        packets = sum(e.length for e in r.index)
    assert f"6 frames, {dst.stat().st_size} file bytes ({packets} packet bytes)" in out
    assert "bpp from packet bytes" in out
    code, _, err = run_cli(capsys, "encode", storage.join(s3_prefix, "missing.mp4"), dst, *opts)
    assert code in (3, 6) and "missing.mp4" in err


# --------------------------------------------------------------------------- Ray


@pytest.mark.slow
def test_the_embedded_ray_prints_no_token_warning(tmp_path) -> None:
    """``relatent transcode`` starts its embedded Ray through ``jobs.transcode.ray_session``."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    code = (
        "from jobs.transcode import ray_session\n"
        "with ray_session(None, 1):\n"
        "    import ray, os\n"
        "    print('up', ray.is_initialized(), os.environ['RAY_AUTH_MODE'])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, env=env,
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "up True token" in proc.stdout
    assert "Token authentication" not in proc.stderr and "token-auth" not in proc.stderr
