"""Which hosts ask for client certificates, whom each trusts, and their TLS contexts.

A route needs a client certificate when it has a client CA: its own
(`tls_downstream_client_ca`), else the global one (`downstream_mtls.ca`, or the older
`client_ca`). The handshake asks by server name, so a host asks when any of its
routes needs one, and trusts the union of those routes' CAs; with a global CA every
host asks. Each route then checks that the chain ended at one of its own CAs, so a
certificate from route A's CA never opens route B.

The contexts are pyOpenSSL's, built per (host scope, server certificate) and rebuilt
when a CA, CRL or server certificate file changes. Session resumption is off on them:
a resumed session skips the verify callback, and with it the verdict.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto

from services.proxy.client_verify import SAN_MISMATCH, SanRule, VerifyRecord, verdict
from services.proxy.openssl_transport import server_context, server_name_info
from shared.config import Config, Source
from shared.errors import client_certificate_reason
from shared.material import (
    FileWatch,
    KeyPair,
    MaterialError,
    describe_source,
    load_ca_bundle,
    read_source,
)
from shared.pki import (
    crl_blocks,
    fingerprint_sha256,
)
from shared.routing.authority import WILDCARD, parse_from
from shared.server_tls import CertificateSet

log = logging.getLogger("vallum.proxy.tls")

_GLOBAL = "*"
# Recorded by the reject_connection callback for a chain that verified but whose leaf
# names no accepted subject (not an OpenSSL code).
SAN_REFUSED = -1


@dataclass(frozen=True, slots=True)
class Scope:
    """One set of trusted client CAs: what a group of hosts asks for."""

    key: str
    cas: tuple[x509.Certificate, ...]
    anchors: frozenset[str]


def _load_crls(source: Source, key: str) -> tuple[x509.CertificateRevocationList, ...]:
    data = read_source(source, key)
    crls = []
    for block in crl_blocks(data):
        try:
            crls.append(x509.load_pem_x509_crl(block))
        except ValueError as e:
            raise MaterialError(f"{key}: {describe_source(source, key)}: {e}") from None
    if not crls:
        raise MaterialError(f"{key}: {describe_source(source, key)} holds no PEM CRL")
    return tuple(crls)


class DownstreamTrust:
    def __init__(self, config: Config, certificates: CertificateSet) -> None:
        self._config = config
        self._certificates = certificates
        mtls = config.downstream_mtls
        self.reject = mtls.enforcement == "reject_connection"
        self._san_rule = SanRule(mtls.match_subject_alt_names)
        # Pomerium counts the CAs above the leaf, anchor included; OpenSSL counts the
        # intermediates between them (SSL_CTX_set_verify_depth(3)).
        self._depth = mtls.max_verify_depth - 1 if mtls.max_verify_depth else None
        self._sources = self._ca_sources()
        paths = [s.path for s, _ in self._sources.values()]
        if mtls.crl is not None:
            paths.append(mtls.crl.path)
        self._watch = FileWatch(paths)
        self._contexts: dict[tuple[str, int], tuple[KeyPair, SSL.Context]] = {}
        self._intermediate_crls: list[x509.CertificateRevocationList] = []
        self._generation = certificates.generation
        self._load()

    def _ca_sources(self) -> dict[str, tuple[Source, str]]:
        """Every distinct client CA source with the key to blame for it."""
        found: dict[str, tuple[Source, str]] = {}
        mtls = self._config.downstream_mtls
        if mtls.ca is not None:
            found[_GLOBAL] = (mtls.ca, "downstream_mtls.ca")
        elif self._config.client_ca is not None:
            found[_GLOBAL] = (self._config.client_ca, "client_ca")
        for i, route in enumerate(self._config.routes):
            if route.tls_downstream_client_ca is not None:
                found[f"routes[{i}]"] = (
                    route.tls_downstream_client_ca,
                    f"routes[{i}].tls_downstream_client_ca",
                )
        return found

    @property
    def enabled(self) -> bool:
        return bool(self._sources)

    def _load(self) -> None:
        cas = {
            name: tuple(load_ca_bundle(source, key)[1])
            for name, (source, key) in self._sources.items()
        }
        crls: tuple[x509.CertificateRevocationList, ...] = ()
        intermediate: list[x509.CertificateRevocationList] = []
        crl_source = self._config.downstream_mtls.crl
        if crl_source is not None and cas:
            crls = _load_crls(crl_source, "downstream_mtls.crl")
            intermediate = _check_crls(crls, [c for g in cas.values() for c in g])
        route_scopes: list[Scope | None] = []
        hosts: dict[str, list[x509.Certificate]] = {}
        default = self._scope(_GLOBAL, cas[_GLOBAL]) if _GLOBAL in cas else None
        for i, route in enumerate(self._config.routes):
            group = cas.get(f"routes[{i}]", cas.get(_GLOBAL))
            if group is None:
                route_scopes.append(None)
                continue
            route_scopes.append(self._scope(f"routes[{i}]", group))
            host = parse_from(route.from_url).host
            bucket = hosts.setdefault(host, [])
            bucket += [ca for ca in group if ca not in bucket]
        self._crls, self._intermediate_crls = crls, intermediate
        self._routes = route_scopes
        self._default = default
        self._hosts = {host: self._scope(host, tuple(group)) for host, group in hosts.items()}
        self._contexts = {}

    @staticmethod
    def _scope(key: str, cas: Sequence[x509.Certificate]) -> Scope:
        return Scope(key, tuple(cas), frozenset(fingerprint_sha256(ca) for ca in cas))

    def route_anchors(self, index: int) -> frozenset[str] | None:
        """The route's trusted CA fingerprints; None when it needs no certificate."""
        scope = self._routes[index] if 0 <= index < len(self._routes) else None
        return scope.anchors if scope is not None else None

    def scope_for(self, server_name: str | None) -> Scope | None:
        """The CAs a connection for `server_name` asks for; None: do not ask."""
        if server_name:
            found = self._hosts.get(server_name)
            dot = server_name.find(".", 1)
            while found is None and dot != -1:
                found = self._hosts.get(WILDCARD + server_name[dot + 1 :])
                dot = server_name.find(".", dot + 1)
            if found is not None:
                return found
        return self._default

    def connection(self, scope: Scope, server_name: str | None) -> SSL.Connection:
        """A server-side connection for one accepted socket, its verdict still to come."""
        pair = self._certificates.pair_for_name(server_name)
        # Keyed by id, so the pair is kept with its context and compared: a pair
        # replaced (autocert, a reload) before reload_if_changed empties the cache may
        # be freed and its id taken by the new pair, whose context this is not.
        found = self._contexts.get((scope.key, id(pair)))
        if found is None or found[0] is not pair:
            found = self._contexts[(scope.key, id(pair))] = (pair, self._context(scope, pair))
        conn = SSL.Connection(found[1], None)
        conn.set_app_data(VerifyRecord(scope.cas))
        return conn

    def _context(self, scope: Scope, pair: KeyPair) -> SSL.Context:
        ctx = server_context(pair, hashlib.sha256(scope.key.encode()).digest())
        store = ctx.get_cert_store()
        assert store is not None
        for ca in scope.cas:
            store.add_cert(crypto.X509.from_cryptography(ca))
            ctx.add_client_ca(ca)  # names it in the CertificateRequest
        crls = [c for c in self._crls if any(_signed_by(c, ca) for ca in scope.cas)]
        crls += self._intermediate_crls
        for crl in crls:
            store.add_crl(crl)
        if crls:
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)
        if self._depth is not None:
            ctx.set_verify_depth(self._depth)
        if self.reject:
            mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            ctx.set_verify(mode, self._refuse_invalid)
        else:
            ctx.set_verify(SSL.VERIFY_PEER, _record_failure)
        log.debug("client certificate context for %s: %d CA(s)", scope.key, len(scope.cas))
        return ctx

    def _refuse_invalid(
        self, conn: SSL.Connection, cert: crypto.X509, code: int, depth: int, ok: int
    ) -> bool:
        record: VerifyRecord = conn.get_app_data()
        if not ok and record.note(code, depth):
            record.subject = cert.to_cryptography().subject.rfc4514_string()
            return False
        if depth == 0 and self._san_rule:
            leaf = cert.to_cryptography()
            if not self._san_rule.accepts(leaf):
                record.note(SAN_REFUSED, 0)
                record.subject = leaf.subject.rfc4514_string()
                return False
        return True

    def handshake_done(self, conn: SSL.Connection) -> dict[str, Any]:
        """Extra info for the HTTP protocol: the server name and the certificate verdict."""
        leaf = conn.get_peer_certificate(as_cryptography=True)
        verified = conn.get_verified_chain(as_cryptography=True)
        sent = conn.get_peer_cert_chain(as_cryptography=True) or []
        record: VerifyRecord = conn.get_app_data()
        chain = verified if verified else sent
        peer = verdict(leaf, chain, record, self._san_rule, verified=bool(verified))
        return {**server_name_info(conn), "vallum_client_cert": peer}

    def handshake_failed(self, conn: SSL.Connection, error: Exception) -> None:
        """Log why a handshake failed; in reject_connection mode, which certificate rule."""
        record: VerifyRecord = conn.get_app_data()
        if record.code == SAN_REFUSED:
            why = SAN_MISMATCH
        elif record.code is not None:
            why = client_certificate_reason(True, record.code)
        elif self.reject and conn.get_peer_certificate() is None:
            why = client_certificate_reason(False)
        else:
            log.info("TLS handshake failed: %s", _describe(error))
            return
        log.info(
            "TLS handshake refused: %s (certificate %s): %s",
            why,
            record.subject or "-",
            _describe(error),
        )

    def reload_if_changed(self) -> bool:
        certificates_changed = self._certificates.generation != self._generation
        if not (self._watch.changed() or certificates_changed):
            return False
        self._generation = self._certificates.generation
        try:
            self._load()
        except (MaterialError, OSError) as e:
            log.error("client CA or CRL change not applied, keeping the old ones: %s", e)
            return False
        log.info("client certificate authorities and CRLs reloaded")
        return True


