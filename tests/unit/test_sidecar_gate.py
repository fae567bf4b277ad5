"""The sidecar's pure decisions: client certificate names and identity headers."""

from __future__ import annotations

import pytest

from services.proxy.upstream import Pool, Target
from services.sidecar.gate import certificate_names, identity_headers, name_allowed
from services.sidecar.handler import Checks, SidecarHandler

PEER = {
    "subject": ((("commonName", "proxy"),),),
    "subjectAltName": (
        ("URI", "spiffe://vallum.internal/proxy"),
        ("DNS", "proxy.internal"),
        ("IP Address", "127.0.0.1"),
        ("email", "ops@example.com"),
    ),
}


def test_names_are_the_uri_and_dns_sans() -> None:
    assert certificate_names(PEER) == {"spiffe://vallum.internal/proxy", "proxy.internal"}
    assert certificate_names(None) == frozenset()
    assert certificate_names({}) == frozenset()


def test_names_match_exactly() -> None:
    names = certificate_names(PEER)
    assert name_allowed(names, ["spiffe://vallum.internal/proxy"])
    assert name_allowed(names, ["nope", "proxy.internal"])
    assert not name_allowed(names, ["spiffe://vallum.internal/prox"])
    assert not name_allowed(names, ["PROXY.internal"])
    assert not name_allowed(names, ["127.0.0.1", "ops@example.com"])  # not URI or DNS
    assert name_allowed(names, [])  # empty: any certificate from the CA


def test_identity_headers_from_claims() -> None:
    claims = {"email": "ada@example.com", "groups": ["admins", "dev"], "admin": True, "n": 3}
    pairs = [("X-Remote-User", "email"), ("X-Remote-Groups", "groups"), ("X-A", "admin")]
    assert identity_headers(claims, [*pairs, ("X-N", "n")]) == [
        ("X-Remote-User", "ada@example.com"),
        ("X-Remote-Groups", "admins,dev"),
        ("X-A", "true"),
        ("X-N", "3"),
    ]


def test_empty_or_missing_claims_set_no_header() -> None:
    # What an anonymous request on a public route carries: every user claim empty.
    claims = {"email": "", "groups": [], "sub": "", "obj": {"a": 1}, "bad": "a\r\nX-Evil: 1"}
    pairs = [("X-U", "email"), ("X-G", "groups"), ("X-M", "missing"), ("X-O", "obj")]
    assert identity_headers(claims, [*pairs, ("X-B", "bad")]) == []


def test_a_handler_that_checks_nothing_cannot_be_built() -> None:
    # The config refuses this first; the gate must not open if a caller skips it.
    checks = Checks(mtls=False, allowed_names=(), verifier=None, identity=())
    with pytest.raises(ValueError, match="checks nothing"):
        SidecarHandler(checks, Target("127.0.0.1", 1, None, None), b"app", Pool())
