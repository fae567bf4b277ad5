"""Decisions: request → route → policy → outcome, reasons and the headers to set.

Everything here is computed from the config once (`Decider(config)`) and then per
request without I/O: the session and client certificate arrive already looked up.
"""

from __future__ import annotations

import datetime as dt
import os
from base64 import urlsafe_b64encode
from collections.abc import Mapping
from dataclasses import dataclass

from services.authorize.active_session import ActiveSession
from shared.config import Config, ConfigError, Route
from shared.config.policies import compile_routes
from shared.jwt import (
    ASSERTION_HEADER,
    AssertionSigner,
    ClaimsTemplate,
    claim_headers,
    identity_claims,
)
from shared.pb import authorize_pb2
from shared.policy import ClientCertView, CompiledPolicy, PolicyInput
from shared.routing import RouteTable
from shared.signing import signing_keys
from shared.templates import Template

OUTCOME_NAMES = {
    authorize_pb2.ALLOW: "allow",
    authorize_pb2.DENY: "deny",
    authorize_pb2.SIGN_IN_REQUIRED: "sign-in-required",
    authorize_pb2.INVALID_CLIENT_CERTIFICATE: "invalid-client-certificate",
    authorize_pb2.ROUTE_NOT_FOUND: "route-not-found",
    authorize_pb2.UNAVAILABLE: "unavailable",
}


# Requests without a session on wildcard routes could name endless hosts.
MAX_ANONYMOUS_TEMPLATES = 10_000


class TokenIds:
    """`jti` values: 128 random bits each, read from the OS 256 at a time, so that
    an assertion does not pay for a system call of its own."""

    __slots__ = ("_ready",)

    def __init__(self) -> None:
        self._ready: list[str] = []

    def __call__(self) -> str:
        if not self._ready:
            pool = os.urandom(16 * 256)
            self._ready = [
                urlsafe_b64encode(pool[i : i + 16]).rstrip(b"=").decode("ascii")
                for i in range(0, len(pool), 16)
            ]
        return self._ready.pop()


@dataclass(frozen=True, slots=True)
class RouteState:
    index: int
    route: Route
    policy: CompiledPolicy
    pass_identity: bool
    groups_filter: frozenset[str]
    issuer_format: str
    # set_request_headers, compiled once; values may use ${pomerium.*}.
    request_headers: tuple[tuple[str, Template], ...]
    needs_values: bool
    # The route has a client CA: a request the proxy did not ask for a certificate
    # (no SNI, say) counts as one that presented none, never as "none needed".
    needs_client_certificate: bool = False

    @property
    def needs_session(self) -> bool:
        return self.policy.needs_session or self.pass_identity


@dataclass(frozen=True, slots=True)
class Identity:
    """What is signed once per (session, route, host) and reused per request."""

    template: ClaimsTemplate
    headers: tuple[tuple[str, str], ...]


def compile_policies(config: Config) -> list[CompiledPolicy]:
    """Every route's policy; all problems in all routes at once, as a ConfigError."""
    compiled, problems = compile_routes(config.routes, config)
    if problems:
        raise ConfigError(problems)
    return compiled


