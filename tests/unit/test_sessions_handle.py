from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.sessions import MAX_HANDLE_LENGTH, HandleCodec, InvalidHandle, new_session_id

SECRET = b"s" * 32
NOW = 1_800_000_000


def test_round_trip() -> None:
    codec = HandleCodec(SECRET)
    sid = new_session_id()
    assert codec.open(codec.seal(sid, NOW + 60), NOW) == sid


def test_handles_differ_each_time_and_hide_the_id() -> None:
    codec = HandleCodec(SECRET)
    a, b = codec.seal("session-1", NOW + 60), codec.seal("session-1", NOW + 60)
    assert a != b
    assert "session-1" not in a and b"session-1" not in base64.urlsafe_b64decode(a[3:] + "==")


def test_other_secret_is_refused() -> None:
    handle = HandleCodec(SECRET).seal("s", NOW + 60)
    with pytest.raises(InvalidHandle, match="another secret"):
        HandleCodec(b"t" * 32).open(handle, NOW)


def test_expired_is_refused() -> None:
    codec = HandleCodec(SECRET)
    with pytest.raises(InvalidHandle, match="expired"):
        codec.open(codec.seal("s", NOW), NOW)


@pytest.mark.parametrize(
    ("handle", "why"),
    [
        ("", "not a Vallum"),
        ("v2.abc", "not a Vallum"),
        ("v1.!!!", "not base64url"),
        ("v1.AAAA", "too short"),
        ("v1." + "A" * MAX_HANDLE_LENGTH, "too long"),
    ],
)
def test_garbage_is_refused(handle: str, why: str) -> None:
    with pytest.raises(InvalidHandle, match=why):
        HandleCodec(SECRET).open(handle, NOW)


@given(st.integers(min_value=3, max_value=80), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_is_refused(position: int, value: int) -> None:
    codec = HandleCodec(SECRET)
    handle = codec.seal("session-x", NOW + 60)
    raw = bytearray(base64.urlsafe_b64decode(handle[3:] + "=" * (-len(handle[3:]) % 4)))
    index = position % len(raw)
    if raw[index] == value:
        value ^= 1
    raw[index] = value
    tampered = "v1." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidHandle):
        codec.open(tampered, NOW)


def test_session_ids_are_long_and_unique() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) >= 43 for i in ids)
