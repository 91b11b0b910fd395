"""The architecture, checked: import-linter's contracts (pyproject.toml), no private name imported
across modules, rooms of a livable size (modules up to 400 lines, functions up to 80)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("dags", "jobs", "features", "models", "validation", "serving_export")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_import_contracts_hold():
    """Layers, forbidden arrows and no cycles (`lint-imports`, configured in pyproject.toml)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; "
            "sys.exit(lint_imports_command())",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_private_name_is_imported_across_modules():
    bad = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] not in PACKAGES:
                    continue
                names = [a.name for a in node.names if a.name.startswith("_")]
                if names:
                    bad.append(
                        f"{_rel(path)}:{node.lineno} imports {', '.join(names)} from {node.module}"
                    )
    assert bad == [], (
        "a helper two modules need moves down a layer and loses its underscore:\n" + "\n".join(bad)
    )


def test_modules_stay_under_400_lines():
    big = [
        f"{_rel(p)}: {n} lines"
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert big == [], "split these modules:\n" + "\n".join(big)


def test_functions_stay_under_80_lines():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{_rel(path)}:{node.lineno} {node.name}: {n} lines")
    assert long == [], "split these functions:\n" + "\n".join(long)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_package_says_what_lives_there(pkg):
    """Each package's __init__ has a docstring: what lives there and what it may import."""
    for init in (REPO / pkg).rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{_rel(init)} has no docstring"
