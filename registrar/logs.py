"""structlog, configured once, as data: console on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")
debug = True
"""Whether debug lines are written (structlog's default, until ``configure`` says otherwise). The hot
path asks this before it logs at debug level: a call on a filtered level costs nothing, but getting
the logger to make it does (structlog binds a new one on every call)."""


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog for the process; ``fmt`` is console, json or auto (console on a TTY)."""
    global debug
    debug = level == "debug"
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    # Tracebacks (``exc_info``): the console renderer prints them; in JSON they are structured data
    # inside the one log line, never text outside the stream.
    renderers: list[structlog.typing.Processor] = (
        [structlog.dev.ConsoleRenderer(colors=out.isatty())]
        if fmt == "console"
        else [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
