"""The package boundaries, enforced on the source: imports only run down.

``workers/`` (the data plane) imports nothing of ``poolsvc/`` (the control plane and
the CLIs), and neither imports ``tools/`` (development tools, not installed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FORBIDDEN = {"workers": {"poolsvc", "tools"}, "poolsvc": {"tools"}}


def imported(path: Path) -> set[str]:
    """The top-level packages a module imports, wherever the import statement is."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_only_run_down(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
        if imported(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_the_rule_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from poolsvc import config\n    import tools.bench\n")
    assert imported(bad) >= {"poolsvc", "tools"}
