"""Every request through the proxy: normalise, decide (authorize), then forward or answer.

The order matters for safety. The path is normalised once, and that one string is
what the route table, authorize's policy and the upstream all see. The Host must
agree with the TLS server name. Nothing is forwarded without an ALLOW from
authorize; any doubt (no answer, a broken stream, an unknown outcome) is a 503.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from services.proxy import metrics, request_spans
from services.proxy.asgi import call_asgi
from services.proxy.check_client import CheckClient, CheckUnavailable
from services.proxy.client_trust import DownstreamTrust
from services.proxy.exchange import Exchange, Failure, Plan
from services.proxy.headers import (
    client_address,
    header_value,
    upstream_request_headers,
    wants_html,
)
from services.proxy.http import ConnectionInfo, HttpConnection, Request
from services.proxy.pages import Pages
from services.proxy.paths import (
    BadPath,
    BadRequestTarget,
    normalize_path,
    split_target,
    target_authority,
)
from services.proxy.routes import ProxyRoutes, RouteRuntime, redirect_location, split_host
from services.proxy.session_pages import SessionPages
from services.proxy.upstream import Pool
from services.proxy.upstream_tls import describe_tls_failure
from shared import tracing
from shared.logs import Fields
from shared.pb import authorize_pb2
from shared.policy import POLICY_HEADERS
from shared.routing import rewrite_path

access = logging.getLogger("vallum.proxy.access")

BUILTIN_EXACT = frozenset({"/ping", "/healthz"})
BUILTIN_PREFIXES = ("/.pomerium/", "/.well-known/pomerium")
# The request headers authorize is told about: only those a policy can read.
CHECKED_HEADERS = frozenset(name.encode("ascii") for name in POLICY_HEADERS)
OUTCOMES = {
    value: authorize_pb2.Outcome.Name(value).lower() for value in authorize_pb2.Outcome.values()
}


def request_ids() -> Iterator[str]:
    """Unique ids for requests: a random 64-bit start, counted up (no syscall each)."""
    start = int.from_bytes(os.urandom(8), "big")
    return (f"{(start + n) & 0xFFFFFFFFFFFFFFFF:016x}" for n in itertools.count())


class Handler:
    def __init__(
        self,
        routes: ProxyRoutes,
        check: CheckClient,
        pool: Pool,
        pages: Pages,
        builtin_app: Any,
        sessions: SessionPages | None = None,
        trust: DownstreamTrust | None = None,
    ) -> None:
        self.sessions = sessions
        self.trust = trust
        self.routes = routes
        self.check = check
        self.pool = pool
        self.pages = pages
        self.builtin_app = builtin_app
        self._ids = request_ids()

    async def __call__(self, conn: HttpConnection, request: Request) -> None:
        started = time.monotonic()
        request_id = request.request_id = next(self._ids)
        if tracing.tracer is not None:
            request.span = request_spans.start_request(request, request_id)
        try:
            await self._handle(conn, request, request_id)
        finally:
            if request.span is not None:
                request_spans.end_request(request.span, request)
            elapsed = time.monotonic() - started
            route = request.route_label
            metrics.requests.inc((route, request.method, request.status))
            metrics.request_duration.observe(route, elapsed)
            if access.isEnabledFor(logging.INFO):
                access.info(
                    "%s",
                    Fields(
                        "request",
                        request_id=request_id,
                        method=request.method,
                        host=request.host,
                        path=request.path or request.target.decode("latin-1"),
                        status=request.status,
                        route=request.route,
                        decision=request.decision,
                        ms=round(elapsed * 1000, 1),
                    ),
                )

    async def _handle(self, conn: HttpConnection, request: Request, request_id: str) -> None:
        info = conn.info
        assert info is not None
        html = wants_html(request.header(b"accept"))
        try:
            raw_path, query = split_target(request.target)
            path = normalize_path(raw_path)
        except (BadRequestTarget, BadPath) as e:
            self.pages.send(conn, request, 400, request_id, html, detail=str(e))
            return
        request.path = path
        host_bytes = request.header(b"host")
        if not host_bytes:
            self.pages.send(conn, request, 400, request_id, html, detail="the request has no Host")
            return
        host = host_bytes.decode("latin-1")
        request.host = host
        # RFC 9112 section 3.2.2: an absolute-form target names the host, not Host.
        # Policy and upstream see Host, so the two must agree.
        authority = target_authority(request.target)
        if authority is not None and authority.lower() != host.lower():
            self.pages.send(
                conn,
                request,
                400,
                request_id,
                html,
                detail="the request target names another host than the Host header",
            )
            return
        scheme = "https" if info.tls else "http"

        hostname, _ = split_host(host)
        if info.server_name is not None and hostname.lower() != info.server_name.lower():
            self.pages.send(conn, request, 421, request_id, html)
            return
        # authenticate's own host: its pages (sign-in, callback) serve signed-out
        # users, so they are forwarded without a Check, before the built-ins.
        internal = self.routes.match_authenticate(scheme, host, path)
        if internal is not None:
            await self._forward(
                conn,
                request,
                internal,
                authorize_pb2.CheckResponse(),
                request_id,
                html,
                host,
                path,
                query,
            )
            return
        if path in BUILTIN_EXACT or path.startswith(BUILTIN_PREFIXES):
            await call_asgi(self.builtin_app, conn, request, path, query, host, scheme)
            return
        route = self.routes.match(scheme, host, path)
        if route is None:
            self.pages.send(conn, request, 404, request_id, html)
            return
        request.route = route.index
        request.route_label = self.routes.route_labels[route.index]

        checking = time.monotonic()
        batched = self._check(request, request_id, scheme, host, path, query, info, route.index)
        check_span = None
        if request.span is not None:
            check_span = request_spans.start_check(request.span, batched.request)
        try:
            decision = await self.check.decide(batched)
        except CheckUnavailable as e:
            if check_span is not None:
                request_spans.end_check(check_span, None, str(e))
            metrics.check_duration.observe(None, time.monotonic() - checking)
            metrics.errors.inc("authorize-unavailable")
            request.decision = "unavailable"
            access.warning(
                "request %s: no decision from authorize: %s",
                request_id,
                e,
                extra={"request_id": request_id},
            )
            self.pages.send(conn, request, 503, request_id, html)
            return
        metrics.check_duration.observe(None, time.monotonic() - checking)
        if check_span is not None:
            request_spans.end_check(check_span, decision)
        outcome = decision.outcome
        request.decision = OUTCOMES.get(outcome, "unknown")
        if outcome != authorize_pb2.ALLOW:
            if outcome == authorize_pb2.SIGN_IN_REQUIRED and html and self.sessions is not None:
                original = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
                sign_in = self.sessions.sign_in_redirect(original, time.time())
                conn.send_response(
                    request, 302, [(b"location", sign_in), (b"cache-control", b"no-store")], b""
                )
                return
            self._refuse(conn, request, decision, request_id, html, host)
            return
        if route.route.redirect is not None:
            location = redirect_location(route.route, scheme, host, path, query)
            code = route.route.redirect.response_code or 301
            conn.send_response(request, code, [(b"location", location.encode("latin-1"))], b"")
            return
        if route.route.response is not None:
            response = route.route.response
            conn.send_response(
                request,
                response.status,
                [(b"content-type", b"text/plain; charset=utf-8")],
                response.body.encode(),
            )
            return
        await self._forward(conn, request, route, decision, request_id, html, host, path, query)

    def _check(
        self,
        request: Request,
        request_id: str,
        scheme: str,
        host: str,
        path: str,
        query: str,
        info: ConnectionInfo,
        route_index: int,
    ) -> authorize_pb2.BatchedCheck:
        """The check to send, filled in place (a nested message is copied if assigned)."""
        headers, keys = request.headers, request.keys
        batched = authorize_pb2.BatchedCheck()
        check = batched.request
        check.request_id = request_id
        # Matched against these routes a moment ago (no await since): authorize decides
        # with the same ones, even while a reload reaches the two at different times.
        check.config_version = self.routes.version
        check.scheme = scheme
        check.host = host
        check.method = request.method
        check.path = path
        check.query = query
        check.source_ip = client_address(
            info.peer_ip,
            # Every X-Forwarded-For line, as the upstream will see them joined.
            header_value(headers, b"x-forwarded-for", keys),
            self.routes.trusted_hops,
        )
        if info.server_name:
            check.server_name = info.server_name
        check.session_handle = self.routes.session_handle(headers, keys)
        for key, (_, value) in zip(keys, headers, strict=True):
            if key in CHECKED_HEADERS:
                check.headers.add(name=key.decode("latin-1"), value=value.decode("latin-1"))
        if info.client_cert is not None and self.trust is not None:
            # Not asked (no SNI, or a host that asks for none) stays unset: authorize
            # knows which routes need a certificate and counts that as none presented.
            check.client_certificate.CopyFrom(
                info.client_cert.message(self.trust.route_anchors(route_index))
            )
        return batched

    def _refuse(
        self,
        conn: HttpConnection,
        request: Request,
        decision: authorize_pb2.CheckResponse,
        request_id: str,
        html: bool,
        host: str,
    ) -> None:
        outcome = decision.outcome
        reasons = tuple(decision.reasons)
        if outcome == authorize_pb2.DENY:
            status = 403
        elif outcome == authorize_pb2.SIGN_IN_REQUIRED:
            status = 401
        elif outcome == authorize_pb2.INVALID_CLIENT_CERTIFICATE:
            status = 495
        elif outcome == authorize_pb2.ROUTE_NOT_FOUND:
            status = 404
        else:  # UNAVAILABLE, or anything this proxy does not know: fail closed
            status = 503
        extra: list[tuple[bytes, bytes]] = []
        if status == 401 and self.pages.sign_in_url:
            # API clients: say where a person would sign in (RFC 9110 section 11.6.1).
            extra.append(
                (
                    b"www-authenticate",
                    b'Pomerium realm="vallum", sign_in_url="%s"'
                    % self.pages.sign_in_url.encode("latin-1"),
                )
            )
        self.pages.send(conn, request, status, request_id, html, reasons=reasons, extra=extra)

    async def _forward(
        self,
        conn: HttpConnection,
        request: Request,
        route: RouteRuntime,
        decision: authorize_pb2.CheckResponse,
        request_id: str,
        html: bool,
        host: str,
        path: str,
        query: str,
    ) -> None:
        info = conn.info
        assert info is not None
        websocket = request.upgrade and route.route.allow_websockets
        targets = route.targets()
        upstream_path = rewrite_path(route.route, path)
        target_line = upstream_path + ("?" + query if query else "")
        incoming, keys = self.routes.without_session_credentials(request.headers, request.keys)
        headers = upstream_request_headers(
            incoming,
            peer_ip=info.peer_ip,
            scheme="https" if info.tls else "http",
            host=host.encode("latin-1"),
            trusted_hops=self.routes.trusted_hops,
            set_headers=[(h.name, h.value) for h in decision.set_headers],
            remove=route.remove_headers,
            host_header=route.host_header(request, targets[0]),
            upgrade=request.header(b"upgrade") if websocket else None,
            skip_xff_append=self.routes.config.skip_xff_append,
            keys=keys,
        )
        headers.append((b"x-request-id", request_id.encode()))
        if request.span is not None:
            headers = request_spans.with_trace_headers(headers, request.span)
        chunked = b"transfer-encoding" in keys
        if chunked:
            headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            headers.append((b"transfer-encoding", b"chunked"))
        head = b"%s %s HTTP/1.1\r\n%s\r\n" % (
            request.method.encode("ascii"),
            target_line.encode("latin-1"),
            b"".join([b"%s: %s\r\n" % pair for pair in headers]),
        )
        plan = Plan(
            targets=[t.target for t in targets],
            head=head,
            request_chunked=chunked,
            response_headers=route.response_headers,
            timeout=route.route.timeout or 30.0,
            idle_timeout=route.route.idle_timeout,
            websocket=websocket,
            request_id=request_id.encode(),
        )
        exchange = Exchange(conn, request, self.pool, plan)
        failure = await exchange.run()
        if exchange.head_after >= 0:
            metrics.upstream_duration.observe(request.route_label, exchange.head_after)
        if failure is None:
            return
        self._upstream_failed(conn, request, route, failure, request_id, html)

    def _upstream_failed(
        self,
        conn: HttpConnection,
        request: Request,
        route: RouteRuntime,
        failure: Failure,
        request_id: str,
        html: bool,
    ) -> None:
        if failure.target is not None:
            route.mark_down(failure.target)
        if failure.status == 504:
            code, words = "upstream-timeout", "the app did not answer in time"
        elif failure.error is not None:
            tls = failure.target.tls if failure.target is not None else None
            code, words = (
                tls.describe_failure(failure.error)
                if tls is not None
                else describe_tls_failure(failure.error)
            )
        else:
            code, words = "upstream-connection-reset", "the app closed the connection"
        metrics.errors.inc(code)
        access.warning(
            "%s",
            Fields(
                "upstream failed",
                request_id=request_id,
                upstream_failure=code,
                route=route.index,
                upstream=f"{failure.target.host}:{failure.target.port}" if failure.target else "",
                detail=words,
            ),
        )
        if failure.head_sent:
            return  # the connection was cut; nothing more can be said to the client
        request.keep_alive = False
        self.pages.send(conn, request, failure.status, request_id, html, reasons=(code,))
