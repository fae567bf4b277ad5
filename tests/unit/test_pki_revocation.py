"""Revocation records and CRLs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509

from shared import pki


@pytest.fixture
def ca(tmp_path: Path) -> pki.CA:
    return pki.init_ca(tmp_path / "ca")


def load_crl(pem: bytes) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(pem)


def test_revoke_records_and_crl_lists_the_serial(ca: pki.CA) -> None:
    leaf = pki.issue_client(ca, "alice@example.com").certificate
    entry = pki.revoke(ca, leaf, "keyCompromise")
    assert entry.serial == leaf.serial_number
    assert entry.reason is x509.ReasonFlags.key_compromise
    doc = json.loads((ca.dir / "revoked.json").read_text())
    assert doc["revoked"] == [
        {
            "serial": format(leaf.serial_number, "x"),
            "revoked_at": entry.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "reason": "keyCompromise",
        }
    ]
    crl = load_crl(pki.make_crl(ca))
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.certificate.subject
    revoked = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert revoked is not None
    assert revoked.revocation_date_utc == entry.revoked_at
    reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value
    assert reason.reason is x509.ReasonFlags.key_compromise
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_crl_number_increases_and_is_stored(ca: pki.CA) -> None:
    numbers = [pki.crl_number(pki.make_crl(ca)) for _ in range(3)]
    assert numbers == [1, 2, 3]
    assert (ca.dir / "crlnumber").read_text().strip() == "3"
    reloaded = pki.load_ca(ca.dir)
    assert pki.crl_number(pki.make_crl(reloaded)) == 4


def test_crl_validity_window(ca: pki.CA) -> None:
    crl = load_crl(pki.make_crl(ca, days=3))
    now = dt.datetime.now(dt.UTC)
    assert crl.last_update_utc < now
    assert crl.next_update_utc is not None
    assert dt.timedelta(days=2, hours=23) < crl.next_update_utc - now <= dt.timedelta(days=3)
    with pytest.raises(pki.PKIError, match="CRL validity"):
        pki.make_crl(ca, days=0)


def test_empty_crl(ca: pki.CA) -> None:
    assert len(load_crl(pki.make_crl(ca))) == 0


@pytest.mark.parametrize("form", ["hex", "colons", "0x", "int"])
def test_revoke_by_serial(ca: pki.CA, form: str) -> None:
    serial = pki.issue_server(ca, ["example.test"]).certificate.serial_number
    text = format(serial, "x")
    targets: dict[str, int | str] = {
        "hex": text.upper(),
        "colons": ":".join(text[i : i + 2] for i in range(0, len(text), 2)),
        "0x": "0x" + text,
        "int": serial,
    }
    target = targets[form]
    assert pki.revoke(ca, target).serial == serial
    crl = load_crl(pki.make_crl(ca))
    revoked = crl.get_revoked_certificate_by_serial_number(serial)
    assert revoked is not None
    # RFC 5280 §5.3.1: no reason code rather than "unspecified".
    with pytest.raises(x509.ExtensionNotFound):
        revoked.extensions.get_extension_for_class(x509.CRLReason)


def test_revoke_is_idempotent(ca: pki.CA) -> None:
    serial = pki.issue_server(ca, ["example.test"]).certificate.serial_number
    first = pki.revoke(ca, serial, "superseded")
    again = pki.revoke(ca, serial, "keyCompromise")
    assert again == first
    assert len(pki.revoked(ca)) == 1


def test_revocations_accumulate(ca: pki.CA) -> None:
    serials = [
        pki.issue_client(ca, f"u{i}@example.com").certificate.serial_number for i in range(3)
    ]
    for serial in serials:
        pki.revoke(ca, serial)
    assert [r.serial for r in pki.revoked(ca)] == serials
    crl = load_crl(pki.make_crl(ca))
    assert sorted(r.serial_number for r in crl) == sorted(serials)
    assert [p.name for p in ca.dir.iterdir() if p.name.endswith(".tmp")] == []


def test_revoke_rejects_a_foreign_certificate(tmp_path: Path, ca: pki.CA) -> None:
    other = pki.init_ca(tmp_path / "other")
    foreign = pki.issue_client(other, "x@example.com").certificate
    with pytest.raises(pki.PKIError, match="was not issued by the CA"):
        pki.revoke(ca, foreign)


def test_revoke_rejects_the_ca_itself(ca: pki.CA) -> None:
    with pytest.raises(pki.PKIError, match="cannot revoke itself"):
        pki.revoke(ca, ca.certificate.serial_number)


@pytest.mark.parametrize(
    ("serial", "reason", "match"),
    [
        ("xyz", "unspecified", "invalid serial"),
        ("0", "unspecified", "serials are positive"),
        ("abcd", "bogus", "unknown revocation reason"),
        ("abcd", "removeFromCRL", "delta CRLs"),
    ],
)
def test_revoke_rejects_bad_input(ca: pki.CA, serial: str, reason: str, match: str) -> None:
    with pytest.raises(pki.PKIError, match=match):
        pki.revoke(ca, serial, reason)


def test_corrupt_state_is_reported_not_reset(ca: pki.CA) -> None:
    (ca.dir / "revoked.json").write_text("{not json")
    with pytest.raises(pki.PKIError, match=r"revoked\.json is corrupt.*backup"):
        pki.revoke(ca, "abcd")
    with pytest.raises(pki.PKIError, match=r"revoked\.json is corrupt"):
        pki.make_crl(ca)
    (ca.dir / "revoked.json").unlink()
    (ca.dir / "crlnumber").write_text("seven\n")
    with pytest.raises(pki.PKIError, match=r"crlnumber is corrupt"):
        pki.make_crl(ca)
