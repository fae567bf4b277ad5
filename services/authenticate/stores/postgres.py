"""Sessions in PostgreSQL: for several authenticate replicas sharing sessions.

Each operation is one autocommit statement on a pooled connection (psycopg's async
API, so the event loop never blocks). Writes notify the other replicas in the same
statement (see pg_listen). Leases use the database's clock, the one clock every
replica agrees on.
"""

from __future__ import annotations

from typing import Any

import psycopg

from services.authenticate.stores.feed import DELETE, PUT, Changes, Event
from services.authenticate.stores.pg_conn import (
    BadConnectionString,
    Connection,
    Pool,
    connect,
    describe_error,
    describe_target,
    with_defaults,
)
from services.authenticate.stores.pg_listen import Listener
from services.authenticate.stores.records import RecordCodec
from shared.pb import session_pb2
from shared.rpc import StartupError

SCHEMA_VERSION = 1
CHANNEL = "vallum_sessions"
_KEY = "databroker_storage_connection_string"

_SCHEMA = (
    # Replicas starting together would race on CREATE TABLE IF NOT EXISTS (it is not
    # atomic against itself); the lock makes them take turns.
    "SELECT pg_advisory_xact_lock(hashtext('vallum session schema'))",
    """CREATE TABLE IF NOT EXISTS vallum_schema (
        component TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS vallum_sessions (
        id TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        record BYTEA NOT NULL,
        tokens BYTEA NOT NULL,
        refresh BYTEA,
        expires_at DOUBLE PRECISION NOT NULL,
        access_token_expires_at DOUBLE PRECISION,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION
    )""",
    "CREATE INDEX IF NOT EXISTS vallum_sessions_expires_at ON vallum_sessions (expires_at)",
    """CREATE INDEX IF NOT EXISTS vallum_sessions_refresh
        ON vallum_sessions (access_token_expires_at) WHERE refresh IS NOT NULL""",
    """INSERT INTO vallum_schema (component, version) VALUES ('sessions', 1)
        ON CONFLICT (component) DO NOTHING""",
)

_PUT = """
WITH up AS (
    INSERT INTO vallum_sessions AS s
        (id, version, record, tokens, refresh, expires_at, access_token_expires_at)
    VALUES (%s, 1, %s, %s, %s, %s, %s)
    ON CONFLICT (id) DO UPDATE SET
        version = s.version + 1,
        record = excluded.record,
        tokens = excluded.tokens,
        refresh = excluded.refresh,
        expires_at = excluded.expires_at,
        access_token_expires_at = excluded.access_token_expires_at
    RETURNING id, version
)
SELECT version, pg_notify(%s, 'put:' || id || ':' || version) FROM up
"""

_DELETE = """
WITH gone AS (DELETE FROM vallum_sessions WHERE id = %s RETURNING id, version)
SELECT version, pg_notify(%s, 'delete:' || id || ':' || (version + 1)) FROM gone
"""

_EXPIRE = """
WITH gone AS (DELETE FROM vallum_sessions WHERE expires_at <= %s RETURNING id, version)
SELECT id, version, pg_notify(%s, 'delete:' || id || ':' || (version + 1)) FROM gone
"""

_DUE = """
SELECT id FROM vallum_sessions
WHERE refresh IS NOT NULL AND access_token_expires_at < %s
  AND (lease_until IS NULL OR lease_until < EXTRACT(EPOCH FROM clock_timestamp())::float8)
ORDER BY access_token_expires_at LIMIT %s
"""

_CLAIM = """
UPDATE vallum_sessions SET lease_owner = %s,
    lease_until = EXTRACT(EPOCH FROM clock_timestamp())::float8 + %s
WHERE id = %s
  AND (lease_until IS NULL OR lease_until < EXTRACT(EPOCH FROM clock_timestamp())::float8)
RETURNING id
"""

_RELEASE = """
UPDATE vallum_sessions SET lease_owner = NULL, lease_until = NULL
WHERE id = %s AND lease_owner = %s RETURNING id
"""


def channel_for(schema: str) -> str:
    # Deployments (or test runs) sharing a database in separate schemas must not
    # hear each other's changes; NOTIFY channels are database-wide.
    return CHANNEL if schema == "public" else f"{CHANNEL}_{schema}"[:63]


