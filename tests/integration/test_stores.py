"""The session stores (memory, sqlite, postgres): one suite, the same behaviour.

PostgreSQL tests run in a fresh schema per test (dropped afterwards), so parallel
runs on one database do not meet. Without a reachable PostgreSQL they skip, except
under CI=true, where they fail: CI machines have one.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import yaml
from google.protobuf import struct_pb2, timestamp_pb2
from psycopg import sql

from services.authenticate.service import start as start_authenticate
from services.authenticate.stores import (
    Changes,
    Event,
    MemoryStore,
    MemoryTable,
    PostgresStore,
    SessionStore,
    SqliteStore,
    open_store,
)
from services.authenticate.stores.feed import DELETE, PUT, RESET
from shared.config import Config, load_config, parse_config
from shared.pb import session_pb2, session_pb2_grpc
from shared.rpc import ServiceChannel, StartupError
from tests.support.certs import TRUST_DOMAIN, make_ca, service_pair
from tests.support.net import free_port
from tests.support.postgres import require_postgres
from tests.support.procs import ROOT

pytestmark = pytest.mark.integration

SECRET = b"S" * 32
OTHER_SECRET = b"O" * 32


# --- PostgreSQL availability ---------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    return require_postgres()


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """A fresh schema; the DSN to use it is schema_dsn(postgres_dsn, schema)."""
    schema = f"vallum_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield schema
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def schema_dsn(dsn: str, schema: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, options=f"-csearch_path={schema}")


# --- one harness per backend ---------------------------------------------------------


class Harness:
    """Opens stores on one backing storage (as replicas, or as a restart would)."""

    kind = ""
    where = ""  # what a child process needs to open the same storage

    def __init__(self) -> None:
        self.opened: list[SessionStore] = []

    async def _open(self, secret: bytes) -> SessionStore:
        raise NotImplementedError

    async def open(self, secret: bytes = SECRET) -> SessionStore:
        store = await self._open(secret)
        self.opened.append(store)
        return store

    async def raw(self) -> bytes:
        """Everything the backend holds, as the bytes an attacker with the disk sees."""
        raise NotImplementedError

    async def close(self) -> None:
        for store in self.opened:
            await store.close()


class MemoryHarness(Harness):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.table = MemoryTable()

    async def _open(self, secret: bytes) -> SessionStore:
        return MemoryStore(secret, self.table)

    async def raw(self) -> bytes:
        parts: list[bytes] = []
        for stored in self.table.rows.values():
            row = stored.row
            parts += [row.id.encode(), row.record, row.tokens, row.refresh or b""]
        return b"".join(parts)


class SqliteHarness(Harness):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.where = str(path)

    async def _open(self, secret: bytes) -> SessionStore:
        return await SqliteStore.open(str(self.path), secret)

    async def raw(self) -> bytes:
        # A put may still sit in the write-ahead log: read both files.
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())


class PostgresHarness(Harness):
    kind = "postgres"

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn
        self.where = dsn

    async def _open(self, secret: bytes) -> SessionStore:
        return await PostgresStore.open(self.dsn, secret)

    async def raw(self) -> bytes:
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            cur = await conn.execute(
                "SELECT id, record, tokens, refresh, t::text FROM vallum_sessions t"
            )
            rows = await cur.fetchall()
        return b"".join(
            b"".join(v.encode() if isinstance(v, str) else (v or b"") for v in row) for row in rows
        )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    made: Harness
    if request.param == "memory":
        made = MemoryHarness()
    elif request.param == "sqlite":
        made = SqliteHarness(tmp_path / "data" / "sessions.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        made = PostgresHarness(schema_dsn(dsn, request.getfixturevalue("pg_schema")))
    yield made
    await made.close()


@pytest.fixture
async def store(harness: Harness) -> SessionStore:
    return await harness.open()


@pytest.fixture
async def pg(postgres_dsn: str, pg_schema: str) -> AsyncIterator[PostgresHarness]:
    made = PostgresHarness(schema_dsn(postgres_dsn, pg_schema))
    yield made
    await made.close()


# --- helpers -------------------------------------------------------------------------


def make_session(
    sid: str,
    *,
    ttl: float = 3600,
    access_ttl: float | None = 600,
    now: float | None = None,
) -> session_pb2.Session:
    now = time.time() if now is None else now
    claims = struct_pb2.Struct()
    claims.update({"family_name": "Example", "nested": {"list": [1, "two", True]}})
    session = session_pb2.Session(
        id=sid,
        user_id=f"user-{sid}",
        email=f"{sid}@example.com",
        name="Alice Example",
        groups=["admins", "staff"],
        claims=claims,
        issued_at=timestamp_pb2.Timestamp(seconds=int(now)),
        id_token=f"ID-TOKEN-PLAINTEXT-{sid}",
        access_token=f"ACCESS-TOKEN-PLAINTEXT-{sid}",
    )
    session.expires_at.FromNanoseconds(int((now + ttl) * 1e9))
    if access_ttl is not None:
        session.access_token_expires_at.FromNanoseconds(int((now + access_ttl) * 1e9))
    return session


class Watcher:
    """Collects a Changes feed's events from the moment start() returns."""

    def __init__(self, changes: Changes) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self._before = changes.watchers
        self._changes = changes
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self._changes.subscribe():
            await self.queue.put(event)

    @classmethod
    async def start(cls, changes: Changes) -> Watcher:
        watcher = cls(changes)
        for _ in range(100):
            if changes.watchers > watcher._before:
                return watcher
            await asyncio.sleep(0)
        raise AssertionError("subscription did not start")

    async def next(self, timeout: float = 1.0) -> Event:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def quiet(self, seconds: float = 0.2) -> list[Event]:
        """Whatever else arrives within `seconds`."""
        await asyncio.sleep(seconds)
        events = []
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        return events

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


