"""The suite's own configuration: markers select what they say."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[2]


def test_not_integration_selects_only_unit_tests() -> None:
    """``pytest -m "not integration"`` collects the unit tests and none under tests/integration."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not integration"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("tests/unit/") for line in collected)


def test_the_wheel_ships_only_the_package() -> None:
    """The packages setup.cfg selects are registrar's alone: no bench/, no tests/ in the wheel."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    include = config.get("options.packages.find", "include", fallback="*").split()
    exclude = config.get("options.packages.find", "exclude", fallback="").split()
    packages = setuptools.find_packages(str(ROOT), include=include or ["*"], exclude=exclude)
    assert "registrar" in packages
    assert [p for p in packages if p != "registrar" and not p.startswith("registrar.")] == []
