"""Logging set-up: one line per event, to stderr, at the configured level."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time

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


def setup_logging(level: str) -> None:
    handler = BatchedStderr()
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
