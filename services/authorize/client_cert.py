"""The downstream client certificate, as policy sees it.

The proxy sends the chain as PEM with its own verification verdict; parsing is cached
by leaf PEM because a client presents the same certificate on every request.
"""

from __future__ import annotations

from functools import lru_cache

from shared.pb import authorize_pb2
from shared.pki import (
    PKIError,
    fingerprint_sha256,
    load_certificates,
    serial_hex,
    spki_sha256_b64,
    subject_alt_names,
)
from shared.policy import ClientCertView

NOT_ASKED = None
NONE_PRESENTED = ClientCertView(presented=False, valid=False, invalid_reason="no certificate")


@lru_cache(maxsize=4096)
def _parse(leaf_pem: str, verify_error: str) -> ClientCertView:
    try:
        leaf = load_certificates(leaf_pem.encode(), source="client certificate")[0]
    except PKIError as e:
        return ClientCertView(presented=True, valid=False, invalid_reason=str(e))
    sans = subject_alt_names(leaf)
    return ClientCertView(
        presented=True,
        valid=not verify_error,
        fingerprint=fingerprint_sha256(leaf),
        spki_hash=spki_sha256_b64(leaf),
        san_dns=tuple(s.value for s in sans if s.kind == "dns"),
        san_email=tuple(s.value for s in sans if s.kind == "email"),
        san_uri=tuple(s.value for s in sans if s.kind == "uri"),
        invalid_reason=verify_error or None,
        serial=serial_hex(leaf.serial_number),
    )


def client_cert_view(cert: authorize_pb2.ClientCertificate, asked: bool) -> ClientCertView | None:
    """None when the listener does not ask for certificates on this route."""
    if not cert.presented:
        return NONE_PRESENTED if asked else NOT_ASKED
    if not cert.chain_pem:
        return ClientCertView(presented=True, valid=False, invalid_reason="empty chain")
    return _parse(cert.chain_pem[0], cert.verify_error)
