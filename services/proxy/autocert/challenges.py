"""What the proxy shows an ACME server that validates a host (pure, no I/O).

- HTTP-01 (RFC 8555 section 8.3): `GET /.well-known/acme-challenge/<token>` on port 80
  answers the key authorization. The plain listener (`http_redirect_addr`) does it.
- TLS-ALPN-01 (RFC 8737): a handshake on port 443 that offers only `acme-tls/1` gets a
  self-signed certificate for the host carrying the critical acmeIdentifier
  extension, the SHA-256 of the key authorization; the connection then closes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.material import KeyPair, load_cert_chain
from shared.pki import private_key_pem

HTTP01_PREFIX = b"/.well-known/acme-challenge/"
ACME_TLS_ALPN = b"acme-tls/1"
# id-pe-acmeIdentifier, RFC 8737 section 6.1.
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def tls_alpn01_certificate(host: str, key_authorization: str) -> KeyPair:
    """RFC 8737 section 3: the validation certificate for `host`."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    # extnValue is the DER OCTET STRING of the digest (04 20 <32 bytes>), critical.
    identifier = x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest)
    return self_signed(host, "ACME TLS-ALPN-01", [(identifier, True)])


def self_signed(
    host: str,
    common_name: str,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> KeyPair:
    """A week-long self-signed P-256 certificate naming `host` (the TLS-ALPN-01
    validation certificate, and a host's stand-in until its first certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.sign(key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), private_key_pem(key), cert)


def tls_alpn01_context(pair: KeyPair) -> ssl.SSLContext:
    """A server context that offers only acme-tls/1, with the validation certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([ACME_TLS_ALPN.decode()])
    load_cert_chain(ctx, pair)
    return ctx


def http01_token(target: bytes) -> str | None:
    """The token of an HTTP-01 request target, or None if it is not one."""
    if not target.startswith(HTTP01_PREFIX):
        return None
    token = target[len(HTTP01_PREFIX) :].split(b"?", 1)[0]
    try:
        return token.decode("ascii") or None
    except UnicodeDecodeError:
        return None