# --- the shared suite ----------------------------------------------------------------


async def test_put_get_round_trip_keeps_every_field(store: SessionStore) -> None:
    session = make_session("s1")
    assert await store.put(session, "REFRESH-TOKEN-PLAINTEXT") == 1
    got = await store.get("s1")
    assert got is not None
    expected = session_pb2.Session()
    expected.CopyFrom(session)
    expected.version = 1
    assert got == expected
    assert got.id_token == "ID-TOKEN-PLAINTEXT-s1"
    assert got.access_token == "ACCESS-TOKEN-PLAINTEXT-s1"
    assert await store.get_refresh_token("s1") == "REFRESH-TOKEN-PLAINTEXT"
    assert await store.get("missing") is None
    assert await store.get_refresh_token("missing") is None


async def test_versions_increase_per_session(store: SessionStore) -> None:
    assert await store.put(make_session("a"), "r") == 1
    assert await store.put(make_session("a"), "r") == 2
    assert await store.put(make_session("b"), "r") == 1
    third = make_session("a")
    third.version = 99  # the caller's version means nothing; the store counts
    third.email = "changed@example.com"
    assert await store.put(third, "r2") == 3
    got = await store.get("a")
    assert got is not None
    assert (got.version, got.email) == (3, "changed@example.com")
    assert await store.get_refresh_token("a") == "r2"


async def test_delete(store: SessionStore) -> None:
    await store.put(make_session("a"), "r")
    assert await store.delete("a") is True
    assert await store.get("a") is None
    assert await store.get_refresh_token("a") is None
    assert await store.delete("a") is False


async def test_put_and_delete_publish_events(store: SessionStore) -> None:
    watcher = await Watcher.start(store.changes())
    await store.put(make_session("a"), "r")
    await store.put(make_session("a"), "r")
    await store.delete("a")
    await store.delete("a")  # nothing deleted, nothing published
    assert [await watcher.next() for _ in range(3)] == [
        Event(PUT, "a", 1),
        Event(PUT, "a", 2),
        Event(DELETE, "a", 3),
    ]
    # Exactly once each: postgres must not echo its own NOTIFY back as a second event.
    assert await watcher.quiet() == []
    await watcher.stop()


async def test_expire_deletes_past_sessions_and_publishes(store: SessionStore) -> None:
    now = time.time()
    await store.put(make_session("old", now=now - 7200, ttl=3600), "r")
    await store.put(make_session("edge", now=now - 60, ttl=60), "r")
    await store.put(make_session("fresh", now=now), "r")
    watcher = await Watcher.start(store.changes())
    assert await store.expire(now) == 2
    assert await store.get("old") is None
    assert await store.get("edge") is None
    assert await store.get("fresh") is not None
    events = {await watcher.next(), await watcher.next()}
    assert events == {Event(DELETE, "old", 2), Event(DELETE, "edge", 2)}
    assert await store.expire(now) == 0
    await watcher.stop()


