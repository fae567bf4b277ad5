"""Whether two Vallum services were given the same secrets: pure comparison.

Replicas that disagree do not fail loudly on their own. A proxy with another
`cookie_secret` cannot open the session cookie another proxy sealed, so the user is
sent to sign in again and again; an authorize with another `signing_key` signs
assertions that the proxies' JWKS does not list, so upstreams refuse them. So every
service asks its peers at start-up (services/agreement.py) and refuses to run with a
message that names the key, instead.

Secrets are compared by keyed fingerprints: HMAC-SHA256 of a fixed label under the
secret itself. A peer with the same secret computes the same value; anyone else
learns nothing they could use. Signing keys are compared by their public RFC 7638
thumbprints. The rule for them allows rotation (add a key, publish it, sign with it,
retire the old one) while replicas run different steps of it: each side's signing
key must be among the keys the other publishes.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from shared.config import Config
from shared.config.reload import routes_version
from shared.signing import signing_keys

_LABEL = b"vallum agreement v1 "


def fingerprint(secret: bytes | None, name: str) -> bytes:
    """16 bytes that equal another service's iff the secrets are equal (b"" if unset)."""
    if not secret:
        return b""
    return hmac.new(secret, _LABEL + name.encode(), hashlib.sha256).digest()[:16]


@dataclass(frozen=True, slots=True)
class Fingerprints:
    shared_secret: bytes
    cookie_secret: bytes
    # The first signs; all are published.
    signing_key_ids: tuple[str, ...]
    # Not a secret, and not compared here: which routes the service runs with (a proxy
    # waits for authorize to have reloaded routes before it uses them).
    routes_version: str = ""

    @classmethod
    def of(cls, config: Config) -> Fingerprints:
        try:
            kids = tuple(key.kid for key in signing_keys(config).keys)
        except ValueError:
            kids = ()
        return cls(
            fingerprint(config.shared_secret, "shared_secret"),
            fingerprint(config.cookie_secret, "cookie_secret"),
            kids,
            routes_version(config),
        )


_WHY = {
    "shared_secret": "it keys sign-in state and derives the default signing key",
    "cookie_secret": "it seals the session cookie: a service with another one cannot open "
    "the cookie the others set, and users are sent to sign in again and again",
}


def disagreements(mine: Fingerprints, theirs: Fingerprints, peer: str) -> list[str]:
    """One line per key this service and `peer` (e.g. "authorize at https://…") do not
    agree on, each starting with the key's name; empty when they agree."""
    problems = []
    for key in ("shared_secret", "cookie_secret"):
        if getattr(mine, key) != getattr(theirs, key):
            problems.append(
                f"{key}: {peer} was given another {key}; every Vallum service and replica "
                f"must be given the same one ({_WHY[key]})"
            )
    if mine.signing_key_ids and theirs.signing_key_ids:
        if theirs.signing_key_ids[0] not in mine.signing_key_ids:
            problems.append(
                f"signing_key: {peer} signs with key {theirs.signing_key_ids[0]}, which this "
                "service does not publish; give every service the same signing_key (to "
                "rotate: add the new key second, then make it first, then remove the old)"
            )
        elif mine.signing_key_ids[0] not in theirs.signing_key_ids:
            problems.append(
                f"signing_key: this service signs with key {mine.signing_key_ids[0]}, which "
                f"{peer} does not publish; give every service the same signing_key"
            )
    return problems
