"""`vallum_certificate_expiry_timestamp_seconds`: when each certificate in use expires.

kind `server`: the certificates the proxy serves to users (name: the first DNS name,
else the subject CN); `internal`: this process's service certificate (name: its
service); `internal_ca`: the internal CA (name: its subject CN). Read again every
REFRESH seconds, so a reloaded certificate shows its new date. Under the supervisor
several processes report the same certificate: the scrape shows the latest date among
live processes (`livemax`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID
from prometheus_client import Gauge

from shared.material import KeyPair, MaterialError
from shared.pki import PKIError, load_certificates

log = logging.getLogger("vallum.metrics")

REFRESH = 60.0

EXPIRY = Gauge(
    "vallum_certificate_expiry_timestamp_seconds",
    "When a certificate in use expires (notAfter, unix seconds).",
    ["kind", "name"],
    multiprocess_mode="livemax",
)


def certificate_name(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return str(names[0]).lower()
    except x509.ExtensionNotFound:
        pass
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else cert.subject.rfc4514_string()


def expiry(cert: x509.Certificate) -> float:
    return cert.not_valid_after_utc.timestamp()


def record(kind: str, name: str, cert: x509.Certificate) -> None:
    EXPIRY.labels(kind, name).set(expiry(cert))


Source = Callable[[], Iterable[tuple[str, str, x509.Certificate]]]


def server_certificates(leaves: Callable[[], Iterable[x509.Certificate]]) -> Source:
    return lambda: (("server", certificate_name(c), c) for c in leaves())


class InternalMaterial(Protocol):
    """What shared.rpc.InternalTLS offers."""

    def load(self) -> tuple[bytes, KeyPair]: ...

    def identity(self, pair: KeyPair) -> str: ...


def internal_certificates(tls: InternalMaterial) -> Source:
    """The service certificate and CA of an `InternalTLS` (re-read from its sources)."""

    def read() -> list[tuple[str, str, x509.Certificate]]:
        ca_pem, pair = tls.load()
        found = [("internal", tls.identity(pair), pair.leaf)]
        for ca in load_certificates(ca_pem):
            common = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            name = str(common[0].value) if common else ca.subject.rfc4514_string()
            found.append(("internal_ca", name, ca))
        return found

    return read


def refresh(sources: Iterable[Source]) -> None:
    for source in sources:
        try:
            for kind, name, cert in source():
                record(kind, name, cert)
        except (MaterialError, PKIError, OSError, ValueError) as e:
            log.debug("certificate expiry not read: %s", e)


async def keep_fresh(sources: list[Source], every: float = REFRESH) -> None:
    while True:
        refresh(sources)
        await asyncio.sleep(every)