def _record_failure(
    conn: SSL.Connection, cert: crypto.X509, code: int, depth: int, ok: int
) -> bool:
    if not ok:
        record: VerifyRecord = conn.get_app_data()
        record.note(code, depth)
    return True  # the verdict is given on the 495 page, not by a handshake alert


def _describe(error: Exception) -> str:
    """OpenSSL's last reason in words, not pyOpenSSL's list of (library, function, reason)."""
    details = error.args[0] if error.args else None
    if isinstance(details, list) and details and isinstance(details[-1], tuple):
        return str(details[-1][-1])
    return str(error) or type(error).__name__


def _check_crls(
    crls: Sequence[x509.CertificateRevocationList], cas: Sequence[x509.Certificate]
) -> list[x509.CertificateRevocationList]:
    """Refuse CRLs no verifier could use; return those of intermediate CAs.

    A CRL signed by none of the configured CAs, under a name none of them has, belongs
    to an intermediate that clients send in their chains (max_verify_depth above 1):
    OpenSSL checks its signature against that intermediate at each handshake, and a
    bad one refuses the certificate (`invalid-client-certificate-crl-unavailable`).
    """
    intermediate = []
    for crl in crls:
        issuer = crl.issuer.rfc4514_string()
        signer = next((ca for ca in cas if _signed_by(crl, ca)), None)
        if signer is None:
            if any(ca.subject == crl.issuer for ca in cas):
                raise MaterialError(
                    f"downstream_mtls.crl: the CRL of {issuer} does not verify with the key "
                    "of the configured CA of that name; give the CRL that CA signed"
                )
            # Said loudly: a CRL meant for a configured CA but given by mistake for
            # another would otherwise go unnoticed, and revoke nothing.
            log.warning(
                "downstream_mtls.crl: the CRL of %s matches no configured client CA; it is "
                "used for chains through an intermediate CA of that name",
                issuer,
            )
            intermediate.append(crl)
        elif not _may_sign_crls(signer):
            # OpenSSL would refuse this CRL at every handshake (error 35), and with it
            # every certificate of that CA: say so once, now.
            raise MaterialError(
                f"downstream_mtls.crl: the CRL of {issuer} is signed by a CA whose keyUsage "
                "lacks cRLSign, so no verifier may use it; sign CRLs with a CA certificate "
                "that has cRLSign (mkcert's root has not)"
            )
    return intermediate


def _may_sign_crls(ca: x509.Certificate) -> bool:
    """RFC 5280 section 4.2.1.3: with a keyUsage extension, cRLSign must be in it."""
    try:
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.crl_sign


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    if crl.issuer != ca.subject:
        return False
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
