"""Run one service in this process until SIGTERM/SIGINT, then stop gracefully.

A service module provides `start(config) -> Running`; this module owns the event
loop, the signals, the readiness report to a supervisor and the exit codes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

import uvloop

from shared.config import Config
from shared.logs import flush_logs
from shared.material import MaterialError
from shared.rpc import StartupError

log = logging.getLogger("vallum")

# sysexits EX_CONFIG: a supervisor must not restart a child that exits with it, as
# the same configuration will fail the same way.
EXIT_CONFIG = 78
GRACE_SECONDS = 10.0


class Running(Protocol):
    def describe(self) -> str: ...

    async def stop(self, grace: float) -> None: ...


Starter = Callable[[Config], Awaitable[Running]]


def run_service(config: Config, name: str, start: Starter, *, ready_fd: int | None) -> int:
    try:
        return uvloop.run(_serve(config, name, start, ready_fd))
    except (StartupError, MaterialError) as e:
        log.error("%s cannot start: %s", name, e)
        return EXIT_CONFIG


async def _serve(config: Config, name: str, start: Starter, ready_fd: int | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start(config)
    # What start-up built (modules, config, routes, TLS contexts) lives as long as the
    # process: out of the collector's sight, a full collection does not walk it again.
    gc.collect()
    gc.freeze()
    log.info("%s ready: %s", name, running.describe())
    flush_logs()  # the supervisor prints "all services ready" when told, after this line
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    await stop.wait()
    log.info("%s stopping: letting in-flight requests finish (up to %.0fs)", name, GRACE_SECONDS)
    await running.stop(GRACE_SECONDS)
    log.info("%s stopped", name)
    return 0
