"""Autocert's parts that need no ACME server: the TLS-ALPN-01 certificate, HTTP-01
targets, renewal timing, backoff, and the shared directory (files and locks)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.proxy.autocert import manager
from services.proxy.autocert.challenges import (
    ACME_IDENTIFIER,
    http01_token,
    tls_alpn01_certificate,
)
from services.proxy.autocert.store import AutocertStore, HostState, StoreError, check_host
from shared.config import Config, Route, WeightedURL
from shared.pki import load_private_key
from shared.server_tls import CertificateSet

NOW = dt.datetime.now(dt.UTC)


def leaf(names: list[str], days_total: float, days_left: float) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    start = NOW - dt.timedelta(days=days_total - days_left)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days_total))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def test_tls_alpn01_certificate_follows_rfc_8737() -> None:
    pair = tls_alpn01_certificate("app.example.com", "token.thumbprint")
    ext = pair.leaf.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    assert ext.critical
    digest = hashlib.sha256(b"token.thumbprint").digest()
    assert ext.value.public_bytes() == b"\x04\x20" + digest  # DER OCTET STRING
    san = pair.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["app.example.com"]


@pytest.mark.parametrize(
    ("target", "token"),
    [
        (b"/.well-known/acme-challenge/abc_DEF-123", "abc_DEF-123"),
        (b"/.well-known/acme-challenge/abc?x=1", "abc"),
        (b"/.well-known/acme-challenge/", None),
        (b"/.well-known/other/abc", None),
        (b"/", None),
    ],
)
def test_http01_targets(target: bytes, token: str | None) -> None:
    assert http01_token(target) == token


def test_renewal_is_due_with_a_third_of_the_lifetime_left() -> None:
    cert = leaf(["app.test"], days_total=90, days_left=40)
    due = manager.renewal_time(cert, "app.test")
    assert due == pytest.approx((NOW + dt.timedelta(days=10)).timestamp(), abs=5)
    near = leaf(["app.test"], days_total=90, days_left=20)
    assert manager.renewal_time(near, "app.test") < NOW.timestamp()


def test_a_certificate_for_other_names_is_due_at_once() -> None:
    assert manager.renewal_time(leaf(["other.test"], 90, 80), "app.test") == 0.0


def test_backoff_grows_with_jitter_and_stops_growing() -> None:
    for failures in range(1, 30):
        base = min(manager.RETRY_FIRST * 2 ** (failures - 1), manager.RETRY_MAX)
        for _ in range(20):
            assert base * 0.5 <= manager.retry_delay(failures) <= base
    delays = {round(manager.retry_delay(3), 3) for _ in range(50)}
    assert len(delays) > 10  # jitter: replicas do not retry in step


def test_store_round_trip_and_modes(tmp_path: Path) -> None:
    store = AutocertStore(tmp_path / "ac")
    assert store.certificate("app.test") is None
    store.save_certificate("app.test", b"CHAIN", b"KEY")
    assert store.certificate("app.test") == (b"CHAIN", b"KEY")
    chain, key = store.certificate_paths("app.test")
    assert chain.stat().st_mode & 0o777 == 0o644
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ac").stat().st_mode & 0o777 == 0o700
    store.save_state("app.test", HostState(failures=2, last_error="refused", next_attempt=5.0))
    state = store.state("app.test")
    assert (state.failures, state.last_error, state.next_attempt) == (2, "refused", 5.0)
    assert store.hosts() == ["app.test"]


def test_store_refuses_names_that_could_leave_it(tmp_path: Path) -> None:
    store = AutocertStore(tmp_path / "ac")
    for bad in ("../etc", "a/b", "", "APP.test", "*.app.test", "a..b"):
        with pytest.raises(StoreError):
            check_host(bad)
    with pytest.raises(StoreError):
        store.put_http01("../../x", "k")
    assert store.http01("../../x") is None
    store.put_http01("tok_ABCDEFGHIJKLMNOP", "tok.thumb")
    assert store.http01("tok_ABCDEFGHIJKLMNOP") == b"tok.thumb"
    store.remove_http01("tok_ABCDEFGHIJKLMNOP")
    assert store.http01("tok_ABCDEFGHIJKLMNOP") is None


def test_the_host_lock_is_exclusive(tmp_path: Path) -> None:
    one, two = AutocertStore(tmp_path / "ac"), AutocertStore(tmp_path / "ac")
    with one.lock("app.test", wait=False) as first:
        assert first
        with two.lock("app.test", wait=False) as second:
            assert not second  # another holder (a replica) has it
        with two.lock("other.test", wait=False) as other:
            assert other
    with two.lock("app.test", wait=False) as after:
        assert after


@pytest.mark.parametrize("must_staple", [False, True])
def test_the_csr_names_the_host_and_asks_for_stapling_when_told(must_staple: bool) -> None:
    from cryptography.hazmat.primitives import serialization

    from services.proxy.autocert.acme_client import csr_for

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    csr = x509.load_pem_x509_csr(csr_for("app.test", pem, must_staple=must_staple))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["app.test"]
    try:
        feature = csr.extensions.get_extension_for_class(x509.TLSFeature).value
    except x509.ExtensionNotFound:
        assert not must_staple
    else:
        assert must_staple and x509.TLSFeatureType.status_request in feature


def test_a_store_that_cannot_write_says_so_as_a_store_error(tmp_path: Path) -> None:
    store = AutocertStore(tmp_path / "ac")
    chain, _ = store.certificate_paths("app.test")
    chain.parent.parent.mkdir(exist_ok=True)
    chain.parent.write_bytes(b"")  # certs/app.test is a file: nothing can go under it
    with pytest.raises(StoreError, match=r"app\.test"):
        store.save_certificate("app.test", b"CHAIN", b"KEY")
    with pytest.raises(StoreError, match=r"app\.test"):
        store.save_state("app.test", HostState())


async def test_a_certificate_not_saved_is_a_failed_attempt_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ordered but not stored: ordering again at once would spend the CA's rate limits.
    config = Config(
        autocert=True,
        autocert_dir=str(tmp_path / "ac"),
        routes=(Route(from_url="https://app.test", to=(WeightedURL("http://127.0.0.1:1"),)),),
    )
    auto = manager.Autocert(config, CertificateSet([], fallback=manager.self_signed("x.test")))

    def obtain(*args: object) -> bytes:
        key = load_private_key(args[-1])  # type: ignore[arg-type]
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app.test")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(NOW)
            .not_valid_after(NOW + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("app.test")]), False)
            .sign(key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    monkeypatch.setattr(manager, "obtain", obtain)
    chain, _ = auto.store.certificate_paths("app.test")
    chain.mkdir(parents=True)  # fullchain.pem cannot be written over a directory
    await auto._order("app.test")
    state = auto.store.state("app.test")
    assert state.failures == 1 and "fullchain.pem" in state.last_error
    assert state.next_attempt is not None and state.next_attempt > state.last_attempt  # type: ignore[operator]
    assert auto._due("app.test") == state.next_attempt
