"""Structured logs (structlog over the standard library), configured once per process.

Every line of a request carries its request id. Nothing logs keys, tokens, prompts or
document text: request lines hold method, path, status and timing only.

Lines are `<time> [<level>] <event> key=value ...` (or one JSON object each with `log_json`).
structlog's own console renderer makes the same line with padding, colours and styles
resolved per key, which cost about as much CPU as a streamed reply's request handling does
for the access line of every request; `_line` writes it directly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    renderer: structlog.typing.Processor = structlog.processors.JSONRenderer() if json else _line
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _line(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
    """`<time> [<level>] <event> key=value ...` (keys sorted; text as is, other values as
    their repr), then the traceback of an exception on the lines after."""
    time = event.pop("timestamp", "")
    level = event.pop("level", "")
    message = event.pop("event", "")
    trace = event.pop("exception", None) or event.pop("stack", None)
    pairs = " ".join(
        f"{key}={value if isinstance(value, str) else repr(value)}"
        for key, value in sorted(event.items())
    )
    line = f"{time} [{level:<9}] {message!s:<30} {pairs}".rstrip()
    return f"{line}\n{trace}" if trace else line
