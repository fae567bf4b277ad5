"""`make run`'s demo (deploy/demo/config.yaml): all-in-one with the built-in demo IdP
and demo app; a newcomer signs in as alice and sees who Vallum says they are."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.browser import Browser
from tests.support.net import free_port
from tests.support.procs import ROOT, vallum

pytestmark = pytest.mark.integration


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
        assert page.status_code == 200 and "Hello, alice@example.com" in page.text
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
