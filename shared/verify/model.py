"""What a verification gives the app (Identity) and how it says no (VerificationError).

Pure code: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

# Why a request was refused. Stable strings: apps log them and match on them, and the
# middleware puts them in its 401 answer.
MISSING: Final = "missing"
MALFORMED: Final = "malformed"
ALGORITHM_NOT_ALLOWED: Final = "algorithm-not-allowed"
UNKNOWN_KEY: Final = "unknown-key"
BAD_SIGNATURE: Final = "bad-signature"
EXPIRED: Final = "expired"
NOT_YET_VALID: Final = "not-yet-valid"
WRONG_ISSUER: Final = "wrong-issuer"
WRONG_AUDIENCE: Final = "wrong-audience"
REPLAYED: Final = "replayed"
JWKS_UNAVAILABLE: Final = "jwks-unavailable"

CODES: Final = frozenset(
    {
        MISSING,
        MALFORMED,
        ALGORITHM_NOT_ALLOWED,
        UNKNOWN_KEY,
        BAD_SIGNATURE,
        EXPIRED,
        NOT_YET_VALID,
        WRONG_ISSUER,
        WRONG_AUDIENCE,
        REPLAYED,
        JWKS_UNAVAILABLE,
    }
)


class VerificationError(Exception):
    """A token that must not be trusted; `code` says why (one of CODES), the message how."""

    def __init__(self, code: str, detail: str = "") -> None:
        if code not in CODES:
            raise ValueError(f"unknown verification error code {code!r}")
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Identity:
    """The user Vallum vouched for, from a verified `X-Pomerium-JWT-Assertion`.

    `user` is the `user` claim (falling back to `sub`); fields Vallum leaves empty for
    a request without a session (a public route) are empty strings here too.
    """

    user: str
    email: str
    groups: tuple[str, ...]
    name: str
    session_id: str
    issuer: str
    audience: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    jwt_id: str
    # Every claim as signed, read-only (a MappingProxyType).
    claims: Mapping[str, Any]
