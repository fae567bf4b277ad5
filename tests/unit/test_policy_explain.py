"""`vallum policy explain` through the real CLI entry point (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.cli import main

POLICY = [
    {"allow": {"or": [{"email": {"is": "alice@example.com"}}, {"groups": {"has": "admins"}}]}},
    {
        "deny": {
            "and": [
                {"http_path": {"starts_with": "/admin"}},
                {"not": [{"groups": {"has": "admins"}}]},
            ]
        }
    },
]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "routes": [
                    {
                        "from": "https://app.example.com",
                        "to": "http://10.0.0.1:8080",
                        "name": "wiki",
                        "policy": POLICY,
                    },
                    {
                        "from": "https://open.example.com",
                        "to": "http://10.0.0.2",
                        "allow_public_unauthenticated_access": True,
                    },
                ]
            }
        )
    )
    return path


def explain(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> str:
    assert main(["policy", "explain", "--config", str(config), *args]) == 0
    return capsys.readouterr().out


def test_allow_names_the_rule_and_criterion(capsys, config) -> None:  # type: ignore[no-untyped-def]
    out = explain(
        capsys, config, "--url", "https://app.example.com/docs", "--email", "alice@example.com"
    )
    assert 'routes[0] "wiki" https://app.example.com -> http://10.0.0.1:8080' in out
    assert "decision: ALLOW" in out
    assert "routes[0].policy[0].allow.or[0]: email is alice@example.com → email-ok" in out


def test_deny_names_the_deny_rule(capsys, config) -> None:  # type: ignore[no-untyped-def]
    out = explain(
        capsys, config, "--url", "https://app.example.com/admin", "--email", "alice@example.com"
    )
    assert "decision: DENY: 403" in out
    assert "routes[0].policy[1].deny.and[0]: http_path starts_with /admin → http-path-ok" in out


def test_admins_group_passes_the_deny(capsys, config) -> None:  # type: ignore[no-untyped-def]
    out = explain(
        capsys,
        config,
        "--url",
        "https://app.example.com/admin",
        "--email",
        "bob@example.com",
        "--groups",
        "admins,dev",
    )
    assert "decision: ALLOW" in out and "groups-ok" in out


def test_signed_out_needs_sign_in(capsys, config) -> None:  # type: ignore[no-untyped-def]
    out = explain(capsys, config, "--url", "https://app.example.com/")
    assert "identity: signed out" in out and "decision: SIGN IN" in out
    assert "user-unauthenticated" in out


def test_public_route_and_no_route(capsys, config) -> None:  # type: ignore[no-untyped-def]
    assert "decision: ALLOW" in explain(capsys, config, "--url", "https://open.example.com/x")
    out = explain(capsys, config, "--url", "https://nope.example.com/")
    assert "route:    none matches" in out and "decision: NO ROUTE: 404" in out


def test_claims_and_method(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "routes": [
                    {
                        "from": "https://api.example.com",
                        "to": "http://10.0.0.3",
                        "policy": {
                            "allow": {
                                "and": [
                                    {"claim/department": "eng"},
                                    {"http_method": {"in": ["GET", "HEAD"]}},
                                ]
                            }
                        },
                    }
                ]
            }
        )
    )
    ok = explain(
        capsys,
        path,
        "--url",
        "https://api.example.com/",
        "--email",
        "a@example.com",
        "--claim",
        'department="eng"',
    )
    assert "decision: ALLOW" in ok
    denied = explain(
        capsys,
        path,
        "--url",
        "https://api.example.com/",
        "--method",
        "post",
        "--email",
        "a@example.com",
        "--claim",
        "department=eng",
    )
    assert "decision: DENY" in denied and "http-method-unauthorized" in denied


def test_a_bad_policy_is_reported_with_its_path(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "routes": [
                    {
                        "from": "https://a.example.com",
                        "to": "http://10.0.0.1",
                        "policy": {"allow": {"or": [{"emial": "x"}]}},
                    }
                ]
            }
        )
    )
    assert (
        main(["policy", "explain", "--config", str(path), "--url", "https://a.example.com/"]) == 1
    )
    err = capsys.readouterr().err
    assert 'routes[0].policy.allow.or[0]: unknown criterion "emial" (did you mean "email"?)' in err
