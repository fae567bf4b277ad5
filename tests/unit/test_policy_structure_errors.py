"""Compile errors in a policy's structure (rules, actions, operators), several at once, and in
route shortcut keys."""

from __future__ import annotations

from typing import Any

import pytest

from shared.policy import PolicyError, Problem, compile_policy, compile_route_policy
from tests.unit.test_policy_support import ppl

P = "routes[1].policy[0]"


def problems(raw: Any, path: str = "routes[1].policy") -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as caught:
        compile_policy(raw, path=path)
    return [(p.path, p.message) for p in caught.value.problems]


STRUCTURE_CASES: list[tuple[Any, list[tuple[str, str]]]] = [
    (
        "allow everyone",
        [
            (
                "routes[1].policy",
                "expected a rule (allow/deny mapping) or a list of rules, got a string",
            )
        ],
    ),
    ([5], [(P, "expected a rule with allow and/or deny, got a number")]),
    ([{}], [(P, "empty rule: give allow, deny, or both")]),
    (
        [{"alow": {}}],
        [(P, 'unknown rule key "alow": expected allow or deny (did you mean "allow"?)')],
    ),
    (
        [{"block": {}}],
        [(P, 'unknown rule key "block": expected allow or deny (did you mean "deny"?)')],
    ),
    ([{"or": []}], [(P, '"or" belongs under allow or deny (allow: {or: [...]})')]),
    (
        [{"allow": None}],
        [(f"{P}.allow", "expected a mapping of operators (and, or, not, nor), got nothing")],
    ),
    (
        [{"allow": {}}],
        [
            (
                f"{P}.allow",
                "expected a mapping of operators (and, or, not, nor), got an empty mapping",
            )
        ],
    ),
    (
        [{"allow": [{"email": "a"}]}],
        [
            (
                f"{P}.allow",
                "expected a mapping of operators (and, or, not, nor), got a list "
                "(put the list under an operator, e.g. or:)",
            )
        ],
    ),
    ([{"allow": {"any": []}}], [(f"{P}.allow", 'unknown operator "any" (did you mean "or"?)')]),
    ([{"allow": {"nand": []}}], [(f"{P}.allow", 'unknown operator "nand" (did you mean "nor"?)')]),
    ([{"allow": {"ands": []}}], [(f"{P}.allow", 'unknown operator "ands" (did you mean "and"?)')]),
    (
        [{"allow": {"email": "a"}}],
        [(f"{P}.allow", 'criterion "email" must be in an operator\'s list, e.g. or: [email: ...]')],
    ),
    (
        [{"allow": {"or": {"email": "a"}}}],
        [
            (
                f"{P}.allow.or",
                "or takes a list of criteria, got a mapping (start each criterion with '- ')",
            )
        ],
    ),
    (
        [{"allow": {"or": "email"}}],
        [(f"{P}.allow.or", "or takes a list of criteria, got a string")],
    ),
    ([{"allow": {"or": []}}], [(f"{P}.allow.or", "or has no criteria")]),
    (
        [{"allow": {"or": [{"email": "a", "domain": "b"}]}}],
        [
            (
                f"{P}.allow.or[0]",
                "a criterion has exactly one key, this has 2 (email, domain); "
                "give each its own list item",
            )
        ],
    ),
    (
        [{"allow": {"or": ["authenticated_user"]}}],
        [
            (
                f"{P}.allow.or[0]",
                'expected a criterion mapping; write "authenticated_user: true" '
                'or "authenticated_user: <value>"',
            )
        ],
    ),
    (
        [{"allow": {"or": [{}]}}],
        [
            (
                f"{P}.allow.or[0]",
                "expected a criterion such as {email: {is: ...}}, got an empty mapping",
            )
        ],
    ),
    (
        [{"allow": {"or": [{True: 1}]}}],
        [(f"{P}.allow.or[0]", "criterion names are strings, not a boolean (True)")],
    ),
    (
        [{"allow": {"or": [{"and": [{"emial": "x"}]}]}}],
        [(f"{P}.allow.or[0].and[0]", 'unknown criterion "emial" (did you mean "email"?)')],
    ),
    ([{"allow": {"or": [{"not": []}]}}], [(f"{P}.allow.or[0].not", "not has no criteria")]),
]


@pytest.mark.parametrize(("raw", "expected"), STRUCTURE_CASES)
def test_structure_errors(raw: Any, expected: list[tuple[str, str]]) -> None:
    assert problems(raw) == expected


def test_every_mistake_is_reported_at_once() -> None:
    raw = ppl("""
        - allow:
            or:
              - email: {is: alice@example.com}
              - emial: bob@example.com
              - domain: {equals: example.com}
              - source_ip: [10.0.0.0/8, 300.1.1.1/8]
            and:
              - time_of_day: {timezone: Mars/Olympus, after: "09:00"}
          deny:
            nand:
              - http_method: GET
        - alow:
            or: [accept: true]
        - deny:
            or:
              - day_of_week: mon-fryday
              - date: {after: soon}
    """)
    assert problems(raw) == [
        (f"{P}.allow.or[1]", 'unknown criterion "emial" (did you mean "email"?)'),
        (f"{P}.allow.or[2].domain", 'unknown matcher "equals" (did you mean "is"?)'),
        (f"{P}.allow.or[3].source_ip[1]", 'invalid IP address or CIDR range "300.1.1.1/8"'),
        (
            f"{P}.allow.and[0].time_of_day.timezone",
            'unknown time zone "Mars/Olympus": use an IANA name such as America/New_York',
        ),
        (f"{P}.deny", 'unknown operator "nand" (did you mean "nor"?)'),
        (
            "routes[1].policy[1]",
            'unknown rule key "alow": expected allow or deny (did you mean "allow"?)',
        ),
        (
            "routes[1].policy[2].deny.or[0].day_of_week",
            'unknown day "fryday" (did you mean "friday"?)',
        ),
        (
            "routes[1].policy[2].deny.or[1].date.after",
            'invalid date "soon": expected RFC 3339, e.g. 2025-01-31T18:00:00Z',
        ),
    ]


def test_policy_error_lists_problems_as_path_message_pairs() -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy({"allow": {"or": [{"emial": "x"}, {"user": 1}]}})
    error = caught.value
    assert error.problems == (
        Problem("policy.allow.or[0]", 'unknown criterion "emial" (did you mean "email"?)'),
        Problem("policy.allow.or[1].user", "expected a string, got a number (quote it: '1')"),
    )
    assert str(error) == (
        'policy.allow.or[0]: unknown criterion "emial" (did you mean "email"?)\n'
        "policy.allow.or[1].user: expected a string, got a number (quote it: '1')"
    )
    assert error.problems[0] == (
        "policy.allow.or[0]",
        'unknown criterion "emial" (did you mean "email"?)',
    )


def test_route_shortcut_errors_name_the_route_key() -> None:
    with pytest.raises(PolicyError) as caught:
        compile_route_policy(
            {"allow": {"or": [{"emial": "x"}]}},
            allowed_users=["alice@example.com", ""],
            allowed_domains="example.com",  # a string, not a list
            allowed_idp_claims={"groups": [{"nested": True}]},
            path="routes[4]",
        )
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("routes[4].allowed_domains", "expected a list of strings, got a single string"),
        (
            "routes[4].allowed_idp_claims.groups[0].claim/groups.has",
            "expected a string, number or boolean, got a mapping",
        ),
        ("routes[4].allowed_users[1]", "expected a non-empty string, got a string"),
        ("routes[4].policy.allow.or[0]", 'unknown criterion "emial" (did you mean "email"?)'),
    ]
