"""The parsers of ``bench rd``, ``bench speed`` and ``bench all`` and the protocols they build."""

from __future__ import annotations

import argparse

from jobs.bench import all as bench_all
from jobs.bench import rd, speed


def test_parsers_and_protocols() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    for mod in (rd, speed, bench_all):
        mod.add_parser(sub)
    a = p.parse_args(["rd", "--jobs", "1"])
    proto = rd.protocol_from_args(a)
    assert proto.crop == 256 and proto.budgets == [25, 100, 400] and proto.lr == 5e-3
    assert len(proto.subset) >= 8 and proto.frames == 8 and proto.long_side == 256
    full = rd.protocol_from_args(p.parse_args(["rd", "--full"]))
    assert (
        full.crop is None
        and full.long_side is None
        and max(full.budgets) >= 1000
        and full.subset == []
    )
    a = p.parse_args(["all", "--limit", "2", "--repeats", "1"])
    assert a.func is bench_all.cmd_all and speed.protocol_from_args(a).repeats == 1
    s = speed.protocol_from_args(p.parse_args(["speed"]))
    assert s.batches == [1, 4, 8]
