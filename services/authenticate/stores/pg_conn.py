"""PostgreSQL connections for the session store: how to open one, a small pool of
them, and how to describe a failure without ever printing the password.

psycopg_pool is not a dependency: a store needs a handful of autocommit
connections, each statement is one round trip, and the whole pool is a semaphore
and a list.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]

# Defaults only: anything the operator wrote in the connection string wins.
_DEFAULTS = {
    "connect_timeout": "5",
    "application_name": "vallum-authenticate",
    # A dead peer (a failed-over database, a dropped NAT entry) is noticed in ~1 min
    # rather than the kernel's two hours.
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
# Every outbound call has a deadline; a session lookup is never worth waiting longer.
STATEMENT_TIMEOUT_MS = 5000


class BadConnectionString(ValueError):
    """The string does not parse; the message never quotes it (it may hold a password)."""


def with_defaults(dsn: str) -> str:
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise BadConnectionString(
            "not a valid PostgreSQL connection string "
            "(use key=value pairs, or a postgresql://user@host:port/dbname URL)"
        ) from None
    extra = {key: value for key, value in _DEFAULTS.items() if key not in given}
    return make_conninfo(dsn, **extra)


def describe_target(dsn: str) -> str:
    """`host:port/dbname`, from what the string says and libpq's defaults."""
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable connection string)"
    host = str(given.get("host") or given.get("hostaddr") or "the local socket")
    port = str(given.get("port") or 5432)
    dbname = str(given.get("dbname") or given.get("user") or "(default database)")
    return f"{host}:{port}/{dbname}"


_PREFIXES = (
    re.compile(r'^connection failed: connection to server at "[^"]*"(, port \d+)? failed: '),
    re.compile(r'^connection failed: connection to server on socket "[^"]*" failed: '),
    re.compile(r"^connection failed: "),
)


def describe_error(error: BaseException, dsn: str) -> str:
    """libpq's reason on one line, with the target (said elsewhere) and password cut."""
    text = str(error).strip() or type(error).__name__
    for prefix in _PREFIXES:
        text = prefix.sub("", text)
    text = " ".join(text.replace("FATAL:", "").split())
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text


async def connect(dsn: str) -> Connection:
    """An autocommit connection; `dsn` has been through with_defaults."""
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    return conn


class Pool:
    """At most `size` connections, opened on demand, replaced when they break."""

    def __init__(self, dsn: str, size: int = 4) -> None:
        self._dsn = dsn
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Connection] = []
        self._open: set[Connection] = set()
        self._closed = False

    def backend_pids(self) -> set[int]:
        """Whose NOTIFYs are our own (already published locally)."""
        return {conn.info.backend_pid for conn in self._open if not (conn.closed or conn.broken)}

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._slots:
            conn = await self._take()
            try:
                yield conn
            finally:
                if self._can_reuse(conn):
                    self._idle.append(conn)
                else:
                    await self._discard(conn)

    def _can_reuse(self, conn: Connection) -> bool:
        # A statement cut short (cancelled, timed out mid-read) leaves the connection
        # busy or in a transaction; it is cheaper to replace it than to reason about it.
        return (
            not self._closed
            and not conn.closed
            and not conn.broken
            and conn.info.transaction_status == TransactionStatus.IDLE
        )

    async def run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """`work` on a pooled connection; once more on a fresh one if the connection
        broke under it (a database restart closes every pooled connection)."""
        for attempt in (1, 2):
            async with self.connection() as conn:
                try:
                    return await work(conn)
                except psycopg.OperationalError:
                    if attempt == 2 or not conn.broken:
                        raise
        raise AssertionError("unreachable")

    async def _take(self) -> Connection:
        if self._closed:
            raise psycopg.OperationalError("the session store is closed")
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and not conn.broken:
                return conn
            await self._discard(conn)
        conn = await connect(self._dsn)
        self._open.add(conn)
        return conn

    async def _discard(self, conn: Connection) -> None:
        self._open.discard(conn)
        if not conn.closed:
            await conn.close()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)
