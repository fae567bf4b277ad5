"""Each PPL criterion and matcher: true, false, no session, missing claim, type mismatch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.policy import ClientCertView, SessionView
from tests.unit.test_policy_support import (
    ALICE,
    BOB,
    FINGERPRINT,
    GOOD_CERT,
    SPKI,
    criterion,
    req,
)

T, F, U = True, False, None
ANON = req(session=None)

IDENTITY_CASES: list[tuple[dict[str, Any], Any, Any, str]] = [
    # email: every string matcher operator, bare value, and combinations
    ({"email": {"is": "alice@example.com"}}, ALICE, T, "email-ok"),
    ({"email": {"is": "alice@example.com"}}, BOB, F, "email-unauthorized"),
    ({"email": {"is": "alice@example.com"}}, None, U, "user-unauthenticated"),
    ({"email": "alice@example.com"}, ALICE, T, "email-ok"),
    ({"email": {"not": "alice@example.com"}}, ALICE, F, "email-unauthorized"),
    ({"email": {"not": "alice@example.com"}}, BOB, T, "email-ok"),
    ({"email": {"starts_with": "alice@"}}, ALICE, T, "email-ok"),
    ({"email": {"ends_with": "@example.com"}}, BOB, F, "email-unauthorized"),
    ({"email": {"contains": "ice@ex"}}, ALICE, T, "email-ok"),
    ({"email": {"in": ["x@example.com", "alice@example.com"]}}, ALICE, T, "email-ok"),
    ({"email": {"not_in": ["x@example.com", "alice@example.com"]}}, ALICE, F, "email-unauthorized"),
    (
        {"email": {"ends_with": "@example.com", "not": "alice@example.com"}},
        ALICE,
        F,
        "email-unauthorized",
    ),
    ({"email": {"ends_with": "@example.com", "starts_with": "al"}}, ALICE, T, "email-ok"),
    # domain is the part after the @
    ({"domain": {"is": "example.com"}}, ALICE, T, "domain-ok"),
    ({"domain": {"is": "example.com"}}, BOB, F, "domain-unauthorized"),
    ({"domain": {"is": "example.com"}}, None, U, "user-unauthenticated"),
    ({"domain": {"is": "example.com"}}, SessionView("u", "example.com"), F, "domain-unauthorized"),
    ({"domain": "example.org"}, BOB, T, "domain-ok"),
    # user is the user id, not the email
    ({"user": {"is": "u-alice"}}, ALICE, T, "user-ok"),
    ({"user": {"is": "alice@example.com"}}, ALICE, F, "user-unauthorized"),
    ({"user": "u-alice"}, None, U, "user-unauthenticated"),
    ({"authenticated_user": True}, ALICE, T, "user-ok"),
    ({"authenticated_user": True}, None, U, "user-unauthenticated"),
    ({"authenticated_user": None}, BOB, T, "user-ok"),
    # groups: list matchers
    ({"groups": {"has": "admin"}}, ALICE, T, "groups-ok"),
    ({"groups": {"has": "admin"}}, BOB, F, "groups-unauthorized"),
    ({"groups": {"has": "admin"}}, None, U, "user-unauthenticated"),
    ({"groups": "admin"}, ALICE, T, "groups-ok"),
    ({"groups": {"is": "eng"}}, ALICE, F, "groups-unauthorized"),  # two groups, not exactly one
    ({"groups": {"is": "eng"}}, BOB, T, "groups-ok"),
    ({"groups": {"exclude": "admin"}}, ALICE, F, "groups-unauthorized"),
    ({"groups": {"exclude": "admin"}}, BOB, T, "groups-ok"),
    ({"groups": {"in": ["ops", "eng"]}}, BOB, T, "groups-ok"),
    ({"groups": {"starts_with": "ad"}}, ALICE, T, "groups-ok"),
    ({"groups": {"has": "eng", "exclude": "admin"}}, ALICE, F, "groups-unauthorized"),
    ({"groups": {"has": "x"}}, SessionView("u"), F, "groups-unauthorized"),
    # claim/<name>: string claims, list claims, typed values, nesting, fallbacks
    ({"claim/family_name": "Smith"}, ALICE, T, "claim-ok"),
    ({"claim/family_name": "Jones"}, ALICE, F, "claim-unauthorized"),
    ({"claim/family_name": "Smith"}, None, U, "user-unauthenticated"),
    ({"claim/family_name": {"is": "Smith"}}, ALICE, T, "claim-ok"),
    ({"claim/family_name": {"starts_with": "Sm"}}, ALICE, T, "claim-ok"),
    ({"claim/nickname": "Al"}, ALICE, F, "claim-unauthorized"),  # missing claim
    ({"claim/nickname": {"exclude": "Al"}}, ALICE, T, "claim-ok"),  # missing = empty list
    ({"claim/email_verified": True}, ALICE, T, "claim-ok"),
    ({"claim/email_verified": "true"}, ALICE, F, "claim-unauthorized"),  # type mismatch
    ({"claim/email_verified": 1}, ALICE, F, "claim-unauthorized"),  # true is not 1
    ({"claim/age": 30}, ALICE, T, "claim-ok"),
    ({"claim/age": 30.0}, ALICE, T, "claim-ok"),
    ({"claim/age": "30"}, ALICE, F, "claim-unauthorized"),  # type mismatch
    ({"claim/age": {"starts_with": "3"}}, ALICE, F, "claim-unauthorized"),  # not a string
    ({"claim/tags": 7}, ALICE, T, "claim-ok"),
    ({"claim/tags": False}, ALICE, T, "claim-ok"),
    ({"claim/tags": 0}, ALICE, F, "claim-unauthorized"),  # false is not 0
    ({"claim/tags": {"in": ["red", "blue"]}}, ALICE, T, "claim-ok"),
    ({"claim/address/country": "FR"}, ALICE, T, "claim-ok"),
    ({"claim/address.country": "FR"}, ALICE, T, "claim-ok"),
    ({"claim/address": "FR"}, ALICE, F, "claim-unauthorized"),  # a mapping matches nothing
    ({"claim/https://example.com/roles": "reader"}, ALICE, T, "claim-ok"),
    ({"claim/email": {"ends_with": "@example.com"}}, ALICE, T, "claim-ok"),  # session field
    ({"claim/sub": "u-alice"}, ALICE, T, "claim-ok"),
    ({"claim/groups": {"has": "admin"}}, ALICE, T, "claim-ok"),  # from SessionView.groups
    (
        {"claim/groups": {"has": "admin"}},
        SessionView("u", claims={"groups": ["admin"]}),
        T,
        "claim-ok",
    ),
    ({"claim/groups": {"is": "eng"}}, BOB, T, "claim-ok"),
]


@pytest.mark.parametrize(("crit", "session", "expected", "reason"), IDENTITY_CASES)
def test_identity_criteria(crit: dict[str, Any], session: Any, expected: Any, reason: str) -> None:
    assert criterion(crit, req(session=session)) == (expected, reason)


REQUEST_CASES: list[tuple[dict[str, Any], dict[str, Any], Any, str]] = [
    ({"accept": True}, {}, T, "accept"),
    ({"accept": True}, {"session": None}, T, "accept"),
    ({"reject": True}, {}, F, "reject"),
    ({"http_method": "GET"}, {}, T, "http-method-ok"),
    ({"http_method": {"is": "GET"}}, {"method": "POST"}, F, "http-method-unauthorized"),
    ({"http_method": {"in": ["GET", "HEAD"]}}, {"method": "HEAD"}, T, "http-method-ok"),
    (
        {"http_method": {"not_in": ["GET", "HEAD"]}},
        {"method": "HEAD"},
        F,
        "http-method-unauthorized",
    ),
    ({"http_method": "GET"}, {"session": None}, T, "http-method-ok"),  # needs no user
    ({"http_path": {"starts_with": "/admin"}}, {"path": "/admin/x"}, T, "http-path-ok"),
    ({"http_path": {"starts_with": "/admin"}}, {"path": "/public"}, F, "http-path-unauthorized"),
    ({"http_path": {"is": "/admin"}}, {"path": "/admin?debug=1"}, T, "http-path-ok"),
    ({"http_path": {"ends_with": ".json"}}, {"path": "/a.json?x=.html"}, T, "http-path-ok"),
    ({"source_ip": "10.0.0.0/8"}, {}, T, "source-ip-ok"),
    ({"source_ip": "10.0.0.0/8"}, {"ip": "192.168.1.1"}, F, "source-ip-unauthorized"),
    ({"source_ip": "10.1.2.3"}, {}, T, "source-ip-ok"),
    ({"source_ip": "10.1.2.4"}, {}, F, "source-ip-unauthorized"),
    ({"source_ip": ["192.168.0.0/16", "10.1.0.0/16"]}, {}, T, "source-ip-ok"),
    ({"source_ip": "2001:db8::/32"}, {"ip": "2001:db8::1"}, T, "source-ip-ok"),
    ({"source_ip": "2001:db8::/32"}, {"ip": "2001:db9::1"}, F, "source-ip-unauthorized"),
    ({"source_ip": "2001:db8::/32"}, {"ip": "10.1.2.3"}, F, "source-ip-unauthorized"),
    ({"source_ip": "::/0"}, {"ip": "10.1.2.3"}, F, "source-ip-unauthorized"),  # v4 is not v6
    ({"source_ip": "10.0.0.0/8"}, {"ip": "::ffff:10.9.9.9"}, T, "source-ip-ok"),  # mapped
    ({"source_ip": "10.0.0.0/8"}, {"ip": "not-an-ip"}, F, "source-ip-unauthorized"),
    ({"source_ip": "10.0.0.0/8"}, {"ip": ""}, F, "source-ip-unauthorized"),
    (
        {"cors_preflight": True},
        {
            "method": "OPTIONS",
            "headers": {"origin": "https://a", "access-control-request-method": "PUT"},
        },
        T,
        "cors-request",
    ),
    (
        {"cors_preflight": True},
        {"method": "OPTIONS", "headers": {"origin": "https://a"}},
        F,
        "non-cors-request",
    ),
    (
        {"cors_preflight": True},
        {
            "method": "GET",
            "headers": {"origin": "https://a", "access-control-request-method": "PUT"},
        },
        F,
        "non-cors-request",
    ),
    ({"pomerium_routes": True}, {"path": "/.pomerium/jwt"}, T, "pomerium-route"),
    ({"pomerium_routes": True}, {"path": "/app"}, F, "non-pomerium-route"),
]


@pytest.mark.parametrize(("crit", "request_args", "expected", "reason"), REQUEST_CASES)
def test_request_criteria(
    crit: dict[str, Any], request_args: dict[str, Any], expected: Any, reason: str
) -> None:
    assert criterion(crit, req(**request_args)) == (expected, reason)


INVALID_CERT = ClientCertView(presented=True, valid=False, fingerprint=FINGERPRINT)
MISSING_CERT = ClientCertView(presented=False)
LONG_FINGERPRINT = ":".join(FINGERPRINT[i : i + 2] for i in range(0, 64, 2)).upper()

CERTIFICATE_CASES: list[tuple[dict[str, Any], Any, Any, str]] = [
    ({"client_certificate": {"fingerprint": FINGERPRINT}}, GOOD_CERT, T, "client-certificate-ok"),
    (
        {"client_certificate": {"fingerprint": LONG_FINGERPRINT}},
        GOOD_CERT,
        T,
        "client-certificate-ok",
    ),
    (
        {"client_certificate": {"fingerprint": ["00" * 32, FINGERPRINT]}},
        GOOD_CERT,
        T,
        "client-certificate-ok",
    ),
    (
        {"client_certificate": {"fingerprint": "00" * 32}},
        GOOD_CERT,
        F,
        "client-certificate-unauthorized",
    ),
    ({"client_certificate": {"spki_hash": SPKI}}, GOOD_CERT, T, "client-certificate-ok"),
    (
        {"client_certificate": {"spki_hash": ["A" * 43 + "="]}},
        GOOD_CERT,
        F,
        "client-certificate-unauthorized",
    ),
    (
        {"client_certificate": {"san_email": {"ends_with": "@example.com"}}},
        GOOD_CERT,
        T,
        "client-certificate-ok",
    ),
    (
        {"client_certificate": {"san_dns": {"ends_with": ".corp.example.com"}}},
        GOOD_CERT,
        T,
        "client-certificate-ok",
    ),
    (
        {"client_certificate": {"san_uri": "spiffe://example.com/bob"}},
        GOOD_CERT,
        F,
        "client-certificate-unauthorized",
    ),
    (
        {
            "client_certificate": {
                "fingerprint": FINGERPRINT,
                "san_uri": "spiffe://example.com/alice",
            }
        },
        GOOD_CERT,
        T,
        "client-certificate-ok",
    ),
    ({"client_certificate": {"fingerprint": FINGERPRINT}}, None, F, "client-certificate-required"),
    (
        {"client_certificate": {"fingerprint": FINGERPRINT}},
        MISSING_CERT,
        F,
        "client-certificate-required",
    ),
    # An unverified certificate never matches, even with the right fingerprint.
    (
        {"client_certificate": {"fingerprint": FINGERPRINT}},
        INVALID_CERT,
        F,
        "invalid-client-certificate",
    ),
    ({"invalid_client_certificate": True}, None, F, "valid-client-certificate-or-none-required"),
    ({"invalid_client_certificate": True}, GOOD_CERT, F, "valid-client-certificate"),
    ({"invalid_client_certificate": True}, MISSING_CERT, T, "client-certificate-required"),
    ({"invalid_client_certificate": True}, INVALID_CERT, T, "invalid-client-certificate"),
]


@pytest.mark.parametrize(("crit", "cert", "expected", "reason"), CERTIFICATE_CASES)
def test_certificate_criteria(crit: dict[str, Any], cert: Any, expected: Any, reason: str) -> None:
    assert criterion(crit, req(cert=cert)) == (expected, reason)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


TIME_CASES: list[tuple[dict[str, Any], str, Any, str]] = [
    ({"date": {"after": "2025-01-01T00:00:00Z"}}, "2025-06-04T12:00:00+00:00", T, "date-ok"),
    (
        {"date": {"after": "2025-07-01T00:00:00Z"}},
        "2025-06-04T12:00:00+00:00",
        F,
        "date-unauthorized",
    ),
    (
        {"date": {"before": "2025-06-04T12:00:00Z"}},
        "2025-06-04T12:00:00+00:00",
        F,
        "date-unauthorized",
    ),
    ({"date": {"after": "2025-06-04T12:00:00Z"}}, "2025-06-04T12:00:00+00:00", T, "date-ok"),
    (
        {"date": {"after": "2020-01-02T16:20:00", "before": "2150-01-02T16:20:00"}},
        "2025-06-04T12:00:00+00:00",
        T,
        "date-ok",
    ),
    # 14:00 in Paris (summer) is 12:00 UTC: not yet after it.
    (
        {"date": {"after": "2025-06-04T14:00:01+02:00"}},
        "2025-06-04T12:00:00+00:00",
        F,
        "date-unauthorized",
    ),
    ({"date": {"before": datetime(2025, 6, 5)}}, "2025-06-04T12:00:00+00:00", T, "date-ok"),
    ({"day_of_week": "mon-fri"}, "2025-06-04T12:00:00+00:00", T, "day-of-week-ok"),  # Wed
    ({"day_of_week": "sat,sun"}, "2025-06-04T12:00:00+00:00", F, "day-of-week-unauthorized"),
    ({"day_of_week": "*"}, "2025-06-07T12:00:00+00:00", T, "day-of-week-ok"),
    ({"day_of_week": "Wednesday"}, "2025-06-04T12:00:00+00:00", T, "day-of-week-ok"),
    ({"day_of_week": "MON, WED"}, "2025-06-04T12:00:00+00:00", T, "day-of-week-ok"),
    ({"day_of_week": "fri-mon"}, "2025-06-08T12:00:00+00:00", T, "day-of-week-ok"),  # Sun, wraps
    ({"day_of_week": "fri-mon"}, "2025-06-04T12:00:00+00:00", F, "day-of-week-unauthorized"),
    ({"day_of_week": "tue-thu,sat"}, "2025-06-07T12:00:00+00:00", T, "day-of-week-ok"),
    # Wednesday 23:30 UTC is already Thursday in Tokyo.
    (
        {"day_of_week": {"days": "thu", "timezone": "Asia/Tokyo"}},
        "2025-06-04T23:30:00+00:00",
        T,
        "day-of-week-ok",
    ),
    ({"day_of_week": "thu"}, "2025-06-04T23:30:00+00:00", F, "day-of-week-unauthorized"),
    (
        {"time_of_day": {"timezone": "UTC", "after": "09:00", "before": "17:00"}},
        "2025-06-04T12:00:00+00:00",
        T,
        "time-of-day-ok",
    ),
    (
        {"time_of_day": {"timezone": "UTC", "after": "09:00", "before": "17:00"}},
        "2025-06-04T09:00:00+00:00",
        T,
        "time-of-day-ok",
    ),
    (
        {"time_of_day": {"timezone": "UTC", "after": "09:00", "before": "17:00"}},
        "2025-06-04T17:00:00+00:00",
        F,
        "time-of-day-unauthorized",
    ),
    (
        {"time_of_day": {"timezone": "UTC", "after": "9 AM", "before": "5:00 PM"}},
        "2025-06-04T16:59:59+00:00",
        T,
        "time-of-day-ok",
    ),
    (
        {"time_of_day": {"timezone": "UTC", "after": "2:20:00", "before": "4:30PM"}},
        "2025-06-04T02:19:00+00:00",
        F,
        "time-of-day-unauthorized",
    ),
    (
        {"time_of_day": {"timezone": "UTC", "before": "12:00:00.5"}},
        "2025-06-04T12:00:00+00:00",
        T,
        "time-of-day-ok",
    ),
    # Phoenix is UTC-7 all year: 12:00 UTC is 05:00 there.
    (
        {"time_of_day": {"timezone": "America/Phoenix", "after": "08:00"}},
        "2025-06-04T12:00:00+00:00",
        F,
        "time-of-day-unauthorized",
    ),
    (
        {"time_of_day": {"timezone": "America/Phoenix", "after": "08:00"}},
        "2025-06-04T15:00:00+00:00",
        T,
        "time-of-day-ok",
    ),
    # A window past midnight.
    (
        {"time_of_day": {"timezone": "UTC", "after": "22:00", "before": "06:00"}},
        "2025-06-04T23:00:00+00:00",
        T,
        "time-of-day-ok",
    ),
    (
        {"time_of_day": {"timezone": "UTC", "after": "22:00", "before": "06:00"}},
        "2025-06-04T05:59:00+00:00",
        T,
        "time-of-day-ok",
    ),
    (
        {"time_of_day": {"timezone": "UTC", "after": "22:00", "before": "06:00"}},
        "2025-06-04T12:00:00+00:00",
        F,
        "time-of-day-unauthorized",
    ),
    (
        {"time_of_day": {"timezone": "UTC", "after": "12 AM"}},
        "2025-06-04T00:00:00+00:00",
        T,
        "time-of-day-ok",
    ),
]


@pytest.mark.parametrize(("crit", "now", "expected", "reason"), TIME_CASES)
def test_time_criteria(crit: dict[str, Any], now: str, expected: Any, reason: str) -> None:
    assert criterion(crit, req(now=at(now))) == (expected, reason)


def test_time_criteria_do_not_need_a_user() -> None:
    crit = {"time_of_day": {"timezone": "UTC", "after": "09:00"}}
    assert criterion(crit, req(session=None, now=datetime(2025, 1, 1, 10, tzinfo=UTC))) == (
        T,
        "time-of-day-ok",
    )
