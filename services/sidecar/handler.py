"""One request at the sidecar: check who sent it, then forward it to the app or refuse.

The order is the cheap, connection-level check first (the client certificate's name),
then the JWT assertion; only then is anything of the request sent on. Forwarding is
the proxy's own streaming exchange, so bodies flow both ways under back-pressure.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.proxy.exchange import Exchange, Failure, Plan
from services.proxy.headers import upstream_request_headers, wants_html
from services.proxy.http import HttpConnection, Request
from services.proxy.upstream import Pool, Target
from services.proxy.upstream_tls import describe_tls_failure
from services.sidecar.gate import certificate_names, identity_headers, name_allowed
from shared.errors import ErrorPage, render
from shared.jwt import ASSERTION_HEADER
from shared.verify.model import MISSING, Identity, VerificationError

log = logging.getLogger("vallum.sidecar")

ASSERTION_NAME = ASSERTION_HEADER
ASSERTION = ASSERTION_NAME.lower().encode("ascii")
TIMEOUT = 30.0
NAME_NOT_ALLOWED = "client-name-not-allowed"


class Verify(Protocol):
    async def averify(self, token: str) -> Identity: ...


@dataclass(frozen=True, slots=True)
class Checks:
    """What this sidecar requires of each request (see shared/config/sidecar.py)."""

    mtls: bool
    allowed_names: tuple[str, ...]
    verifier: Verify | None
    # (header name, claim name), set from the verified assertion.
    identity: tuple[tuple[str, str], ...]


class SidecarHandler:
    def __init__(self, checks: Checks, target: Target, host_header: bytes, pool: Pool) -> None:
        if not checks.mtls and checks.verifier is None:
            # The config refuses this too (check_sidecar); the gate itself never opens.
            raise ValueError("a sidecar that checks nothing would forward every request")
        self._checks = checks
        self._target = target
        self._host_header = host_header
        self._pool = pool
        # The configured names are always removed from what the client sent, whether
        # or not this request's claims fill them: a client can never supply them.
        self._remove = frozenset(name.lower().encode() for name, _ in checks.identity)

    async def __call__(self, conn: HttpConnection, request: Request) -> None:
        info = conn.info
        assert info is not None and conn.transport is not None
        if not request.target.startswith(b"/"):
            # Origin form only (RFC 9112 section 3.2.1): the sidecar fronts one app.
            self._refuse(conn, request, 400, "bad-request", "request target is not a path")
            return
        if self._checks.mtls and self._checks.allowed_names:
            ssl_object: ssl.SSLObject | None = conn.transport.get_extra_info("ssl_object")
            peer = ssl_object.getpeercert() if ssl_object is not None else None
            names = certificate_names(peer)
            if not name_allowed(names, self._checks.allowed_names):
                shown = ", ".join(sorted(names)) or "none"
                self._refuse(conn, request, 403, NAME_NOT_ALLOWED, f"certificate names: {shown}")
                return
        set_headers: list[tuple[str, str]] = []
        verifier = self._checks.verifier
        if verifier is not None:
            token = request.header(ASSERTION)
            if not token:
                self._refuse(conn, request, 401, MISSING, f"no {ASSERTION_NAME} header")
                return
            try:
                identity = await verifier.averify(token.decode("latin-1"))
            except VerificationError as e:
                self._refuse(conn, request, 401, e.code, e.detail or e.code)
                return
            set_headers = identity_headers(identity.claims, self._checks.identity)
            # The app may verify again, or read claims the headers do not carry.
            set_headers.append((ASSERTION_NAME, token.decode("latin-1")))
        await self._forward(conn, request, set_headers)

    async def _forward(
        self, conn: HttpConnection, request: Request, set_headers: Sequence[tuple[str, str]]
    ) -> None:
        info = conn.info
        assert info is not None
        host = request.header(b"host") or self._host_header
        headers = upstream_request_headers(
            request.headers,
            peer_ip=info.peer_ip,
            scheme="https",
            host=host,
            # Behind mutual TLS the peer is Vallum's proxy, whose X-Forwarded-For names
            # the user; with the JWT alone the peer could be anyone holding a token.
            trusted_hops=1 if self._checks.mtls else 0,
            set_headers=set_headers,
            remove=self._remove,
            host_header=None,
            upgrade=None,
            keys=request.keys,
        )
        chunked = b"transfer-encoding" in request.keys
        if chunked:
            headers = [(n, v) for n, v in headers if n != b"content-length"]
            headers.append((b"transfer-encoding", b"chunked"))
        head = b"%s %s HTTP/1.1\r\n%s\r\n" % (
            request.method.encode("ascii"),
            request.target,
            b"".join([b"%s: %s\r\n" % pair for pair in headers]),
        )
        plan = Plan(
            targets=[self._target],
            head=head,
            request_chunked=chunked,
            response_headers=(),
            timeout=TIMEOUT,
            idle_timeout=None,
            websocket=False,
            # Vallum's own id when it sent one, so one id follows the request end to end.
            request_id=request.header(b"x-request-id") or uuid.uuid4().hex.encode(),
        )
        failure = await Exchange(conn, request, self._pool, plan).run()
        if failure is not None:
            self._upstream_failed(conn, request, failure)

    def _upstream_failed(self, conn: HttpConnection, request: Request, failure: Failure) -> None:
        if failure.status == 504:
            code, words = "upstream-timeout", "the app did not answer in time"
        elif failure.error is not None:
            code, words = describe_tls_failure(failure.error)
        else:
            code, words = "upstream-connection-reset", "the app closed the connection"
        log.warning("upstream failed: %s (%s)", code, words)
        if failure.head_sent:
            return  # the connection was cut; nothing more can be said to the client
        request.keep_alive = False
        _answer(conn, request, failure.status, "bad_gateway", code)

    def _refuse(
        self, conn: HttpConnection, request: Request, status: int, reason: str, detail: str
    ) -> None:
        info = conn.info
        peer = info.peer_ip if info is not None else ""
        log.warning(
            "refused status=%d reason=%s peer=%s method=%s detail=%s",
            status,
            reason,
            peer,
            request.method,
            detail,
        )
        error = {400: "bad_request", 401: "unauthorized", 403: "forbidden"}[status]
        _answer(conn, request, status, error, reason)


_TITLES = {
    400: ("Bad request", "The request could not be read."),
    401: (
        "Not from Vallum",
        "This app only answers requests that Vallum checked and signed for, and this one "
        "carries no valid signed identity.",
    ),
    403: (
        "Not an allowed caller",
        "This app only answers the Vallum proxies it was told to trust, and the client "
        "certificate presented is not one of them.",
    ),
    502: ("The app is not reachable", "The sidecar could not get through to the app."),
    504: ("The app did not answer in time", "The sidecar waited for the app in vain."),
}


def _answer(conn: HttpConnection, request: Request, status: int, error: str, reason: str) -> None:
    """Vallum's error page (HTML for browsers, JSON otherwise) with the reason."""
    title, detail = _TITLES.get(status, _TITLES[502])
    request_id = (request.header(b"x-request-id") or b"").decode("latin-1")
    page = ErrorPage(
        status=status,
        title=title,
        detail=detail,
        reasons=(reason,),
        advice="Reach this app through Vallum, at its route's address.",
        request_id=request_id,
    )
    code, headers, body = render(page, html=wants_html(request.header(b"accept")))
    headers = [(n, v) for n, v in headers if n != b"content-length"]
    if status == 401:
        # RFC 9110 section 11.6.1: a 401 names how to authenticate.
        headers.append((b"www-authenticate", b'Pomerium realm="vallum-sidecar"'))
    conn.send_response(request, code, headers, body)
