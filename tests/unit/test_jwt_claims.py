"""shared.jwt.claims: what the assertion and the X-Pomerium-Claim-* headers carry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.jwt import (
    AssertionSigner,
    SigningKeys,
    audience_for,
    claim_header_name,
    claim_headers,
    identity_claims,
    issuer_for,
    verify,
)
from shared.policy import SessionView


@dataclass(frozen=True)
class Person:
    user_id: str = "user-1"
    email: str = "alice@example.com"
    name: str = "Alice"
    groups: tuple[str, ...] = ("admins", "eng", "ops")
    claims: Mapping[str, object] = field(default_factory=dict)


def test_claims_of_a_signed_in_user() -> None:
    claims = identity_claims(Person(), host="app.example.com", session_id="sid-1")
    assert claims == {
        "iss": "app.example.com",
        "aud": "app.example.com",
        "sub": "user-1",
        "user": "user-1",
        "email": "alice@example.com",
        "groups": ["admins", "eng", "ops"],
        "name": "Alice",
        "sid": "sid-1",
    }


def test_claims_without_a_session_have_empty_user_fields() -> None:
    claims = identity_claims(
        None, host="public.example.com", claims_headers=[("X-Pomerium-Claim-Email", "email")]
    )
    assert claims == {
        "iss": "public.example.com",
        "aud": "public.example.com",
        "sub": "",
        "user": "",
        "email": "",
        "groups": [],
        "name": "",
        "sid": "",
    }


def test_groups_are_a_list_even_when_there_are_none() -> None:
    claims = identity_claims(Person(groups=()), host="a.example.com")
    assert claims["groups"] == []
    assert json.dumps(claims["groups"]) == "[]"


def test_groups_filter_keeps_only_named_groups_in_session_order() -> None:
    claims = identity_claims(Person(), host="a.example.com", groups_filter={"ops", "admins", "x"})
    assert claims["groups"] == ["admins", "ops"]
    nothing_left = identity_claims(Person(), host="a.example.com", groups_filter=["nobody"])
    assert nothing_left["groups"] == []


def test_session_view_from_the_policy_module_is_an_identity() -> None:
    view = SessionView(user_id="u", email="e@x", name="N", groups=("g",), claims={"k": "v"})
    claims = identity_claims(view, host="a.example.com", claims_headers=[("X-K", "k")])
    assert (claims["sub"], claims["groups"], claims["k"]) == ("u", ["g"], "v")


@pytest.mark.parametrize(
    ("host", "host_only", "uri", "aud"),
    [
        ("app.example.com", "app.example.com", "https://app.example.com/", "app.example.com"),
        ("App.Example.COM:443", "app.example.com", "https://app.example.com/", "app.example.com"),
        (
            "app.example.com:8443",
            "app.example.com",
            "https://app.example.com:8443/",
            "app.example.com",
        ),
        ("[::1]:8443", "::1", "https://[::1]:8443/", "::1"),
        ("127.0.0.1:8443", "127.0.0.1", "https://127.0.0.1:8443/", "127.0.0.1"),
    ],
)
def test_issuer_formats_and_audience(host: str, host_only: str, uri: str, aud: str) -> None:
    assert issuer_for(host) == host_only
    assert issuer_for(host, "hostOnly") == host_only
    assert issuer_for(host, "uri") == uri
    assert audience_for(host) == aud
    claims = identity_claims(Person(), host=host, issuer_format="uri")
    assert (claims["iss"], claims["aud"]) == (uri, aud)


def test_unknown_issuer_format_is_refused() -> None:
    with pytest.raises(ValueError, match="hostOnly or uri"):
        issuer_for("a.example.com", "url")


def test_claims_headers_copy_idp_claims_into_the_assertion() -> None:
    person = Person(
        claims={
            "family_name": "Example",
            "roles": ["a", "b", 3, True],
            "email_verified": True,
            "address": {"country": "NZ"},
            "email": "idp@example.com",
            "nothing": None,
        }
    )
    pairs = [
        ("X-Pomerium-Claim-Family_name", "family_name"),
        ("X-Roles", "roles"),
        ("X-Verified", "email_verified"),
        ("X-Address", "address"),
        ("X-Email", "email"),
        ("X-Missing", "missing"),
        ("X-Nothing", "nothing"),
    ]
    claims = identity_claims(person, host="a.example.com", claims_headers=pairs)
    # Pomerium's convention: extra claims become strings, list items joined with ",".
    assert claims["family_name"] == "Example"
    assert claims["roles"] == "a,b,3,true"
    assert claims["email_verified"] == "true"
    assert claims["address"] == '{"country":"NZ"}'
    assert claims["nothing"] == ""
    # A base claim is never overwritten by the IdP's claim of the same name.
    assert claims["email"] == "alice@example.com"
    assert "missing" not in claims


def test_claim_headers_values() -> None:
    claims: dict[str, Any] = {
        "email": "alice@example.com",
        "groups": ["admins", "eng"],
        "iat": 1700000000,
        "verified": True,
        "nested": {"a": [1, 2]},
        "evil": "line\r\nX-Injected: yes",
    }
    pairs = [
        ("X-Pomerium-Claim-Email", "email"),
        ("X-Pomerium-Claim-Groups", "groups"),
        ("X-Iat", "iat"),
        ("X-Verified", "verified"),
        ("X-Nested", "nested"),
        ("X-Evil", "evil"),
        ("X-Absent", "absent"),
    ]
    assert claim_headers(claims, pairs) == [
        ("X-Pomerium-Claim-Email", "alice@example.com"),
        ("X-Pomerium-Claim-Groups", "admins,eng"),
        ("X-Iat", "1700000000"),
        ("X-Verified", "true"),
        ("X-Nested", '{"a":[1,2]}'),
        ("X-Evil", "line  X-Injected: yes"),
        ("X-Absent", ""),
    ]


def test_empty_groups_give_an_empty_header() -> None:
    claims = identity_claims(None, host="a.example.com")
    assert claim_headers(claims, [("X-G", "groups")]) == [("X-G", "")]


@pytest.mark.parametrize(
    ("claim", "header"),
    [
        ("email", "X-Pomerium-Claim-Email"),
        ("groups", "X-Pomerium-Claim-Groups"),
        ("family_name", "X-Pomerium-Claim-Family_name"),
        ("given-NAME", "X-Pomerium-Claim-Given-Name"),
        ("https://example.com/roles", "X-Pomerium-Claim-https://example.com/roles"),
    ],
)
def test_claim_header_name_follows_go_canonical_form(claim: str, header: str) -> None:
    assert claim_header_name(claim) == header


def test_assertion_round_trip_with_claims_and_headers() -> None:
    keys = SigningKeys.derive(b"x" * 32)
    signer = AssertionSigner(keys.signer)
    pairs = [("X-Pomerium-Claim-Groups", "groups"), ("X-Dept", "department")]
    claims = identity_claims(
        Person(claims={"department": ["R&D", "Ops"]}),
        host="app.example.com:8443",
        session_id="sid",
        issuer_format="uri",
        groups_filter={"eng"},
        claims_headers=pairs,
    )
    token = signer.sign(signer.template(claims), 1000.0, "jti-1")
    verified = verify(
        token,
        keys.jwks(),
        audience="app.example.com",
        issuer="https://app.example.com:8443/",
        now=1000,
    )
    assert verified["groups"] == ["eng"]
    assert verified["department"] == "R&D,Ops"
    assert claim_headers(verified, pairs) == [
        ("X-Pomerium-Claim-Groups", "eng"),
        ("X-Dept", "R&D,Ops"),
    ]
