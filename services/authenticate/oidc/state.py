"""The `state` of an authorization request, and the CSRF cookie it is bound to.

The state travels through the IdP and back in the callback URL, so it is sealed with
AES-256-GCM under a key of its own (HKDF from `shared_secret`, label below): the IdP
and the browser can read neither the PKCE verifier nor the nonce inside, and cannot
change the page we return to. It lives five minutes. Being sealed makes it unforgeable
but not unstealable, so it also carries a hash of a random value that only the
browser which started the sign-in holds, in a cookie (OAuth 2.0 Security BCP, RFC 9700
section 4.7.1): a callback URL replayed in another browser fails the CSRF check.
Pure code: `now` is an argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.authenticate.oidc.errors import StateError
from services.authenticate.oidc.pkce import new_verifier
from shared.sessions import derive_key

PREFIX = "s1."
LABEL = b"vallum oidc state v1"
STATE_LIFETIME = 300.0
# A state is ~200 characters plus the return URL; bound what one query parameter costs.
MAX_REDIRECT_LENGTH = 2048
MAX_STATE_LENGTH = 4096
_NONCE = 12


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_secret_value() -> str:
    """256 random bits, base64url: nonces and CSRF cookie values."""
    return _b64(secrets.token_bytes(32))


def csrf_hash(cookie_value: str) -> str:
    return _b64(hashlib.sha256(cookie_value.encode()).digest())


@dataclass(frozen=True, slots=True)
class State:
    verifier: str = field(repr=False)
    nonce: str = field(repr=False)
    # Where the browser goes once signed in: the proxy route URL it started from.
    redirect_to: str
    # SHA-256 of the CSRF cookie's value, so the state alone does not reveal the cookie.
    csrf_hash: str = field(repr=False)
    created_at: int

    @classmethod
    def new(cls, redirect_to: str, now: float) -> tuple[State, str]:
        """A fresh state and the CSRF cookie value to set alongside it."""
        if len(redirect_to) > MAX_REDIRECT_LENGTH:
            raise ValueError(f"redirect target longer than {MAX_REDIRECT_LENGTH} characters")
        cookie = new_secret_value()
        state = cls(new_verifier(), new_secret_value(), redirect_to, csrf_hash(cookie), int(now))
        return state, cookie


class StateCodec:
    def __init__(self, shared_secret: bytes, *, lifetime: float = STATE_LIFETIME) -> None:
        self._aead = AESGCM(derive_key(shared_secret, LABEL))
        self._lifetime = lifetime

    def seal_state(self, state: State) -> str:
        payload = json.dumps(
            {
                "v": state.verifier,
                "n": state.nonce,
                "r": state.redirect_to,
                "c": state.csrf_hash,
                "t": state.created_at,
            },
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(_NONCE)
        return PREFIX + _b64(nonce + self._aead.encrypt(nonce, payload, PREFIX.encode()))

    def open_state(self, token: str | None, now: float) -> State:
        """The state inside `token`, or StateError saying why not."""
        if not token:
            raise StateError("state missing")
        tampered = StateError("state tampered or foreign", "not sealed by this deployment")
        if len(token) > MAX_STATE_LENGTH or not token.startswith(PREFIX):
            raise tampered
        body = token[len(PREFIX) :]
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise tampered from None
        if len(raw) <= _NONCE:
            raise tampered
        try:
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], PREFIX.encode())
        except InvalidTag:
            raise tampered from None
        state = _decode(plain)
        age = now - state.created_at
        if age >= self._lifetime:
            raise StateError(
                "state expired",
                f"sign-in started {int(age)}s ago; it must finish within {self._lifetime:g}s",
            )
        return state


def _decode(plain: bytes) -> State:
    try:
        data = json.loads(plain)
        state = State(data["v"], data["n"], data["r"], data["c"], data["t"])
    except (ValueError, KeyError, TypeError):
        raise StateError("state malformed") from None
    texts = (state.verifier, state.nonce, state.redirect_to, state.csrf_hash)
    if not all(isinstance(text, str) for text in texts) or not isinstance(state.created_at, int):
        raise StateError("state malformed")
    return state


def check_csrf(state: State, cookie_value: str | None) -> None:
    """The callback must come from the browser that started the sign-in."""
    if not cookie_value:
        raise StateError("csrf cookie missing", "cookies blocked, or another browser")
    if not hmac.compare_digest(csrf_hash(cookie_value), state.csrf_hash):
        raise StateError("csrf mismatch", "the callback belongs to another sign-in")


def csrf_cookie_name(session_cookie_name: str) -> str:
    """`_pomerium_csrf` for the default `cookie_name`, as Pomerium names it."""
    return f"{session_cookie_name}_csrf"
