"""Every package pyproject.toml declares as a dependency is imported by selfopt-trace's own code, and the
reason for each is in docs/architecture.md."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_top_modules() -> set[str]:
    """Top-level names of every module imported by selfopt_trace/ (outside the stdlib-only bootstrap too)."""
    names = set()
    for path in (ROOT / "selfopt_trace").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
    return names


def test_every_dependency_is_imported_and_explained() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    imported = imported_top_modules()
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        if "python_version" in requirement:
            continue  # a backport (tomli), imported only where the stdlib lacks it
        modules = {file.parts[0].removesuffix(".py") if len(file.parts) == 1 else ".".join(file.parts[:-1])
                   for file in importlib.metadata.files(name) or () if file.suffix == ".py"}
        assert any(module == top or module.startswith(top + ".") or top.startswith(module + ".")
                   for module in imported for top in modules), f"{name} is declared but never imported"
        assert f"`{name}`" in architecture, f"docs/architecture.md does not say why {name} is a dependency"
