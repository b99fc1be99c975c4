"""``transcode``/``catalog`` ``--start/--end``, in-process (the prepare, actor and commit
work functions, no Ray): a frame span assembled from shards is byte-identical to
``relatent encode --start --end`` (``pipeline.codec.encode_video``), whatever the shard
layout; the span names its own output while the whole video keeps its id; a span that does
not fit the video fails as ``encode`` fails."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cluster.catalog import check_video
from cluster.commit import CommitSpec, commit_video
from cluster.config import TranscodeJob
from cluster.planning import canonical_source, output_key, video_id
from cluster.prepare import prepare_video, stage_carry
from cluster.shard import ShardEncoder
from jobs.cli import main
from pipeline import storage
from pipeline.bitstream import FLAG_INTER, VERSION, StreamReader
from pipeline.codec import encode_video
from pipeline.config import RefineConfig
from pipeline.errors import ConfigError
from pipeline.models import load_cards, load_model
from tests.media import mkv_source

__all__: list[str] = []

#: A refined GOP of 3: the span [5, 15) of the 16-frame source starts off its keyframes
#: (0 and 12: the actors decode from frame 0) and holds keyframe 12 (the span's frame 7).
REFINE = RefineConfig(iters=2, lr=1e-2, tol=0.0, gop=3)
START, END = 5, 15


@pytest.fixture(scope="module")
def shipped():
    """The shipped q3 weights."""
    if not any(c["quality"] == 3 for c in load_cards()["models"]):
        pytest.skip("no shipped q3 weights in this checkout")
    return load_model(quality=3)


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    """16 frames with two audio tracks, a subtitle and chapters (all carried)."""
    return mkv_source(tmp_path_factory.mktemp("span"), frames=16)


def test_a_span_from_shards_is_the_stream_encode_writes(tmp_path: Path, film: Path, shipped):
    ref = tmp_path / "ref.rlv"
    encode_video(str(film), str(ref), shipped, REFINE, start=START, end=END)
    with StreamReader(str(ref)) as r:
        assert r.header.frame_count == END - START
        assert [p.frame_index for p in r] == list(range(END - START))
    ident = shipped.identity
    resolved = REFINE.resolved(ident.lmbda)
    for sf, batch, want in ((3, 1, [0, 3, 6]), (6, 2, [0, 6])):
        out = tmp_path / f"out{sf}"
        plan = prepare_video(str(film), str(out), ident, resolved, start=START, end=END)
        assert (plan.first, plan.frame_count) == (START, END - START)
        assert plan.keyframes == (12 - START,)  # source keyframes inside, from the span's 0
        whole, _ = stage_carry(str(film))
        staged = storage.read_bytes(str(Path(plan.staging) / "carry.bin"))
        assert plan.carry_bytes == len(staged) > 0 and staged != whole  # cut to the span
        specs = plan.shards(sf, 0.5, resolved, ident.weights_sha256, batch=batch)
        assert [s.start for s in specs] == want and specs[-1].end == END - START
        assert all(s.first == START for s in specs)
        enc = ShardEncoder(shipped)
        for s in reversed(specs):
            assert not enc.encode(s).reused
        summary = commit_video(
            CommitSpec(plan, tuple((s.start, s.end) for s in specs), ident, resolved)
        )
        got = Path(summary["stream"]).read_bytes()
        assert got == ref.read_bytes(), f"shards {want}: another stream than encode --start"
        assert summary["frames"] == END - START
    with StreamReader(str(ref)) as r:  # inter-coded, so the comparison sees the GOP grid
        assert any(p.flags & FLAG_INTER for p in r)


def test_a_span_names_its_own_output_and_the_whole_video_keeps_its_id(
    tmp_path: Path, film: Path, shipped
) -> None:
    ident = shipped.identity
    resolved = REFINE.resolved(ident.lmbda)
    src = str(film)
    # the key of a whole video is what it was before spans existed
    doc = {
        "carry": True, "source": canonical_source(src), "arch": ident.arch,
        "quality": ident.quality, "lmbda": ident.lmbda, "weights": ident.weights_sha256,
        "tables": ident.tables_sha256, "refine": resolved.hash(), "container": VERSION,
    }  # fmt: skip
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert output_key(src, ident, resolved) == hashlib.sha256(blob).hexdigest()[:12]
    whole = video_id(src, ident, resolved)
    assert video_id(src, ident, resolved, start=0, end=None) == whole
    span = video_id(src, ident, resolved, start=START, end=END)
    assert span != whole
    assert len({span, video_id(src, ident, resolved, start=START), whole}) == 3
    plan = prepare_video(src, str(tmp_path), ident, resolved, start=START, end=END)
    assert plan.video_id == span
    assert prepare_video(src, str(tmp_path), ident, resolved).video_id == whole
    # the catalog plans the span under the same name (its staleness is the span's own)
    obj = storage.stat(src)
    assert (
        check_video(obj, str(tmp_path), ident, resolved, True, start=START, end=END).video_id
        == span
    )


@pytest.mark.parametrize(("start", "end"), [(5, 99), (9, 9), (9, 4)])
def test_a_span_that_does_not_fit_fails_as_encode_does(
    tmp_path: Path, film: Path, shipped, start: int, end: int
) -> None:
    ident = shipped.identity
    resolved = REFINE.resolved(ident.lmbda)
    with pytest.raises(ConfigError) as want:
        encode_video(str(film), str(tmp_path / "x.rlv"), shipped, REFINE, start=start, end=end)
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as got:
        prepare_video(str(film), str(out), ident, resolved, start=start, end=end)
    assert str(got.value) == str(want.value)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))  # nothing staged
    if end <= start:  # refused with the options, before any Ray or probe
        with pytest.raises(ConfigError, match=rf"frame range \[{start}, {end}\) is empty"):
            TranscodeJob((str(film),), str(out), start=start, end=end).validate()


def test_an_empty_span_exits_with_encodes_code(tmp_path: Path, film: Path, capsys) -> None:
    span = ["--start", "9", "--end", "4"]
    enc = main(["encode", str(film), str(tmp_path / "x.rlv"), *span])
    tr = main(["transcode", str(film), "--out", str(tmp_path / "o"), *span])
    cat = main(["catalog", str(film.parent), "--out", str(tmp_path / "c"), "--dry-run", *span])
    err = capsys.readouterr().err
    assert enc == tr == cat == ConfigError.exit_code == 2
    assert err.count("[9, 4) is empty") == 3
    assert not (tmp_path / "x.rlv").exists() and not (tmp_path / "o").exists()