async def test_claim_refresh_is_exclusive_across_instances(harness: Harness) -> None:
    first = await harness.open()
    second = await harness.open()  # another replica, or another process on the file
    await first.put(make_session("a"), "r")
    results = await asyncio.gather(
        *[(first, second)[i % 2].claim_refresh("a", f"owner-{i}", 30) for i in range(40)]
    )
    assert results.count(True) == 1
    # The lease holds even against its owner asking again (two tasks of one replica).
    assert await first.claim_refresh("a", f"owner-{results.index(True)}", 30) is False
    assert await first.claim_refresh("missing", "x", 30) is False


async def test_claim_refresh_is_free_again_once_the_lease_expires(harness: Harness) -> None:
    first = await harness.open()
    second = await harness.open()
    await first.put(make_session("a"), "r")
    assert await first.claim_refresh("a", "short", 1.0)
    assert await second.claim_refresh("a", "early", 30) is False
    await asyncio.sleep(1.2)
    results = await asyncio.gather(
        *[(first, second)[i % 2].claim_refresh("a", f"late-{i}", 30) for i in range(10)]
    )
    assert results.count(True) == 1


async def test_release_refresh_frees_only_the_owners_lease(store: SessionStore) -> None:
    await store.put(make_session("a"), "r")
    assert await store.claim_refresh("a", "me", 30)
    assert await store.release_refresh("a", "someone-else") is False
    assert await store.claim_refresh("a", "other", 30) is False
    assert await store.release_refresh("a", "me") is True
    assert await store.claim_refresh("a", "other", 30) is True


async def test_a_put_keeps_the_lease(store: SessionStore) -> None:
    # The refresher's own put of the renewed tokens must not let another replica in.
    await store.put(make_session("a"), "r")
    assert await store.claim_refresh("a", "me", 30)
    await store.put(make_session("a"), "r2")
    assert await store.claim_refresh("a", "other", 30) is False


async def test_due_for_refresh(store: SessionStore) -> None:
    now = time.time()
    await store.put(make_session("in20", now=now, access_ttl=20), "r")
    await store.put(make_session("in10", now=now, access_ttl=10), "r")
    await store.put(make_session("in30", now=now, access_ttl=30), "r")
    await store.put(make_session("no-refresh", now=now, access_ttl=5), "")
    await store.put(make_session("no-expiry", now=now, access_ttl=None), "r")
    assert await store.due_for_refresh(now + 25, 10) == ["in10", "in20"]
    assert await store.due_for_refresh(now + 25, 1) == ["in10"]
    assert await store.due_for_refresh(now, 10) == []
    # A session someone is refreshing right now is not offered again.
    assert await store.claim_refresh("in10", "me", 30)
    assert await store.due_for_refresh(now + 25, 10) == ["in20"]


async def test_tokens_are_not_stored_in_plaintext(harness: Harness, store: SessionStore) -> None:
    await store.put(make_session("a"), "REFRESH-TOKEN-PLAINTEXT")
    raw = await harness.raw()
    # The raw read does see the record (so the next asserts mean something)...
    assert b"a@example.com" in raw
    # ...but none of the tokens.
    for token in (b"ID-TOKEN-PLAINTEXT", b"ACCESS-TOKEN-PLAINTEXT", b"REFRESH-TOKEN-PLAINTEXT"):
        assert token not in raw


