"""What a policy sees about one request: the request itself, the session, the client certificate.

These are the only facts evaluation may use; authorize fills them in from the Check request,
so the policy package stays free of I/O and of any transport's types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

_NO_CLAIMS: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SessionView:
    """The signed-in user behind a request.

    `claims` holds the identity provider's claims as decoded JSON: each value is a string,
    number, boolean, list of those, or a nested mapping. `claim/<name>` falls back to the
    dedicated fields for `sub`, `email`, `name` and `groups` when the claim itself is absent,
    so a session built from any IdP answers `claim/groups` the same way as `groups`.
    """

    user_id: str
    email: str = ""
    name: str = ""
    groups: tuple[str, ...] = ()
    claims: Mapping[str, object] = field(default_factory=lambda: _NO_CLAIMS)


@dataclass(frozen=True, slots=True)
class ClientCertView:
    """The client certificate on the downstream TLS connection, as the proxy saw it.

    `PolicyInput.client_cert` is None when the listener does not ask for client certificates
    at all (no downstream client CA); a `ClientCertView` with `presented=False` means one was
    asked for and none came. `valid` is the chain check against the route's client CA (and
    CRL); `fingerprint` is the lowercase hex SHA-256 of the DER certificate and `spki_hash`
    the standard base64 SHA-256 of its SubjectPublicKeyInfo.
    """

    presented: bool
    valid: bool = False
    fingerprint: str = ""
    spki_hash: str = ""
    san_dns: tuple[str, ...] = ()
    san_email: tuple[str, ...] = ()
    san_uri: tuple[str, ...] = ()
    invalid_reason: str | None = None
    # Lower-case hex, as `vallum ca show` and CRL tools print it.
    serial: str = ""


# The only request headers any criterion reads (cors_preflight). The proxy sends
# authorize these and no others: less to copy per request, and cookies, tokens and
# the like never leave the proxy for a service that has no use for them.
POLICY_HEADERS: frozenset[str] = frozenset({"origin", "access-control-request-method"})


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """One request, as policy evaluates it.

    `path` is the path as forwarded upstream, without the query string (anything from `?` on
    is ignored by `http_path`). `headers` has lower-case names (of POLICY_HEADERS). `now`
    must be timezone-aware: date and time criteria compare instants, and a naive value
    would silently mean the machine's local time.
    """

    method: str
    path: str
    host: str
    headers: Mapping[str, str]
    source_ip: str
    now: datetime
    session: SessionView | None = None
    client_cert: ClientCertView | None = None

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("PolicyInput.now must be timezone-aware (UTC)")
