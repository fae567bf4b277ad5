"""Validating the names that go into certificates, before they are signed.

A typo in a SAN yields a certificate that fails in a handshake much later with an
opaque hostname-mismatch error, so names are checked and normalised up front.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from cryptography import x509

from .errors import PKIError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 1123 labels, plus "_" because container and service-discovery names use it.
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
# Service names double as a DNS name and a SPIFFE path segment; keep to what both allow.
_SERVICE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# SPIFFE trust domain: lower-case letters, digits, ".", "-", "_" (SPIFFE-ID spec §2.1).
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")
# RFC 5321 dot-atom local part, printable ASCII only: rfc822Name is an IA5String.
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")


def dns_name(name: str, *, allow_wildcard: bool = True) -> str:
    """Normalise a DNS name (lower case, A-labels, no trailing dot) or raise PKIError.

    A wildcard is only a whole leftmost label (`*.localhost`), the one form TLS clients
    honour (RFC 6125 §6.4.3).
    """
    original = name
    name = name.strip().rstrip(".").lower()
    if not name:
        raise PKIError(f"empty DNS name {original!r}")
    labels = name.split(".")
    if labels[0] == "*":
        if not allow_wildcard:
            raise PKIError(f"invalid DNS name {original!r}: wildcard not allowed here")
        if len(labels) < 2:
            raise PKIError(f"invalid DNS name {original!r}: a wildcard needs a domain after '*.'")
        rest = labels[1:]
    else:
        rest = labels
    try:
        ascii_labels = [_a_label(label) for label in rest]
    except UnicodeError as exc:
        raise PKIError(f"invalid DNS name {original!r}: cannot convert to ASCII") from exc
    for label in ascii_labels:
        if not _LABEL.match(label):
            raise PKIError(
                f"invalid DNS name {original!r}: label {label!r} must be 1-63 letters, "
                "digits, '-' or '_' (a wildcard is only allowed as the whole first label)"
            )
    result = ".".join((["*"] if labels[0] == "*" else []) + ascii_labels)
    if len(result) > 253:
        raise PKIError(f"invalid DNS name {original!r}: longer than 253 characters")
    return result


def _a_label(label: str) -> str:
    if label.isascii():
        return label
    return label.encode("idna").decode("ascii")


def ip_address(value: str | IPAddress) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError as exc:
        raise PKIError(f"invalid IP address {value!r}") from exc


def looks_like_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return False
    return True


def email_address(email: str) -> str:
    """Validate an address for an rfc822Name SAN; the domain is normalised like a DNS name."""
    local, sep, domain = email.strip().rpartition("@")
    if not sep or not local or not domain:
        raise PKIError(f"invalid email address {email!r}: expected user@domain")
    if (
        not _LOCAL_PART.match(local)
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
    ):
        raise PKIError(
            f"invalid email address {email!r}: the part before '@' must be plain ASCII "
            "(internationalised mailboxes are not supported)"
        )
    return f"{local}@{dns_name(domain, allow_wildcard=False)}"


def service_name(service: str) -> str:
    if not _SERVICE.match(service):
        raise PKIError(
            f"invalid service name {service!r}: use lower-case letters, digits and '-' "
            "(it becomes both a DNS name and the SPIFFE ID path)"
        )
    return service


def spiffe_id(trust_domain: str, service: str) -> str:
    if not _TRUST_DOMAIN.match(trust_domain) or trust_domain.strip(".") != trust_domain:
        raise PKIError(
            f"invalid trust domain {trust_domain!r}: use lower-case letters, digits, "
            "'.', '-' and '_' (for example vallum.internal)"
        )
    return f"spiffe://{trust_domain}/{service_name(service)}"


def general_names(
    dns_names: Iterable[str] = (), ip_addresses: Iterable[str | IPAddress] = ()
) -> list[x509.GeneralName]:
    """DNS then IP SANs, validated, with duplicates dropped and order otherwise kept."""
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for dns in dns_names:
        value = dns_name(dns)
        if value not in seen:
            seen.add(value)
            out.append(x509.DNSName(value))
    for ip in ip_addresses:
        addr = ip_address(ip)
        if str(addr) not in seen:
            seen.add(str(addr))
            out.append(x509.IPAddress(addr))
    return out


def split_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Sort route host names into (DNS names, IP literals)."""
    dns: list[str] = []
    ips: list[str] = []
    for name in names:
        (ips if looks_like_ip(name) else dns).append(name)
    return dns, ips


def second_level_wildcards(names: Iterable[str]) -> list[str]:
    """Wildcards with a single label after `*.` (`*.localhost`). Certificates may carry
    them, but OpenSSL's host check and browsers refuse to match them, so callers warn."""
    out = []
    for name in names:
        labels = name.strip().rstrip(".").split(".")
        if labels[0] == "*" and len(labels) == 2:
            out.append(name)
    return out
