"""``relatent bench startup``: how long the CLI takes to start, and what it imports.

Measures, in fresh subprocesses of this interpreter, the wall time of

* ``relatent --help`` (``python -m jobs.cli --help``) and
* ``relatent info STREAM`` (``python -m jobs.cli info STREAM``; default: the small golden
  stream ``tests/data/golden_none.rlv`` of this checkout),

``--repeats`` times each (default 7), interleaved over commands and trees with the order
rotated every repeat (a slow phase of a shared machine hits every configuration alike);
the median and the minimum are reported. Before the timed runs each command runs once
under ``python -X importtime`` (also the warm-up of the OS file cache): its stderr says
which heavy top-level packages (:data:`HEAVY_MODULES`) the command imported, and their
cumulative import time.

``--tree [LABEL=]PATH`` (repeatable) measures another checkout of the project side by
side, e.g. ``--tree before=/tmp/before --tree after=.``: the command runs with
``PYTHONPATH=PATH`` and ``cwd=PATH`` and the same interpreter (so the same installed
libraries). Default: this checkout only. The children run with
``PYTHONDONTWRITEBYTECODE=1``: a tree's own ``.pyc`` caches are used when present, never
written, so no tree is modified.

Writes ``startup.json``, ``startup.md`` (tree, command, median s, min s, heavy modules
imported) and ``startup.png`` (bar chart) under ``--out``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.bench import lib as bl
from pipeline.errors import ConfigError, InputError

__all__ = [
    "COMMANDS",
    "DEFAULT_STREAM",
    "HEAVY_MODULES",
    "Tree",
    "add_parser",
    "cmd_startup",
    "command_argv",
    "parse_importtime",
    "parse_tree",
    "result_row",
    "run",
    "run_command",
    "startup_markdown",
    "write_outputs",
]

#: Top-level packages whose import makes a start slow (seconds for torch and ray).
HEAVY_MODULES = ("torch", "ray", "compressai", "av", "numpy", "pyarrow")
#: The commands measured: name -> what the table calls it.
COMMANDS = {"help": "relatent --help", "info": "relatent info STREAM"}
#: The stream ``info`` reads unless ``--stream`` is given.
DEFAULT_STREAM = bl.REPO / "tests" / "data" / "golden_none.rlv"


@dataclass(frozen=True)
class Tree:
    """A checkout of the project to measure: a ``label`` for the tables and its root
    ``path`` (absolute)."""

    label: str
    path: Path


def parse_tree(spec: str) -> Tree:
    """``LABEL=PATH`` or ``PATH`` (labelled with the folder's name) as a :class:`Tree`.

    Raises:
        ConfigError: the path is not a folder holding ``jobs/cli.py``, or the label is empty.
    """
    label, sep, path = spec.partition("=")
    if not sep:
        label, path = "", spec
    root = Path(path).expanduser().resolve()
    label = label.strip() or root.name
    if not label:
        raise ConfigError(f"--tree {spec!r} has an empty label", hint="use --tree LABEL=PATH")
    if not (root / "jobs" / "cli.py").is_file():
        raise ConfigError(
            f"--tree {spec!r}: {root} is not a checkout of relatent (no jobs/cli.py)",
            hint="pass the root folder of a checkout, e.g. --tree before=/tmp/before",
        )
    return Tree(label, root)


def command_argv(name: str, stream: Path) -> list[str]:
    """The interpreter arguments of command ``name`` (a key of :data:`COMMANDS`)."""
    if name == "help":
        return ["-m", "jobs.cli", "--help"]
    return ["-m", "jobs.cli", "info", str(stream)]


def run_command(tree: Tree, argv: Sequence[str], importtime: bool = False) -> tuple[float, str]:
    """Run ``python [-X importtime] ARGV`` in ``tree`` (cwd and PYTHONPATH); returns the
    wall time in seconds (process start to exit) and the captured stderr.

    Raises:
        ConfigError: the command exited with a non-zero status (its stderr's tail in the
            message).
    """
    env = dict(os.environ, PYTHONPATH=str(tree.path), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), *argv]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=tree.path, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if res.returncode:
        tail = "\n".join(
            ln for ln in res.stderr.splitlines()[-12:] if not ln.startswith("import time:")
        )
        raise ConfigError(
            f"`{' '.join(argv)}` in tree {tree.label!r} ({tree.path}) exited with "
            f"{res.returncode}: {tail.strip()[-1500:]}",
            hint="check that the tree is a checkout of relatent that runs with this interpreter",
        )
    return seconds, res.stderr


def parse_importtime(stderr: str) -> dict[str, Any]:
    """What ``python -X importtime`` reported on ``stderr``: ``modules`` (how many modules
    were imported), ``heavy`` (the :data:`HEAVY_MODULES` imported, in that order) and
    ``heavy_import_s`` (each one's cumulative import time in seconds, the line of the
    package itself)."""
    count = 0
    tops: set[str] = set()
    cumulative: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) < 3 or not parts[0].strip().isdigit():
            continue  # the header line
        name = parts[2].strip()
        count += 1
        top = name.split(".")[0]
        tops.add(top)
        if name == top and top in HEAVY_MODULES and top not in cumulative:
            cumulative[top] = int(parts[1].strip()) / 1e6
    heavy = [m for m in HEAVY_MODULES if m in tops]
    return {
        "modules": count,
        "heavy": heavy,
        "heavy_import_s": {m: cumulative[m] for m in heavy if m in cumulative},
    }


def run(
    trees: Sequence[Tree],
    out: Path,
    repeats: int = 7,
    stream: Path = DEFAULT_STREAM,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Measure every command of :data:`COMMANDS` in every tree, ``repeats`` timed runs each
    (interleaved), after one ``-X importtime`` run each; write startup.json / startup.md /
    startup.png under ``out`` and return the results (``results``: one row per tree and
    command with ``seconds`` (every run), ``median_s``, ``min_s``, ``heavy_modules``,
    ``heavy_import_s`` and ``modules_imported``).

    Raises:
        ConfigError: ``repeats`` < 1, no tree, two trees with one label, or a command fails.
        InputError: the stream does not exist.
    """
    if repeats < 1:
        raise ConfigError(f"--repeats {repeats} must be at least 1")
    if not trees:
        raise ConfigError("no tree to measure", hint="pass --tree PATH, or none for this checkout")
    labels = [t.label for t in trees]
    if len(set(labels)) != len(labels):
        raise ConfigError(
            f"--tree labels repeat: {', '.join(labels)}", hint="give each tree its own LABEL="
        )
    stream = Path(stream).expanduser().resolve()
    if not stream.is_file():
        raise InputError(
            f"stream {stream} does not exist", hint="pass --stream PATH to an .rlv stream"
        )
    t0 = time.perf_counter()
    configs = [(t, name) for t in trees for name in COMMANDS]
    imports = {}
    for t, name in configs:  # also the warm-up of each configuration
        _, err = run_command(t, command_argv(name, stream), importtime=True)
        imports[(t.label, name)] = parse_importtime(err)
        log(
            f"  {t.label}: {COMMANDS[name]}: imports {', '.join(imports[(t.label, name)]['heavy']) or 'none of the heavy packages'}"
        )

    def one(cfg: tuple[Tree, str]) -> dict[str, float]:
        return {"seconds": run_command(cfg[0], command_argv(cfg[1], stream))[0]}

    runs = bl.interleaved(configs, one, repeats)
    rows = []
    for (t, name), ms in zip(configs, runs, strict=True):
        rows.append(
            result_row(t, name, stream, [m["seconds"] for m in ms], imports[(t.label, name)])
        )
        log(f"  {t.label}: {COMMANDS[name]}: median {rows[-1]['median_s']:.3f} s")
    results: dict[str, Any] = {
        "provenance": {
            "command": "relatent bench startup",
            "args": {"repeats": repeats, "stream": str(stream)},
            "git": bl.git_state(),
            "trees": {t.label: {"path": str(t.path), "git": bl.git_state(t.path)} for t in trees},
            "machine": bl.machine_info(with_torch=False),
            "python": sys.executable,
        },
        "protocol": {
            "repeats": repeats,
            "stream": str(stream),
            "trees": [{"label": t.label, "path": str(t.path)} for t in trees],
            "commands": {k: command_argv(k, stream) for k in COMMANDS},
            "heavy_modules": list(HEAVY_MODULES),
            "bytecode": "PYTHONDONTWRITEBYTECODE=1: a tree's .pyc caches are read if present, never written",
        },
        "results": rows,
        "seconds": time.perf_counter() - t0,
    }
    write_outputs(results, out)
    return results


def result_row(
    tree: Tree, name: str, stream: Path, seconds: list[float], imports: dict[str, Any]
) -> dict[str, Any]:
    """One row of ``startup.json``: the timed runs (``seconds``) of command ``name`` in
    ``tree`` with their median and minimum, and what :func:`parse_importtime` found."""
    return {
        "tree": tree.label,
        "path": str(tree.path),
        "command": name,
        "title": COMMANDS[name],
        "argv": command_argv(name, stream),
        "seconds": seconds,
        "median_s": float(statistics.median(seconds)),
        "min_s": float(min(seconds)),
        "heavy_modules": imports["heavy"],
        "heavy_import_s": imports["heavy_import_s"],
        "modules_imported": imports["modules"],
    }


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """Write ``startup.json``, ``startup.md`` and ``startup.png`` (median start-up time per
    command, one bar per tree, the minimum marked) under ``out`` (created)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    bl.write_json(out / "startup.json", results)
    rows = results["results"]
    trees = list(dict.fromkeys(r["tree"] for r in rows))
    names = list(dict.fromkeys(r["command"] for r in rows))
    width = 0.8 / max(1, len(trees))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for k, tree in enumerate(trees):
        by = {r["command"]: r for r in rows if r["tree"] == tree}
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(names))]
        ax.bar(xs, [by[n]["median_s"] for n in names], width, label=f"{tree} (median)")
        ax.scatter(xs, [by[n]["min_s"] for n in names], color="k", marker="_", s=200, zorder=3)
    ax.set_xticks(range(len(names)), [COMMANDS.get(n, n) for n in names])
    ax.set_ylabel("wall time (s)")
    ax.set_title(f"CLI start-up, {results['protocol']['repeats']} runs each (-: minimum)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "startup.png", dpi=110, metadata=bl.png_metadata(results["provenance"]))
    plt.close(fig)
    (out / "startup.md").write_text(startup_markdown(results))


def startup_markdown(results: dict[str, Any]) -> str:
    """``startup.md``: provenance, protocol and the table of start-up times."""
    prov, p = results["provenance"], results["protocol"]
    m = prov["machine"]
    trees = ", ".join(
        f"{label} = `{t['path']}` at "
        + (f"`{t['git']['commit'][:12]}`" if t["git"]["commit"] else "an unknown commit")
        + (" (dirty tree)" if t["git"]["dirty"] else "")
        for label, t in prov["trees"].items()
    )
    rows = [
        [
            r["tree"],
            f"`{r['title']}`",
            f"{r['median_s']:.3f}",
            f"{r['min_s']:.3f}",
            ", ".join(
                f"{mod} ({r['heavy_import_s'][mod]:.2f} s)" if mod in r["heavy_import_s"] else mod
                for mod in r["heavy_modules"]
            )
            or "none",
        ]
        for r in results["results"]
    ]
    lines = [
        "# CLI start-up time",
        "",
        f"Produced by `{prov['command']}` on {m['date']}: {m['cpu']}, {m['cores']} cores"
        + (f", load average at start {m['load_average']}" if m.get("load_average") else "")
        + f"; Python {m['python']} (`{prov['python']}`).",
        "",
        f"Trees: {trees}. Each command runs in a fresh process of the same interpreter with "
        "`PYTHONPATH` and the working directory set to the tree; "
        f"{p['repeats']} timed runs per tree and command, interleaved (order rotated every "
        "repeat), after one untimed `python -X importtime` run that lists the heavy packages "
        f"imported (with their cumulative import time). `STREAM` is `{p['stream']}`. "
        f"Bytecode: {p['bytecode']}.",
        "",
        *bl.md_table(["tree", "command", "median s", "min s", "heavy modules imported"], rows),
        "",
        "![start-up time](startup.png)",
        "",
    ]
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``startup`` on the ``bench`` subcommand's subparsers."""
    p = sub.add_parser(
        "startup",
        help="wall time of `relatent --help` and `relatent info` in fresh processes, "
        "and the heavy modules they import (startup.json / .md / .png)",
    )
    p.add_argument(
        "--tree",
        action="append",
        default=None,
        metavar="[LABEL=]PATH",
        help="a checkout to measure (repeatable, e.g. --tree before=/tmp/before --tree after=.); "
        "default: this checkout",
    )
    p.add_argument(
        "--stream",
        default=str(DEFAULT_STREAM),
        help="the stream `relatent info` reads (default: tests/data/golden_none.rlv)",
    )
    p.add_argument("--repeats", type=int, default=7, help="timed runs per tree and command")
    p.add_argument("--out", default="docs/benchmarks", help="where startup.json / .md / .png go")
    p.set_defaults(func=cmd_startup)


def cmd_startup(a: argparse.Namespace) -> int:
    """``relatent bench startup``: measure the trees and write the files.

    Raises:
        ConfigError: a bad --tree or --repeats, or a command fails in a tree.
        InputError: the --stream does not exist.
    """
    trees = [parse_tree(s) for s in a.tree] if a.tree else [Tree("current", bl.REPO)]
    run(trees, Path(a.out), a.repeats, Path(a.stream))
    print(f"wrote {Path(a.out) / 'startup.md'}")
    return 0
