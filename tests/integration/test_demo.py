"""`make run`'s demo (deploy/demo/config.yaml): all-in-one with the built-in demo IdP
and demo app; a newcomer signs in as alice and sees who Vallum says they are."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.browser import Browser
from tests.support.net import free_port
from tests.support.procs import ROOT, vallum

pytestmark = pytest.mark.integration


def _forged(kid: str) -> str:
    """Alice's claims made admin, with the route's real kid, signed by nobody."""
    header = {"alg": "ES256", "kid": kid}
    claims = {"iss": "verify.localhost", "aud": "verify.localhost", "groups": ["admins"]}
    parts = [
        base64.urlsafe_b64encode(json.dumps(p).encode()).decode().rstrip("=")
        for p in (header, claims)
    ]
    return ".".join(parts) + ".c2lnbmF0dXJl"


def test_demo_sign_in_as_alice_and_bob(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "demo" / "config.yaml").read_text())
    port, idp, app = free_port(), free_port(), free_port()
    config["address"] = f"127.0.0.1:{port}"
    config["authenticate_service_url"] = f"https://authenticate.localhost:{port}"
    config["authorize_service_url"] = f"https://127.0.0.1:{free_port()}"
    config["databroker_service_url"] = f"https://127.0.0.1:{free_port()}"
    # Its default is the sessions port + 1, which nobody reserved for the test.
    config["authenticate_internal_service_url"] = f"https://127.0.0.1:{free_port()}"
    config["idp_provider_url"] = f"https://localhost:{idp}"
    config["data_dir"] = str(tmp_path / "data")
    for route in config["routes"]:
        route["from"] = route["from"].replace(":8443", f":{port}")
        route["to"] = f"http://127.0.0.1:{app}"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = vallum("run", "--config", str(path))
    try:
        proc.wait_for("all services ready", timeout=40)
        assert "DEVELOPMENT ONLY" in proc.output
        alice = Browser(tmp_path / "data" / "pki" / "ca.pem")
        _, page = alice.navigate(
            f"https://verify.localhost:{port}/hello", fill={"login": "alice", "password": "demo"}
        )
        assert page.status_code == 200 and "Hello, alice@example.com" in page.text, page.text[:3000]
        # The page verified the assertion against verify.localhost's own JWKS.
        assert "The identity assertion checked out" in page.text, page.text
        assert "<th>groups</th><td>admins</td>" in page.text
        jwks = alice.request(
            "GET", f"https://verify.localhost:{port}/.well-known/pomerium/jwks.json"
        )
        kid = jwks.json()["keys"][0]["kid"]
        # Straight to the app, around Vallum: nothing checks out, whatever it claims.
        direct = httpx.get(
            f"http://127.0.0.1:{app}/",
            headers={
                "Host": f"verify.localhost:{port}",
                "X-Pomerium-JWT-Assertion": _forged(kid),
            },
        )
        assert "did NOT check out: <code>bad-signature</code>" in direct.text
        assert "Hello, nobody" in direct.text
        bare = httpx.get(f"http://127.0.0.1:{app}/", headers={"Host": f"verify.localhost:{port}"})
        assert "did NOT check out: <code>missing</code>" in bare.text
        elsewhere = httpx.get(f"http://127.0.0.1:{app}/", headers={"Host": "evil.example"})
        assert "is not a route host of this demo" in elsewhere.text
        # The demo IdP keeps no session of its own: each route host's sign-in asks again.
        _, admin = alice.navigate(
            f"https://admins.localhost:{port}/", fill={"login": "alice", "password": "demo"}
        )
        assert admin.status_code == 200 and "Hello, alice@example.com" in admin.text
        bob = Browser(tmp_path / "data" / "pki" / "ca.pem")
        _, hello = bob.navigate(
            f"https://verify.localhost:{port}/", fill={"login": "bob", "password": "demo"}
        )
        assert "Hello, bob@example.com" in hello.text
        _, denied = bob.navigate(
            f"https://admins.localhost:{port}/", fill={"login": "bob", "password": "demo"}
        )
        assert denied.status_code == 403 and "groups" in denied.text.lower()
        alice.close()
        bob.close()
    finally:
        assert proc.stop() == 0
