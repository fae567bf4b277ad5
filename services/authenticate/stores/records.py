"""How a session becomes a stored row, and back.

The OAuth tokens are sealed with AES-256-GCM under a key derived from
`shared_secret`; the rest of the record is the serialized protobuf (it holds no
credential). The additional data names the column and the session id, so a sealed
token copied into another row or another column does not open. A row that does not
open (another shared_secret, damage) reads as absent, logged once per store, never
as an error: the user signs in again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from shared.pb import session_pb2
from shared.sessions import derive_key

log = logging.getLogger("vallum.authenticate.store")

KEY_LABEL = b"vallum session tokens v1"
_FORMAT = b"\x01"  # first byte of a sealed value: lets a later format coexist
_NONCE = 12


class Unreadable(Exception):
    """A stored value that does not open or parse."""


@dataclass(frozen=True, slots=True)
class Row:
    """One session as every backend stores it (version and lease are the backend's)."""

    id: str
    record: bytes  # Session without tokens or version
    tokens: bytes  # sealed Session(id_token, access_token)
    refresh: bytes | None  # sealed refresh token; None when there is none to use
    expires_at: float
    access_token_expires_at: float | None


def seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


class RecordCodec:
    def __init__(self, shared_secret: bytes) -> None:
        self._aead = AESGCM(derive_key(shared_secret, KEY_LABEL))
        self._warned = False

    def _seal(self, column: str, session_id: str, plain: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        aad = f"{column}:{session_id}".encode()
        return _FORMAT + nonce + self._aead.encrypt(nonce, plain, aad)

    def _open(self, column: str, session_id: str, sealed: bytes) -> bytes:
        if sealed[:1] != _FORMAT or len(sealed) < 1 + _NONCE:
            raise Unreadable(f"{column} is not in a known format")
        aad = f"{column}:{session_id}".encode()
        try:
            return self._aead.decrypt(sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :], aad)
        except InvalidTag:
            raise Unreadable(
                f"{column} does not open (sealed with another shared_secret, or altered)"
            ) from None

    def to_row(self, session: session_pb2.Session, refresh_token: str) -> Row:
        if not session.id:
            raise ValueError("session.id is empty")
        bare = session_pb2.Session()
        bare.CopyFrom(session)
        bare.ClearField("id_token")
        bare.ClearField("access_token")
        bare.ClearField("version")
        tokens = session_pb2.Session(id_token=session.id_token, access_token=session.access_token)
        has_expiry = session.HasField("access_token_expires_at")
        return Row(
            id=session.id,
            record=bare.SerializeToString(),
            tokens=self._seal("tokens", session.id, tokens.SerializeToString()),
            refresh=(
                self._seal("refresh", session.id, refresh_token.encode()) if refresh_token else None
            ),
            # No expiry reads as 0: expired at once, as authorize treats it (fail closed).
            expires_at=seconds(session.expires_at),
            access_token_expires_at=(
                seconds(session.access_token_expires_at) if has_expiry else None
            ),
        )

    def session(
        self, session_id: str, record: bytes, tokens: bytes, version: int
    ) -> session_pb2.Session | None:
        """The stored session, or None (logged) when it does not open."""
        try:
            session = session_pb2.Session.FromString(record)
            opened = session_pb2.Session.FromString(self._open("tokens", session_id, tokens))
        except (Unreadable, DecodeError) as e:
            self._unreadable(session_id, e)
            return None
        session.id_token = opened.id_token
        session.access_token = opened.access_token
        session.version = version
        return session

    def refresh_token(self, session_id: str, sealed: bytes | None) -> str | None:
        if sealed is None:
            return None
        try:
            return self._open("refresh", session_id, sealed).decode()
        except (Unreadable, UnicodeDecodeError) as e:
            self._unreadable(session_id, e)
            return None

    def _unreadable(self, session_id: str, error: Exception) -> None:
        # Once per store: after a secret rotation every old row fails the same way,
        # and a line per request would bury everything else in the log.
        if not self._warned:
            self._warned = True
            log.warning(
                "a stored session does not open (%s); treating it as signed out "
                "(logged once; later ones are silent). First id prefix: %s",
                error,
                session_id[:6],
            )
