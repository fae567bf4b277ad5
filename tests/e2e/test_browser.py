"""Sign in once with a real headless Chromium: proxy → IdP login page (the real
`oidc-provider`) → callback → the app with a signed identity; the user page; sign-out
through the IdP; and the signed-out browser sent back to the login page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chromium import chromium, require_chromium
from tests.support.net import free_port
from tests.support.oidc import OIDCClient, oidc_provider
from tests.support.stack import all_in_one, route_host, upstream

pytestmark = pytest.mark.e2e


class Stack:
    def __init__(self, port: int, issuer: str, server_cert: Path) -> None:
        self.port, self.issuer, self.server_cert = port, issuer, server_cert

    def url(self, name: str, path: str = "/") -> str:
        return f"{route_host(name, self.port)}{path}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_chromium()  # before starting anything it would need
    tmp = tmp_path_factory.mktemp("browser")
    port = free_port()
    auth = route_host("authenticate", port)
    client = OIDCClient(
        redirect_uris=(f"{auth}/oauth2/callback",),
        post_logout_redirect_uris=(f"{auth}/.pomerium/signed_out",),
    )
    with oidc_provider(tmp, clients=[client]) as op, upstream() as app:
        routes: list[dict[str, Any]] = [
            {
                "from": route_host("any", port),
                "to": app.url,
                "allow_any_authenticated_user": True,
                "pass_identity_headers": True,
            }
        ]
        extra: dict[str, Any] = {
            "idp_provider_url": op.issuer,
            "idp_client_id": client.client_id,
            "idp_client_secret": client.client_secret,
        }
        with all_in_one(tmp, routes, port, **extra) as v:
            yield Stack(port, op.issuer, v.data / "pki" / "proxy-server.pem")


def test_chromium_signs_in_sees_the_user_page_and_signs_out(stack: Stack, tmp_path: Path) -> None:
    login_page = f"{stack.issuer}/interaction/"
    with chromium(tmp_path, trust=[stack.server_cert]) as context:
        page = context.new_page()

        # Signed out: the app sends the browser through authenticate to the IdP.
        page.goto(stack.url("any", "/echo"))
        page.wait_for_url(f"{login_page}**")
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", "alice-password")
        page.click("button[type=submit]")

        # Back at the app, which got alice's signed identity.
        page.wait_for_url(stack.url("any", "/echo"))
        page.screenshot(path=str(tmp_path / "signed-in.png"))
        text = page.inner_text("body")
        assert "x-pomerium-jwt-assertion" in text
        headers = {k.lower(): v for k, v in json.loads(text)["headers"]}
        assert headers["x-pomerium-jwt-assertion"].count(".") == 2
        assert (tmp_path / "signed-in.png").stat().st_size > 0

        assert [c for c in context.cookies(stack.url("any")) if c["name"] == "_pomerium"]

        # The user page names her and offers to sign out.
        response = page.goto(stack.url("any", "/.pomerium/"))
        assert response is not None and response.status == 200
        assert "alice@example.com" in page.inner_text("body")
        sign_out = page.get_by_role("button", name="Sign out")
        assert sign_out.is_visible()

        # Sign-out: proxy → authenticate → the IdP's end-session (it submits its own
        # confirmation form) → authenticate's signed-out page.
        sign_out.click()
        page.wait_for_url(route_host("authenticate", stack.port) + "/.pomerium/signed_out")
        assert "signed out" in page.inner_text("body").lower()
        assert not [c for c in context.cookies(stack.url("any")) if c["name"] == "_pomerium"]

        # The app asks for a sign-in again, and the IdP asks for the password again.
        page.goto(stack.url("any", "/echo"))
        page.wait_for_url(f"{login_page}**")
        assert page.locator("input[name=password]").is_visible()
