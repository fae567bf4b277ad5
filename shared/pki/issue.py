"""Issuing leaf certificates: service (mTLS between Vallum's services), server (route
hosts) and client (users)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .authority import CA, CLOCK_SKEW, check_days
from .errors import PKIError
from .keys import KeyType, SigningKey, generate_private_key, private_key_pem, signature_hash
from .names import (
    IPAddress,
    email_address,
    general_names,
    service_name,
    spiffe_id,
    split_names,
)
from .serials import random_serial

DEFAULT_TRUST_DOMAIN = "vallum.internal"
# Added to every service certificate unless include_loopback=False: all-in-one
# `vallum run` and the integration tests dial the sibling services on loopback, and
# which of these a client uses depends on its resolver, so all three are present.
LOOPBACK_DNS = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")
_CN_MAX = 64  # ub-common-name, RFC 5280 appendix A.1


@dataclass(frozen=True)
class Issued:
    """A freshly issued leaf with its private key and the chain up to (and including) the root."""

    certificate: x509.Certificate
    private_key: SigningKey
    chain: tuple[x509.Certificate, ...]

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return private_key_pem(self.private_key)

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)


def issue_service(
    ca: CA,
    service: str,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str | IPAddress] = (),
    days: int = 365,
    *,
    include_loopback: bool = True,
    key_type: KeyType = "ecdsa",
    rsa_bits: int = 2048,
) -> Issued:
    """Server+client certificate for one of Vallum's services.

    Identity is the URI SAN `spiffe://<trust_domain>/<service>`; peers authorise on
    that, never on DNS names. DNS SANs are the service name (its compose/Kubernetes
    host name), then `dns_names`, then the loopback names; IP SANs are `ip_addresses`
    then 127.0.0.1 and ::1.
    """
    service = service_name(service)
    uri = spiffe_id(trust_domain, service)
    dns = [service, *dns_names]
    ips: list[str | IPAddress] = list(ip_addresses)
    if include_loopback:
        dns += LOOPBACK_DNS
        ips += LOOPBACK_IPS
    sans = [x509.UniformResourceIdentifier(uri), *general_names(dns, ips)]
    return _issue(
        ca,
        common_name=service,
        sans=sans,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=days,
        key=generate_private_key(key_type, rsa_bits),
    )


def issue_server(
    ca: CA,
    names: Sequence[str],
    days: int = 365,
    *,
    key_type: KeyType = "ecdsa",
    rsa_bits: int = 2048,
) -> Issued:
    """TLS server certificate for route hosts; `names` are DNS names (wildcards such as
    `*.localhost` allowed) or IP literals, exactly as given (no implicit extras)."""
    if not names:
        raise PKIError("a server certificate needs at least one DNS name or IP address")
    dns, ips = split_names(names)
    sans = general_names(dns, ips)
    first = sans[0].value
    return _issue(
        ca,
        common_name=str(first),
        sans=sans,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        days=days,
        key=generate_private_key(key_type, rsa_bits),
    )


def issue_client(
    ca: CA,
    email: str,
    days: int = 365,
    *,
    key_type: KeyType = "ecdsa",
    rsa_bits: int = 2048,
) -> Issued:
    """User client certificate: CN and rfc822Name SAN are the email address."""
    email = email_address(email)
    return _issue(
        ca,
        common_name=email,
        sans=[x509.RFC822Name(email)],
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        days=days,
        key=generate_private_key(key_type, rsa_bits),
    )


def _issue(
    ca: CA,
    *,
    common_name: str,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    days: int,
    key: SigningKey,
) -> Issued:
    check_days(days)
    now = dt.datetime.now(dt.UTC)
    ca_expiry = ca.certificate.not_valid_after_utc
    if ca_expiry <= now:
        raise PKIError(
            f"the CA in {ca.dir} expired on {ca_expiry:%Y-%m-%d}; create a new CA with "
            "`vallum ca init` and re-issue"
        )
    # A leaf outliving its root is unusable past the root's expiry anyway; capping it
    # makes `vallum ca show` tell the truth about when it stops working.
    not_after = min(now + dt.timedelta(days=days), ca_expiry)
    # A CN longer than ub-common-name (a long email or host name) cannot be encoded, so
    # the subject is left empty, and RFC 5280 §4.2.1.6 then makes the SAN critical.
    if len(common_name) <= _CN_MAX:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    else:
        subject = x509.Name([])
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # RSA key transport (TLS 1.2 RSA kx) needs keyEncipherment; ECDSA keys
                # never encipher, so asserting it there would be wrong.
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(ca.authority_key_identifier(), critical=False)
        .sign(ca.private_key, signature_hash())
    )
    return Issued(certificate=cert, private_key=key, chain=(ca.certificate,))