class Decider:
    def __init__(self, config: Config, *, sign: bool = True) -> None:
        self.config = config
        self.table = RouteTable.compile(config.routes)
        self.routes = [
            RouteState(
                index=i,
                route=route,
                policy=policy,
                pass_identity=config.passes_identity_headers(route),
                groups_filter=frozenset(config.jwt_groups_filter_for(route)),
                issuer_format=config.jwt_issuer_format_for(route),
                request_headers=tuple(
                    (name, Template.compile(value))
                    for name, value in route.set_request_headers.items()
                ),
                needs_values=any(
                    Template.compile(value).variables
                    for value in route.set_request_headers.values()
                ),
                needs_client_certificate=config.requires_client_certificate(route),
            )
            for i, (route, policy) in enumerate(
                zip(config.routes, compile_policies(config), strict=True)
            )
        ]
        self.signer = AssertionSigner(signing_keys(config).signer) if sign else None
        # Assertions for requests without a session differ only by host.
        self._anonymous: dict[tuple[int, str], Identity] = {}
        self._jti = TokenIds()

    def match(self, scheme: str, host: str, path: str) -> RouteState | None:
        found = self.table.match(scheme, host, path)
        return None if found is None else self.routes[found.index]

    def evaluate(
        self,
        state: RouteState,
        request: authorize_pb2.CheckRequest,
        session: ActiveSession | None,
        cert: ClientCertView | None,
        now: float,
        into: authorize_pb2.CheckResponse | None = None,
    ) -> authorize_pb2.CheckResponse:
        """The decision on `request`, filled into `into` if given (a batch's own
        message: no copy) or a new response."""
        decision = state.policy.evaluate(
            PolicyInput(
                method=request.method,
                path=request.path,
                host=request.host,
                headers=_headers(request),
                source_ip=request.source_ip,
                now=dt.datetime.fromtimestamp(now, dt.UTC),
                session=session.view if session is not None else None,
                client_cert=cert,
            )
        )
        response = authorize_pb2.CheckResponse() if into is None else into
        response.request_id = request.request_id
        response.route_index = state.index
        response.reasons.extend(sorted(decision.reasons))
        response.explanation = decision.explanation
        if decision.allowed:
            response.outcome = authorize_pb2.ALLOW
            token = ""
            if self.signer is not None and (state.pass_identity or state.needs_values):
                token = self._identity_headers(
                    response, state, request.host, session, now, send=state.pass_identity
                )
            if state.request_headers:
                values = _values(token, session, cert) if state.needs_values else {}
                for name, template in state.request_headers:
                    response.set_headers.add(name=name, value=template.render(values))
        elif decision.needs_client_certificate:
            response.outcome = authorize_pb2.INVALID_CLIENT_CERTIFICATE
            # The exact failure (expired, revoked, ...) first: the 495 page and the log
            # show the first reason.
            if cert is not None and cert.presented and cert.invalid_reason:
                response.reasons.insert(0, cert.invalid_reason)
        elif decision.needs_sign_in:
            response.outcome = authorize_pb2.SIGN_IN_REQUIRED
        else:
            response.outcome = authorize_pb2.DENY
        return response

    def _identity_headers(
        self,
        response: authorize_pb2.CheckResponse,
        state: RouteState,
        host: str,
        session: ActiveSession | None,
        now: float,
        *,
        send: bool,
    ) -> str:
        """Sign the assertion; add it and the claim headers when `send`. Returns it."""
        assert self.signer is not None
        key = (state.index, host)
        cache = session.templates if session is not None else self._anonymous
        identity = cache.get(key)
        if identity is None:
            claims = identity_claims(
                session.view if session is not None else None,
                host=host.lower(),
                session_id=session.id if session is not None else "",
                issuer_format=state.issuer_format,
                groups_filter=state.groups_filter,
                claims_headers=self.config.jwt_claims_headers,
            )
            identity = Identity(
                self.signer.template(claims),
                tuple(claim_headers(claims, self.config.jwt_claims_headers)),
            )
            if len(cache) >= MAX_ANONYMOUS_TEMPLATES:
                cache.clear()
            cache[key] = identity
        token = self.signer.sign(identity.template, now, self._jti())
        if send:
            response.set_headers.add(name=ASSERTION_HEADER, value=token)
            for name, value in identity.headers:
                response.set_headers.add(name=name, value=value)
        return token


def _values(
    token: str, session: ActiveSession | None, cert: ClientCertView | None
) -> dict[str, str]:
    """What `${pomerium.*}` stands for in this request."""
    values = {"pomerium.jwt": token}
    if session is not None:
        values["pomerium.access_token"] = session.access_token
        values["pomerium.id_token"] = session.id_token
        values["pomerium.email"] = session.view.email
        values["pomerium.user"] = session.view.user_id
        values["pomerium.groups"] = ",".join(session.view.groups)
    if cert is not None and cert.presented:
        values["pomerium.client_cert_fingerprint"] = cert.fingerprint
        values["pomerium.client_cert_san_dns"] = ",".join(cert.san_dns)
        values["pomerium.client_cert_san_email"] = ",".join(cert.san_email)
        values["pomerium.client_cert_san_uri"] = ",".join(cert.san_uri)
    return values


def _headers(request: authorize_pb2.CheckRequest) -> Mapping[str, str]:
    return {h.name.lower(): h.value for h in request.headers}


def not_found(request: authorize_pb2.CheckRequest) -> authorize_pb2.CheckResponse:
    return authorize_pb2.CheckResponse(
        request_id=request.request_id,
        outcome=authorize_pb2.ROUTE_NOT_FOUND,
        reasons=["route-not-found"],
        route_index=-1,
        explanation=f"no route matches {request.scheme}://{request.host}{request.path}",
    )
