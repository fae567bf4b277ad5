"""Checking OCSP responses before they are stapled: only a current, good answer for this
very certificate, signed by its issuer (or a responder it delegated to), is served."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.proxy.autocert.ocsp import OcspError, check_response, must_staple, responder_url

NOW = dt.datetime.now(dt.UTC)


def cert(
    cn: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


CA = cert("CA", None, extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)])
LEAF = cert(
    "app.test",
    CA,
    extensions=[
        (x509.TLSFeature([x509.TLSFeatureType.status_request]), False),
        (
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.oid.AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier("http://ocsp.test/"),
                    )
                ]
            ),
            False,
        ),
    ],
)[0]
OTHER = cert("other.test", CA)[0]


def response(
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    *,
    for_cert: x509.Certificate = LEAF,
    signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] = CA,
    next_update: dt.datetime | None = NOW + dt.timedelta(days=1),
    delegate: x509.Certificate | None = None,
) -> bytes:
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=for_cert,
            issuer=CA[0],
            algorithm=hashes.SHA1(),  # noqa: S303
            cert_status=status,
            this_update=NOW - dt.timedelta(minutes=1),
            next_update=next_update,
            revocation_time=NOW - dt.timedelta(hours=1)
            if status == ocsp.OCSPCertStatus.REVOKED
            else None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer[0])
    )
    if delegate is not None:
        builder = builder.certificates([delegate])
    return builder.sign(signer[1], hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_the_leaf_asks_for_stapling_and_names_its_responder() -> None:
    assert must_staple(LEAF) and not must_staple(OTHER)
    assert responder_url(LEAF) == "http://ocsp.test/"
    assert responder_url(OTHER) is None


def test_a_good_current_response_is_usable_until_its_next_update() -> None:
    until = check_response(response(), LEAF, CA[0], NOW)
    assert until > NOW


@pytest.mark.parametrize(
    ("der", "why"),
    [
        (response(ocsp.OCSPCertStatus.REVOKED), "REVOKED"),
        (response(for_cert=OTHER), "another certificate"),
        (response(next_update=NOW - dt.timedelta(minutes=1)), "not current"),
        (response(signer=cert("Impostor", None)), "signature"),
        (b"not der", "not an OCSP response"),
        (
            ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.TRY_LATER
            ).public_bytes(serialization.Encoding.DER),
            "TRY_LATER",
        ),
    ],
)
def test_unusable_responses_are_refused(der: bytes, why: str) -> None:
    with pytest.raises(OcspError, match=why):
        check_response(der, LEAF, CA[0], NOW)


def test_a_delegated_responder_is_accepted_only_with_ocsp_signing() -> None:
    delegated = cert(
        "OCSP responder",
        CA,
        extensions=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False)],
    )
    check_response(response(signer=delegated, delegate=delegated[0]), LEAF, CA[0], NOW)
    plain = cert("Not a responder", CA)
    with pytest.raises(OcspError, match="signature"):
        check_response(response(signer=plain, delegate=plain[0]), LEAF, CA[0], NOW)


def test_a_response_with_several_answers_is_refused_as_unusable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # cryptography raises ValueError for the single-answer fields of such a response;
    # anything but OcspError would escape refresh() and stall the host's renewals.
    class Several:
        response_status = ocsp.OCSPResponseStatus.SUCCESSFUL

        @property
        def serial_number(self) -> int:
            raise ValueError("OCSP response contains 2 SINGLERESP structures")

    monkeypatch.setattr(ocsp, "load_der_ocsp_response", lambda der: Several())
    with pytest.raises(OcspError, match="SINGLERESP"):
        check_response(b"", LEAF, CA[0], NOW)
