"""Pure parts of the session stores: sealing rows, the change feed, the NOTIFY
payload, and describing a PostgreSQL target without its password."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from services.authenticate.stores.feed import DELETE, PUT, RESET, Changes, Event
from services.authenticate.stores.pg_conn import (
    BadConnectionString,
    describe_error,
    describe_target,
    with_defaults,
)
from services.authenticate.stores.pg_listen import parse_payload
from services.authenticate.stores.postgres import channel_for
from services.authenticate.stores.records import RecordCodec
from shared.pb import session_pb2

SECRET = b"k" * 32


def session(sid: str = "sid-1") -> session_pb2.Session:
    s = session_pb2.Session(
        id=sid, email="a@example.com", groups=["g"], id_token="IDT", access_token="AT"
    )
    s.expires_at.FromNanoseconds(1_700_000_000_500_000_000)
    s.access_token_expires_at.FromNanoseconds(1_700_000_100_250_000_000)
    return s


def test_row_keeps_the_record_without_tokens_and_indexes_times() -> None:
    row = RecordCodec(SECRET).to_row(session(), "RT")
    bare = session_pb2.Session.FromString(row.record)
    assert (bare.id_token, bare.access_token, bare.version) == ("", "", 0)
    assert bare.email == "a@example.com"
    assert row.expires_at == pytest.approx(1_700_000_000.5)
    assert row.access_token_expires_at == pytest.approx(1_700_000_100.25)
    for sealed in (row.tokens, row.refresh):
        assert sealed is not None
        assert b"IDT" not in sealed and b"AT" not in sealed and b"RT" not in sealed


def test_round_trip_and_version_from_the_backend() -> None:
    codec = RecordCodec(SECRET)
    row = codec.to_row(session(), "RT")
    opened = codec.session(row.id, row.record, row.tokens, 7)
    expected = session()
    expected.version = 7
    assert opened == expected
    assert codec.refresh_token(row.id, row.refresh) == "RT"


def test_no_refresh_token_and_no_access_expiry_are_null() -> None:
    s = session()
    s.ClearField("access_token_expires_at")
    row = RecordCodec(SECRET).to_row(s, "")
    assert row.refresh is None
    assert row.access_token_expires_at is None
    assert RecordCodec(SECRET).refresh_token(row.id, None) is None


def test_sealing_is_randomised() -> None:
    codec = RecordCodec(SECRET)
    assert codec.to_row(session(), "RT").tokens != codec.to_row(session(), "RT").tokens


def test_sealed_tokens_do_not_open_in_another_row_or_column(
    caplog: pytest.LogCaptureFixture,
) -> None:
    codec = RecordCodec(SECRET)
    a = codec.to_row(session("a"), "RT-a")
    b = codec.to_row(session("b"), "RT-b")
    with caplog.at_level(logging.WARNING):
        assert codec.session("b", b.record, a.tokens, 1) is None  # moved to another session
        assert codec.refresh_token("b", a.refresh) is None
        assert codec.refresh_token("a", a.tokens) is None  # moved to another column
        assert codec.session("a", a.record, a.tokens[:-1] + b"\0", 1) is None  # altered
        assert codec.session("a", a.record, b"\x02" + a.tokens[1:], 1) is None  # unknown format
        assert codec.session("a", b"\xff\xff", a.tokens, 1) is None  # damaged record
    # Logged once per store.
    assert len(caplog.records) == 1


def test_the_log_never_holds_a_whole_session_id(caplog: pytest.LogCaptureFixture) -> None:
    sid = "a-long-session-id-that-is-a-bearer-credential"
    row = RecordCodec(SECRET).to_row(session(sid), "RT")
    with caplog.at_level(logging.WARNING):
        assert RecordCodec(b"x" * 32).session(sid, row.record, row.tokens, 1) is None
    assert caplog.records and sid not in caplog.text


def test_another_secret_reads_as_absent() -> None:
    row = RecordCodec(SECRET).to_row(session(), "RT")
    other = RecordCodec(b"x" * 32)
    assert other.session(row.id, row.record, row.tokens, 1) is None
    assert other.refresh_token(row.id, row.refresh) is None


def test_an_empty_id_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        RecordCodec(SECRET).to_row(session_pb2.Session(), "")


def test_the_caller_session_is_not_modified() -> None:
    s = session()
    before = s.SerializeToString()
    RecordCodec(SECRET).to_row(s, "RT")
    assert s.SerializeToString() == before


async def test_a_watcher_that_falls_behind_gets_one_reset() -> None:
    changes = Changes(depth=2)
    stream = changes.subscribe()
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    changes.publish(Event(PUT, "a", 1))
    assert await first == Event(PUT, "a", 1)
    for version in range(2, 5):  # the third overflows the queue of 2
        changes.publish(Event(PUT, "a", version))
    assert await anext(stream) == Event(RESET)
    changes.publish(Event(DELETE, "a", 6))
    assert await anext(stream) == Event(DELETE, "a", 6)
    await stream.aclose()
    assert changes.watchers == 0


@pytest.mark.parametrize(
    ("payload", "event"),
    [
        ("put:abc:3", Event(PUT, "abc", 3)),
        ("delete:abc-_x:12", Event(DELETE, "abc-_x", 12)),
        ("put:odd:id:4", Event(PUT, "odd:id", 4)),
        ("reset", None),
        ("put::1", None),
        ("put:abc:", None),
        ("put:abc:x", None),
        ("drop:abc:1", None),
    ],
)
def test_notify_payload(payload: str, event: Event | None) -> None:
    assert parse_payload(payload) == event


def test_channel_per_schema() -> None:
    assert channel_for("public") == "vallum_sessions"
    assert channel_for("tenant_a") == "vallum_sessions_tenant_a"
    assert len(channel_for("x" * 63)) == 63


def test_describe_target() -> None:
    assert describe_target("postgresql://u:pw@db.internal:6432/vallum") == "db.internal:6432/vallum"
    assert describe_target("host=db user=vallum") == "db:5432/vallum"
    assert describe_target("dbname=x") == "the local socket:5432/x"


def test_describe_error_is_one_line_without_password_or_repeated_target() -> None:
    error = Exception(
        'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
        'FATAL:  password authentication failed for user "vallum" (tried s3cr3t)\n\tmore'
    )
    text = describe_error(error, "postgresql://vallum:s3cr3t@10.0.0.5/v")
    assert text == 'password authentication failed for user "vallum" (tried ***) more'


def test_with_defaults_keeps_what_the_operator_set() -> None:
    full = with_defaults("host=db connect_timeout=20")
    assert "connect_timeout=20" in full
    assert "keepalives=1" in full
    assert "application_name=vallum-authenticate" in full


def test_an_unparsable_connection_string_is_not_quoted() -> None:
    with pytest.raises(BadConnectionString) as caught:
        with_defaults("host=db password='s3cr3t")
    assert "s3cr3t" not in str(caught.value)


def test_row_is_immutable() -> None:
    row = RecordCodec(SECRET).to_row(session(), "RT")
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.id = "other"  # type: ignore[misc]
