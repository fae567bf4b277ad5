"""`vallum policy explain`: what authorize would decide for a request, and why."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from types import MappingProxyType
from urllib.parse import urlsplit

from services.authorize.active_session import ActiveSession
from services.authorize.client_cert import client_cert_view
from services.authorize.decide import Decider, not_found
from shared.config import ConfigError, load_config
from shared.pb import authorize_pb2
from shared.policy import SessionView

EFFECT = {
    authorize_pb2.ALLOW: "ALLOW: forwarded to the upstream",
    authorize_pb2.DENY: "DENY: 403 Forbidden",
    authorize_pb2.SIGN_IN_REQUIRED: "SIGN IN: 302 to sign-in for browsers, 401 for API clients",
    authorize_pb2.INVALID_CLIENT_CERTIFICATE: "CLIENT CERTIFICATE: 495 certificate error page",
    authorize_pb2.ROUTE_NOT_FOUND: "NO ROUTE: 404",
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("policy", help="inspect route policies")
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    e = psub.add_parser(
        "explain",
        help="print the decision for a request and the rule and criterion that decided it",
    )
    e.add_argument("--config", "-c", help="config.yaml")
    e.add_argument("--url", required=True, help="the request URL, e.g. https://app.example.com/x")
    e.add_argument("--method", default="GET")
    e.add_argument("--email", help="signed in as this email (omit all identity flags: signed out)")
    e.add_argument("--user", help="user id (defaults to the email)")
    e.add_argument("--name", default="")
    e.add_argument("--groups", default="", help="comma-separated groups")
    e.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an IdP claim; VALUE is JSON if it parses as JSON (repeatable)",
    )
    e.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    e.add_argument("--source-ip", default="127.0.0.1")
    e.add_argument("--client-cert", metavar="FILE", help="PEM client certificate presented")
    e.add_argument(
        "--client-cert-error",
        default="",
        help="treat the client certificate as failing verification with this reason",
    )
    e.add_argument("--time", help="evaluate at this RFC 3339 instant (default: now)")
    e.set_defaults(handler=handle)


def _session(args: argparse.Namespace) -> ActiveSession | None:
    if not (args.email or args.user or args.groups or args.claim):
        return None
    claims: dict[str, object] = {}
    for item in args.claim:
        name, _, raw = item.partition("=")
        try:
            claims[name] = json.loads(raw)
        except ValueError:
            claims[name] = raw
    view = SessionView(
        user_id=args.user or args.email or "",
        email=args.email or "",
        name=args.name,
        groups=tuple(g for g in args.groups.split(",") if g),
        claims=MappingProxyType(claims),
    )
    return ActiveSession(id="explain", version=0, expires_at=float("inf"), view=view)


def _request(args: argparse.Namespace) -> authorize_pb2.CheckRequest:
    url = urlsplit(args.url)
    request = authorize_pb2.CheckRequest(
        request_id="explain",
        scheme=url.scheme,
        host=url.netloc,
        method=args.method.upper(),
        path=url.path or "/",
        query=url.query,
        source_ip=args.source_ip,
    )
    for item in args.header:
        name, _, value = item.partition(":")
        request.headers.add(name=name.strip(), value=value.strip())
    if args.client_cert:
        with open(args.client_cert, encoding="ascii") as f:
            pem = f.read()
        request.client_certificate.presented = True
        request.client_certificate.requested = True
        request.client_certificate.chain_pem.append(pem)
        request.client_certificate.verify_error = args.client_cert_error
    return request


def handle(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, dict(os.environ))
        decider = Decider(config, sign=False)
    except ConfigError as e:
        print(f"vallum policy: the configuration has problems:\n{e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"vallum policy: {e}", file=sys.stderr)
        return 1
    try:
        request = _request(args)
    except OSError as e:
        print(f"vallum policy: --client-cert: {e.strerror}: {args.client_cert}", file=sys.stderr)
        return 1
    when = dt.datetime.fromisoformat(args.time) if args.time else dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    session = _session(args)
    state = decider.match(request.scheme, request.host, request.path)
    identity = "signed out"
    if session is not None:
        groups = ", ".join(session.view.groups) or "none"
        identity = f"{session.view.email or session.view.user_id} (groups: {groups})"
    print(f"request:  {request.method} {args.url} from {request.source_ip}")
    print(f"identity: {identity}")
    if state is None:
        response = not_found(request)
        print("route:    none matches")
    else:
        cert = client_cert_view(request.client_certificate, request.client_certificate.requested)
        response = decider.evaluate(state, request, session, cert, when.timestamp())
        route = state.route
        to = ", ".join(t.url for t in route.to) or "(redirect/response route)"
        label = f' "{route.name}"' if route.name else ""
        print(f"route:    routes[{state.index}]{label} {route.from_url} -> {to}")
    print(f"decision: {EFFECT[response.outcome]}")
    print(f"reasons:  {', '.join(response.reasons) or '-'}")
    print("why:")
    for line in response.explanation.splitlines():
        print(f"  {line.strip()}")
    return 0
