"""Layering rules: pipeline/ never imports ray; light modules do not pull in torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_pipeline_never_imports_ray() -> None:
    files = sorted((REPO_ROOT / "pipeline").rglob("*.py"))
    assert files
    offenders = [str(f.relative_to(REPO_ROOT)) for f in files if "ray" in imported_modules(f)]
    assert not offenders, f"pipeline/ must not import ray: {offenders}"


def test_light_modules_do_not_import_torch_or_ray() -> None:
    code = (
        "import sys, pipeline.bitstream, pipeline.errors, pipeline.storage, pipeline.models, jobs.cli;"
        "print(sorted(m for m in ('torch', 'ray', 'boto3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
