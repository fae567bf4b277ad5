"""The demo IdP says it is for development only, and its pages escape what they show."""

from __future__ import annotations

from html import escape

import services.demo_idp
from services.demo_idp.config import DEMO_USERS, DemoUser
from services.demo_idp.pages import BANNER, error_page, login_page, signed_out_page


def test_every_page_carries_the_development_only_banner() -> None:
    for page in (login_page("/authorize", "r", "vallum", DEMO_USERS), signed_out_page()):
        assert escape(BANNER) in page and "DEVELOPMENT ONLY" in page
    assert "DEVELOPMENT ONLY" in (services.demo_idp.__doc__ or "")


def test_login_page_lists_users_with_their_password_shown() -> None:
    page = login_page("/authorize", "req-1", "vallum", DEMO_USERS)
    for user in DEMO_USERS:
        assert user.email in page and f'value="{user.password}"' in page
    assert "alice@example.com" in page and "admins" in page
    assert "bob@example.com" in page and "staff" in page
    assert page.count('name=request_id value="req-1"') == len(DEMO_USERS)


def test_pages_escape_what_they_show() -> None:
    user = DemoUser("x", "<x@example.com>", '"><script>', ("<g>",), password='"pw')
    page = login_page("/authorize", '"><', "<client>", [user], error="<bad>")
    assert "<script>" not in page and "<client>" not in page and "<bad>" not in page
    assert "&lt;x@example.com&gt;" in page and 'value="&quot;pw"' in page
    assert "<b>" not in error_page("<b>")
