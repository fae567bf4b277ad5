"""Sessions in one SQLite file in data_dir: the default for a single machine.

Durability: WAL mode with synchronous=NORMAL. A transaction is in the WAL, handed to
the kernel, before COMMIT returns, so it survives the process being killed (even by
SIGKILL) at any point after put() returns. What NORMAL gives up is only the last
transactions before a power cut or kernel crash, in exchange for an fsync per
checkpoint rather than per put.

sqlite3 blocks, so every call runs on one dedicated thread that owns the connection;
the event loop only awaits it. Changes are published in this process only: SQLite
means one machine and one authenticate process.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from services.authenticate.stores.feed import DELETE, PUT, Changes, Event
from services.authenticate.stores.records import RecordCodec, Row
from shared.pb import session_pb2

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vallum_schema (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vallum_sessions (
    id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    record BLOB NOT NULL,
    tokens BLOB NOT NULL,
    refresh BLOB,
    expires_at REAL NOT NULL,
    access_token_expires_at REAL,
    lease_owner TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS vallum_sessions_expires_at ON vallum_sessions (expires_at);
CREATE INDEX IF NOT EXISTS vallum_sessions_refresh
    ON vallum_sessions (access_token_expires_at) WHERE refresh IS NOT NULL;
INSERT INTO vallum_schema (component, version) VALUES ('sessions', 1)
    ON CONFLICT (component) DO NOTHING;
"""

_PUT = """
INSERT INTO vallum_sessions
    (id, version, record, tokens, refresh, expires_at, access_token_expires_at)
VALUES (?, 1, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    version = version + 1,
    record = excluded.record,
    tokens = excluded.tokens,
    refresh = excluded.refresh,
    expires_at = excluded.expires_at,
    access_token_expires_at = excluded.access_token_expires_at
RETURNING version
"""


class SchemaTooNew(Exception):
    """The file was written by a newer Vallum; this one must not touch it."""


def _connect(path: str) -> sqlite3.Connection:
    # The file holds who signed in and their (sealed) tokens: owner-only from the start.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")  # also proves the file is writable
        try:
            # One statement at a time: executescript would COMMIT our transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            ((version,),) = conn.execute(
                "SELECT version FROM vallum_schema WHERE component = 'sessions'"
            ).fetchall()
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"schema version {version} is newer than this Vallum's {SCHEMA_VERSION}"
                )
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteStore:
    def __init__(self, path: str, shared_secret: bytes) -> None:
        self.path = path
        self._codec = RecordCodec(shared_secret)
        self._changes = Changes()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vallum-sqlite")
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str, shared_secret: bytes) -> SqliteStore:
        """Open (creating the directory, file and tables if missing); raises OSError,
        sqlite3.Error or SchemaTooNew."""
        store = cls(path, shared_secret)
        try:
            await store._call(store._open)
        except BaseException:
            store._executor.shutdown(wait=False)
            raise
        return store

    def _open(self) -> None:
        Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._conn = _connect(self.path)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the session store is closed")
        return self._conn

    async def get(self, session_id: str) -> session_pb2.Session | None:
        found = await self._call(
            self._fetch,
            "SELECT record, tokens, version FROM vallum_sessions WHERE id = ?",
            (session_id,),
        )
        if found is None:
            return None
        return self._codec.session(session_id, found[0], found[1], found[2])

    def _fetch(self, query: str, args: tuple[Any, ...]) -> Any:
        # fetchall, never fetchone: a statement left unfinished keeps its implicit
        # transaction (and, for a write, the file lock) open until it is reset.
        rows = self._db().execute(query, args).fetchall()
        return rows[0] if rows else None

    async def put(self, session: session_pb2.Session, refresh_token: str) -> int:
        row = self._codec.to_row(session, refresh_token)
        version: int = await self._call(self._put, row)
        self._changes.publish(Event(PUT, row.id, version))
        return version

    def _put(self, row: Row) -> int:
        ((version,),) = (
            self._db()
            .execute(
                _PUT,
                (
                    row.id,
                    row.record,
                    row.tokens,
                    row.refresh,
                    row.expires_at,
                    row.access_token_expires_at,
                ),
            )
            .fetchall()
        )
        return int(version)

    async def delete(self, session_id: str) -> bool:
        found = await self._call(
            self._fetch,
            "DELETE FROM vallum_sessions WHERE id = ? RETURNING version",
            (session_id,),
        )
        if found is None:
            return False
        self._changes.publish(Event(DELETE, session_id, found[0] + 1))
        return True

    def changes(self) -> Changes:
        return self._changes

    async def get_refresh_token(self, session_id: str) -> str | None:
        found = await self._call(
            self._fetch, "SELECT refresh FROM vallum_sessions WHERE id = ?", (session_id,)
        )
        return None if found is None else self._codec.refresh_token(session_id, found[0])

    async def due_for_refresh(self, before: float, limit: int) -> list[str]:
        return await self._call(self._due, before, limit, time.time())

    def _due(self, before: float, limit: int, now: float) -> list[str]:
        rows = (
            self._db()
            .execute(
                "SELECT id FROM vallum_sessions WHERE refresh IS NOT NULL"
                " AND access_token_expires_at < ?"
                " AND (lease_until IS NULL OR lease_until < ?)"
                " ORDER BY access_token_expires_at LIMIT ?",
                (before, now, limit),
            )
            .fetchall()
        )
        return [session_id for (session_id,) in rows]

    async def claim_refresh(self, session_id: str, owner: str, lease_seconds: float) -> bool:
        return await self._call(self._claim, session_id, owner, lease_seconds)

    def _claim(self, session_id: str, owner: str, lease_seconds: float) -> bool:
        db = self._db()
        # IMMEDIATE takes the write lock first, so another process sharing the file
        # cannot interleave between our read of the lease and our write of it.
        db.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            claimed = db.execute(
                "UPDATE vallum_sessions SET lease_owner = ?, lease_until = ?"
                " WHERE id = ? AND (lease_until IS NULL OR lease_until < ?)",
                (owner, now + lease_seconds, session_id, now),
            ).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return claimed == 1

    async def release_refresh(self, session_id: str, owner: str) -> bool:
        released = await self._call(
            self._fetch,
            "UPDATE vallum_sessions SET lease_owner = NULL, lease_until = NULL"
            " WHERE id = ? AND lease_owner = ? RETURNING id",
            (session_id, owner),
        )
        return released is not None

    async def expire(self, now: float) -> int:
        gone: list[tuple[str, int]] = await self._call(self._expire, now)
        for session_id, version in gone:
            self._changes.publish(Event(DELETE, session_id, version + 1))
        return len(gone)

    def _expire(self, now: float) -> list[tuple[str, int]]:
        rows = (
            self._db()
            .execute(
                "DELETE FROM vallum_sessions WHERE expires_at <= ? RETURNING id, version", (now,)
            )
            .fetchall()
        )
        return [(session_id, int(version)) for session_id, version in rows]

    async def close(self) -> None:
        if self._conn is not None:
            await self._call(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
