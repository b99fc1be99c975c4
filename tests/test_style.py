"""The code passes ``ruff check`` and ``ruff format --check`` (configured in pyproject.toml),
and no module under pipeline/, cluster/ or jobs/ grows past 800 lines or lacks ``__all__``."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("pipeline", "cluster", "jobs")


def ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    return [found]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args: list[str]) -> None:
    out = subprocess.run([*ruff(), *args], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO_ROOT / pkg).rglob("*.py"))


def test_no_module_is_longer_than_800_lines() -> None:
    long = {
        str(p.relative_to(REPO_ROOT)): n
        for p in modules()
        if (n := len(p.read_text().splitlines())) > 800
    }
    assert not long, long


def test_every_module_declares_its_public_names() -> None:
    missing = []
    for p in modules():
        tree = ast.parse(p.read_text())
        names = {
            t.id
            for n in tree.body
            for t in (n.targets if isinstance(n, ast.Assign) else [getattr(n, "target", None)])
            if isinstance(t, ast.Name)
        }
        if "__all__" not in names and (p.name != "__init__.py" or tree.body):
            missing.append(str(p.relative_to(REPO_ROOT)))
    assert not missing, missing


def ours(module: str) -> bool:
    """Whether ``module`` belongs to this project (or its tests)."""
    return module.split(".")[0] in (*PACKAGES, "tests")


def private_uses(path: Path) -> list[str]:
    """``from m import _x`` and ``module._x`` (on a name bound by an import of this
    project's packages) in ``path``. The standard library's own (``argparse._SubParsersAction``)
    are not ours to fix."""
    tree = ast.parse(path.read_text())
    modules_bound: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules_bound |= {
                (a.asname or a.name).split(".")[0] for a in node.names if ours(a.name)
            }
        elif isinstance(node, ast.ImportFrom) and node.module and ours(node.module):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"from {node.module} import {a.name}")
                modules_bound.add(a.asname or a.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules_bound
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    return found


def test_no_private_name_is_used_across_files() -> None:
    offenders = {str(p.relative_to(REPO_ROOT)): u for p in modules() if (u := private_uses(p))}
    assert not offenders, offenders


def test_the_private_name_check_sees_one(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        "from pipeline.media import _open\nfrom pipeline import storage\nstorage._client()\n"
    )
    assert len(private_uses(f)) == 2
