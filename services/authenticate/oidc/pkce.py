"""Proof Key for Code Exchange (RFC 7636), S256 only.

`plain` is never used: it protects nothing against an attacker who can read the
authorization request, which is the case PKCE exists for (section 7.2).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

METHOD = "S256"
# Section 4.1: code_verifier = 43*128unreserved, unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~".
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def new_verifier() -> str:
    # Section 4.1 recommends 32 random octets, base64url-encoded: 43 characters.
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def is_valid_verifier(verifier: str) -> bool:
    return _VERIFIER.fullmatch(verifier) is not None


def challenge(verifier: str) -> str:
    """Section 4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    if not is_valid_verifier(verifier):
        raise ValueError("a code verifier is 43 to 128 characters of [A-Za-z0-9-._~]")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
