"""Hooks and fixtures of the whole suite: a socket a test leaves unclosed fails that test, not a later one."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what exists once collected (modules, tests), so each test's collection walks only its own objects."""
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Unfreeze, so pytest's last collection at exit walks everything."""
    gc.unfreeze()


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect garbage after each test, so a socket it left open warns in its own teardown."""
    yield
    gc.collect()
