"""Logging set-up: one line per event, to stderr, at the configured level.

`log_format: console` (the default) writes `HH:MM:SS LEVEL logger: message`; `json`
writes one JSON object per line: `time` (RFC 3339, UTC, milliseconds), `level`,
`logger`, `message`, `service` (this process: authorize, proxy#2, vallum for the
supervisor, ...), then the line's structured fields: those of a `Fields` argument
(the access and decision lines: `request_id`, `status`, ...) and any `extra=` given
to the log call; `exception` holds a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from typing import Any

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class BatchedStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines below WARNING are written once per event-loop turn, together.

    A busy proxy logs one access line per request; a write (and flush) each costs a
    system call, and under load many requests finish in one loop turn. Warnings and
    errors, and anything logged outside an event loop, are written at once.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        if record.levelno >= logging.WARNING:
            self.flush()
            return
        if len(self._pending) > 1:
            return  # a flush is already due this turn
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:
            self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                self.stream.write(text)
            self.stream.flush()
        finally:
            self.release()


def flush_logs() -> None:
    """Write every line logged so far, now (before telling another process something
    those lines should precede)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def setup_logging(level: str, log_format: str = "console", service: str = "") -> None:
    handler = BatchedStderr()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(_Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    # The logging HOWTO's "Optimization": what the format never shows is not gathered
    # (the caller's frame, thread and process names), per record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # grpc's C core logs handshake failures itself; Vallum reports them in its own words.
    logging.getLogger("grpc").setLevel(logging.WARNING)


class _Formatter(logging.Formatter):
    """`HH:MM:SS` local time, formatted once per second rather than once per line."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime("%H:%M:%S", time.localtime(second))
            self._second = second
        return self._text


class Fields(dict[str, Any]):
    """A log line's structured fields, given as its one argument with the format "%s":
    the console shows them as logfmt; JSON as keys of their own, with `message` the
    short name of the event (`request`, `decision`), not the fields again."""

    __slots__ = ("message",)

    def __init__(self, message: str, /, **fields: Any) -> None:
        super().__init__(fields)
        self.message = message

    def __str__(self) -> str:
        return logfmt(**self)


class _Clock:
    """RFC 3339 UTC time with milliseconds; the part up to the second made once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._text}.{int((created - second) * 1000):03d}Z"


# What every LogRecord has: anything else on a record came from `extra=`.
_RECORD_KEYS = frozenset(
    [*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime", "taskName"]
)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        fields = record.args if isinstance(record.args, Fields) else None
        entry: dict[str, Any] = {
            "time": self._clock(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": fields.message
            if fields is not None and record.msg == "%s"
            else record.getMessage(),
            "service": self.service,
        }
        # A field named like one of the keys above does not replace it.
        if fields is not None:
            for key, value in fields.items():
                entry.setdefault(key, value)
        for key, value in record.__dict__.items():
            if key not in _RECORD_KEYS:
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _encode(entry)


# Made once: json.dumps with any option builds a new encoder per call. Non-ASCII is
# escaped, so a line is valid whatever encoding stderr has.
_encode = json.JSONEncoder(default=str).encode
_clock = _Clock()


def json_line(level: str, logger: str, message: str, service: str, **fields: Any) -> str:
    """One JSON log line, as JsonFormatter writes them, for output made outside logging
    (the supervisor's own lines, and what a child wrote that was not JSON)."""
    entry = {
        "time": _clock(time.time()),
        "level": level,
        "logger": logger,
        "message": message,
        "service": service,
    }
    for key, value in fields.items():
        entry.setdefault(key, value)
    return _encode(entry)


_NEEDS_QUOTES = re.compile(r'[ "=\n]')


def logfmt(**fields: object) -> str:
    """`key=value` pairs, values quoted when they hold spaces, quotes or '='."""
    parts = []
    for key, value in fields.items():
        text = value if isinstance(value, str) else str(value)
        if not text or _NEEDS_QUOTES.search(text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)
