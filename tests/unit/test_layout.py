"""The package stays in rooms a reader can take in: no module in registrar/ over 500 lines, no class over 300."""

from __future__ import annotations

import ast
from pathlib import Path

import registrar

PACKAGE = Path(registrar.__file__).parent
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


def modules() -> list[Path]:
    """Every Python module of the package, subpackages included."""
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_500_lines() -> None:
    """Each module in registrar/ has at most 500 lines."""
    found = modules()
    long = {str(p.relative_to(PACKAGE)): n for p in found if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert found, "no modules found"
    assert long == {}


def test_no_class_is_over_300_lines() -> None:
    """Each class in registrar/ spans at most 300 lines (ast: end_lineno - lineno + 1, decorators aside)."""
    long = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    long[f"{path.relative_to(PACKAGE)}::{node.name}"] = lines
    assert long == {}
