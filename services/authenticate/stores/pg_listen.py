"""The cross-replica change feed: LISTEN on the store's channel, publish locally.

Every put, delete and expiry on any replica does pg_notify(channel,
'<kind>:<id>:<version>') in its own statement, so the notification is sent exactly
when the change commits. Each store keeps one dedicated connection listening and
republishes what it hears to its own Changes, so a watcher on any replica hears of
a sign-out on any other. Our own notifications are skipped: they were published
locally when the statement returned.

While the listening connection is down, changes elsewhere go unheard: watchers get
RESET when it drops and RESET again once it is back (anything may have changed in
between), and it is reopened with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
from psycopg import sql

from services.authenticate.stores.feed import DELETE, PUT, RESET, Changes, Event
from services.authenticate.stores.pg_conn import Connection, connect, describe_error

log = logging.getLogger("vallum.authenticate.store")

_KINDS = {"put": PUT, "delete": DELETE}
# With no notification for this long, ask the server something: a half-open TCP
# connection otherwise looks exactly like a quiet database.
HEARTBEAT = 10.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


def parse_payload(payload: str) -> Event | None:
    kind, _, rest = payload.partition(":")
    session_id, _, version = rest.rpartition(":")
    if kind not in _KINDS or not session_id or not version.isdigit():
        return None
    return Event(_KINDS[kind], session_id, int(version))


class Listener:
    def __init__(
        self, dsn: str, channel: str, changes: Changes, own_pids: Callable[[], set[int]]
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._changes = changes
        self._own_pids = own_pids
        self._task: asyncio.Task[None] | None = None
        self.conn: Connection | None = None
        self.reconnects = 0

    async def start(self) -> None:
        """Listen from now on; raises psycopg.Error if the first LISTEN fails."""
        self.conn = await self._listen()
        self._task = asyncio.create_task(self._run(), name="vallum-sessions-listen")

    async def _listen(self) -> Connection:
        conn = await connect(self._dsn)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            if self.conn is None:
                try:
                    self.conn = await self._listen()
                except (psycopg.Error, OSError) as e:
                    log.warning(
                        "session change feed: cannot listen again (%s); retrying in %.1fs",
                        describe_error(e, self._dsn),
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                self.reconnects += 1
                delay = BACKOFF_FIRST
                log.info("session change feed: listening again")
                self._changes.publish(Event(RESET))
            try:
                await self._pump(self.conn)
            except (psycopg.Error, OSError, TimeoutError) as e:
                log.warning(
                    "session change feed lost (%s); watchers reset, reconnecting",
                    describe_error(e, self._dsn),
                )
            conn, self.conn = self.conn, None
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()
            self._changes.publish(Event(RESET))

    async def _pump(self, conn: Connection) -> None:
        while True:
            async for note in conn.notifies(timeout=HEARTBEAT):
                if note.pid in self._own_pids():
                    continue
                event = parse_payload(note.payload)
                if event is not None:
                    self._changes.publish(event)
            await asyncio.wait_for(conn.execute("SELECT 1"), HEARTBEAT)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.conn is not None:
            await self.conn.close()
            self.conn = None
