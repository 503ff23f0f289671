"""The package stays in rooms a reader can take in: no module in registrar/ over 500 lines, no class over 300;
the unit tests wait on conditions, never on time: none calls ``time.sleep`` (issue 33)."""

from __future__ import annotations

import ast
from pathlib import Path

import registrar

PACKAGE = Path(registrar.__file__).parent
UNIT_TESTS = Path(__file__).parent
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


def sleeps(tree: ast.AST) -> list[int]:
    """The lines of ``tree``'s calls to time.sleep: ``time.sleep(...)`` (time imported under any name), or a name
    imported from time as ``sleep`` (under any name) called bare."""
    modules, names = {"time"}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.asname or alias.name for alias in node.names if alias.name == "time"}
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            names |= {alias.asname or alias.name for alias in node.names if alias.name == "sleep"}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.attr == "sleep" and func.value.id in modules:
                found.append(node.lineno)
        elif isinstance(func, ast.Name) and func.id in names:
            found.append(node.lineno)
    return found


def sleeps_in_file(path: Path) -> list[int]:
    """The lines of a file's calls to time.sleep, those of the scripts it keeps in strings (that parse) too."""
    tree = ast.parse(path.read_text(), str(path))
    found = sleeps(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "sleep" in node.value:
            try:
                script = ast.parse(node.value)
            except SyntaxError:
                continue
            found += [node.lineno + line - 1 for line in sleeps(script)]
    return sorted(found)


def test_no_unit_test_sleeps() -> None:
    """No file in tests/unit calls time.sleep, nor a script it keeps in a string: tests wait on conditions."""
    found = sorted(UNIT_TESTS.rglob("*.py"))
    sleeping = {f"{p.relative_to(UNIT_TESTS)}:{line}" for p in found for line in sleeps_in_file(p)}
    assert len(found) > 30, "the unit tests not found"
    assert sleeping == set()


def test_each_spelling_of_a_sleep_is_found(tmp_path: Path) -> None:
    """time.sleep, under the module's name or another, or imported from time under its name or another, is found;
    in a script kept in a string too; another module's sleep is not."""
    source = tmp_path / "t.py"
    text = (  # SLEEP for sleep: this file's own strings hold no call to it
        "import time\nimport time as clock\nfrom time import SLEEP\nfrom time import SLEEP as nap\n"
        "import asyncio\n"
        "time.SLEEP(1)\nclock.SLEEP(1)\nSLEEP(1)\nnap(1)\nasyncio.SLEEP(1)\n"
        'SCRIPT = """\nimport time\n\ntime.SLEEP(1)\n"""\n'
    )
    source.write_text(text.replace("SLEEP", "sleep"))
    assert sleeps_in_file(source) == [6, 7, 8, 9, 14]
