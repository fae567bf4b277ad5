"""Route policies as part of config validation: an invalid policy is a config error.

The compile step is the policy package's; this module feeds it a route's keys, adds
the downstream mTLS default deny where the configuration calls for it, and turns its
problems into config problems with the route's key path.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.config.errors import Problem
from shared.config.model import Config, Route
from shared.policy import CompiledPolicy, PolicyError, compile_route_policy

# Enforcement modes in which a route with a client CA refuses a request that lacks a
# valid certificate without its policy having to say so. reject_connection is here as a
# backstop: the handshake asks for a certificate by SNI, so a client that sent none was
# never asked, and only the policy stands between it and the route.
DEFAULT_DENY_MODES = frozenset({"policy_with_default_deny", "reject_connection"})


def denies_invalid_client_certificate(config: Config, route: Route) -> bool:
    """Whether the route's compiled policy carries Pomerium's mTLS default deny rule."""
    return (
        config.requires_client_certificate(route)
        and config.downstream_mtls.enforcement in DEFAULT_DENY_MODES
    )


def compile_route(
    route: Route, index: int, *, deny_invalid_client_certificate: bool = False
) -> CompiledPolicy:
    """Raises PolicyError with paths under `routes[index]`."""
    return compile_route_policy(
        route.policy,
        allow_public_unauthenticated_access=route.allow_public_unauthenticated_access,
        allow_any_authenticated_user=route.allow_any_authenticated_user,
        allowed_users=route.allowed_users,
        allowed_domains=route.allowed_domains,
        allowed_idp_claims=route.allowed_idp_claims,
        cors_allow_preflight=route.cors_allow_preflight,
        deny_invalid_client_certificate=deny_invalid_client_certificate,
        path=f"routes[{index}]",
    )


def compile_routes(
    routes: Sequence[Route], config: Config
) -> tuple[list[CompiledPolicy], list[Problem]]:
    """Every route's policy, in order; `config` decides where the mTLS deny applies.

    `routes` are normally `config.routes`; indexes in problem paths count from 0 in
    the sequence given.
    """
    compiled: list[CompiledPolicy] = []
    problems: list[Problem] = []
    for index, route in enumerate(routes):
        deny = denies_invalid_client_certificate(config, route)
        try:
            compiled.append(compile_route(route, index, deny_invalid_client_certificate=deny))
        except PolicyError as e:
            problems.extend(Problem(p.path, p.message) for p in e.problems)
    return compiled, problems
