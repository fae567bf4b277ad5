"""Logging set-up: one line per event, to stderr, at the configured level."""

from __future__ import annotations

import logging
import sys

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # grpc's C core logs handshake failures itself; Vallum reports them in its own words.
    logging.getLogger("grpc").setLevel(logging.WARNING)


def logfmt(**fields: object) -> str:
    """`key=value` pairs, values quoted when they hold spaces, quotes or '='."""
    parts = []
    for key, value in fields.items():
        text = value if isinstance(value, str) else str(value)
        if not text or any(c in text for c in ' "=\n'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)
