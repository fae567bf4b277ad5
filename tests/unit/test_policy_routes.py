"""Route shortcut keys decide exactly as the PPL they stand for."""

from __future__ import annotations

import itertools
from types import MappingProxyType
from typing import Any

import pytest

from shared.policy import (
    ClientCertView,
    CompiledPolicy,
    PolicyInput,
    SessionView,
    compile_policy,
    compile_route_policy,
)
from tests.unit.test_policy_support import ALICE, BOB, GOOD_CERT, req, verdict

OUTSIDER = SessionView("u-eve", "eve@elsewhere.net", claims={"groups": ["ops"]})
CORS = {"origin": "https://app.example.com", "access-control-request-method": "PUT"}

GRID: list[PolicyInput] = [
    req(session=session, method=method, headers=headers, cert=cert)
    for session, (method, headers), cert in itertools.product(
        (ALICE, BOB, OUTSIDER, None),
        (("GET", {}), ("OPTIONS", CORS), ("DELETE", {})),
        (None, GOOD_CERT, ClientCertView(presented=False)),
    )
]


def same_decisions(shortcut: CompiledPolicy, equivalent: CompiledPolicy) -> None:
    for inp in GRID:
        a, b = shortcut.evaluate(inp), equivalent.evaluate(inp)
        assert (verdict(a), a.denied_by_rule, a.reasons) == (
            verdict(b),
            b.denied_by_rule,
            b.reasons,
        )


SHORTCUTS: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
    ({"allow_public_unauthenticated_access": True}, [{"accept": True}]),
    ({"allow_any_authenticated_user": True}, [{"authenticated_user": True}]),
    ({"cors_allow_preflight": True}, [{"cors_preflight": True}]),
    (
        {"allowed_domains": ("example.com", "example.org")},
        [{"domain": {"is": "example.com"}}, {"domain": {"is": "example.org"}}],
    ),
    (
        # Pomerium matches allowed_users against the user id and the email alike.
        {"allowed_users": ("u-alice", "bob@example.org")},
        [
            {"user": {"is": "u-alice"}},
            {"email": {"is": "u-alice"}},
            {"user": {"is": "bob@example.org"}},
            {"email": {"is": "bob@example.org"}},
        ],
    ),
    (
        {
            "allowed_idp_claims": MappingProxyType(
                {"groups": ("ops", "admin"), "family_name": ("Smith",)}
            )
        },
        [
            {"claim/family_name": {"has": "Smith"}},
            {"claim/groups": {"has": "ops"}},
            {"claim/groups": {"has": "admin"}},
        ],
    ),
    (
        {
            "allow_any_authenticated_user": True,
            "cors_allow_preflight": True,
            "allowed_domains": ["x.com"],
        },
        [{"cors_preflight": True}, {"authenticated_user": True}, {"domain": {"is": "x.com"}}],
    ),
]


@pytest.mark.parametrize(("keys", "criteria"), SHORTCUTS)
def test_shortcut_equals_its_ppl(keys: dict[str, Any], criteria: list[dict[str, Any]]) -> None:
    shortcut = compile_route_policy(None, path="routes[0]", **keys)
    same_decisions(shortcut, compile_policy({"allow": {"or": criteria}}))


def test_shortcuts_and_policy_combine_like_a_list_of_rules() -> None:
    policy = {
        "deny": {"or": [{"http_method": "DELETE"}]},
        "allow": {"or": [{"groups": {"has": "ops"}}]},
    }
    shortcut = compile_route_policy(policy, allowed_users=["u-alice"], path="routes[0]")
    equivalent = compile_policy(
        [{"allow": {"or": [{"user": {"is": "u-alice"}}, {"email": {"is": "u-alice"}}]}}, policy]
    )
    same_decisions(shortcut, equivalent)
    assert (
        verdict(shortcut.evaluate(req(session=OUTSIDER))) == "deny"
    )  # groups claim is not SessionView.groups
    assert verdict(shortcut.evaluate(req())) == "allow"
    assert verdict(shortcut.evaluate(req(method="DELETE"))) == "deny"


def test_default_client_certificate_deny() -> None:
    shortcut = compile_route_policy(
        None,
        allow_public_unauthenticated_access=True,
        deny_invalid_client_certificate=True,
        path="routes[0]",
    )
    equivalent = compile_policy(
        [
            {"allow": {"or": [{"accept": True}]}},
            {"deny": {"or": [{"invalid_client_certificate": True}]}},
        ]
    )
    same_decisions(shortcut, equivalent)
    decision = shortcut.evaluate(req(cert=ClientCertView(presented=False)))
    assert decision.needs_client_certificate
    assert decision.trace == (
        "client certificate required: a deny rule matched",
        "routes[0].downstream_mtls: invalid_client_certificate → client-certificate-required",
    )


def test_explanation_names_the_shortcut_key() -> None:
    policy = compile_route_policy(
        None, allowed_users=["u-alice", "bob@example.org"], path="routes[2]"
    )
    assert policy.evaluate(req(session=BOB)).trace == (
        "allowed: an allow rule matched and no deny rule did",
        "routes[2].allowed_users[1]: email is bob@example.org → email-ok",
    )
    assert policy.evaluate(req(session=None)).needs_sign_in


def test_no_shortcut_and_no_policy_denies() -> None:
    policy = compile_route_policy(None, path="routes[0]")
    assert all(verdict(policy.evaluate(inp)) == "deny" for inp in GRID)
    assert not policy.needs_session


def test_public_route_needs_no_session() -> None:
    policy = compile_route_policy(None, allow_public_unauthenticated_access=True, path="routes[0]")
    assert not policy.needs_session
    assert all(policy.evaluate(inp).allowed for inp in GRID)
