"""Session store `get` of an existing session, in this process: what authenticate's
SessionService.Get spends in its store (a row read and the record and tokens opened
with the shared secret).

sqlite in a temporary data_dir; PostgreSQL in a fresh schema of the database the
tests use (VALLUM_TEST_POSTGRES_DSN, default 127.0.0.1:5432, user postgres, db test),
dropped afterwards. Without a reachable PostgreSQL its row says "not measured" and
why; the rest of the bench goes on. The memory store is the floor: no I/O at all.
"""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import uvloop
from google.protobuf import struct_pb2
from psycopg import sql

from services.authenticate.stores import MemoryStore, PostgresStore, SessionStore, SqliteStore
from shared.pb import session_pb2
from shared.sessions import new_session_id

GETS = 2_000
WARMUP = 100
SECRET = secrets.token_bytes(32)
POSTGRES_DSN = os.environ.get(
    "VALLUM_TEST_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)


@dataclass
class StoreTiming:
    store: str
    mean_us: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    cpu_us: float = 0.0
    skipped: str | None = None  # "not measured" reason


def a_session(session_id: str) -> session_pb2.Session:
    """About the size of one from a real IdP: claims, and tokens that are JWTs."""
    now = time.time()
    claims = struct_pb2.Struct()
    claims.update({"email_verified": True, "locale": "en", "preferred_username": "alice"})
    session = session_pb2.Session(
        id=session_id,
        user_id="alice",
        email="alice@example.com",
        name="Alice Example",
        groups=["admins", "staff"],
        claims=claims,
        id_token="eyJ" + "i" * 900,
        access_token="eyJ" + "a" * 900,
    )
    session.issued_at.FromNanoseconds(int(now * 1e9))
    session.expires_at.FromNanoseconds(int((now + 3600) * 1e9))
    session.access_token_expires_at.FromNanoseconds(int((now + 600) * 1e9))
    return session


async def time_gets(name: str, store: SessionStore) -> StoreTiming:
    session_id = new_session_id()
    await store.put(a_session(session_id), "refresh-token")
    for _ in range(WARMUP):
        await store.get(session_id)
    samples: list[float] = []
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    for _ in range(GETS):
        start = time.perf_counter()
        found = await store.get(session_id)
        samples.append(time.perf_counter() - start)
        if found is None:  # a miss is a different (cheaper) path: not what is asked
            raise RuntimeError(f"{name} store lost the session it was given")
    wall = time.perf_counter() - wall_before
    cpu = time.process_time() - cpu_before
    return StoreTiming(
        name,
        wall * 1e6 / GETS,
        statistics.median(samples) * 1e6,
        statistics.quantiles(samples, n=100)[98] * 1e6,
        cpu * 1e6 / GETS,
    )


async def _measure_one(name: str, store: SessionStore) -> StoreTiming:
    try:
        return await time_gets(name, store)
    finally:
        await store.close()


def postgres_reachable() -> str | None:
    """None, or why PostgreSQL cannot be used (the message the tests skip with)."""
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3):
            return None
    except psycopg.Error as e:
        return f"PostgreSQL not reachable at {POSTGRES_DSN!r}: {' '.join(str(e).split())}"


async def _postgres() -> StoreTiming:
    why = postgres_reachable()
    if why is not None:
        return StoreTiming("postgres", skipped=why)
    schema = f"vallum_bench_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        dsn = psycopg.conninfo.make_conninfo(POSTGRES_DSN, options=f"-csearch_path={schema}")
        return await _measure_one("postgres", await PostgresStore.open(dsn, SECRET))
    except Exception as e:  # a broken database must not sink the other figures
        return StoreTiming("postgres", skipped=f"{type(e).__name__}: {str(e).splitlines()[0]}")
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def measure() -> list[StoreTiming]:
    results = [await _measure_one("memory", MemoryStore(SECRET))]
    with tempfile.TemporaryDirectory(prefix="vallum-bench-") as d:
        path = Path(d) / "data" / "sessions.db"
        results.append(await _measure_one("sqlite", await SqliteStore.open(str(path), SECRET)))
    results.append(await _postgres())
    return results


def run() -> list[StoreTiming]:
    # uvloop: the loop authenticate's stores run on.
    return uvloop.run(measure())


def report() -> str:
    lines = [
        "| store | µs / get, mean | p50 µs | p99 µs | CPU µs / get, this process |",
        "|---|---|---|---|---|",
    ]
    for r in run():
        if r.skipped is not None:
            lines.append(f"| {r.store} | not measured: {r.skipped} | | | |")
        else:
            lines.append(
                f"| {r.store} | {r.mean_us:,.1f} | {r.p50_us:,.1f} | {r.p99_us:,.1f} "
                f"| {r.cpu_us:,.1f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tests.bench.stores
    print(report())
