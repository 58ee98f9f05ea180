"""Log lines as an operator reads them (threadline/logs.py): one line per event with its
time, level, event and sorted key=value pairs, a traceback under it; JSON with `log_json`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import structlog

from threadline.logs import configure_logging


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    """The session's logging as it was (these tests configure it to write to capsys's)."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _lines(capsys, json_lines: bool) -> list[str]:
    configure_logging("INFO", json_lines)
    log = structlog.get_logger("threadline.test")
    structlog.contextvars.bind_contextvars(request_id="abc123")
    try:
        log.info("request", path="/api/chat-with-ai", status=200, ms=12.5, method="POST")
        log.debug("not shown at INFO")
        try:
            raise ValueError("bad value")
        except ValueError:
            log.exception("reply failed", record="r-1")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    return capsys.readouterr().err.splitlines()


def test_a_line_names_time_level_event_and_sorted_pairs_then_the_traceback(capsys):
    lines = _lines(capsys, json_lines=False)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[info     \] request +"
        r"method=POST ms=12\.5 path=/api/chat-with-ai request_id=abc123 status=200",
        lines[0],
    ), lines[0]
    assert "[error    ] reply failed" in lines[1] and lines[1].endswith(
        "record=r-1 request_id=abc123"
    )
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: bad value"
    assert not any("not shown" in line for line in lines)


def test_with_log_json_each_line_is_one_object(capsys):
    first, second = (json.loads(line) for line in _lines(capsys, json_lines=True))
    assert first["event"] == "request" and first["status"] == 200
    assert first["request_id"] == "abc123" and first["level"] == "info"
    assert second["level"] == "error" and "ValueError: bad value" in second["exception"]
