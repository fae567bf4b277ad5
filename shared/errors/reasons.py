"""Reason names in words: what the error pages say for each of them.

The names are Pomerium's (what authorize puts in a Check response) plus Vallum's own
for the proxy's failures. Each text must read as one complete "why" line on its own,
and must make sense whichever side of a rule it came from: `email-ok` also appears when
a deny rule matched the user's address.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

_POLICY: Final = {
    "accept": "The policy lets everyone use this route.",
    "reject": "The policy turns everyone away from this route.",
    "user-unauthenticated": "You are not signed in, and this route needs to know who you are.",
    "user-ok": "Your user account matches a rule of this route's policy.",
    "user-unauthorized": "Your user account is not one this route allows.",
    "email-ok": "Your email address matches a rule of this route's policy.",
    "email-unauthorized": "Your email address is not one this route allows.",
    "domain-ok": "Your email domain matches a rule of this route's policy.",
    "domain-unauthorized": "Your email domain is not one this route allows.",
    "groups-ok": "Your group membership matches a rule of this route's policy.",
    "groups-unauthorized": "You are not in a group this route allows.",
    "claim-ok": "What your identity provider says about you matches a rule of this route.",
    "claim-unauthorized": "What your identity provider says about you is not what this "
    "route requires.",
    "http-method-ok": "The request method (GET, POST, ...) matches a rule of this route.",
    "http-method-unauthorized": "This route does not allow this request method.",
    "http-path-ok": "The path you asked for matches a rule of this route.",
    "http-path-unauthorized": "This route does not allow the path you asked for.",
    "source-ip-ok": "Your network address matches a rule of this route.",
    "source-ip-unauthorized": "This route does not accept requests from your network address.",
    "date-ok": "Today's date matches a rule of this route.",
    "date-unauthorized": "This route is not open on this date.",
    "day-of-week-ok": "Today matches the days of the week this route names.",
    "day-of-week-unauthorized": "This route is not open on this day of the week.",
    "time-of-day-ok": "The time of day matches a rule of this route.",
    "time-of-day-unauthorized": "This route is not open at this time of day.",
    "cors-request": "The request is a browser's CORS preflight check.",
    "non-cors-request": "The request is not a browser's CORS preflight check.",
    "pomerium-route": "The request is for one of Vallum's own pages.",
    "non-pomerium-route": "The request is not for one of Vallum's own pages.",
    "client-certificate-ok": "Your client certificate matches a rule of this route.",
    "client-certificate-unauthorized": "Your client certificate is valid, but it is not one "
    "this route allows.",
    "client-certificate-required": "This route needs a client certificate, and none was presented.",
    "invalid-client-certificate": "The client certificate presented is not valid for this route.",
    "valid-client-certificate": "Your client certificate is valid.",
    "valid-client-certificate-or-none-required": "This route does not ask for a client "
    "certificate.",
}

_VALLUM: Final = {
    "route-not-found": "Vallum has no route for this address.",
    "session-store-unavailable": "Vallum cannot look up your session right now.",
    "authorize-unavailable": "Vallum's access check is not answering right now.",
    "config-out-of-step": "Vallum is applying a new configuration; try again in a moment.",
    "misdirected-request": "The site you asked for is not the one this secure connection "
    "was opened for.",
    "invalid-client-certificate-untrusted": "The client certificate presented was not issued "
    "by an authority this route trusts.",
    "invalid-client-certificate-expired": "The client certificate presented has expired.",
    "invalid-client-certificate-not-yet-valid": "The client certificate presented is not "
    "valid yet (check the device's clock).",
    "invalid-client-certificate-revoked": "The client certificate presented has been revoked.",
    "invalid-client-certificate-san-mismatch": "The client certificate presented does not "
    "name a user, device or address this site accepts.",
    "invalid-client-certificate-chain-too-long": "The client certificate presented was "
    "issued through more intermediate authorities than this site allows.",
    "invalid-client-certificate-purpose": "The certificate presented is not meant for "
    "client authentication.",
    "invalid-client-certificate-crl-unavailable": "Vallum cannot tell whether the client "
    "certificate was revoked: its revocation list is out of date or invalid.",
    "bad-request-target": "The request target is not a path on this site.",
    "bad-request-path": "The path is malformed (bad percent-encoding, control characters, "
    "or an encoded slash or dot segment).",
    "bad-request-host": "The Host header is missing, repeated or malformed.",
    "bad-request-header": "A request header is malformed or not allowed.",
    "bad-request-body": "The request body does not match its declared length or encoding.",
}

_UPSTREAM: Final = {
    "upstream-tls-untrusted": "The app's certificate is not trusted: it was not issued by an "
    "authority this route trusts.",
    "upstream-tls-name-mismatch": "The app's certificate does not match its name.",
    "upstream-tls-expired": "The app's certificate has expired.",
    "upstream-tls-not-yet-valid": "The app's certificate is not valid yet.",
    "upstream-tls-revoked": "The app's certificate has been revoked.",
    "upstream-tls-invalid": "The app's certificate failed verification.",
    "upstream-client-certificate-required": "The app asked for a client certificate that "
    "Vallum was not configured to present.",
    "upstream-client-certificate-rejected": "The app did not accept the client certificate "
    "Vallum presented.",
    "upstream-tls-incompatible": "The app and Vallum have no TLS version or cipher in common.",
    "upstream-tls-not-tls": "The app did not answer with TLS (it may serve plain HTTP).",
    "upstream-tls-renegotiation": "The app asked to renegotiate the secure connection, which "
    "this route does not allow.",
    "upstream-tls-handshake-failed": "The secure connection to the app could not be set up.",
    "upstream-connection-refused": "The app refused the connection (it may be down).",
    "upstream-connection-reset": "The app closed the connection unexpectedly.",
    "upstream-unreachable": "The app's network cannot be reached.",
    "upstream-dns-failure": "The app's name could not be resolved.",
    "upstream-timeout": "The app did not answer in time.",
    "upstream-unavailable": "The app could not be reached.",
}

# The verifying sidecar's refusals: the verifier's codes (shared/verify/model.py).
_SIDECAR: Final = {
    "missing": "The request carries no X-Pomerium-JWT-Assertion: it did not come through Vallum.",
    "malformed": "The identity assertion is not a well-formed token.",
    "algorithm-not-allowed": "The identity assertion is signed with an algorithm or key "
    "this app does not accept.",
    "unknown-key": "The identity assertion is signed with a key Vallum does not publish.",
    "bad-signature": "The identity assertion's signature does not verify: it was forged or "
    "altered.",
    "expired": "The identity assertion has expired.",
    "not-yet-valid": "The identity assertion is not valid yet (check the clocks).",
    "wrong-issuer": "The identity assertion was issued for another site.",
    "wrong-audience": "The identity assertion was meant for another app.",
    "replayed": "The identity assertion was already used once.",
    "jwks-unavailable": "Vallum's signing keys cannot be fetched right now, so no assertion "
    "can be checked.",
    "client-name-not-allowed": "The client certificate is valid but does not name an allowed "
    "caller.",
}

REASON_TEXT: Mapping[str, str] = MappingProxyType({**_POLICY, **_VALLUM, **_UPSTREAM, **_SIDECAR})


def reason_text(name: str) -> str:
    """Words for a reason; an unknown name (a newer authorize) is shown as itself."""
    return REASON_TEXT.get(name, f"Policy reason: {name}.")


# OpenSSL X509_V_ERR_* codes (openssl/x509_vfy.h), as ssl.SSLCertVerificationError
# carries them. Grouped into what a person can act on, for both directions.
_UNTRUSTED: Final = frozenset((2, 7, 18, 19, 20, 21, 27, 28))
_EXPIRED: Final = frozenset((10,))
_NOT_YET_VALID: Final = frozenset((9,))
_REVOKED: Final = frozenset((23,))
_NAME_MISMATCH: Final = frozenset((62, 63, 64))
# Downstream only: the chain is longer than max_verify_depth allows, the certificate is
# not for client authentication, or a revocation list cannot be used.
_TOO_LONG: Final = frozenset((22, 25))
_PURPOSE: Final = frozenset((26,))
_CRL_UNUSABLE: Final = frozenset((3, 8, 11, 12, 15, 16, 33, 35, 36, 44, 54))


def verify_failure_kind(verify_code: int | None) -> str:
    """`untrusted`, `expired`, `not-yet-valid`, `revoked`, `name-mismatch` or `invalid`."""
    for codes, kind in (
        (_UNTRUSTED, "untrusted"),
        (_EXPIRED, "expired"),
        (_NOT_YET_VALID, "not-yet-valid"),
        (_REVOKED, "revoked"),
        (_NAME_MISMATCH, "name-mismatch"),
    ):
        if verify_code in codes:
            return kind
    return "invalid"


def client_certificate_reason(presented: bool, verify_code: int | None = None) -> str:
    """The 495 reason for a downstream client certificate that failed."""
    if not presented:
        return "client-certificate-required"
    for codes, name in (
        (_TOO_LONG, "chain-too-long"),
        (_PURPOSE, "purpose"),
        (_CRL_UNUSABLE, "crl-unavailable"),
    ):
        if verify_code in codes:
            return f"invalid-client-certificate-{name}"
    kind = verify_failure_kind(verify_code)
    if kind in ("untrusted", "expired", "not-yet-valid", "revoked"):
        return f"invalid-client-certificate-{kind}"
    return "invalid-client-certificate"
