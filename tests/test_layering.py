"""Layering rules: jobs/ -> cluster/ -> pipeline/, never upwards; pipeline/ never imports
ray; the CLI's parser and the light modules do not pull in torch or ray."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def imported_modules(path: Path) -> set[str]:
    """Top-level package names that ``path`` imports (absolute imports, anywhere in it)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("floor", "forbidden"),
    [("pipeline", {"ray", "cluster", "jobs"}), ("cluster", {"jobs"})],
)
def test_no_upward_imports(floor: str, forbidden: set[str]) -> None:
    files = sorted((REPO_ROOT / floor).rglob("*.py"))
    assert files
    offenders = {
        str(f.relative_to(REPO_ROOT)): sorted(imported_modules(f) & forbidden)
        for f in files
        if imported_modules(f) & forbidden
    }
    assert not offenders, f"{floor}/ must not import {sorted(forbidden)}: {offenders}"


def test_the_layering_check_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from jobs.cli import main\n    import ray.util\n")
    assert {"jobs", "ray"} <= imported_modules(bad)


def loaded_after(code: str) -> list[str]:
    """The heavy packages loaded in a fresh interpreter after running ``code``."""
    probe = (
        f"{code}\nimport sys, json\n"
        "print(json.dumps(sorted(m for m in ('torch', 'ray', 'boto3', 'compressai') if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_building_the_cli_parser_imports_neither_torch_nor_ray() -> None:
    """``relatent --help`` (and every command's parsing) stays light."""
    assert loaded_after("from jobs.cli import build_parser\nbuild_parser().format_help()") == []


def test_light_modules_do_not_import_torch_or_ray() -> None:
    mods = "pipeline.bitstream, pipeline.errors, pipeline.storage, pipeline.config, pipeline.stats"
    assert loaded_after(f"import {mods}") == []
    assert loaded_after("import pipeline.models") == []


def test_the_library_face_is_lazy_and_complete() -> None:
    """``import pipeline`` loads no torch; every name of its ``__all__`` resolves."""
    assert loaded_after("import pipeline") == []
    import pipeline

    assert all(getattr(pipeline, name) is not None for name in pipeline.__all__)
    with pytest.raises(AttributeError):
        pipeline.no_such_name  # noqa: B018
