"""log_format json: one JSON object per line, with the line's fields as keys."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from shared.logs import BatchedStderr, Fields, JsonFormatter, flush_logs, json_line, setup_logging


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    handler = BatchedStderr()
    handler.setFormatter(JsonFormatter("proxy#2"))
    logger = logging.getLogger("vallum.test.json")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_required_keys(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    logger.info("hello %s", "world")
    (entry,) = lines(out)
    assert entry["level"] == "info" and entry["logger"] == "vallum.test.json"
    assert entry["message"] == "hello world" and entry["service"] == "proxy#2"
    # RFC 3339, UTC, milliseconds.
    assert len(entry["time"]) == len("2026-01-02T03:04:05.678Z") and entry["time"][-1] == "Z"
    assert entry["time"][10] == "T" and entry["time"][19] == "."


def test_time_is_utc_with_milliseconds() -> None:
    record = logging.LogRecord("x", logging.INFO, "", 0, "m", (), None)
    record.created = 86400 * 365 + 0.0429
    entry = json.loads(JsonFormatter().format(record))
    assert entry["time"] == "1971-01-01T00:00:00.042Z"


def test_fields_are_keys_and_console_shows_logfmt(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = logged
    fields = Fields("request", request_id="00ab", status=403, path="/a b", ms=1.5)
    logger.info("%s", fields)
    logger.info("with %s", fields)  # inside a longer message: logfmt, and the keys
    first, second = lines(out)
    assert first["request_id"] == "00ab" and first["status"] == 403 and first["ms"] == 1.5
    assert first["message"] == "request"
    assert str(fields) == 'request_id=00ab status=403 path="/a b" ms=1.5'
    assert second["message"] == f"with {fields}" and second["request_id"] == "00ab"


def test_console_format_shows_fields_as_logfmt(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info")
        logging.getLogger("vallum.test.console").info("%s", Fields("request", status=200))
        flush_logs()
    finally:
        root.handlers[:], root.level = saved
    assert out.getvalue().endswith(" INFO    vallum.test.console: status=200\n")


def test_extra_fields_and_reserved_names(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    logger.warning("no decision", extra={"request_id": "r1", "peer": ("h", 1)})
    logger.info("%s", Fields("event", message="not this", level="nor this", user="u"))
    first, second = lines(out)
    assert first["request_id"] == "r1" and first["peer"] == ["h", 1]
    assert second["level"] == "info" and second["message"] == "event"
    assert second["user"] == "u"


def test_non_ascii_and_unserialisable_values(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    logger.info("héllo ✓ %s", "ü", extra={"obj": object()})
    raw = out.getvalue()
    assert raw.isascii() and raw.count("\n") == 1  # escaped: valid whatever the encoding
    (entry,) = lines(out)
    assert entry["message"] == "héllo ✓ ü" and entry["obj"].startswith("<object")


def test_exception_is_one_field_on_one_line(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("it failed")
    assert out.getvalue().count("\n") == 1
    (entry,) = lines(out)
    assert entry["level"] == "error" and entry["message"] == "it failed"
    assert entry["exception"].startswith("Traceback") and "ValueError: bad" in entry["exception"]


def test_json_line_for_output_made_outside_logging() -> None:
    entry = json.loads(json_line("warning", "vallum.supervisor", "proxy#1 exited", "vallum"))
    assert entry["level"] == "warning" and entry["service"] == "vallum"
    assert entry["message"] == "proxy#1 exited" and entry["time"].endswith("Z")
