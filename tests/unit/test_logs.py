"""The log handler: lines batched per event-loop turn, in order, warnings at once."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from shared.logs import BatchedStderr, logfmt


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    handler = BatchedStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_info_lines_wait_for_the_end_of_the_loop_turn(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured

    async def turn() -> str:
        logger.info("one")
        logger.info("two")
        held = out.getvalue()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return held

    held = asyncio.run(turn())
    assert held == ""
    assert out.getvalue() == "INFO one\nINFO two\n"


def test_a_warning_writes_at_once_with_what_came_before(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured

    async def turn() -> str:
        logger.info("first")
        logger.warning("second")
        return out.getvalue()

    assert asyncio.run(turn()) == "INFO first\nWARNING second\n"


def test_outside_an_event_loop_lines_are_written_at_once(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured
    logger.info("plain")
    assert out.getvalue() == "INFO plain\n"


def test_logfmt_quotes_what_needs_quoting() -> None:
    assert logfmt(a="x", b="two words", c="", d='q"') == 'a=x b="two words" c="" d="q\\""'
