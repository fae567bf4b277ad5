"""Hot reload: re-read the configuration on SIGHUP or when its file changes.

A new configuration that fails validation is refused, its every problem logged, and
the running one keeps serving. One that passes is planned (shared/config/reload.py:
which keys apply now, which need a restart) and handed to the service's `apply`,
which builds everything first and swaps it in last, so a failure there also keeps
the old configuration whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable

from shared.config import Config, ConfigError
from shared.config.reload import plan, watched_paths
from shared.material import MaterialError
from shared.rpc import StartupError

log = logging.getLogger("vallum.reload")

POLL_SECONDS = 1.0

Loader = Callable[[], Config]
Apply = Callable[[Config], None]


def signatures(paths: tuple[str, ...]) -> tuple[tuple[int, int, int] | None, ...]:
    return tuple(file_signature(path) for path in paths)


def file_signature(path: str | None) -> tuple[int, int, int] | None:
    """What tells a rewritten file from the one read before (None: no such file)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


async def next_poll(wake: asyncio.Event) -> bool:
    """Wait for `wake` (SIGHUP) or one poll interval; whether it was the signal."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), POLL_SECONDS)
    woken = wake.is_set()
    wake.clear()
    return woken


class Reloader:
    def __init__(self, name: str, config: Config, load: Loader, apply: Apply) -> None:
        self.name = name
        self.config = config
        self._load = load
        self._apply = apply
        self._seen = signatures(watched_paths(config))
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._wake.set)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            if await next_poll(self._wake):
                log.info("%s: SIGHUP: reading the configuration again", self.name)
                await self.reload()
            else:
                await self.reload_if_changed()

    async def reload_if_changed(self) -> None:
        """Reload if the config file (or a file it takes a value from) changed since it
        was last read (a peer asks this when it sees newer routes than ours)."""
        if signatures(watched_paths(self.config)) != self._seen:
            await self.reload()

    async def reload(self) -> bool:
        """Read, validate and apply the configuration; whether it was applied."""
        async with self._lock:
            seen = signatures(watched_paths(self.config))
            try:
                # Reading files is blocking work: off the event loop.
                loaded = await asyncio.to_thread(self._load)
            except ConfigError as e:
                self._seen = seen
                log.error(
                    "%s: the new configuration is refused; the running one keeps serving. "
                    "Its problems:\n%s",
                    self.name,
                    e,
                )
                return False
            self._seen = signatures(watched_paths(loaded))
            step = plan(self.config, loaded)
            if step.needs_restart:
                log.warning(
                    "%s: %s changed; a restart applies %s (until then the running value is kept)",
                    self.name,
                    ", ".join(step.needs_restart),
                    "it" if len(step.needs_restart) == 1 else "them",
                )
            if not step.changed:
                log.info("%s: configuration read again; nothing to apply", self.name)
                return False
            try:
                self._apply(step.config)
            except (ConfigError, StartupError, MaterialError, ValueError, OSError) as e:
                log.error(
                    "%s: the new configuration could not be applied (%s); the running one "
                    "keeps serving",
                    self.name,
                    e,
                )
                return False
            if "log_level" in step.applied:
                logging.getLogger().setLevel(step.config.log_level.upper())
            self.config = step.config
            log.info("%s: configuration reloaded (%s)", self.name, ", ".join(step.applied))
            return True
