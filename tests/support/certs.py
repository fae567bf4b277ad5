"""Certificates for tests, made with the project's own CA (plus deliberately bad ones)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.config import Source
from shared.pki import CA, init_ca, issue_service, private_key_pem, write_issued
from shared.rpc import InternalTLS

TRUST_DOMAIN = "vallum.test"


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    def tls(self, ca: Path, trust_domain: str = TRUST_DOMAIN) -> InternalTLS:
        return InternalTLS(
            Source(str(ca), None),
            Source(str(self.cert), None),
            Source(str(self.key), None),
            trust_domain,
        )


def make_ca(directory: Path) -> CA:
    return init_ca(directory)


def service_pair(
    ca: CA, out: Path, service: str, trust_domain: str = TRUST_DOMAIN, name: str | None = None
) -> Pair:
    paths = write_issued(issue_service(ca, service, trust_domain), out, name or service, force=True)
    return Pair(paths.cert, paths.key)


def raw_pair(
    ca: CA,
    out: Path,
    name: str,
    *,
    uris: list[str],
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Pair:
    """A leaf with exactly the given validity and URI SANs, for the cases the CA refuses."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    sans += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca.private_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{name}.pem", out / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(private_key_pem(key))
    return Pair(cert_path, key_path)


def signing_key_pem() -> bytes:
    """A fresh P-256 private key as PKCS#8 PEM (a `signing_key` for the assertion)."""
    from cryptography.hazmat.primitives import serialization

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
