"""OCSP responses stapled to the handshake (RFC 6066 section 8, RFC 6960), for
certificates that carry the TLS Feature `status_request` (Must-Staple, RFC 7633).

A client that honours Must-Staple refuses such a certificate without a stapled, valid
response. The stdlib `ssl` module cannot staple, so these hosts are served by
pyOpenSSL with an OCSP callback (see accept.py), and this module keeps a fresh
response per host: fetched from the certificate's OCSP responder (its Authority
Information Access), checked (the right certificate, status good, signed by the issuer
or a responder it delegated to, not stale), refreshed halfway to its nextUpdate, and
kept while a refresh fails until it expires.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

log = logging.getLogger("vallum.proxy.autocert")

FETCH_TIMEOUT = 10.0
# Without a nextUpdate a response is taken as good for this long.
DEFAULT_LIFETIME = dt.timedelta(hours=1)
RETRY_AFTER_FAILURE = dt.timedelta(minutes=1)


class OcspError(Exception):
    """Why no usable response could be had; one line for the log."""


def must_staple(cert: x509.Certificate) -> bool:
    try:
        feature = cert.extensions.get_extension_for_class(x509.TLSFeature).value
    except x509.ExtensionNotFound:
        return False
    return x509.TLSFeatureType.status_request in feature


def responder_url(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for access in aia:
        if access.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            access.access_location, x509.UniformResourceIdentifier
        ):
            return access.access_location.value
    return None


def request_for(leaf: x509.Certificate, issuer: x509.Certificate) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1())  # noqa: S303 (RFC 5019 section 2.1.1: SHA-1 CertID)
    return builder.build().public_bytes(serialization.Encoding.DER)


def check_response(
    der: bytes, leaf: x509.Certificate, issuer: x509.Certificate, now: dt.datetime
) -> dt.datetime:
    """When the response stops being usable; raises OcspError if it is not usable now."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as e:
        raise OcspError(f"not an OCSP response: {e}") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspError(f"the responder answered {response.response_status.name}")
    try:
        serial, status = response.serial_number, response.certificate_status
        this_update = response.this_update_utc
        next_update = response.next_update_utc or this_update + DEFAULT_LIFETIME
    except ValueError as e:
        # cryptography's answer to several SINGLERESPs: as an OcspError, so the host's
        # renewals (the same task) carry on and the fetch is retried with its own delay.
        raise OcspError(f"unusable OCSP response: {e}") from None
    if serial != leaf.serial_number:
        raise OcspError("the response is for another certificate")
    if status != ocsp.OCSPCertStatus.GOOD:
        raise OcspError(f"the certificate's status is {status.name}")
    _check_signer(response, issuer)
    if this_update > now + dt.timedelta(minutes=5) or next_update <= now:
        raise OcspError("the response is not current")
    return next_update


def _check_signer(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> None:
    """RFC 6960 section 4.2.2.2: the issuer itself, or a certificate it issued for
    OCSP signing (id-kp-OCSPSigning)."""
    signer = issuer
    for cert in response.certificates:
        if cert.subject == issuer.subject:
            continue
        try:
            cert.verify_directly_issued_by(issuer)
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in usage:
            signer = cert
            break
    try:
        _verify(signer, response.signature, response.tbs_response_bytes, response)
    except (InvalidSignature, TypeError, ValueError):
        raise OcspError("the response's signature does not verify") from None


def _verify(
    signer: x509.Certificate, signature: bytes, data: bytes, response: ocsp.OCSPResponse
) -> None:
    key = signer.public_key()
    algorithm = response.signature_hash_algorithm
    if algorithm is None:
        raise ValueError("no hash algorithm")
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(algorithm))
    else:
        raise TypeError(f"unsupported responder key {type(key).__name__}")


@dataclass
class Staple:
    der: bytes = b""
    good_until: dt.datetime | None = None
    refresh_at: dt.datetime | None = None
    last_error: str = ""


async def fetch(
    client: httpx.AsyncClient, leaf: x509.Certificate, issuer: x509.Certificate
) -> tuple[bytes, dt.datetime]:
    """A checked response for `leaf`: (DER, when it stops being usable)."""
    url = responder_url(leaf)
    if url is None:
        raise OcspError("the certificate names no OCSP responder")
    try:
        reply = await client.post(
            url,
            content=request_for(leaf, issuer),
            headers={"content-type": "application/ocsp-request"},
            timeout=FETCH_TIMEOUT,
        )
    except httpx.HTTPError as e:
        raise OcspError(f"cannot reach the OCSP responder {url}: {e}") from None
    if reply.status_code != 200:
        raise OcspError(f"the OCSP responder {url} answered HTTP {reply.status_code}")
    now = dt.datetime.now(dt.UTC)
    return reply.content, check_response(reply.content, leaf, issuer, now)


async def refresh(
    client: httpx.AsyncClient, host: str, leaf: x509.Certificate, issuer: x509.Certificate,
    staple: Staple,
) -> None:  # fmt: skip
    """Fetch a new response if one is due; keep the old one while it is usable."""
    now = dt.datetime.now(dt.UTC)
    if staple.refresh_at is not None and now < staple.refresh_at:
        return
    try:
        der, good_until = await fetch(client, leaf, issuer)
    except OcspError as e:
        staple.last_error = str(e)
        staple.refresh_at = now + RETRY_AFTER_FAILURE
        if staple.good_until is not None and staple.good_until <= now:
            staple.der, staple.good_until = b"", None  # never staple a stale response
        log.warning("autocert: %s: OCSP staple not refreshed: %s", host, e)
        return
    staple.der, staple.good_until, staple.last_error = der, good_until, ""
    staple.refresh_at = now + (good_until - now) / 2
    log.info("autocert: %s: OCSP response stapled, good until %s", host, good_until.isoformat())
