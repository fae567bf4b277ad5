"""services.demo_app: the "verify" page, in-process (a fixed JWKS, no sockets)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from services.demo_app.app import create_app
from shared.jwt import AssertionSigner, SigningKey, SigningKeys, identity_claims
from shared.verify import Verifier

HOST = "verify.localhost"


@dataclass(frozen=True)
class User:
    user_id: str = "alice"
    email: str = "alice@example.com"
    name: str = "<script>alert(1)</script>"
    groups: tuple[str, ...] = ("admins",)
    claims: dict[str, object] = field(default_factory=dict)


async def test_the_page_shows_the_verified_identity_escaped() -> None:
    keys = SigningKeys((SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1())),))
    signer = AssertionSigner(keys.signer)
    claims = identity_claims(User(), host=f"{HOST}:8443", session_id="s-1")
    token = signer.sign(signer.template(claims), time.time(), "j-1")
    app = create_app({HOST: Verifier(jwks=keys.jwks(), issuer=HOST, audience=HOST)})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        ok = await client.get(
            "/", headers={"X-Forwarded-Host": f"{HOST}:8443", "X-Pomerium-JWT-Assertion": token}
        )
        assert "Hello, alice@example.com" in ok.text
        assert "The identity assertion checked out" in ok.text
        assert "<th>session id</th><td>s-1</td>" in ok.text
        assert "<script>" not in ok.text and "&lt;script&gt;alert(1)" in ok.text
        bad = await client.get(
            "/", headers={"X-Forwarded-Host": HOST, "X-Pomerium-JWT-Assertion": token + "x"}
        )
        assert "did NOT check out: <code>bad-signature</code>" in bad.text
        assert "NOT verified: do not trust them" in bad.text and "<script>" not in bad.text
        other = await client.get("/", headers={"Host": "<evil>.example"})
        assert "not a route host" in other.text and "<evil>" not in other.text
