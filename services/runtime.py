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

from services.reload import Loader, Reloader
from shared import tracing
from shared.config import Config
from shared.logs import flush_logs
from shared.material import MaterialError
from shared.metrics.process import ProcessMetrics
from shared.rpc import StartupError

log = logging.getLogger("vallum")

# sysexits EX_CONFIG: a supervisor must not restart a child that exits with it, as
# the same configuration will fail the same way.
EXIT_CONFIG = 78
GRACE_SECONDS = 10.0
# The services that trace (with otel_traces_exporter: otlp); the demo IdP and app do not.
TRACED = frozenset({"proxy", "authorize", "authenticate"})


class Running(Protocol):
    def describe(self) -> str: ...

    async def stop(self, grace: float) -> None: ...


Starter = Callable[[Config], Awaitable[Running]]


def run_service(
    config: Config,
    name: str,
    start: Starter,
    *,
    ready_fd: int | None,
    reload: Loader | None = None,
) -> int:
    """Serve until stopped. With `reload` (how to read the configuration again), a
    service that can `apply` a configuration is reloaded on SIGHUP or a file change."""
    try:
        return uvloop.run(_serve(config, name, start, ready_fd, reload))
    except (StartupError, MaterialError) as e:
        log.error("%s cannot start: %s", name, e)
        return EXIT_CONFIG


class _Exit:
    """How the running service ends: the stop signal and the exit code."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.code = 0


_exit: _Exit | None = None


def refuse(message: str) -> None:
    """Stop this service as a configuration error (exit code 78: not restarted), from
    any task, e.g. when a peer turns out to have been given other secrets."""
    log.error("%s", message)
    if _exit is None:
        raise RuntimeError("refuse() outside a running service")
    _exit.code = EXIT_CONFIG
    _exit.stop.set()


async def _serve(
    config: Config, name: str, start: Starter, ready_fd: int | None, reload: Loader | None
) -> int:
    global _exit
    _exit = ending = _Exit()
    stop = ending.stop
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Under a supervisor (which passes ready_fd) the supervisor serves /metrics.
    metrics = ProcessMetrics(config, serve=ready_fd is None)
    if name in TRACED:
        tracing.start(config, name)
    running = await start(config)
    reloader = None
    apply = getattr(running, "apply", None)
    if reload is not None and apply is not None:
        reloader = Reloader(name, config, reload, apply)
        if hasattr(running, "reloader"):
            running.reloader = reloader  # e.g. authorize catches up with a newer proxy
        reloader.start()
    await metrics.start(running)
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
    await metrics.stop()
    if tracing.tracer is not None:
        # The spans of the last requests, exported before the process ends.
        await asyncio.to_thread(tracing.stop)
    log.info("%s stopped", name)
    return ending.code
