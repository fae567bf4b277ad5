"""Micro-figures of the per-request work inside authorize: route match, policy
evaluation (alone, and after matching the last route of a 100-route config), session
handle, JWT signature. CPU microseconds per operation, median
of several timed runs in this one process."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable
from types import MappingProxyType

from shared.config import parse_config
from shared.config.policies import compile_route
from shared.jwt import AssertionSigner, SigningKeys, identity_claims
from shared.policy import PolicyInput, SessionView
from shared.routing import RouteTable
from shared.sessions import HandleCodec

TYPICAL = [
    {"allow": {"or": [{"email": {"is": "alice@example.com"}}, {"groups": {"has": "admins"}}]}},
    {"deny": {"or": [{"http_path": {"starts_with": "/admin"}}]}},
]


def per_op(fn: Callable[[], object], n: int = 20_000, runs: int = 5) -> float:
    """Median microseconds of CPU per call."""
    samples = []
    for _ in range(runs):
        start = time.process_time_ns()
        for _ in range(n):
            fn()
        samples.append((time.process_time_ns() - start) / n / 1000)
    return statistics.median(samples)


def routes(count: int) -> list[dict[str, object]]:
    return [
        {"from": f"https://app{i}.example.com", "to": "http://127.0.0.1:9", "policy": TYPICAL}
        for i in range(count)
    ]


def run() -> list[tuple[str, float]]:
    config = parse_config({"routes": routes(100)}, {}, "/")
    table = RouteTable.compile(config.routes)
    # Every route's policy compiled once, as authorize does per config: a decision is
    # a list index away from the match.
    policies = [compile_route(route, i) for i, route in enumerate(config.routes)]
    policy = policies[99]
    view = SessionView(
        user_id="u1", email="bob@example.com", groups=("dev", "admins"), claims=MappingProxyType({})
    )
    now = dt.datetime.now(dt.UTC)
    inp = PolicyInput(
        method="GET",
        path="/docs",
        host="app99.example.com",
        headers={},
        source_ip="10.0.0.1",
        now=now,
        session=view,
    )
    keys = SigningKeys.derive(b"x" * 32)
    signer = AssertionSigner(keys.signer)
    template = signer.template(identity_claims(view, host="app99.example.com", session_id="s1"))
    codec = HandleCodec(b"x" * 32)
    handle = codec.seal("session-id", int(time.time()) + 3600)
    wall = time.time()

    def match_and_evaluate() -> object:
        match = table.match("https", "app99.example.com", "/docs")
        assert match is not None
        return policies[match.index].evaluate(inp)

    # A refusal takes another path through the evaluator: measure the allow.
    if not policy.evaluate(inp).allowed:
        raise RuntimeError("the benchmark policy does not allow its input")
    return [
        (
            "route match, 100 routes, last one",
            per_op(lambda: table.match("https", "app99.example.com", "/docs")),
        ),
        (
            "policy evaluation, typical route (or of 2, deny of 1)",
            per_op(lambda: policy.evaluate(inp)),
        ),
        (
            "route match + policy evaluation, 100-route config, last route",
            per_op(match_and_evaluate),
        ),
        ("session handle open (AES-GCM)", per_op(lambda: codec.open(handle, wall))),
        (
            "JWT ES256 signature from a cached template",
            per_op(lambda: signer.sign(template, wall, "jti"), n=5_000),
        ),
    ]


def report() -> str:
    lines = ["| operation | CPU µs / op |", "|---|---|"]
    lines += [f"| {name} | {us:.2f} |" for name, us in run()]
    return "\n".join(lines)
