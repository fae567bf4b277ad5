"""Compile errors in criteria and matchers: the exact key path, a useful message, did-you-mean."""

from __future__ import annotations

from typing import Any

import pytest

from shared.policy import PolicyError, compile_policy

P = "routes[1].policy[0]"


def problems(raw: Any, path: str = "routes[1].policy") -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as caught:
        compile_policy(raw, path=path)
    return [(p.path, p.message) for p in caught.value.problems]


def one(criterion: dict[str, Any]) -> list[tuple[str, str]]:
    return problems([{"allow": {"and": [criterion]}}])


CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"emial": "a@b.c"}, f"{P}.allow.and[0]", 'unknown criterion "emial" (did you mean "email"?)'),
    ({"group": "x"}, f"{P}.allow.and[0]", 'unknown criterion "group" (did you mean "groups"?)'),
    (
        {"method": "GET"},
        f"{P}.allow.and[0]",
        'unknown criterion "method" (did you mean "http_method"?)',
    ),
    (
        {"claims/groups": "x"},
        f"{P}.allow.and[0]",
        'unknown criterion "claims/groups" (did you mean "claim/groups"?)',
    ),
    ({"device": {"is": "x"}}, f"{P}.allow.and[0]", 'unknown criterion "device"'),
    ({"emial/x": "a"}, f"{P}.allow.and[0]", 'unknown criterion "emial/x" (did you mean "email"?)'),
    ({"Email": "a"}, f"{P}.allow.and[0]", 'unknown criterion "Email" (did you mean "email"?)'),
    ({"claim": "x"}, f"{P}.allow.and[0]", "claim needs a name after a slash, e.g. claim/groups"),
    ({"email/x": "a"}, f"{P}.allow.and[0]", '"email" takes no /sub-path (only claim/<name> does)'),
    (
        {"email": {"equals": "a@b.c"}},
        f"{P}.allow.and[0].email",
        'unknown matcher "equals" (did you mean "is"?)',
    ),
    (
        {"email": {"startswith": "a"}},
        f"{P}.allow.and[0].email",
        'unknown matcher "startswith" (did you mean "starts_with"?)',
    ),
    (
        {"email": {"ends_wth": "a"}},
        f"{P}.allow.and[0].email",
        'unknown matcher "ends_wth" (did you mean "ends_with"?)',
    ),
    ({"email": {"has": "a"}}, f"{P}.allow.and[0].email", 'unknown matcher "has"'),
    (
        {"email": ["a@b.c", "d@e.f"]},
        f"{P}.allow.and[0].email",
        "expected a string or a matcher mapping, not a list; use {in: [...]}",
    ),
    (
        {"email": None},
        f"{P}.allow.and[0].email",
        "missing value: expected a string or a matcher such as {is: ...}",
    ),
    (
        {"email": {}},
        f"{P}.allow.and[0].email",
        "empty matcher: give at least one operator, e.g. {is: ...}",
    ),
    (
        {"email": {"in": "a@b.c"}},
        f"{P}.allow.and[0].email.in",
        "expected a list of strings, got a string",
    ),
    (
        {"email": {"in": []}},
        f"{P}.allow.and[0].email.in",
        "empty list: it would match nothing (or, for not_in, everything)",
    ),
    (
        {"email": {"in": ["a", 5]}},
        f"{P}.allow.and[0].email.in[1]",
        "expected a string, got a number (quote it: '5')",
    ),
    (
        {"email": {"ends_with": ""}},
        f"{P}.allow.and[0].email.ends_with",
        '"ends_with" with an empty string matches everything',
    ),
    (
        {"user": 12345},
        f"{P}.allow.and[0].user",
        "expected a string, got a number (quote it: '12345')",
    ),
    (
        {"http_method": "delete"},
        f"{P}.allow.and[0].http_method",
        'HTTP methods are case-sensitive (did you mean "DELETE"?)',
    ),
    (
        {"http_method": {"in": ["GET", "post"]}},
        f"{P}.allow.and[0].http_method.in[1]",
        'HTTP methods are case-sensitive (did you mean "POST"?)',
    ),
    (
        {"groups": {"contains": "admin"}},
        f"{P}.allow.and[0].groups",
        'unknown list matcher "contains" (did you mean "has"?)',
    ),
    (
        {"groups": {"not": "admin"}},
        f"{P}.allow.and[0].groups",
        'unknown list matcher "not" (did you mean "exclude"?)',
    ),
    (
        {"groups": {"has": 7}},
        f"{P}.allow.and[0].groups.has",
        "expected a string, got a number (quote it: '7')",
    ),
    (
        {"claim/x": {"has": {"a": 1}}},
        f"{P}.allow.and[0].claim/x.has",
        "expected a string, number or boolean, got a mapping",
    ),
    (
        {"accept": False},
        f"{P}.allow.and[0].accept",
        'accept takes true, got false (to never match, use "reject: true")',
    ),
    (
        {"authenticated_user": "yes please"},
        f"{P}.allow.and[0].authenticated_user",
        "authenticated_user takes true, got yes please",
    ),
    (
        {"source_ip": "10.0.0.0/33"},
        f"{P}.allow.and[0].source_ip",
        'invalid IP address or CIDR range "10.0.0.0/33"',
    ),
    (
        {"source_ip": ["10.0.0.0/8", "10.0.0.300"]},
        f"{P}.allow.and[0].source_ip[1]",
        'invalid IP address or CIDR range "10.0.0.300"',
    ),
    (
        {"source_ip": []},
        f"{P}.allow.and[0].source_ip",
        "expected an IP address, a CIDR range or a list of them, got an empty list",
    ),
    (
        {"source_ip": 10},
        f"{P}.allow.and[0].source_ip",
        "expected an IP address or CIDR range as a string, got a number",
    ),
    (
        {"date": {"after": "yesterday"}},
        f"{P}.allow.and[0].date.after",
        'invalid date "yesterday": expected RFC 3339, e.g. 2025-01-31T18:00:00Z',
    ),
    (
        {"date": {"since": "2025-01-01"}},
        f"{P}.allow.and[0].date",
        'unknown key "since": expected after or before',
    ),
    (
        {"date": {"afte": "2025-01-01"}},
        f"{P}.allow.and[0].date",
        'unknown key "afte": expected after or before (did you mean "after"?)',
    ),
    ({"date": {}}, f"{P}.allow.and[0].date", "give after, before, or both"),
    (
        {"date": "2025-01-01"},
        f"{P}.allow.and[0].date",
        "expected a mapping with after and/or before, got a string",
    ),
    (
        {"day_of_week": "mon-fryday"},
        f"{P}.allow.and[0].day_of_week",
        'unknown day "fryday" (did you mean "friday"?)',
    ),
    (
        {"day_of_week": "mon-"},
        f"{P}.allow.and[0].day_of_week",
        'invalid day range "mon-": expected e.g. mon-fri',
    ),
    (
        {"day_of_week": 1},
        f"{P}.allow.and[0].day_of_week",
        "expected days such as mon-fri or sat,sun, got a number",
    ),
    (
        {"day_of_week": {"days": "mon", "timezone": "Nowhere/City"}},
        f"{P}.allow.and[0].day_of_week.timezone",
        'unknown time zone "Nowhere/City": use an IANA name such as America/New_York',
    ),
    (
        {"time_of_day": {"timezone": "Mars/Base", "after": "09:00"}},
        f"{P}.allow.and[0].time_of_day.timezone",
        'unknown time zone "Mars/Base": use an IANA name such as America/New_York',
    ),
    (
        {"time_of_day": {"after": "09:00"}},
        f"{P}.allow.and[0].time_of_day",
        '"timezone" is required, e.g. timezone: America/Phoenix',
    ),
    (
        {"time_of_day": {"timezone": "UTC", "after": 1020}},
        f"{P}.allow.and[0].time_of_day.after",
        'got the number 1020: quote times in YAML, e.g. "17:00"',
    ),
    (
        {"time_of_day": {"timezone": "UTC", "after": "25:00"}},
        f"{P}.allow.and[0].time_of_day.after",
        'invalid time "25:00": out of range',
    ),
    (
        {"time_of_day": {"timezone": "UTC", "after": "13 PM"}},
        f"{P}.allow.and[0].time_of_day.after",
        'invalid time "13 PM": 12-hour times run from 1 to 12',
    ),
    (
        {"time_of_day": {"timezone": "UTC", "after": "noon"}},
        f"{P}.allow.and[0].time_of_day.after",
        'invalid time "noon": expected e.g. "09:30", "17:00:00" or "5:30 PM"',
    ),
    (
        {"client_certificate": {"fingerprints": "ab"}},
        f"{P}.allow.and[0].client_certificate",
        'unknown certificate matcher "fingerprints" (did you mean "fingerprint"?)',
    ),
    (
        {"client_certificate": {"fingerprint": "abc"}},
        f"{P}.allow.and[0].client_certificate.fingerprint",
        'invalid fingerprint "abc": expected the SHA-256 of the certificate as 64 hex digits '
        "(colons between bytes allowed)",
    ),
    (
        {"client_certificate": {"spki_hash": ["bm90IDMyIGJ5dGVz"]}},
        f"{P}.allow.and[0].client_certificate.spki_hash[0]",
        'invalid SPKI hash "bm90IDMyIGJ5dGVz": '
        "expected the base64 SHA-256 of the SubjectPublicKeyInfo (44 characters)",
    ),
    (
        {"client_certificate": {"san_email": {"ends": "@x"}}},
        f"{P}.allow.and[0].client_certificate.san_email",
        'unknown matcher "ends" (did you mean "ends_with"?)',
    ),
    (
        {"client_certificate": True},
        f"{P}.allow.and[0].client_certificate",
        "expected a certificate matcher with fingerprint, spki_hash, san_dns, san_email "
        "and/or san_uri, got a boolean",
    ),
]


@pytest.mark.parametrize(("criterion", "path", "message"), CASES)
def test_criterion_errors(criterion: dict[str, Any], path: str, message: str) -> None:
    assert one(criterion) == [(path, message)]
