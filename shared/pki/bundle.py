"""Writing issued certificates as PEM files and PKCS#12 bundles, and reading PKCS#12 back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12 as pkcs12_format
from cryptography.x509.oid import NameOID

from .errors import PKIError, first_line
from .files import PRIVATE_MODE, PUBLIC_MODE, ensure_private_dir, refuse_existing, write_file
from .issue import Issued
from .keys import PrivateKey

# The conventional default of mkcert and Java keystores: the .p12 is protected by its
# 0600 mode; the password only exists because browsers refuse an empty one.
DEFAULT_PKCS12_PASSWORD = "changeit"  # noqa: S105
# PBES2 (PBKDF2-SHA256 + AES-256-CBC) for key and certificates and an HMAC-SHA256 MAC:
# what OpenSSL 3 writes by default, readable by OpenSSL 3 without -legacy, curl, NSS
# (Chromium and Firefox on Linux), macOS and Windows 10+. The legacy RC2/3DES form
# would need OpenSSL 3's legacy provider.
_PKCS12_KDF_ROUNDS = 100_000
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_@+][A-Za-z0-9._@+-]{0,199}$")


@dataclass(frozen=True)
class IssuedPaths:
    cert: Path
    key: Path
    pkcs12: Path | None = None

    def all(self) -> list[Path]:
        return [p for p in (self.cert, self.key, self.pkcs12) if p is not None]


@dataclass(frozen=True)
class PKCS12Contents:
    private_key: PrivateKey | None
    certificate: x509.Certificate | None
    additional: tuple[x509.Certificate, ...]

    def certificates(self) -> list[x509.Certificate]:
        head = [self.certificate] if self.certificate is not None else []
        return head + list(self.additional)


def pkcs12_bytes(
    issued: Issued, password: str = DEFAULT_PKCS12_PASSWORD, *, friendly_name: str | None = None
) -> bytes:
    """PKCS#12 with the leaf, its key and the CA chain (so importers also learn the root)."""
    if not password:
        raise PKIError("a PKCS#12 password must not be empty (browsers refuse such files)")
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(_PKCS12_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12_format.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode("utf-8"))
    )
    name = friendly_name.encode("utf-8") if friendly_name else None
    return pkcs12_format.serialize_key_and_certificates(
        name=name,
        key=issued.private_key,
        cert=issued.certificate,
        cas=list(issued.chain),
        encryption_algorithm=encryption,
    )


def write_issued(
    issued: Issued,
    out_dir: Path,
    name: str,
    *,
    pkcs12: bool = False,
    password: str = DEFAULT_PKCS12_PASSWORD,
    force: bool = False,
) -> IssuedPaths:
    """Write `<name>.pem` (certificate), `<name>-key.pem` (0600) and, with `pkcs12`,
    `<name>.p12` (0600). All-or-nothing about existing files: without `force` nothing
    is written if any of them exists."""
    if not _SAFE_NAME.match(name):
        raise PKIError(
            f"invalid output name {name!r}: use letters, digits, '.', '_', '-', '@', '+' "
            "(no path separators, not starting with '.')"
        )
    out_dir = Path(out_dir)
    paths = IssuedPaths(
        cert=out_dir / f"{name}.pem",
        key=out_dir / f"{name}-key.pem",
        pkcs12=out_dir / f"{name}.p12" if pkcs12 else None,
    )
    # Encode before touching the disk so a bad password leaves no files behind.
    p12 = pkcs12_bytes(issued, password, friendly_name=_label(issued, name)) if pkcs12 else None
    if not force:
        refuse_existing(paths.all())
    ensure_private_dir(out_dir)
    write_file(paths.key, issued.key_pem(), mode=PRIVATE_MODE, overwrite=force)
    write_file(paths.cert, issued.cert_pem(), mode=PUBLIC_MODE, overwrite=force)
    if paths.pkcs12 is not None and p12 is not None:
        write_file(paths.pkcs12, p12, mode=PRIVATE_MODE, overwrite=force)
    return paths


def _label(issued: Issued, fallback: str) -> str:
    # Browsers list client certificates by friendly name; the CN (the user's email)
    # means more to a person picking one than the file name does.
    cns = issued.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = cns[0].value if cns else fallback
    return value if isinstance(value, str) else fallback


def load_pkcs12(data: bytes, password: str, *, source: str = "input") -> PKCS12Contents:
    """Open a PKCS#12 file, including mkcert's legacy-encrypted ones."""
    try:
        loaded = pkcs12_format.load_pkcs12(data, password.encode("utf-8"))
    except ValueError as exc:
        raise PKIError(
            f"{source}: cannot open as PKCS#12 ({first_line(exc)}); check --password "
            "(mkcert and Vallum default to 'changeit')"
        ) from exc
    key: PrivateKey | None = None
    if loaded.key is not None:
        if not isinstance(loaded.key, PrivateKey):
            raise PKIError(
                f"{source}: {type(loaded.key).__name__} keys are not supported; "
                "use ECDSA, RSA or Ed25519"
            )
        key = loaded.key
    return PKCS12Contents(
        private_key=key,
        certificate=loaded.cert.certificate if loaded.cert is not None else None,
        additional=tuple(c.certificate for c in loaded.additional_certs),
    )
