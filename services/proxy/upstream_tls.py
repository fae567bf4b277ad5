"""TLS from Vallum to a route's upstreams (`https://` in `to`), with the route's settings.

One SSLContext per route, built at start-up and rebuilt only when the route's
certificate files change (checked at most once a second), never per request: a
context's trust store and key are parsed once and shared by every connection.
`describe_tls_failure` turns what went wrong on a connection into a reason name and
words for the 502 page; the exception itself, which names addresses, goes only to
the log.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Final

from shared.config import Route
from shared.errors import REASON_TEXT, verify_failure_kind
from shared.material import (
    FileWatch,
    MaterialError,
    load_ca_bundle,
    load_cert_chain,
    load_key_pair,
)

log = logging.getLogger("vallum.proxy.upstream_tls")

ALPN: Final = ["http/1.1"]
CHECK_INTERVAL: Final = 1.0


def uses_tls(route: Route) -> bool:
    return any(to.url.lower().startswith("https://") for to in route.to)


def route_label(route: Route) -> str:
    return route.name or route.id or route.from_url


def _harden(ctx: ssl.SSLContext, route: Route) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    # OpenSSL lets a TLS 1.2 server renegotiate (RFC 5746) unless told not to; an
    # upstream that wants it must be opted in explicitly, as Pomerium does.
    if route.tls_upstream_allow_renegotiation:
        ctx.options &= ~ssl.OP_NO_RENEGOTIATION
    else:
        ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


def _has_own_context(route: Route) -> bool:
    return bool(
        route.tls_custom_ca
        or route.tls_skip_verify
        or route.tls_client_cert
        or route.tls_client_key
        or route.tls_upstream_allow_renegotiation
    )


@functools.cache
def _system_context() -> ssl.SSLContext:
    # Routes with default settings share one context: the system store holds a few
    # hundred roots, parsed once instead of once per route.
    return _harden(ssl.create_default_context(), Route(from_url="https://default.invalid"))


def build_context(route: Route) -> ssl.SSLContext:
    """The route's client context; MaterialError names the key and file when one is bad."""
    if not _has_own_context(route):
        return _system_context()
    label = route_label(route)
    try:
        if route.tls_custom_ca is not None:
            pem, _ = load_ca_bundle(route.tls_custom_ca, "tls_custom_ca")
            # cadata alone: only the route's CA is trusted, not the system store.
            ctx = ssl.create_default_context(cadata=pem.decode("ascii", "replace"))
        else:
            ctx = ssl.create_default_context()
        if route.tls_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if route.tls_client_cert is not None or route.tls_client_key is not None:
            if route.tls_client_cert is None or route.tls_client_key is None:
                raise MaterialError("tls_client_cert and tls_client_key must be given together")
            pair = load_key_pair(
                route.tls_client_cert,
                route.tls_client_key,
                cert_key="tls_client_cert",
                key_key="tls_client_key",
            )
            load_cert_chain(ctx, pair)
    except MaterialError as e:
        raise MaterialError(f"route {label}: {e}") from None
    except ssl.SSLError as e:
        raise MaterialError(f"route {label}: upstream TLS settings rejected: {e}") from None
    return _harden(ctx, route)


