"""Client certificate criteria: `client_certificate` (a certificate matcher) and
`invalid_client_certificate`.

Only a certificate that chains to the route's client CA can satisfy `client_certificate`:
anyone can mint a self-signed certificate with a chosen SAN, so matching names on an
unverified one would let it through. `invalid_client_certificate` follows Pomerium's
three cases (valid → false; none presented → true, `client-certificate-required`;
presented but invalid → true, `invalid-client-certificate`), plus a fourth when the
listener does not ask for client certificates at all (`client_cert is None`): false,
`valid-client-certificate-or-none-required`, as Pomerium reported it before mTLS
enforcement became configurable.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from shared.policy.errors import Where, did_you_mean, is_list, type_name
from shared.policy.inputs import ClientCertView, PolicyInput
from shared.policy.logic import FALSE, TRUE, Node, Outcome, outcome
from shared.policy.matchers import compile_flag, compile_string_matcher

CERTIFICATE_REQUIRED: Final = "client-certificate-required"
INVALID_CERTIFICATE: Final = "invalid-client-certificate"
_KEYS: Final = ("fingerprint", "spki_hash", "san_dns", "san_email", "san_uri")
_SHORT_FINGERPRINT: Final = re.compile(r"[0-9a-fA-F]{64}")
_LONG_FINGERPRINT: Final = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31}")

CertTest = Callable[[ClientCertView], bool]


def compile_client_certificate(value: Any, where: Where) -> Node | None:
    if not isinstance(value, Mapping) or not value:
        shown = "an empty mapping" if isinstance(value, Mapping) else type_name(value)
        where.error(
            "expected a certificate matcher with fingerprint, spki_hash, san_dns, san_email "
            f"and/or san_uri, got {shown}"
        )
        return None
    tests: list[CertTest] = []
    parts: list[str] = []
    for key, arg in value.items():
        at = where.at(str(key))
        if key == "fingerprint":
            prints = _hashes(arg, at, "fingerprint", _fingerprint)
            if prints is not None:
                tests.append(_fingerprint_in(prints))
                parts.append(f"fingerprint in [{', '.join(sorted(prints))}]")
        elif key == "spki_hash":
            hashes = _hashes(arg, at, "SPKI hash", _spki_hash)
            if hashes is not None:
                tests.append(_spki_in(hashes))
                parts.append(f"spki_hash in [{', '.join(sorted(hashes))}]")
        elif key in ("san_dns", "san_email", "san_uri"):
            compiled = compile_string_matcher(arg, at)
            if compiled is not None:
                tests.append(_any_san(key, compiled[0]))
                parts.append(f"{key} {compiled[1]}")
        else:
            where.error(f'unknown certificate matcher "{key}"' + did_you_mean(str(key), _KEYS))
    if len(tests) != len(value):
        return None
    checks = tuple(tests)
    label, description = where.label, "client_certificate " + " and ".join(parts)
    ok = outcome(TRUE, label, description, "client-certificate-ok")
    no = outcome(FALSE, label, description, "client-certificate-unauthorized")
    missing = outcome(FALSE, label, description, CERTIFICATE_REQUIRED)
    invalid = outcome(FALSE, label, description, INVALID_CERTIFICATE)

    def leaf(inp: PolicyInput) -> Outcome:
        cert = inp.client_cert
        if cert is None or not cert.presented:
            return missing
        if not cert.valid:
            return invalid
        return ok if all(check(cert) for check in checks) else no

    return leaf


def compile_invalid_client_certificate(value: Any, where: Where) -> Node | None:
    if not compile_flag(value, where, "invalid_client_certificate"):
        return None
    label, description = where.label, "invalid_client_certificate"
    not_asked = outcome(FALSE, label, description, "valid-client-certificate-or-none-required")
    valid = outcome(FALSE, label, description, "valid-client-certificate")
    missing = outcome(TRUE, label, description, CERTIFICATE_REQUIRED)
    invalid = outcome(TRUE, label, description, INVALID_CERTIFICATE)

    def leaf(inp: PolicyInput) -> Outcome:
        cert = inp.client_cert
        if cert is None:
            return not_asked
        if not cert.presented:
            return missing
        return valid if cert.valid else invalid

    return leaf


def _fingerprint_in(allowed: frozenset[str]) -> CertTest:
    # The proxy hands over lowercase hex; canonicalising is only a fallback.
    return lambda c: c.fingerprint in allowed or _canon(c.fingerprint) in allowed


def _spki_in(allowed: frozenset[str]) -> CertTest:
    return lambda c: c.spki_hash in allowed


def _any_san(key: str, test: Callable[[str], bool]) -> CertTest:
    if key == "san_dns":
        return lambda c: any(test(name) for name in c.san_dns)
    if key == "san_email":
        return lambda c: any(test(name) for name in c.san_email)
    return lambda c: any(test(name) for name in c.san_uri)


def _hashes(
    arg: Any, where: Where, what: str, parse: Callable[[str], str | None]
) -> frozenset[str] | None:
    items = list(arg) if is_list(arg) else [arg]
    if not items:
        where.error(f"expected a {what} or a list of them, got an empty list")
        return None
    found: set[str] = set()
    ok = True
    for i, item in enumerate(items):
        at = where.item(i) if is_list(arg) else where
        parsed = parse(item) if isinstance(item, str) else None
        if parsed is None:
            shown = f'"{item}"' if isinstance(item, str) else type_name(item)
            at.error(f"invalid {what} {shown}: {_HASH_HELP[what]}")
            ok = False
        else:
            found.add(parsed)
    return frozenset(found) if ok else None


_HASH_HELP: Final = {
    "fingerprint": "expected the SHA-256 of the certificate as 64 hex digits "
    "(colons between bytes allowed)",
    "SPKI hash": "expected the base64 SHA-256 of the SubjectPublicKeyInfo (44 characters)",
}


def _canon(fingerprint: str) -> str:
    return fingerprint.replace(":", "").lower()


def _fingerprint(text: str) -> str | None:
    text = text.strip()
    if _SHORT_FINGERPRINT.fullmatch(text) or _LONG_FINGERPRINT.fullmatch(text):
        return _canon(text)
    return None


def _spki_hash(text: str) -> str | None:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return text.strip() if len(raw) == 32 else None
