"""The root CA: creating it once and loading it for every issuance."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from .certinfo import is_ca_certificate, load_certificates
from .errors import PKIError
from .files import PRIVATE_MODE, PUBLIC_MODE, ensure_private_dir, write_file
from .keys import (
    KeyType,
    SigningKey,
    generate_private_key,
    key_matches_certificate,
    load_private_key,
    private_key_pem,
    signature_hash,
)
from .serials import random_serial

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
DEFAULT_CA_NAME = "Vallum Internal CA"
# Backdating notBefore lets a peer whose clock runs a little behind ours accept a
# certificate issued seconds ago (common right after `vallum ca issue` in a new VM).
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CA:
    dir: Path
    certificate: x509.Certificate
    private_key: SigningKey

    @property
    def cert_path(self) -> Path:
        return self.dir / CA_CERT_FILE

    @property
    def key_path(self) -> Path:
        return self.dir / CA_KEY_FILE

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        """AKI for what this CA signs, copied from the root's own SKI so the two match
        byte for byte even for a root made elsewhere with another SKI method."""
        try:
            ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def init_ca(
    dir: Path,
    *,
    common_name: str = DEFAULT_CA_NAME,
    key_type: KeyType = "ecdsa",
    rsa_bits: int = 3072,
    days: int = 3650,
) -> CA:
    """Create a root CA in `dir` (created 0700 if missing); never replaces an existing one.

    The root may only sign leaves (pathlen 0): Vallum has no use for intermediates, and
    a leaked leaf key can then never mint certificates.
    """
    dir = Path(dir)
    check_days(days)
    if not common_name or len(common_name) > 64:
        raise PKIError("CA common name must be 1-64 characters")
    cert_path, key_path = dir / CA_CERT_FILE, dir / CA_KEY_FILE
    for path in (cert_path, key_path):
        if path.exists() or path.is_symlink():
            raise PKIError(
                f"refusing to overwrite existing CA file {path}; a new root would "
                "invalidate every certificate it issued. Use another --dir, or move "
                "the old CA away first if you really mean to replace it"
            )
    ensure_private_dir(dir)
    key = generate_private_key(key_type, rsa_bits)
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, signature_hash())
    )
    # Key first: if writing the certificate then fails, no half-CA looks usable.
    write_file(key_path, private_key_pem(key), mode=PRIVATE_MODE, overwrite=False)
    write_file(
        cert_path,
        cert.public_bytes(serialization.Encoding.PEM),
        mode=PUBLIC_MODE,
        overwrite=False,
    )
    return CA(dir=dir, certificate=cert, private_key=key)


def load_ca(dir: Path) -> CA:
    """Load and sanity-check the CA in `dir`; every failure names the file and the fix."""
    dir = Path(dir)
    cert_path, key_path = dir / CA_CERT_FILE, dir / CA_KEY_FILE
    cert_data = _read(cert_path, "certificate")
    key_data = _read(key_path, "private key")
    certs = load_certificates(cert_data, source=str(cert_path))
    cert = certs[0]
    if not is_ca_certificate(cert):
        raise PKIError(
            f"{cert_path} is not a CA certificate (basicConstraints CA:true missing); "
            "point --dir at a directory made by `vallum ca init`"
        )
    key = load_private_key(key_data, source=str(key_path))
    if not key_matches_certificate(key, cert):
        raise PKIError(
            f"{key_path} does not match {cert_path}: the key and certificate come from "
            "different CAs; restore the matching pair"
        )
    if not isinstance(key, SigningKey):
        raise PKIError(f"{key_path}: the CA key must be ECDSA or RSA to sign certificates")
    return CA(dir=dir, certificate=cert, private_key=key)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise PKIError(
            f"no CA {what} at {path}; create a CA with `vallum ca init --dir {path.parent}` "
            "or point --dir at an existing one"
        ) from exc
    except OSError as exc:
        raise PKIError(f"cannot read CA {what} {path}: {exc.strerror}") from exc


MAX_DAYS = 36500


def check_days(days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise PKIError(f"validity must be between 1 and {MAX_DAYS} days, not {days}")
