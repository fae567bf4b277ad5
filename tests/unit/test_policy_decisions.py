"""Whole policies: Pomerium's documented examples, decision precedence, explanations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.policy import ClientCertView, PolicyInput, SessionView, compile_policy
from tests.unit.test_policy_support import ALICE, BOB, GOOD_CERT, compiled, decide, req, verdict

USER2 = SessionView("u2", "user2@example.com")
OUTSIDER = SessionView("u9", "eve@elsewhere.net")


def test_at_a_glance_example() -> None:
    policy = compiled("""
        allow:
          and:
            - domain:
                is: example.com
        deny:
          or:
            - email:
                is: user2@example.com
            - email:
                is: user3@example.com
    """)
    assert verdict(policy.evaluate(req())) == "allow"
    assert verdict(policy.evaluate(req(session=USER2))) == "deny"
    assert policy.evaluate(req(session=USER2)).denied_by_rule
    assert verdict(policy.evaluate(req(session=OUTSIDER))) == "deny"
    assert verdict(policy.evaluate(req(session=None))) == "sign-in"


def test_email_or_domain_example() -> None:
    policy = compiled("""
        allow:
          or:
            - email: {is: bob@example.org}
            - domain: {is: example.com}
    """)
    assert policy.evaluate(req(session=BOB)).reasons == {"email-ok"}
    assert policy.evaluate(req(session=ALICE)).reasons == {"domain-ok"}
    denied = policy.evaluate(req(session=OUTSIDER))
    assert verdict(denied) == "deny"
    assert denied.reasons == {"email-unauthorized", "domain-unauthorized"}


def test_deny_by_http_method_example() -> None:
    policy = compiled("""
        allow:
          and:
            - claim/family_name: Smith
        deny:
          not:
            - http_method:
                is: GET
    """)
    assert verdict(policy.evaluate(req(method="GET"))) == "allow"
    assert verdict(policy.evaluate(req(method="POST"))) == "deny"
    assert verdict(policy.evaluate(req(method="GET", session=BOB))) == "deny"


def test_multiple_operators_in_one_rule_are_or_ed() -> None:
    """Pomerium's docs: this grants Smiths, or anyone at domain1 or domain2."""
    policy = compiled("""
        allow:
          and:
            - claim/family_name: Smith
          or:
            - domain: {is: domain1.com}
            - domain: {is: domain2.com}
    """)
    assert verdict(policy.evaluate(req())) == "allow"
    assert verdict(policy.evaluate(req(session=SessionView("u", "x@domain2.com")))) == "allow"
    assert verdict(policy.evaluate(req(session=BOB))) == "deny"


def test_list_of_rules_combines_allows_and_denies() -> None:
    policy = compiled("""
        - allow:
            and:
              - claim/family_name: Smith
        - allow:
            or:
              - groups: {has: eng}
        - deny:
            or:
              - source_ip: 192.168.0.0/16
    """)
    assert verdict(policy.evaluate(req(session=BOB))) == "allow"
    assert verdict(policy.evaluate(req(session=BOB, ip="192.168.3.4"))) == "deny"
    assert verdict(policy.evaluate(req(session=SessionView("u")))) == "deny"


def test_groups_and_source_ip_and_time_examples() -> None:
    policy = compiled("""
        allow:
          and:
            - groups: {has: admin}
            - source_ip: [10.0.0.0/8, "2001:db8::/32"]
            - day_of_week: mon-fri
            - time_of_day: {timezone: Europe/Paris, after: "08:00", before: "19:00"}
    """)
    wednesday_noon = datetime(2025, 6, 4, 12, tzinfo=UTC)
    saturday_noon = datetime(2025, 6, 7, 12, tzinfo=UTC)
    late = datetime(2025, 6, 4, 17, 30, tzinfo=UTC)  # 19:30 in Paris
    assert verdict(policy.evaluate(req(now=wednesday_noon))) == "allow"
    assert verdict(policy.evaluate(req(now=wednesday_noon, ip="2001:db8::7"))) == "allow"
    assert verdict(policy.evaluate(req(now=saturday_noon))) == "deny"
    assert verdict(policy.evaluate(req(now=late))) == "deny"
    assert verdict(policy.evaluate(req(now=wednesday_noon, ip="8.8.8.8"))) == "deny"
    assert verdict(policy.evaluate(req(now=wednesday_noon, session=BOB))) == "deny"


def test_certificate_examples() -> None:
    policy = compiled("""
        allow:
          and:
            - authenticated_user: true
            - client_certificate:
                san_email:
                  ends_with: '@example.com'
    """)
    assert verdict(policy.evaluate(req(cert=GOOD_CERT))) == "allow"
    assert verdict(policy.evaluate(req(cert=None))) == "certificate"
    assert verdict(policy.evaluate(req(session=None, cert=GOOD_CERT))) == "sign-in"
    # Without a certificate, signing in would not help: ask for the certificate.
    assert verdict(policy.evaluate(req(session=None, cert=None))) == "certificate"


@pytest.mark.parametrize(
    ("cert", "expected", "reasons"),
    [
        (None, "allow", {"accept"}),
        (GOOD_CERT, "allow", {"accept"}),
        (ClientCertView(presented=False), "certificate", {"client-certificate-required"}),
        (
            ClientCertView(presented=True, valid=False),
            "certificate",
            {"invalid-client-certificate"},
        ),
    ],
)
def test_default_client_certificate_deny(
    cert: ClientCertView | None, expected: str, reasons: set[str]
) -> None:
    policy = compiled("""
        - allow: {or: [accept: true]}
        - deny: {or: [invalid_client_certificate: true]}
    """)
    decision = policy.evaluate(req(session=None, cert=cert))
    assert verdict(decision) == expected
    assert decision.reasons == reasons
    assert decision.denied_by_rule == (expected == "certificate")


