"""An invalid route policy is a configuration error, named by its full key path."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, parse_config


def test_every_policy_problem_in_every_route_is_reported() -> None:
    raw = {
        "routes": [
            {
                "from": "https://a.example.com",
                "to": "http://10.0.0.1",
                "policy": {"allow": {"or": [{"emial": "x@example.com"}]}},
            },
            {
                "from": "https://b.example.com",
                "to": "http://10.0.0.1",
                "policy": [
                    {"allow": {"and": [{"source_ip": "10.0.0.300"}]}},
                    {"deny": {"or": [{"email": {"equals": "x"}}]}},
                ],
            },
        ]
    }
    with pytest.raises(ConfigError) as e:
        parse_config(raw, {}, "/")
    paths = [p.path for p in e.value.problems]
    assert paths == [
        "routes[0].policy.allow.or[0]",
        "routes[1].policy[0].allow.and[0].source_ip",
        "routes[1].policy[1].deny.or[0].email",
    ]
    messages = str(e.value)
    assert 'unknown criterion "emial" (did you mean "email"?)' in messages
    assert 'did you mean "is"' in messages


def test_good_policies_and_shortcuts_pass() -> None:
    raw = {
        "routes": [
            {
                "from": "https://a.example.com",
                "to": "http://10.0.0.1",
                "allowed_domains": ["example.com"],
                "policy": {"allow": {"and": [{"groups": {"has": "admins"}}]}},
            },
        ]
    }
    assert len(parse_config(raw, {}, "/").routes) == 1
