"""Revoking leaves and publishing CRLs (RFC 5280 §5).

State lives next to the CA: `revoked.json` lists revocations, `crlnumber` holds the
last CRL number issued. Both are replaced atomically under the CA directory lock.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from .authority import CA, CLOCK_SKEW
from .certinfo import serial_hex
from .errors import PKIError, first_line
from .files import PUBLIC_MODE, locked, write_file
from .keys import signature_hash

REVOKED_FILE = "revoked.json"
CRL_NUMBER_FILE = "crlnumber"
# RFC 5280 §5.3.1 reason names as OpenSSL and `x509.ReasonFlags` spell them.
# removeFromCRL is left out: it only means something in a delta CRL.
REASONS: tuple[str, ...] = tuple(
    r.value for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl
)
_MAX_CRL_DAYS = 366
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.*?-----END X509 CRL-----", re.DOTALL)


def crl_blocks(data: bytes) -> list[bytes]:
    """Each complete `X509 CRL` PEM block of a bundle, in order (other blocks skipped)."""
    result: list[bytes] = _CRL_BLOCK.findall(data)
    return result


@dataclass(frozen=True)
class Revocation:
    serial: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.serial)


def parse_serial(text: str) -> int:
    """Accept hex as `vallum ca show` prints it, or with colons / 0x as openssl prints it."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError as exc:
        raise PKIError(f"invalid serial {text!r}: expected hexadecimal digits") from exc
    if value <= 0:
        raise PKIError(f"invalid serial {text!r}: serials are positive")
    return value


def parse_reason(reason: x509.ReasonFlags | str) -> x509.ReasonFlags:
    if reason in (x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.remove_from_crl.value):
        raise PKIError("removeFromCRL is only for delta CRLs; it cannot be used to revoke")
    if isinstance(reason, x509.ReasonFlags):
        return reason
    if reason not in REASONS:
        raise PKIError(f"unknown revocation reason {reason!r}; use one of {', '.join(REASONS)}")
    return x509.ReasonFlags(reason)


def revoked(ca: CA) -> list[Revocation]:
    """The revocations recorded for `ca`, oldest first."""
    path = ca.dir / REVOKED_FILE
    try:
        raw = path.read_text("utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise PKIError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        doc = json.loads(raw)
        return [
            Revocation(
                serial=int(item["serial"], 16),
                revoked_at=dt.datetime.fromisoformat(item["revoked_at"]).astimezone(dt.UTC),
                reason=x509.ReasonFlags(item["reason"]),
            )
            for item in doc["revoked"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise PKIError(
            f"{path} is corrupt ({first_line(exc)}); restore it from a backup — "
            "revocations must not be lost"
        ) from exc


def revoke(
    ca: CA,
    serial_or_cert: int | str | x509.Certificate,
    reason: x509.ReasonFlags | str = x509.ReasonFlags.unspecified,
) -> Revocation:
    """Record a revocation; revoking an already-revoked serial returns the original record."""
    flag = parse_reason(reason)
    if isinstance(serial_or_cert, x509.Certificate):
        _check_issued_by(ca, serial_or_cert)
        serial = serial_or_cert.serial_number
    elif isinstance(serial_or_cert, str):
        serial = parse_serial(serial_or_cert)
    else:
        serial = serial_or_cert
    if serial <= 0:
        raise PKIError(f"invalid serial {serial}: serials are positive")
    if serial == ca.certificate.serial_number:
        raise PKIError(
            "that serial is the CA's own certificate; a CA cannot revoke itself — "
            "remove ca.pem from every trust store and create a new CA instead"
        )
    with locked(ca.dir):
        entries = revoked(ca)
        for entry in entries:
            if entry.serial == serial:
                return entry
        entry = Revocation(
            serial=serial, revoked_at=dt.datetime.now(dt.UTC).replace(microsecond=0), reason=flag
        )
        entries.append(entry)
        _save(ca.dir / REVOKED_FILE, entries)
    return entry


def _check_issued_by(ca: CA, cert: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PKIError(
            f"certificate {cert.subject.rfc4514_string()!r} was not issued by the CA in "
            f"{ca.dir}; revoke it with the CA that issued it"
        ) from exc


def _save(path: Path, entries: list[Revocation]) -> None:
    doc = {
        "version": 1,
        "revoked": [
            {
                "serial": e.serial_hex,
                "revoked_at": e.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "reason": e.reason.value,
            }
            for e in entries
        ],
    }
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    write_file(path, data, mode=PUBLIC_MODE, overwrite=True)


def make_crl(ca: CA, days: int = 7) -> bytes:
    """A PEM CRL of every revocation, signed by the CA, with the next CRL number.

    Each call consumes a number even if nothing changed, so relying parties can always
    tell a newer CRL from an older one (RFC 5280 §5.2.3).
    """
    if not 1 <= days <= _MAX_CRL_DAYS:
        raise PKIError(f"CRL validity must be between 1 and {_MAX_CRL_DAYS} days, not {days}")
    now = dt.datetime.now(dt.UTC)
    with locked(ca.dir):
        number = _read_crl_number(ca.dir / CRL_NUMBER_FILE) + 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.certificate.subject)
            # Same backdating as certificates: a relying party a little behind must not
            # see a CRL that is "not yet valid".
            .last_update(now - CLOCK_SKEW)
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(ca.authority_key_identifier(), critical=False)
        )
        for entry in revoked(ca):
            revoked_cert = (
                x509.RevokedCertificateBuilder()
                .serial_number(entry.serial)
                .revocation_date(entry.revoked_at)
            )
            # §5.3.1: the reason code SHOULD be absent rather than "unspecified".
            if entry.reason is not x509.ReasonFlags.unspecified:
                revoked_cert = revoked_cert.add_extension(
                    x509.CRLReason(entry.reason), critical=False
                )
            builder = builder.add_revoked_certificate(revoked_cert.build())
        crl = builder.sign(ca.private_key, signature_hash())
        write_file(
            ca.dir / CRL_NUMBER_FILE, f"{number}\n".encode(), mode=PUBLIC_MODE, overwrite=True
        )
    return crl.public_bytes(serialization.Encoding.PEM)


def crl_number(crl_pem: bytes) -> int:
    crl = x509.load_pem_x509_crl(crl_pem)
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _read_crl_number(path: Path) -> int:
    try:
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise PKIError(f"cannot read {path}: {exc}") from exc
    try:
        value = int(text)
    except ValueError as exc:
        raise PKIError(
            f"{path} is corrupt (expected a decimal number, got {text[:20]!r}); "
            "write the last CRL number you published into it"
        ) from exc
    if value < 0:
        raise PKIError(f"{path} holds a negative CRL number; fix or remove it")
    return value
