"""What can go wrong talking OpenID Connect, each with a reason fit for a log line.

The authenticate service turns these into pages: IdPUnavailable is the IdP's fault or
the network's (503, try again), StateError and IdTokenError mean this sign-in attempt
cannot be trusted (start again), IdPError is a refusal by the IdP (its reason shown).
"""

from __future__ import annotations


class OIDCError(Exception):
    """Base of every error in this package; `reason` is short and stable, for tests and
    metrics, `detail` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class IdPError(OIDCError):
    """The IdP answered, but not with what was asked for. `error` is the OAuth error
    code (RFC 6749 section 5.2) when it sent one, e.g. invalid_grant."""

    def __init__(
        self, reason: str, detail: str = "", *, error: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(reason, detail)
        self.error = error
        self.status = status


class IdPUnavailable(IdPError):
    """The IdP could not be reached in time, or answered with a server error."""


class DiscoveryError(IdPError):
    """The discovery document is unusable (wrong issuer, missing endpoints)."""


class StateError(OIDCError):
    """The `state` of a callback, or its CSRF cookie, does not belong to this sign-in."""


class IdTokenError(OIDCError):
    """The ID token was refused (OIDC Core section 3.1.3.7)."""