class UpstreamTLS:
    """A route's upstream TLS: the current context and the name to verify each upstream by."""

    def __init__(
        self,
        route: Route,
        *,
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.route = route
        self.label = route_label(route)
        self._watch = FileWatch(
            [
                s.path if s is not None else None
                for s in (route.tls_custom_ca, route.tls_client_cert, route.tls_client_key)
            ]
        )
        self._context = build_context(route)
        self._interval = interval
        self._clock = clock
        self._next_check = clock() + interval
        for warning in self.warnings():
            log.warning("%s", warning)

    @property
    def presents_client_certificate(self) -> bool:
        return self.route.tls_client_cert is not None

    @property
    def context(self) -> ssl.SSLContext:
        """The context for a new connection; file changes are looked for at most once
        per interval, so this is cheap enough to call per connection."""
        if self._watch.watching:
            now = self._clock()
            if now >= self._next_check:
                self._next_check = now + self._interval
                self.reload_if_changed()
        return self._context

    def reload_if_changed(self) -> bool:
        if not self._watch.changed():
            return False
        try:
            context = build_context(self.route)
        except MaterialError as e:
            log.error("upstream TLS change not applied, keeping the old settings: %s", e)
            return False
        self._context = context
        log.info("route %s: upstream TLS settings reloaded", self.label)
        return True

    def server_name(self, upstream_host: str) -> str:
        """The `server_hostname` for a connection to `upstream_host` (no port).

        tls_upstream_server_name, else tls_server_name, else the host itself. Python's
        ssl sends no SNI for an IP literal (RFC 6066 section 3 forbids it) and checks
        the certificate's IP SANs instead, so an IP is returned as it is.
        """
        name = self.route.tls_upstream_server_name or self.route.tls_server_name
        if name:
            return name
        host = upstream_host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            return host.lower().rstrip(".")

    def warnings(self) -> list[str]:
        if not self.route.tls_skip_verify:
            return []
        return [
            f"route {self.label}: tls_skip_verify is on: Vallum does not check the upstream's "
            "certificate, so anyone on the network path to it can impersonate it"
        ]

    def describe_failure(self, exc: BaseException) -> tuple[str, str]:
        return describe_tls_failure(exc, client_cert=self.presents_client_certificate)


# Alerts the upstream sends about the certificate Vallum presented (RFC 8446 section 6.2).
_CLIENT_CERT_REJECTED: Final = frozenset(
    (
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_ACCESS_DENIED",
        "TLSV1_ALERT_DECRYPT_ERROR",
    )
)
_INCOMPATIBLE: Final = frozenset(
    (
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "UNSUPPORTED_PROTOCOL",
        "NO_PROTOCOLS_AVAILABLE",
        "NO_SHARED_CIPHER",
        "NO_CIPHERS_AVAILABLE",
        "TLSV1_ALERT_INSUFFICIENT_SECURITY",
        "TLSV1_ALERT_NO_APPLICATION_PROTOCOL",
        "SSLV3_ALERT_ILLEGAL_PARAMETER",
    )
)
_NOT_TLS: Final = frozenset(
    ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL")
)


def _classify_ssl(exc: ssl.SSLError, client_cert: bool | None) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"upstream-tls-{verify_failure_kind(getattr(exc, 'verify_code', None))}"
    if isinstance(exc, ssl.SSLEOFError):
        return "upstream-connection-reset"
    # Set by the ssl module on the errors it raises; absent on hand-made ones.
    reason = getattr(exc, "reason", None) or ""
    if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
        return "upstream-client-certificate-required"
    if reason in _CLIENT_CERT_REJECTED:
        return "upstream-client-certificate-rejected"
    if reason == "SSLV3_ALERT_HANDSHAKE_FAILURE" and client_cert is not None:
        # What a TLS 1.2 server sends when it requires a certificate and gets none,
        # or does not like the one it got; without knowing which, it stays generic.
        if client_cert:
            return "upstream-client-certificate-rejected"
        return "upstream-client-certificate-required"
    if reason in _INCOMPATIBLE:
        return "upstream-tls-incompatible"
    if reason in _NOT_TLS:
        return "upstream-tls-not-tls"
    if "RENEGOTIAT" in reason:
        return "upstream-tls-renegotiation"
    if reason == "UNEXPECTED_EOF_WHILE_READING":
        return "upstream-connection-reset"
    return "upstream-tls-handshake-failed"


def _classify(exc: BaseException, client_cert: bool | None) -> str | None:
    if isinstance(exc, ssl.SSLError):
        return _classify_ssl(exc, client_cert)
    if isinstance(exc, TimeoutError):
        return "upstream-timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "upstream-connection-refused"
    if isinstance(exc, ConnectionError | EOFError):
        return "upstream-connection-reset"
    if isinstance(exc, socket.gaierror):
        return "upstream-dns-failure"
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "upstream-unreachable"
        # asyncio joins per-address failures into one plain OSError (Python < 3.12).
        if exc.errno is None and f"[Errno {errno.ECONNREFUSED}]" in str(exc):
            return "upstream-connection-refused"
    return None


def describe_tls_failure(exc: BaseException, *, client_cert: bool | None = None) -> tuple[str, str]:
    """(reason name, words) for a failed upstream connection, handshake or read.

    `client_cert` says whether Vallum presented one, to tell "required" from
    "rejected" when the upstream only says the handshake failed. The words never
    include the exception text: that names the address, which belongs in the log.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = _classify(current, client_cert)
        if code is not None:
            return code, REASON_TEXT[code]
        current = current.__cause__ or current.__context__
    return "upstream-unavailable", REASON_TEXT["upstream-unavailable"]