def test_deny_wins_over_allow() -> None:
    decision = decide(
        {"allow": {"or": [{"accept": True}]}, "deny": {"or": [{"reject": None}, {"accept": True}]}}
    )
    assert not decision.allowed
    assert decision.denied_by_rule
    assert decision.reasons == {"accept"}


def test_no_rules_deny_everything() -> None:
    for raw in (None, [], [{"deny": {"or": [{"reject": True}]}}]):
        decision = compile_policy(raw).evaluate(req())
        assert verdict(decision) == "deny"
        assert not decision.denied_by_rule
    assert compile_policy(None).evaluate(req()).trace == ("denied: the policy has no allow rule",)


def test_sign_in_only_when_it_could_change_the_outcome() -> None:
    # The source address fails whoever signs in: plain deny, not a sign-in redirect.
    policy = compiled("allow: {and: [{source_ip: 10.0.0.0/8}, {email: alice@example.com}]}")
    assert verdict(policy.evaluate(req(session=None, ip="8.8.8.8"))) == "deny"
    assert verdict(policy.evaluate(req(session=None))) == "sign-in"
    assert policy.evaluate(req(session=None)).reasons == {"user-unauthenticated"}


def test_negated_identity_never_admits_an_anonymous_request() -> None:
    # "Everyone but bob" must not let bob in by not signing in.
    for op in ("not", "nor"):
        policy = compiled(f"allow: {{{op}: [{{email: bob@example.org}}]}}")
        assert verdict(policy.evaluate(req(session=None))) == "sign-in"
        assert verdict(policy.evaluate(req(session=BOB))) == "deny"
        assert verdict(policy.evaluate(req(session=ALICE))) == "allow"


def test_undecided_deny_asks_for_sign_in_even_on_a_public_route() -> None:
    policy = compiled("""
        allow: {or: [accept: true]}
        deny: {or: [email: bob@example.org]}
    """)
    assert verdict(policy.evaluate(req(session=None))) == "sign-in"
    assert verdict(policy.evaluate(req(session=ALICE))) == "allow"
    assert verdict(policy.evaluate(req(session=BOB))) == "deny"
    # ...but not when the deny cannot match whoever signs in.
    narrower = compiled("""
        allow: {or: [accept: true]}
        deny: {and: [http_method: DELETE, email: bob@example.org]}
    """)
    assert verdict(narrower.evaluate(req(session=None))) == "allow"


def test_nested_operators() -> None:
    policy = compiled("""
        allow:
          and:
            - or:
                - email: alice@example.com
                - groups: {has: eng}
            - not:
                - http_path: {starts_with: /admin}
    """)
    assert verdict(policy.evaluate(req(session=BOB, path="/app"))) == "allow"
    assert verdict(policy.evaluate(req(session=BOB, path="/admin/x"))) == "deny"
    assert verdict(policy.evaluate(req(session=OUTSIDER, path="/app"))) == "deny"


def test_explanation_names_rule_action_and_criterion() -> None:
    policy = compile_policy(
        [
            {
                "allow": {
                    "or": [
                        {"email": {"is": "x@example.com"}},
                        {"email": {"is": "alice@example.com"}},
                    ]
                }
            }
        ]
    )
    decision = policy.evaluate(req())
    assert decision.trace == (
        "allowed: an allow rule matched and no deny rule did",
        "policy[0].allow.or[1]: email is alice@example.com → email-ok",
    )
    assert decision.explanation == (
        "allowed: an allow rule matched and no deny rule did\n"
        "  policy[0].allow.or[1]: email is alice@example.com → email-ok"
    )


def test_explanation_of_a_denial_lists_every_failing_criterion() -> None:
    policy = compile_policy(
        {"allow": {"or": [{"groups": {"has": "ops"}}, {"source_ip": ["192.168.0.0/16"]}]}},
        path="routes[3].policy",
    )
    assert policy.evaluate(req()).trace == (
        "denied: no allow rule matched",
        "routes[3].policy.allow.or[0]: groups has ops → groups-unauthorized",
        "routes[3].policy.allow.or[1]: source_ip in [192.168.0.0/16] → source-ip-unauthorized",
    )


def test_needs_session_tells_authorize_whether_to_look_up_the_session() -> None:
    assert not compiled("allow: {or: [http_method: GET, source_ip: 10.0.0.0/8]}").needs_session
    assert compiled("allow: {or: [http_method: GET, {and: [claim/x: y]}]}").needs_session


def test_evaluation_is_repeatable() -> None:
    text = """
        allow: {or: [{groups: {has: ops}}, {source_ip: 192.168.0.0/16}, {email: alice@example.com}]}
        deny: {or: [{http_method: DELETE}, {http_path: {starts_with: /admin}}]}
    """
    policy = compiled(text)
    inputs = [req(), req(session=None), req(method="DELETE"), req(session=BOB, path="/admin")]
    first = [policy.evaluate(i) for i in inputs]
    assert [policy.evaluate(i) for i in inputs] == first
    assert [compiled(text).evaluate(i) for i in inputs] == first


def test_policy_input_requires_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PolicyInput("GET", "/", "h", {}, "10.0.0.1", datetime(2025, 1, 1))
