"""Session handles: what a browser's cookie (or an API client's bearer token) carries.

A handle names a session without revealing its id and cannot be forged: it is the
session id and an expiry sealed with AES-256-GCM under a key derived from
`cookie_secret` (HKDF-SHA256, RFC 5869), so the proxy seals it, authorize opens it,
and every replica given the same cookie_secret agrees. A tampered, foreign or expired
handle opens to nothing: the request is treated as signed out, never as a user.
Pure code: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "v1."
_NONCE = 12
# Bound the work an attacker can make us do with one header.
MAX_HANDLE_LENGTH = 512


class InvalidHandle(Exception):
    """Why a handle was refused, in words fit for the log (never for the user)."""


def derive_key(secret: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)


def new_session_id() -> str:
    # 256 bits: the id is a bearer credential inside the store.
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


class HandleCodec:
    def __init__(self, cookie_secret: bytes) -> None:
        self._aead = AESGCM(derive_key(cookie_secret, b"vallum session handle v1"))

    def seal(self, session_id: str, expires_at: int) -> str:
        nonce = os.urandom(_NONCE)
        payload = json.dumps({"sid": session_id, "exp": expires_at}, separators=(",", ":"))
        sealed = self._aead.encrypt(nonce, payload.encode(), PREFIX.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open(self, handle: str, now: float) -> str:
        """The session id inside `handle`, or InvalidHandle."""
        session_id, expires_at = self.unseal(handle)
        if expires_at <= now:
            raise InvalidHandle("handle expired")
        return session_id

    def unseal(self, handle: str) -> tuple[str, int]:
        """The session id and expiry inside `handle` (expired or not), or InvalidHandle."""
        if len(handle) > MAX_HANDLE_LENGTH:
            raise InvalidHandle("handle too long")
        if not handle.startswith(PREFIX):
            raise InvalidHandle("not a Vallum session handle")
        body = handle[len(PREFIX) :]
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidHandle("handle is not base64url") from None
        if len(raw) <= _NONCE:
            raise InvalidHandle("handle too short")
        try:
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], PREFIX.encode())
        except InvalidTag:
            raise InvalidHandle("handle was tampered with or sealed with another secret") from None
        try:
            payload = json.loads(plain)
            session_id, expires_at = payload["sid"], payload["exp"]
        except (ValueError, KeyError, TypeError):
            raise InvalidHandle("handle payload is malformed") from None
        if not isinstance(session_id, str) or not isinstance(expires_at, int):
            raise InvalidHandle("handle payload is malformed")
        return session_id, expires_at
