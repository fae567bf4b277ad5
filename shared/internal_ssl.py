"""Internal mTLS for plain TLS streams (the check channel), from the same material as
the gRPC servers and channels: the internal CA, this service's certificate and key.

Both ends require TLS 1.3 and a certificate chained to the internal CA; identity is
the URI SAN `spiffe://<trust domain>/<service>`, read from the peer's certificate after
the handshake, exactly as the gRPC identity gate reads it. A server context follows
certificate rotation: the files are checked at each handshake (a stat), and a changed
pair serves the next connection.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from pathlib import Path

from cryptography import x509

from shared.material import KeyPair, MaterialError
from shared.pki import spiffe_ids
from shared.rpc import InternalTLS, first_service

log = logging.getLogger("vallum.rpc")


def _context(purpose: int, ca_pem: bytes, pair: KeyPair) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    # ssl loads a key pair only from a file: a private one in a private directory,
    # removed at once (the material may have come inline from the config).
    with tempfile.TemporaryDirectory(prefix="vallum-tls-") as directory:
        path = Path(directory) / "pair.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pair.cert_pem + b"\n" + pair.key_pem)
        context.load_cert_chain(path)
    return context


def client_context(tls: InternalTLS) -> ssl.SSLContext:
    """Presents this service's certificate; checks the server's chain and host name."""
    ca_pem, pair = tls.load()
    return _context(ssl.PROTOCOL_TLS_CLIENT, ca_pem, pair)


class ServerContext:
    """A listening context that picks up a rotated certificate for new connections."""

    def __init__(self, tls: InternalTLS) -> None:
        self._tls = tls
        self._watch = tls.watch()
        ca_pem, pair = tls.load()
        self.identity = tls.identity(pair)
        self._current = _context(ssl.PROTOCOL_TLS_SERVER, ca_pem, pair)
        self.listener = _context(ssl.PROTOCOL_TLS_SERVER, ca_pem, pair)
        self.listener.sni_callback = self._select

    def _select(self, sock: ssl.SSLObject, _name: str | None, _: ssl.SSLContext) -> None:
        if self._watch.changed():
            try:
                ca_pem, pair = self._tls.load()
                self._tls.identity(pair)
                self._current = _context(ssl.PROTOCOL_TLS_SERVER, ca_pem, pair)
            except MaterialError as e:
                log.error("internal certificate change not applied, keeping the old one: %s", e)
        sock.context = self._current


def peer_service(ssl_object: ssl.SSLObject | None, trust_domain: str) -> str | None:
    """The service the peer's certificate names in `trust_domain`, if any."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return first_service(spiffe_ids(x509.load_der_x509_certificate(der)), trust_domain)