async def _prepare(conn: Connection) -> str:
    """Create the tables if missing; the notification channel for this schema."""
    async with conn.transaction():
        for statement in _SCHEMA:
            await conn.execute(statement)
        cur = await conn.execute(
            "SELECT version, current_schema() FROM vallum_schema WHERE component = 'sessions'"
        )
        version, schema = await cur.fetchone() or (0, "public")
    if int(version) > SCHEMA_VERSION:
        raise StartupError(
            f"{_KEY}: the session tables were made by a newer Vallum (schema {version}, "
            f"this one knows {SCHEMA_VERSION}); upgrade Vallum"
        )
    return channel_for(str(schema))


class PostgresStore:
    def __init__(self, dsn: str, shared_secret: bytes, channel: str, pool_size: int) -> None:
        self._codec = RecordCodec(shared_secret)
        self._changes = Changes()
        self._pool = Pool(dsn, pool_size)
        self.channel = channel
        self.listener = Listener(dsn, channel, self._changes, self._pool.backend_pids)

    @classmethod
    async def open(cls, dsn: str, shared_secret: bytes, *, pool_size: int = 4) -> PostgresStore:
        """Connect, create the tables if missing and start listening; StartupError
        (naming host:port/dbname, never the password) if any of that fails."""
        try:
            full = with_defaults(dsn)
        except BadConnectionString as e:
            raise StartupError(f"{_KEY}: {e}") from None
        target = describe_target(dsn)
        try:
            conn = await connect(full)
        except (psycopg.Error, OSError) as e:
            raise StartupError(
                f"{_KEY}: cannot connect to postgres at {target}: {describe_error(e, dsn)}"
            ) from None
        try:
            channel = await _prepare(conn)
        except psycopg.Error as e:
            raise StartupError(
                f"{_KEY}: cannot create the session tables in postgres at {target}: "
                f"{describe_error(e, dsn)}"
            ) from None
        finally:
            await conn.close()
        store = cls(full, shared_secret, channel, pool_size)
        try:
            await store.listener.start()
        except (psycopg.Error, OSError) as e:
            raise StartupError(
                f"{_KEY}: cannot listen for session changes at {target}: {describe_error(e, dsn)}"
            ) from None
        return store

    async def _one(self, query: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        async def work(conn: Connection) -> tuple[Any, ...] | None:
            cur = await conn.execute(query, args)
            return await cur.fetchone()

        return await self._pool.run(work)

    async def _all(self, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async def work(conn: Connection) -> list[tuple[Any, ...]]:
            cur = await conn.execute(query, args)
            return await cur.fetchall()

        return await self._pool.run(work)

    async def get(self, session_id: str) -> session_pb2.Session | None:
        found = await self._one(
            "SELECT record, tokens, version FROM vallum_sessions WHERE id = %s", (session_id,)
        )
        if found is None:
            return None
        return self._codec.session(session_id, found[0], found[1], found[2])

    async def put(self, session: session_pb2.Session, refresh_token: str) -> int:
        row = self._codec.to_row(session, refresh_token)
        found = await self._one(
            _PUT,
            (
                row.id,
                row.record,
                row.tokens,
                row.refresh,
                row.expires_at,
                row.access_token_expires_at,
                self.channel,
            ),
        )
        assert found is not None  # an upsert always returns its row
        version = int(found[0])
        self._changes.publish(Event(PUT, row.id, version))
        return version

    async def delete(self, session_id: str) -> bool:
        found = await self._one(_DELETE, (session_id, self.channel))
        if found is None:
            return False
        self._changes.publish(Event(DELETE, session_id, int(found[0]) + 1))
        return True

    def changes(self) -> Changes:
        return self._changes

    async def get_refresh_token(self, session_id: str) -> str | None:
        found = await self._one("SELECT refresh FROM vallum_sessions WHERE id = %s", (session_id,))
        return None if found is None else self._codec.refresh_token(session_id, found[0])

    async def due_for_refresh(self, before: float, limit: int) -> list[str]:
        return [str(row[0]) for row in await self._all(_DUE, (before, limit))]

    async def claim_refresh(self, session_id: str, owner: str, lease_seconds: float) -> bool:
        return await self._one(_CLAIM, (owner, lease_seconds, session_id)) is not None

    async def release_refresh(self, session_id: str, owner: str) -> bool:
        return await self._one(_RELEASE, (session_id, owner)) is not None

    async def expire(self, now: float) -> int:
        gone = await self._all(_EXPIRE, (now, self.channel))
        for session_id, version, _ in gone:
            self._changes.publish(Event(DELETE, str(session_id), int(version) + 1))
        return len(gone)

    async def close(self) -> None:
        await self.listener.close()
        await self._pool.close()
