"""Reading certificates and summarising them for people and for policy.

Other modules use the pure helpers here: the proxy matches client certificates by
`fingerprint_sha256` / `spki_sha256_b64` (Pomerium's `certificate_fingerprint` and
`spki_hash`), and the RPC layer reads the caller's service from `spiffe_ids`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

from .errors import PKIError, first_line
from .keys import describe_public_key

SANKind: TypeAlias = Literal["dns", "ip", "email", "uri", "upn", "other"]
_SAN_LABELS: dict[SANKind, str] = {
    "dns": "DNS",
    "ip": "IP",
    "email": "email",
    "uri": "URI",
    "upn": "UPN",
    "other": "other",
}
# Microsoft's User Principal Name otherName (MS-WCCE), a UTF8String: what smart-card and
# Active Directory certificates name their user by.
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
_UTF8_STRING = 0x0C


@dataclass(frozen=True)
class SAN:
    """One subjectAltName entry. Kinds this CA never writes (directoryName, otherName
    other than a UPN, registeredID) are reported as "other" rather than hidden."""

    kind: SANKind
    value: str

    def __str__(self) -> str:
        return f"{_SAN_LABELS[self.kind]}:{self.value}"


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    serial: str
    sans: tuple[SAN, ...]
    fingerprint_sha256: str
    spki_sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    is_ca: bool
    key_type: str

    def spiffe_ids(self) -> list[str]:
        return [s.value for s in self.sans if s.kind == "uri" and s.value.startswith("spiffe://")]


def load_certificates(data: bytes, *, source: str = "input") -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (other PEM blocks, such as a key, are skipped),
    or the single certificate of a DER file. `source` names the file in errors."""
    if b"-----BEGIN" in data:
        if b"CERTIFICATE-----" not in data:
            raise PKIError(
                f"{source}: no PEM certificate found "
                "(expected '-----BEGIN CERTIFICATE-----'); is this a key or a CRL?"
            )
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise PKIError(f"{source}: malformed PEM certificate ({first_line(exc)})") from exc
    if not data.strip():
        raise PKIError(f"{source}: file is empty; expected a PEM or DER certificate")
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise PKIError(
            f"{source}: neither a PEM nor a DER certificate ({first_line(exc)})"
        ) from exc


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex without colons."""
    return cert.fingerprint(hashes.SHA256()).hex()


def spki_sha256_b64(cert: x509.Certificate) -> str:
    """Standard base64 of SHA-256 over the DER SubjectPublicKeyInfo: Pomerium's and
    Envoy's `spki_hash`, stable across re-issuance with the same key."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def subject_alt_names(cert: x509.Certificate) -> list[SAN]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    sans: list[SAN] = []
    for name in ext:
        if isinstance(name, x509.DNSName):
            sans.append(SAN("dns", name.value))
        elif isinstance(name, x509.IPAddress):
            sans.append(SAN("ip", str(name.value)))
        elif isinstance(name, x509.RFC822Name):
            sans.append(SAN("email", name.value))
        elif isinstance(name, x509.UniformResourceIdentifier):
            sans.append(SAN("uri", name.value))
        elif isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
            upn = _der_utf8_string(name.value)
            sans.append(SAN("upn", upn) if upn is not None else SAN("other", str(name.value)))
        else:
            sans.append(SAN("other", str(name.value)))
    return sans


def _der_utf8_string(der: bytes) -> str | None:
    """The text of a DER UTF8String (X.690 section 8.1: tag, length, contents), else None."""
    if len(der) < 2 or der[0] != _UTF8_STRING:
        return None
    length, start = der[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or len(der) < 2 + count:
            return None
        length, start = int.from_bytes(der[2 : 2 + count], "big"), 2 + count
    if start + length != len(der):
        return None
    try:
        return der[start:].decode("utf-8")
    except UnicodeDecodeError:
        return None


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    """The certificate's `spiffe://` URI SANs; service certificates carry exactly one."""
    return [
        s.value
        for s in subject_alt_names(cert)
        if s.kind == "uri" and s.value.startswith("spiffe://")
    ]


def serial_hex(serial: int) -> str:
    """Lower-case hex without separators, as revoked.json and `vallum ca show` print it."""
    return format(serial, "x")


def is_ca_certificate(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


def describe_certificate(cert: x509.Certificate) -> CertInfo:
    try:
        key_type = describe_public_key(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):
        key_type = "unsupported"
    try:
        return CertInfo(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            serial=serial_hex(cert.serial_number),
            sans=tuple(subject_alt_names(cert)),
            fingerprint_sha256=fingerprint_sha256(cert),
            spki_sha256=spki_sha256_b64(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            is_ca=is_ca_certificate(cert),
            key_type=key_type,
        )
    except (ValueError, UnsupportedAlgorithm) as exc:
        # cryptography parses extensions lazily, so a malformed one surfaces only here.
        raise PKIError(
            f"certificate {cert.subject.rfc4514_string()!r} has a malformed field "
            f"({first_line(exc)})"
        ) from exc


def describe(pem: bytes | Sequence[x509.Certificate], *, source: str = "input") -> list[CertInfo]:
    """Summaries of every certificate in a PEM bundle (or an already-loaded list)."""
    certs = load_certificates(pem, source=source) if isinstance(pem, bytes) else pem
    return [describe_certificate(c) for c in certs]
