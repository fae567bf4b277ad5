"""Must-Staple: an autocert certificate with the TLS Feature `status_request` is served
with an OCSP response stapled, fetched from its responder (`openssl ocsp` here),
as `openssl s_client -status` shows.

The certificate is put in autocert_dir as if an ACME CA had issued it (pebble ignores
Must-Staple and runs no OCSP responder): long-lived, so no order is due; the ACME
directory is never contacted for it.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from services.proxy.autocert.store import AutocertStore
from tests.support.net import free_port
from tests.support.procs import Proc
from tests.support.stack import all_in_one, upstream
from tests.support.tools import require_tool

pytestmark = pytest.mark.integration

HOST = "app1.test"
NOW = dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def material(tmp_path: Path) -> Iterator[tuple[Path, Path, int, bytes, bytes]]:
    """(CA file, OCSP index, responder port, fullchain, key) for a Must-Staple leaf."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Test OCSP CA"))
        .issuer_name(_name("Test OCSP CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    port = free_port()
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(HOST))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False)
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(f"http://127.0.0.1:{port}"),
                    )
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, ca_key_path = tmp_path / "ca.pem", tmp_path / "ca-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    ca_key_path.write_bytes(_pem(ca_key))
    index = tmp_path / "index.txt"
    expiry = leaf.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    index.write_text(f"V\t{expiry}\t\t{leaf.serial_number:X}\tunknown\t/CN={HOST}\n")
    fullchain = leaf.public_bytes(serialization.Encoding.PEM) + ca_path.read_bytes()
    yield ca_path, index, port, fullchain, _pem(key)


def s_client_status(port: int, ca: Path) -> str:
    result = subprocess.run(
        [require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
         "-servername", HOST, "-status", "-CAfile", str(ca), "-verify_return_error"],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


def test_a_must_staple_certificate_is_served_with_its_ocsp_response(
    tmp_path: Path, material: tuple[Path, Path, int, bytes, bytes]
) -> None:
    ca, index, ocsp_port, fullchain, key = material
    responder = Proc(
        [require_tool("openssl"), "ocsp", "-index", str(index), "-port", str(ocsp_port),
         "-rsigner", str(ca), "-rkey", str(ca.with_name("ca-key.pem")), "-CA", str(ca),
         "-ndays", "1", "-ignore_err"],
    )  # fmt: skip
    try:
        # Not wait_for_port: `openssl ocsp` serves one connection at a time, and an
        # empty probe connection would hold it up.
        responder.wait_for("waiting for OCSP client connections")
        AutocertStore(tmp_path / "ac").save_certificate(HOST, fullchain, key)
        port = free_port()
        with (
            upstream() as app,
            all_in_one(
                tmp_path,
                [{"from": f"https://{HOST}:{port}", "to": app.url,
                  "allow_public_unauthenticated_access": True}],
                port,
                autocert=True,
                autocert_ca="https://127.0.0.1:9/dir",  # never needed: nothing is due
                autocert_dir=str(tmp_path / "ac"),
            ) as v,
        ):  # fmt: skip
            deadline = time.monotonic() + 30
            out = ""
            while time.monotonic() < deadline:
                out = s_client_status(port, ca)
                if "OCSP Response Status: successful" in out:
                    break
                time.sleep(0.5)
            logged = [ln for ln in v.proc.output.splitlines() if "autocert" in ln or "OCSP" in ln]
            assert "OCSP Response Status: successful" in out, (out[-1500:], logged)
            assert "Cert Status: good" in out
            assert "Verify return code: 0 (ok)" in out
            assert f"autocert: {HOST}: OCSP response stapled" in v.proc.output
            assert f"autocert: {HOST}: ordering" not in v.proc.output
    finally:
        responder.stop()
