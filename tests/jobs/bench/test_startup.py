"""``bench startup`` on this checkout, one timed run per command: the result files, the
times and the import lists (no assertion on how fast the CLI starts)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from jobs.bench import startup
from jobs.bench.lib import REPO
from pipeline.errors import ConfigError


def test_startup_files_on_this_tree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = startup.run([startup.Tree("current", REPO)], out, repeats=1, log=lambda *_: None)
    data = json.loads((out / "startup.json").read_text())
    assert data["protocol"]["repeats"] == 1
    rows = {r["command"]: r for r in data["results"]}
    assert set(rows) == {"help", "info"} and len(data["results"]) == 2
    for r in rows.values():
        assert r["tree"] == "current" and len(r["seconds"]) == 1
        assert r["median_s"] > 0 and r["min_s"] > 0 and r["min_s"] <= r["median_s"]
        assert isinstance(r["heavy_modules"], list)
        assert set(r["heavy_modules"]) <= set(startup.HEAVY_MODULES)
        assert set(r["heavy_import_s"]) <= set(r["heavy_modules"])
        assert r["modules_imported"] > 0
    assert rows["info"]["argv"][-1] == str(startup.DEFAULT_STREAM)
    assert res["results"] == data["results"]
    md = (out / "startup.md").read_text()
    assert "| tree | command | median s | min s | heavy modules imported |" in md
    assert "`relatent --help`" in md and "`relatent info STREAM`" in md
    assert (out / "startup.png").stat().st_size > 1000


def test_importtime_parsing() -> None:
    err = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       120 |        120 |   _io",
            "import time:       300 |       2500 |     numpy.core",
            "import time:      1000 |      40000 | numpy",
            "import time:        50 |    2000000 | torch",
            "some other stderr line",
        ]
    )
    got = startup.parse_importtime(err)
    assert got["modules"] == 4
    assert got["heavy"] == ["torch", "numpy"]
    assert got["heavy_import_s"] == {"torch": 2.0, "numpy": 0.04}


def test_tree_option(tmp_path: Path) -> None:
    t = startup.parse_tree(f"before={REPO}")
    assert t == startup.Tree("before", REPO)
    assert startup.parse_tree(str(REPO)).label == REPO.name
    with pytest.raises(ConfigError):
        startup.parse_tree(f"x={tmp_path}")  # not a checkout
    p = argparse.ArgumentParser()
    startup.add_parser(p.add_subparsers())
    a = p.parse_args(["startup", "--tree", "a=.", "--tree", "b=/tmp", "--repeats", "3"])
    assert a.tree == ["a=.", "b=/tmp"] and a.repeats == 3 and a.func is startup.cmd_startup
    with pytest.raises(ConfigError):
        startup.run([t, t], tmp_path, repeats=1)
