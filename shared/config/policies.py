"""Route policies as part of config validation: an invalid policy is a config error.

The compile step is the policy package's; this module only feeds it a route's keys
and turns its problems into config problems with the route's key path.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.config.errors import Problem
from shared.config.model import Route
from shared.policy import CompiledPolicy, PolicyError, compile_route_policy


def compile_route(route: Route, index: int) -> CompiledPolicy:
    """Raises PolicyError with paths under `routes[index]`."""
    return compile_route_policy(
        route.policy,
        allow_public_unauthenticated_access=route.allow_public_unauthenticated_access,
        allow_any_authenticated_user=route.allow_any_authenticated_user,
        allowed_users=route.allowed_users,
        allowed_domains=route.allowed_domains,
        allowed_idp_claims=route.allowed_idp_claims,
        cors_allow_preflight=route.cors_allow_preflight,
        path=f"routes[{index}]",
    )


def compile_routes(routes: Sequence[Route]) -> tuple[list[CompiledPolicy], list[Problem]]:
    compiled: list[CompiledPolicy] = []
    problems: list[Problem] = []
    for index, route in enumerate(routes):
        try:
            compiled.append(compile_route(route, index))
        except PolicyError as e:
            problems.extend(Problem(p.path, p.message) for p in e.problems)
    return compiled, problems
