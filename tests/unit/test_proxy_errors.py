"""Error pages: content, headers, escaping, and words for every reason policy can give."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from shared.errors import (
    CONTENT_SECURITY_POLICY,
    REASON_TEXT,
    ErrorPage,
    authorize_unavailable,
    bad_request,
    client_certificate_error,
    client_certificate_reason,
    forbidden,
    gateway_timeout,
    misdirected,
    no_route,
    reason_text,
    render,
    sign_in_required,
    upstream_failure,
    verify_failure_kind,
)

ROOT = Path(__file__).resolve().parents[2]
RID = "req-42"
# Strings in shared/policy that look like reason names but are not.
NOT_REASONS = {"access-control-request-method"}
REASON_FUNCTIONS = {
    "outcome": (3,),
    "constant_leaf": (3,),
    "request_leaf": (2, 3),
    "session_leaf": (2, 3),
    "_session_string": (1, 2),
}


def _headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in headers}


def _policy_sources() -> list[ast.Module]:
    return [ast.parse(p.read_text()) for p in sorted((ROOT / "shared/policy").glob("*.py"))]


def _policy_reason_strings() -> set[str]:
    found: set[str] = set()
    constants: dict[str, str] = {}
    trees = _policy_sources()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.AnnAssign | ast.Assign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    for t in targets:
                        if isinstance(t, ast.Name):
                            constants[t.id] = node.value.value
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            for i in REASON_FUNCTIONS.get(node.func.id, ()):
                if i >= len(node.args):
                    continue
                arg = node.args[i]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
                elif isinstance(arg, ast.Name) and arg.id in constants:
                    found.add(constants[arg.id])
        # Hyphenated literals anywhere are reason-shaped: this catches reasons that reach
        # a Decision some new way, not through the functions above.
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"[a-z]+(-[a-z]+)+", node.value)
                and node.value not in NOT_REASONS
            ):
                found.add(node.value)
    return found


def test_every_policy_reason_has_words() -> None:
    reasons = _policy_reason_strings()
    # The scan must see the reason-producing calls; a refactor that hides them fails here.
    assert {"accept", "reject", "user-unauthenticated", "email-unauthorized"} <= reasons
    assert len(reasons) >= 30
    missing = sorted(r for r in reasons if r not in REASON_TEXT)
    assert not missing, f"reasons without words in REASON_TEXT: {missing}"


def test_vallum_reasons_have_words() -> None:
    for name in (
        "route-not-found",
        "session-store-unavailable",
        "invalid-client-certificate-expired",
        "invalid-client-certificate-untrusted",
        "invalid-client-certificate-revoked",
        "upstream-tls-untrusted",
        "upstream-tls-name-mismatch",
        "upstream-tls-expired",
        "upstream-client-certificate-required",
        "upstream-client-certificate-rejected",
        "upstream-connection-refused",
        "upstream-connection-reset",
        "upstream-timeout",
    ):
        assert REASON_TEXT[name].endswith(".")
    # Reasons authorize sends for its own failures.
    for path in ("services/authorize/decide.py", "services/authorize/authorizer.py"):
        for name in re.findall(r'reasons=\["([a-z-]+)"\]', (ROOT / path).read_text()):
            assert name in REASON_TEXT


def test_unknown_reason_is_shown_by_name() -> None:
    assert "brand-new-reason" in reason_text("brand-new-reason")


def test_reason_words_name_no_internals() -> None:
    for text in REASON_TEXT.values():
        assert not re.search(r"\d+\.\d+\.\d+\.\d+|https?://|:\d{2,5}\b", text)


PAGES = [
    bad_request(RID, "bad-request-path"),
    sign_in_required(RID, sign_in_url="https://auth.example.com/.pomerium/sign_in"),
    forbidden(RID, ["email-unauthorized", "groups-unauthorized"], sign_out_url="/.pomerium/x"),
    no_route(RID, "nothing.example.com"),
    misdirected(RID, "b.example.com", "a.example.com"),
    client_certificate_error(RID, "client-certificate-required"),
    client_certificate_error(RID, "invalid-client-certificate-expired"),
    upstream_failure(RID, "upstream-tls-untrusted"),
    authorize_unavailable(RID),
    gateway_timeout(RID),
]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.status))
def test_json_page(page: ErrorPage) -> None:
    status, headers, body = render(page, html=False)
    h = _headers(headers)
    assert status == page.status
    assert h["content-type"] == "application/json"
    assert h["cache-control"] == "no-store"
    assert h["x-content-type-options"] == "nosniff"
    assert int(h["content-length"]) == len(body)
    doc = json.loads(body)
    assert doc["status"] == page.status
    assert doc["request_id"] == RID
    assert doc["detail"] and doc["advice"] and doc["error"]
    assert [r["name"] for r in doc["reasons"]] == list(page.reasons)
    assert all(r["text"] == REASON_TEXT[r["name"]] for r in doc["reasons"])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.status))
def test_html_page(page: ErrorPage) -> None:
    status, headers, body = render(page, html=True)
    h = _headers(headers)
    text = body.decode()
    assert status == page.status
    assert h["content-type"] == "text/html; charset=utf-8"
    assert h["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert h["x-frame-options"] == "DENY"
    assert h["cache-control"] == "no-store"
    assert int(h["content-length"]) == len(body)
    assert text.startswith("<!doctype html>")
    assert RID in text and str(page.status) in text
    assert 'name="viewport"' in text
    # Self-contained: nothing fetched from anywhere.
    assert not re.search(r"<(script|link|img|iframe)|src=|url\(", text, re.I)
    for _, words in page.reason_texts():
        assert words.replace("'", "&#x27;") in text


def test_forbidden_lists_reasons_in_words() -> None:
    doc = json.loads(render(forbidden(RID, ["email-unauthorized"]), html=False)[2])
    assert doc == {
        "status": 403,
        "error": "Forbidden",
        "title": "Access denied",
        "detail": doc["detail"],
        "reasons": [{"name": "email-unauthorized", "text": REASON_TEXT["email-unauthorized"]}],
        "advice": doc["advice"],
        "request_id": RID,
    }


def test_status_phrases() -> None:
    assert json.loads(render(PAGES[5], html=False)[2])["error"] == "SSL Certificate Error"
    assert json.loads(render(PAGES[4], html=False)[2])["error"] == "Misdirected Request"
    assert upstream_failure(RID, "upstream-timeout").status == 504
    assert upstream_failure(RID, "upstream-connection-refused").status == 502


def test_client_certificate_pages_say_which() -> None:
    missing = client_certificate_error(RID, "client-certificate-required")
    bad = client_certificate_error(RID, "invalid-client-certificate-revoked")
    assert "none was presented" in missing.detail and "Install" in missing.advice
    assert "not valid" in bad.detail and missing.title != bad.title
    assert "organisation's" in missing.advice and "organisation's" in bad.advice


def test_verify_codes_group_into_kinds() -> None:
    assert verify_failure_kind(18) == "untrusted"  # self-signed
    assert verify_failure_kind(20) == "untrusted"  # unknown issuer
    assert verify_failure_kind(10) == "expired"
    assert verify_failure_kind(9) == "not-yet-valid"
    assert verify_failure_kind(23) == "revoked"
    assert verify_failure_kind(62) == "name-mismatch"
    assert verify_failure_kind(None) == "invalid"
    assert client_certificate_reason(False) == "client-certificate-required"
    assert client_certificate_reason(True, 10) == "invalid-client-certificate-expired"
    assert client_certificate_reason(True, 62) == "invalid-client-certificate"
    assert client_certificate_reason(True, 999) == "invalid-client-certificate"


EVIL = '<script>alert("x")</script>&\'"'


def test_everything_is_escaped() -> None:
    page = ErrorPage(
        status=403,
        title=EVIL,
        detail=EVIL,
        reasons=(EVIL, "email-unauthorized"),
        advice=EVIL,
        request_id=EVIL,
        sign_out_url="/x?" + EVIL,
        sign_in_url="https://a.example/" + EVIL,
    )
    html = render(page, html=True)[2].decode()
    assert "<script" not in html.lower()
    assert '"x"' not in html
    assert html.count("&lt;script&gt;") >= 6
    doc = json.loads(render(page, html=False)[2])
    assert doc["request_id"] == EVIL  # JSON escapes by its own rules; the value survives


def test_user_supplied_names_are_escaped_and_bounded() -> None:
    page = misdirected(RID, "<b>" + "a" * 5000, None)
    html = render(page, html=True)[2].decode()
    assert "<b>" not in html and "&lt;b&gt;" in html
    assert len(page.detail) < 700
    assert "(none)" in page.detail


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:text/html,x", "//evil.example/x", "vbscript:x"]
)
def test_dangerous_links_are_dropped(url: str) -> None:
    page = sign_in_required(RID, sign_in_url=url)
    html = render(page, html=True)[2].decode()
    assert "href" not in html
    assert "sign_in_url" not in json.loads(render(page, html=False)[2])


def test_links_are_printed() -> None:
    page = forbidden(RID, [], sign_out_url="/.pomerium/sign_out?a=1&b=2")
    html = render(page, html=True)[2].decode()
    assert 'href="/.pomerium/sign_out?a=1&amp;b=2"' in html
    assert json.loads(render(page, html=False)[2])["sign_out_url"] == "/.pomerium/sign_out?a=1&b=2"


def test_pages_name_no_upstream() -> None:
    # The constructors take no address at all; the 502 words are generic.
    for reason in [r for r in REASON_TEXT if r.startswith("upstream-")]:
        page = upstream_failure(RID, reason)
        body = render(page, html=True)[2] + render(page, html=False)[2]
        assert b"127.0.0.1" not in body and b"http://" not in body
