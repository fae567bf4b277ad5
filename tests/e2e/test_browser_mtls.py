"""Downstream mTLS with a real headless Chromium: with a PKCS#12 client certificate the
page is the app; without one it is Vallum's 495 certificate page.

Playwright presents the certificate from its Node driver (see tests/support/chromium.py),
which verifies Vallum's server certificate against Vallum's CA (NODE_EXTRA_CA_CERTS) and
resolves names with the system resolver, so the route is on plain `localhost`. mkcert's
PKCS#12 files use RC2-40, which Node's OpenSSL 3 reads only with the legacy provider.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.chromium import chromium, require_chromium
from tests.support.client_certs import (
    ClientCert,
    ProjectCA,
    concat,
    mkcert_ca,
)
from tests.support.net import free_port
from tests.support.stack import all_in_one, upstream
from tests.support.tools import require_tool

if TYPE_CHECKING:
    from playwright._impl._api_structures import ClientCertificate

pytestmark = pytest.mark.e2e


@dataclass
class Stack:
    origin: str
    server_ca: Path  # Vallum's own CA, which issued its server certificate
    server_cert: Path
    mkcert_user: ClientCert  # with mkcert's .p12
    project_user: ClientCert  # with the project CA's .p12


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_chromium()  # before starting anything it would need
    require_tool("mkcert")
    tmp = tmp_path_factory.mktemp("browser-mtls")
    out = tmp / "out"
    mk = mkcert_ca(tmp / "mkcert", out)
    mkcert_user = mk.client_p12(out, "browser-user", "browser-user@example.com")
    project = ProjectCA.init(tmp / "project", "Vallum Test Users CA")
    project_user = project.client(out, "project-user", "user@example.com")
    bundle = concat(tmp / "bundle.pem", mk.root, project.root)
    port = free_port()
    origin = f"https://localhost:{port}"
    with upstream() as app:
        routes: list[dict[str, Any]] = [
            {
                "from": origin,
                "to": app.url,
                "allow_public_unauthenticated_access": True,
                "set_request_headers": {
                    "X-Cert-Fingerprint": "${pomerium.client_cert_fingerprint}"
                },
            }
        ]
        with all_in_one(tmp, routes, port, downstream_mtls={"ca_file": str(bundle)}) as v:
            yield Stack(
                origin, v.ca, v.data / "pki" / "proxy-server.pem", mkcert_user, project_user
            )


@pytest.mark.parametrize("which", ["mkcert", "project"])
def test_chromium_with_a_pkcs12_certificate_reaches_the_app(
    stack: Stack, tmp_path: Path, which: str
) -> None:
    cert = stack.mkcert_user if which == "mkcert" else stack.project_user
    assert cert.p12 is not None
    env = {"NODE_EXTRA_CA_CERTS": str(stack.server_ca)}
    if which == "mkcert":
        env["NODE_OPTIONS"] = "--openssl-legacy-provider"
    client_certificates: list[ClientCertificate] = [
        {"origin": stack.origin, "pfxPath": str(cert.p12), "passphrase": cert.p12_password}
    ]
    with chromium(
        tmp_path,
        trust=[stack.server_cert],
        client_certificates=client_certificates,
        driver_env=env,
    ) as context:
        page = context.new_page()
        response = page.goto(f"{stack.origin}/echo")
        assert response is not None
        text = page.inner_text("body")
        page.screenshot(path=str(tmp_path / f"with-{which}-certificate.png"))
        assert response.status == 200, text[:500]
        headers = {k: v for k, v in json.loads(text)["headers"]}
        assert headers["x-cert-fingerprint"] == cert.fingerprint
    assert (tmp_path / f"with-{which}-certificate.png").stat().st_size > 0


def test_chromium_without_a_certificate_gets_the_495_page(stack: Stack, tmp_path: Path) -> None:
    with chromium(tmp_path, trust=[stack.server_cert]) as context:
        page = context.new_page()
        response = page.goto(f"{stack.origin}/echo")
        assert response is not None
        page.screenshot(path=str(tmp_path / "without-certificate.png"))
        assert response.status == 495
        assert page.title() == "Client certificate required · Vallum"
        assert page.locator("h1").inner_text() == "Client certificate required"
        assert "client-certificate-required" in page.content()
    assert (tmp_path / "without-certificate.png").stat().st_size > 0
