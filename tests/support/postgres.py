"""The PostgreSQL the tests use: 127.0.0.1:5432 (tests/tools/install.sh sets one up),
or VALLUM_TEST_POSTGRES_DSN. Without one, a test skips, or fails under CI=true."""

from __future__ import annotations

import os

import psycopg
import pytest

POSTGRES_DSN = os.environ.get(
    "VALLUM_TEST_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)


def require_postgres() -> str:
    """The DSN, once a connection to it succeeded; else skip (fail under CI=true)."""
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3):
            pass
    except psycopg.Error as e:
        reason = f"PostgreSQL not reachable at {POSTGRES_DSN!r}: {' '.join(str(e).split())}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return POSTGRES_DSN
