"""The verdict on one connection's client certificate, and what authorize is told of it.

OpenSSL checks the chain (trust, validity, revocation, depth, purpose) in the
handshake; its verify callback records the first failure instead of refusing, so a
person gets a page that says which failure it was. The subject-alt-name rule
(`downstream_mtls.match_subject_alt_names`) and the per-route trust check are
Vallum's own and are applied here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from shared.config import SanMatcher
from shared.errors import client_certificate_reason
from shared.pb import authorize_pb2
from shared.pki import fingerprint_sha256, subject_alt_names

SAN_MISMATCH = "invalid-client-certificate-san-mismatch"
UNTRUSTED = "invalid-client-certificate-untrusted"
# X509_V_ERR_UNABLE_TO_GET_CRL: revocation checking is on and this certificate's
# issuer has no CRL configured. A CA without a CRL is not revocation-checked (as Envoy
# treats a chain none of whose CAs has a CRL), so this alone is not a failure.
NO_CRL_FOR_ISSUER = 3
# X509_V_ERR_CERT_CHAIN_TOO_LONG. OpenSSL stops building the chain at the depth limit,
# so a long chain to an untrusted root reports this too; the top of the partial chain
# tells the two apart.
CHAIN_TOO_LONG = 22
# downstream_mtls.match_subject_alt_names kinds → shared.pki SAN kinds.
_SAN_KINDS = {
    "dns": "dns",
    "email": "email",
    "ip_address": "ip",
    "uri": "uri",
    "user_principal_name": "upn",
}


class SanRule:
    """A certificate passes when any of its SANs fully matches any configured pattern;
    with no patterns configured, every certificate passes."""

    def __init__(self, matchers: Sequence[SanMatcher]) -> None:
        self._rules = [(_SAN_KINDS[m.kind], re.compile(m.pattern)) for m in matchers]

    def __bool__(self) -> bool:
        return bool(self._rules)

    def accepts(self, cert: x509.Certificate) -> bool:
        if not self._rules:
            return True
        sans = subject_alt_names(cert)
        return any(
            kind == san.kind and pattern.fullmatch(san.value) is not None
            for kind, pattern in self._rules
            for san in sans
        )


@dataclass(slots=True)
class VerifyRecord:
    """Filled in by the verify callback during one handshake; `cas` are the CAs the
    handshake trusted."""

    cas: tuple[x509.Certificate, ...] = ()
    code: int | None = None
    depth: int | None = None
    # The refused certificate's subject, for the log (reject_connection only).
    subject: str = ""

    def note(self, code: int, depth: int) -> bool:
        """Record a failure (the first one wins); False if it is not a failure at all."""
        if code == NO_CRL_FOR_ISSUER:
            return False
        if self.code is None:
            self.code, self.depth = code, depth
        return True


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What the client presented on one connection, and the verdict on it.

    `anchor` is the SHA-256 fingerprint of the trust anchor the chain verified to (empty
    when it did not verify): a route trusts only its own CAs, and two routes may share
    a host whose handshake trusted both.
    """

    presented: bool
    chain_pem: tuple[str, ...] = ()
    anchor: str = ""
    error: str = ""
    _messages: dict[frozenset[str] | None, authorize_pb2.ClientCertificate] = field(
        default_factory=dict, compare=False, repr=False
    )

    def error_for(self, anchors: frozenset[str] | None) -> str:
        """The reason this certificate fails for a route trusting `anchors` ("" if none).
        None: the route has no CAs of its own to check against."""
        if not self.presented:
            return client_certificate_reason(False)
        if self.error or anchors is None:
            return self.error
        return "" if self.anchor in anchors else UNTRUSTED

    def message(self, anchors: frozenset[str] | None) -> authorize_pb2.ClientCertificate:
        """The Check's client_certificate for a route trusting `anchors`; built once per
        connection and route trust, since a client presents one certificate throughout."""
        found = self._messages.get(anchors)
        if found is None:
            found = authorize_pb2.ClientCertificate(
                presented=self.presented,
                chain_pem=self.chain_pem,
                verify_error=self.error_for(anchors) if self.presented else "",
                requested=True,
            )
            self._messages[anchors] = found
        return found


def verdict(
    leaf: x509.Certificate | None,
    chain: Sequence[x509.Certificate],
    record: VerifyRecord,
    san_rule: SanRule,
    *,
    verified: bool,
) -> PeerCertificate:
    """The connection's verdict, once its handshake is done. `chain` is the verified
    chain (leaf to anchor) when `verified`, else what the client sent."""
    if leaf is None:
        return PeerCertificate(presented=False)
    pems = tuple(
        c.public_bytes(serialization.Encoding.PEM).decode("ascii")
        for c in [leaf, *(c for c in chain if c != leaf)]
    )
    if record.code == CHAIN_TOO_LONG and not _issued_by_any(chain[-1] if chain else leaf, record):
        return PeerCertificate(True, pems, error=UNTRUSTED)
    if record.code is not None:
        return PeerCertificate(True, pems, error=client_certificate_reason(True, record.code))
    if not verified or not chain:
        return PeerCertificate(True, pems, error=UNTRUSTED)
    if not san_rule.accepts(leaf):
        return PeerCertificate(True, pems, error=SAN_MISMATCH)
    return PeerCertificate(True, pems, anchor=fingerprint_sha256(chain[-1]))


def _issued_by_any(cert: x509.Certificate, record: VerifyRecord) -> bool:
    """Whether one of the trusted CAs signed `cert` (or is `cert`)."""
    for ca in record.cas:
        if ca == cert:
            return True
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False
