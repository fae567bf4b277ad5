"""The all-in-one supervisor: each service as its own child process.

It starts the children with their environment from `bootstrap.prepare`, prefixes
their log lines with their name, restarts a child that crashed (exponential
backoff, reset after a minute of good health), gives up on a child whose
configuration is wrong (exit 78: a restart would fail the same way), forwards
SIGHUP, and on SIGTERM/SIGINT stops the children gracefully and exits 0.

With `proxy_workers` above 1 the proxy is several children, `proxy#1`, `proxy#2`, ...,
started together and each kept alive on its own; "all services ready" waits for every
one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from services.runtime import EXIT_CONFIG, GRACE_SECONDS
from shared.logs import json_line
from shared.metrics.multiproc import SharedMetrics

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0
STARTUP_WAIT = 15.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    # The service it runs: the workers of one service start together.
    service: str = ""
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    backoff: float = BACKOFF_START
    restarts: int = 0
    ready_task: asyncio.Task[None] | None = None


class ConfigWatch(Protocol):
    def now(self) -> None: ...

    async def watch(self) -> None: ...


class Supervisor:
    def __init__(
        self,
        children: Sequence[Child],
        *,
        banner: str = "",
        metrics: SharedMetrics | None = None,
        json_logs: bool = False,
    ) -> None:
        self.children = list(children)
        self.banner = banner
        # Serves the children's metrics together on metrics_address (None: off).
        self.metrics = metrics
        # log_format json: every line of output is one JSON object (see say()).
        self.json_logs = json_logs
        self._stopping = asyncio.Event()
        self._fatal: str | None = None
        # Called on SIGHUP before the children hear it, and polled for a config file
        # change (all-in-one: the server certificate follows the route hosts).
        self.on_reload: ConfigWatch | None = None
        self._width = max(len(c.name) for c in self.children)

    def say(self, name: str, line: str, level: str = "info") -> None:
        if self.json_logs:
            line = self._as_json(name, line, level)
        else:
            line = f"{name:<{self._width}} | {line}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _as_json(self, name: str, line: str, level: str) -> str:
        """A child's JSON lines pass through as they are (each names its `service`);
        the supervisor's own lines, and anything else a child writes (a traceback
        before its logging started), become objects with the child's name."""
        if name != "vallum" and line.startswith("{") and line.endswith("}"):
            return line
        logger = "vallum.supervisor" if name == "vallum" else "vallum.output"
        return json_line(level, logger, line, name)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        if self.metrics is not None:
            await self.metrics.start()
        ready = asyncio.create_task(self._announce())
        watchers = []
        if self.on_reload is not None:
            watchers.append(asyncio.create_task(self.on_reload.watch()))
        # In dependency order, each service waiting (briefly) for the one before to be
        # ready, so nothing logs a peer as unreachable merely because it started first.
        for group in _by_service(self.children):
            watchers += [asyncio.create_task(self._keep(child)) for child in group]
            stopping = asyncio.create_task(self._stopping.wait())
            all_ready = asyncio.create_task(_all_set([child.ready for child in group]))
            await asyncio.wait(
                [all_ready, stopping], timeout=STARTUP_WAIT, return_when=asyncio.FIRST_COMPLETED
            )
            stopping.cancel()
            all_ready.cancel()
        await self._stopping.wait()
        ready.cancel()
        await self._stop_all()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, ready, return_exceptions=True)
        if self.metrics is not None:
            await self.metrics.stop()
        if self._fatal is not None:
            self.say("vallum", self._fatal, "error")
            return 1
        self.say("vallum", "stopped")
        return 0

    def _forward(self, sig: int) -> None:
        if sig == signal.SIGHUP and self.on_reload is not None:
            self.on_reload.now()
        for child in self.children:
            if child.process is not None and child.process.returncode is None:
                child.process.send_signal(sig)

    async def _announce(self) -> None:
        await asyncio.gather(*(c.ready.wait() for c in self.children))
        for line in self.banner.splitlines():
            self.say("vallum", line)

    async def _spawn(self, child: Child) -> asyncio.subprocess.Process:
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *child.argv,
                "--ready-fd",
                str(write_fd),
                env=child.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(write_fd,),
                start_new_session=True,  # a Ctrl-C reaches the supervisor only
            )
        finally:
            os.close(write_fd)
        child.ready_task = asyncio.create_task(self._await_ready(child, read_fd))
        return process

    async def _await_ready(self, child: Child, read_fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        try:
            if (await reader.readline()).strip() == b"ready":
                child.ready.set()
        finally:
            transport.close()

    async def _pump(self, child: Child, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            self.say(child.name, raw.decode(errors="replace").rstrip("\n"))

    async def _keep(self, child: Child) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            child.started_at = loop.time()
            process = child.process = await self._spawn(child)
            await asyncio.gather(self._pump(child, process), process.wait())
            if self.metrics is not None:
                self.metrics.child_exited(process.pid)
            if self._stopping.is_set():
                return
            code = process.returncode
            if code == EXIT_CONFIG:
                self._fatal = (
                    f"{child.name} cannot start with this configuration (see its message "
                    "above); stopping everything"
                )
                self._stopping.set()
                return
            if loop.time() - child.started_at > HEALTHY_AFTER:
                child.backoff = BACKOFF_START
            child.restarts += 1
            self.say(
                "vallum",
                f"{child.name} exited with {_describe_exit(code)}; "
                f"restarting in {child.backoff:.1f}s (restart {child.restarts})",
                "warning",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), child.backoff)
            child.backoff = min(child.backoff * 2, BACKOFF_MAX)

    async def _stop_all(self) -> None:
        live = [c.process for c in self.children if c.process and c.process.returncode is None]
        for process in live:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), GRACE_SECONDS + 5.0)
        except TimeoutError:
            for process in live:
                if process.returncode is None:
                    process.kill()
            await asyncio.gather(*(p.wait() for p in live))


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


async def _all_set(events: Sequence[asyncio.Event]) -> Literal[True]:
    for event in events:
        await event.wait()
    return True


def _by_service(children: Sequence[Child]) -> list[list[Child]]:
    groups: list[list[Child]] = []
    for child in children:
        if groups and groups[-1][0].service == child.service:
            groups[-1].append(child)
        else:
            groups.append([child])
    return groups


def child_argv(service: str, config_path: str | None, worker: int | None = None) -> list[str]:
    if service.startswith("demo-"):
        argv = [sys.executable, "-m", "services", service]
    else:
        argv = [sys.executable, "-m", "services", "run", "--services", service]
    if worker is not None:
        # Tells the child it is one worker of several: serve, never supervise workers.
        argv += ["--worker", str(worker)]
    if config_path:
        argv += ["--config", config_path]
    return argv


def make_children(
    services: Sequence[str],
    config_path: str | None,
    overrides: Mapping[str, Mapping[str, str]],
    base_env: Mapping[str, str],
    proxy_workers: int = 1,
) -> list[Child]:
    children = []
    for s in services:
        env = {**base_env, **overrides.get(s, {})}
        if s == "proxy" and proxy_workers > 1:
            children += [
                Child(f"proxy#{n}", child_argv(s, config_path, n), dict(env), service=s)
                for n in range(1, proxy_workers + 1)
            ]
        else:
            children.append(Child(s, child_argv(s, config_path), env, service=s))
    return children