async def test_a_row_sealed_with_another_secret_reads_as_absent(
    harness: Harness, store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.put(make_session("a"), "r")
    await store.put(make_session("b"), "r")
    other = await harness.open(OTHER_SECRET)
    with caplog.at_level(logging.WARNING, logger="vallum.authenticate.store"):
        assert await other.get("a") is None
        assert await other.get("b") is None
        assert await other.get_refresh_token("a") is None
    warnings = [r for r in caplog.records if "does not open" in r.getMessage()]
    assert len(warnings) == 1
    assert "a@example.com" not in caplog.text
    # The rightful secret still opens them, and the other can overwrite them.
    assert await store.get("a") is not None
    assert await other.put(make_session("a"), "new") == 2
    got = await other.get("a")
    assert got is not None and got.access_token == "ACCESS-TOKEN-PLAINTEXT-a"


async def test_put_refuses_an_empty_id(store: SessionStore) -> None:
    with pytest.raises(ValueError, match="empty"):
        await store.put(session_pb2.Session(), "r")


# --- persistence ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    made: Harness
    if request.param == "sqlite":
        made = SqliteHarness(tmp_path / "data" / "sessions.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        made = PostgresHarness(schema_dsn(dsn, request.getfixturevalue("pg_schema")))
    yield made
    await made.close()


async def test_sessions_survive_close_and_reopen(durable: Harness) -> None:
    first = await durable.open()
    await first.put(make_session("a"), "refresh-a")
    assert await first.claim_refresh("a", "me", 60)
    await first.close()
    again = await durable.open()
    got = await again.get("a")
    assert got is not None and got.access_token == "ACCESS-TOKEN-PLAINTEXT-a"
    assert await again.get_refresh_token("a") == "refresh-a"
    assert await again.put(make_session("a"), "r") == 2  # versions carry on
    assert await again.claim_refresh("a", "other", 60) is False  # so do leases


CHILD = """
import asyncio, sys, time
from services.authenticate.stores import PostgresStore, SqliteStore
from shared.pb import session_pb2

async def main() -> None:
    kind, where, count, secret = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    opener = SqliteStore.open if kind == "sqlite" else PostgresStore.open
    store = await opener(where, bytes.fromhex(secret))
    for i in range(count):
        session = session_pb2.Session(id=f"k{i}", email=f"k{i}@example.com", access_token=f"at{i}")
        session.expires_at.seconds = int(time.time()) + 3600
        await store.put(session, f"rt{i}")
    print("ok", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_put_survives_sigkill_right_after_it_returns(durable: Harness) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        durable.kind,
        durable.where,
        "50",
        SECRET.hex(),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"ok"
    finally:
        child.send_signal(signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
    store = await durable.open()
    for i in range(50):
        got = await store.get(f"k{i}")
        assert got is not None and got.access_token == f"at{i}"
        assert await store.get_refresh_token(f"k{i}") == f"rt{i}"


# --- postgres across replicas --------------------------------------------------------


async def test_postgres_a_delete_on_one_replica_reaches_watchers_of_another(
    pg: PostgresHarness,
) -> None:
    a = await pg.open()
    b = await pg.open()
    watch_b = await Watcher.start(b.changes())
    await a.put(make_session("x"), "r")
    assert await watch_b.next() == Event(PUT, "x", 1)
    started = time.monotonic()
    assert await a.delete("x")
    assert await watch_b.next(timeout=1.0) == Event(DELETE, "x", 2)
    assert time.monotonic() - started < 1.0
    await a.put(make_session("old", now=time.time() - 7200), "r")
    assert await watch_b.next() == Event(PUT, "old", 1)
    assert await a.expire(time.time()) == 1
    assert await watch_b.next() == Event(DELETE, "old", 2)
    await watch_b.stop()


async def test_postgres_claim_refresh_is_exclusive_across_replicas(pg: PostgresHarness) -> None:
    replicas = [await pg.open() for _ in range(3)]
    await replicas[0].put(make_session("x"), "r")
    results = await asyncio.gather(
        *[replicas[i % 3].claim_refresh("x", f"r{i}", 30) for i in range(30)]
    )
    assert results.count(True) == 1


async def test_postgres_lost_listen_connection_resets_and_recovers(pg: PostgresHarness) -> None:
    a = await pg.open()
    b = await pg.open()
    assert isinstance(b, PostgresStore)
    watch_b = await Watcher.start(b.changes())
    assert b.listener.conn is not None
    pid = b.listener.conn.info.backend_pid
    async with await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # One RESET when the feed drops, another once it listens again.
    assert await watch_b.next(timeout=5) == Event(RESET)
    assert await watch_b.next(timeout=5) == Event(RESET)
    assert b.listener.reconnects == 1
    await a.put(make_session("y"), "r")
    assert await watch_b.next() == Event(PUT, "y", 1)
    await watch_b.stop()


async def test_postgres_store_works_after_its_connections_are_killed(pg: PostgresHarness) -> None:
    store = await pg.open()
    await store.put(make_session("x"), "r")
    async with await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'vallum-authenticate' AND pid <> pg_backend_pid()"
        )
    # The pooled connection is dead; the store retries once on a fresh one.
    assert await store.get("x") is not None


# --- open_store and configuration ----------------------------------------------------


def config(tmp_path: Path, **extra: Any) -> Config:
    raw = {"shared_secret": base64.b64encode(SECRET).decode(), "data_dir": str(tmp_path), **extra}
    return parse_config(raw, {}, str(tmp_path))


async def test_open_store_defaults_to_sqlite_in_data_dir(tmp_path: Path) -> None:
    store = await open_store(config(tmp_path / "data"))
    try:
        assert isinstance(store, SqliteStore)
        path = tmp_path / "data" / "sessions.db"
        assert store.path == str(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
        await store.put(make_session("a"), "r")
    finally:
        await store.close()


async def test_open_store_memory_and_postgres(tmp_path: Path, postgres_dsn: str) -> None:
    memory = await open_store(config(tmp_path, databroker_storage_type="memory"))
    assert isinstance(memory, MemoryStore)
    postgres = await open_store(
        config(
            tmp_path,
            databroker_storage_type="postgres",
            databroker_storage_connection_string=postgres_dsn,
        )
    )
    try:
        assert isinstance(postgres, PostgresStore)
        assert postgres.channel == "vallum_sessions"
    finally:
        await postgres.close()


async def test_unreachable_postgres_is_one_line_without_the_password(tmp_path: Path) -> None:
    port = free_port()
    dsn = f"postgresql://vallum:hunter2secret@127.0.0.1:{port}/sessions"
    with pytest.raises(StartupError) as caught:
        await open_store(
            config(
                tmp_path,
                databroker_storage_type="postgres",
                databroker_storage_connection_string=dsn,
            )
        )
    message = str(caught.value)
    assert message.startswith(
        "databroker_storage_connection_string: cannot connect to postgres at "
        f"127.0.0.1:{port}/sessions: "
    )
    assert "refused" in message.lower()
    assert "hunter2secret" not in message
    assert "\n" not in message


async def test_unparsable_connection_string_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(StartupError) as caught:
        await PostgresStore.open("host=db password='hunter2secret", SECRET)
    assert str(caught.value).startswith("databroker_storage_connection_string: not a valid")
    assert "hunter2secret" not in str(caught.value)


async def test_wrong_postgres_password_names_the_reason(tmp_path: Path, postgres_dsn: str) -> None:
    dsn = psycopg.conninfo.make_conninfo(postgres_dsn, dbname="no_such_db_vallum")
    with pytest.raises(StartupError, match='database "no_such_db_vallum" does not exist'):
        await PostgresStore.open(dsn, SECRET)


async def test_unwritable_sqlite_location_is_a_startup_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StartupError) as caught:
        await open_store(config(blocker / "data"))
    assert str(caught.value) == (
        f"data_dir: cannot open the session store {blocker}/data/sessions.db: Not a directory"
    )


async def test_open_store_requires_shared_secret(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="shared_secret: required"):
        await open_store(parse_config({"data_dir": str(tmp_path)}, {}, str(tmp_path)))


# --- SessionService on the sqlite store, across a restart ----------------------------


async def test_session_service_keeps_sessions_across_an_authenticate_restart(
    tmp_path: Path,
) -> None:
    ca = make_ca(tmp_path / "ca")
    pair = service_pair(ca, tmp_path / "certs", "authenticate")
    url = f"https://127.0.0.1:{free_port()}"
    path = tmp_path / "authenticate.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "services": "authenticate",
                "shared_secret": base64.b64encode(SECRET).decode(),
                "cookie_secret": base64.b64encode(SECRET).decode(),
                "certificate_authority_file": str(tmp_path / "ca" / "ca.pem"),
                "internal_certificate_file": str(pair.cert),
                "internal_certificate_key_file": str(pair.key),
                "trust_domain": TRUST_DOMAIN,
                "databroker_service_url": url,
                "data_dir": str(tmp_path / "data"),
            }
        )
    )
    cfg = load_config(str(path), {})
    assert cfg.databroker_storage_type == "sqlite"
    channel = ServiceChannel(url, pair.tls(tmp_path / "ca" / "ca.pem"))
    try:
        service = await start_authenticate(cfg)
        stub = session_pb2_grpc.SessionServiceStub(channel.get())
        put = await stub.Put(
            session_pb2.PutRequest(session=make_session("kept"), refresh_token="rt"), timeout=5
        )
        assert put.version == 1
        await service.stop(1)

        service = await start_authenticate(cfg)
        for _ in range(50):
            try:
                stub = session_pb2_grpc.SessionServiceStub(channel.get())
                found = await stub.Get(
                    session_pb2.GetRequest(id="kept", include_tokens=True), timeout=5
                )
                break
            except grpc.aio.AioRpcError:  # the channel may still be reconnecting
                await asyncio.sleep(0.1)
        assert found.found
        assert found.session.access_token == "ACCESS-TOKEN-PLAINTEXT-kept"
        assert found.session.version == 1
        await service.stop(1)
    finally:
        await channel.close()
