"""Builders shared by the policy tests (this module holds no tests of its own)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import yaml

from shared.policy import (
    ClientCertView,
    CompiledPolicy,
    Decision,
    PolicyInput,
    SessionView,
    compile_policy,
)

# A Wednesday, at noon UTC.
NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)

ALICE = SessionView(
    user_id="u-alice",
    email="alice@example.com",
    name="Alice",
    groups=("admin", "eng"),
    claims={
        "family_name": "Smith",
        "email_verified": True,
        "age": 30,
        "address": {"country": "FR"},
        "https://example.com/roles": ["reader"],
        "tags": ["blue", 7, False],
    },
)
BOB = SessionView(user_id="u-bob", email="bob@example.org", groups=("eng",))

FINGERPRINT = "17859273e8a980631d367b2d5a6a6635412b0f22835f69e47b3f65624546a704"
SPKI = "FsDbM0rUYIiL3V339eIKqiz6HPSB+Pz2WeAWhqlqh8U="
GOOD_CERT = ClientCertView(
    presented=True,
    valid=True,
    fingerprint=FINGERPRINT,
    spki_hash=SPKI,
    san_dns=("laptop.corp.example.com",),
    san_email=("alice@example.com",),
    san_uri=("spiffe://example.com/alice",),
)

_DEFAULT = object()


def req(
    *,
    method: str = "GET",
    path: str = "/",
    headers: Mapping[str, str] | None = None,
    ip: str = "10.1.2.3",
    now: datetime = NOW,
    session: SessionView | object | None = _DEFAULT,
    cert: ClientCertView | None = None,
) -> PolicyInput:
    """A request from Alice unless told otherwise."""
    return PolicyInput(
        method=method,
        path=path,
        host="app.example.com",
        headers=headers or {},
        source_ip=ip,
        now=now,
        session=ALICE if session is _DEFAULT else session,  # type: ignore[arg-type]
        client_cert=cert,
    )


def ppl(text: str) -> Any:
    return yaml.safe_load(text)


def compiled(policy: Any) -> CompiledPolicy:
    return compile_policy(ppl(policy) if isinstance(policy, str) else policy)


def decide(policy: Any, inp: PolicyInput | None = None) -> Decision:
    return compiled(policy).evaluate(inp or req())


def verdict(decision: Decision) -> str:
    """allow / deny / sign-in / certificate: the outcome a user would see."""
    if decision.allowed:
        return "allow"
    if decision.needs_sign_in:
        return "sign-in"
    if decision.needs_client_certificate:
        return "certificate"
    return "deny"


def criterion(crit: Mapping[str, Any], inp: PolicyInput | None = None) -> tuple[Any, str]:
    """A single criterion's three-valued result (True, False or None) and its one reason."""
    decision = decide({"allow": {"and": [crit]}}, inp)
    (reason,) = decision.reasons
    if decision.allowed:
        return True, reason
    return (None if decision.needs_sign_in else False), reason
