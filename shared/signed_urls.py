"""Signed, expiring URL parameters between the proxy and authenticate (pure code).

The proxy sends a signed-out browser to authenticate with `pomerium_redirect_uri`
(where to return), `pomerium_timestamp` and `pomerium_signature` (HMAC-SHA256 under a
key derived from `shared_secret`), as Pomerium does, so authenticate only starts a
sign-in that one of Vallum's own proxies asked for, and only for a few minutes.

After sign-in, authenticate hands the session to the route host in a *transfer
token*: the session id and the return URL sealed with AES-GCM, valid for one
minute. The route host's `/.pomerium/callback` opens it and sets its own cookie.
The long-lived session handle itself never appears in a URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.sessions import derive_key

SIGNATURE_TTL = 300
TRANSFER_TTL = 60
_NONCE = 12


class SignatureError(Exception):
    """Why a signed URL or transfer token was refused (for the page and the log)."""


class URLSigner:
    def __init__(self, shared_secret: bytes) -> None:
        self._key = derive_key(shared_secret, b"vallum url signature v1")
        self._aead = AESGCM(derive_key(shared_secret, b"vallum session transfer v1"))

    # -- signed redirect parameters ------------------------------------------------

    def _mac(self, purpose: str, value: str, timestamp: int) -> str:
        message = f"{purpose}\n{value}\n{timestamp}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, purpose: str, redirect_uri: str, now: float) -> dict[str, str]:
        timestamp = int(now)
        return {
            "pomerium_redirect_uri": redirect_uri,
            "pomerium_timestamp": str(timestamp),
            "pomerium_signature": self._mac(purpose, redirect_uri, timestamp),
        }

    def signed_url(self, base: str, purpose: str, redirect_uri: str, now: float) -> str:
        return f"{base}?{urlencode(self.sign(purpose, redirect_uri, now))}"

    def verify(self, purpose: str, params: dict[str, str], now: float) -> str:
        """The signed `pomerium_redirect_uri`, or SignatureError."""
        redirect_uri = params.get("pomerium_redirect_uri", "")
        signature = params.get("pomerium_signature", "")
        raw_time = params.get("pomerium_timestamp", "")
        if not redirect_uri or not signature or not raw_time:
            raise SignatureError("the link is missing its signature")
        try:
            timestamp = int(raw_time)
        except ValueError:
            raise SignatureError("the link's timestamp is not a number") from None
        expected = self._mac(purpose, redirect_uri, timestamp)
        if not hmac.compare_digest(expected, signature):
            raise SignatureError("the link's signature does not match")
        if abs(now - timestamp) > SIGNATURE_TTL:
            raise SignatureError("the link has expired")
        return redirect_uri

    # -- session transfer tokens ---------------------------------------------------

    def seal_transfer(
        self, session_id: str, session_expires: int, redirect_uri: str, now: float
    ) -> str:
        payload = json.dumps(
            {
                "sid": session_id,
                "sexp": session_expires,
                "uri": redirect_uri,
                "exp": int(now) + TRANSFER_TTL,
            },
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, payload, b"transfer")
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open_transfer(self, token: str, now: float) -> Transfer:
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], b"transfer")
            data = json.loads(plain)
            transfer = Transfer(str(data["sid"]), int(data["sexp"]), str(data["uri"]))
            expires = int(data["exp"])
        except (binascii.Error, ValueError, InvalidTag, KeyError, TypeError):
            raise SignatureError("the sign-in hand-over is invalid") from None
        if expires <= now:
            raise SignatureError("the sign-in hand-over has expired; sign in again")
        return transfer


@dataclass(frozen=True, slots=True)
class Transfer:
    session_id: str
    session_expires: int
    redirect_uri: str

    @property
    def host(self) -> str:
        return (urlsplit(self.redirect_uri).netloc or "").lower()
