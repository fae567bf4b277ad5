"""The pebble harness (tests/support/pebble.py) does what autocert's tests rely on, shown
with the real ACME client library (`acme`, certbot's) and challenge responders written
here: issuance that chains to `roots_pem()`, real HTTP-01 and TLS-ALPN-01 validation
against 127.0.0.1 through pebble's DNS server, a failed validation, external account
binding, and a restart on the same ports."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.server
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import pytest
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from josepy.b64 import b64encode
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from shared.pki import private_key_pem
from tests.support.net import free_port
from tests.support.pebble import Pebble, pebble

pytestmark = pytest.mark.integration

ACME_TLS_1 = "acme-tls/1"
# RFC 8737 section 3: the acmeIdentifier extension of a TLS-ALPN-01 certificate.
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
DEADLINE = dt.timedelta(seconds=30)


@dataclass
class Account:
    acme: client.ClientV2
    key: JWKEC
    regr: messages.RegistrationResource | None = None


def connect(server: Pebble) -> Account:
    """A client for `server` with a new ES256 account key (no account registered yet)."""
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    # requests takes a CA bundle path for `verify`; acme annotates it as a bool.
    net = client.ClientNetwork(
        key, alg=ES256, verify_ssl=cast(bool, str(server.server_ca)), timeout=10
    )
    return Account(
        client.ClientV2(client.ClientV2.get_directory(server.directory_url, net), net), key
    )


def register(server: Pebble) -> Account:
    account = connect(server)
    account.regr = account.acme.new_account(
        messages.NewRegistration.from_data(terms_of_service_agreed=True)
    )
    return account


def new_order(
    account: Account, *names: str
) -> tuple[messages.OrderResource, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return account.acme.new_order(crypto_util.make_csr(private_key_pem(key), list(names))), key


def challenge(authz: messages.AuthorizationResource, typ: str) -> messages.ChallengeBody:
    for body in authz.body.challenges:
        # acme 5 knows http-01 and dns-01; tls-alpn-01 arrives as UnrecognizedChallenge
        # (unless some import registered a class for it).
        chall = body.chall
        found = (
            chall.jobj.get("type")
            if isinstance(chall, challenges.UnrecognizedChallenge)
            else chall.typ
        )
        if found == typ:
            return body
    raise AssertionError(f"no {typ} challenge in {authz.body.to_json()}")


@dataclass
class HTTP01:
    body: messages.ChallengeBody
    response: challenges.HTTP01Response  # what answer_challenge POSTs (`{}`)
    token: str  # the path's last segment
    validation: str  # what to serve there: the key authorization


def http01(account: Account, orderr: messages.OrderResource) -> HTTP01:
    """The HTTP-01 challenge of the order's (only) authorization."""
    body = challenge(orderr.authorizations[0], "http-01")
    assert isinstance(body.chall, challenges.HTTP01)
    response, validation = body.chall.response_and_validation(account.key)
    return HTTP01(body, response, body.chall.encode("token"), validation)


def key_authorization(body: messages.ChallengeBody, account_key: JWK) -> str:
    """token.thumbprint (RFC 8555 section 8.1), whether or not a TLS-ALPN-01 challenge
    class is registered with acme in this process (Vallum's autocert registers one)."""
    chall = body.chall
    if isinstance(chall, challenges.KeyAuthorizationChallenge):
        return chall.key_authorization(account_key)
    assert isinstance(chall, challenges.UnrecognizedChallenge), chall
    token = chall.jobj["token"]
    thumbprint = b64encode(account_key.thumbprint(hash_function=hashes.SHA256)).decode()
    return f"{token}.{thumbprint}"


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """acme 5 dropped its TLS-ALPN-01 classes; the response POSTed is `{}` like any other."""

    typ = "tls-alpn-01"


def issue(
    account: Account, orderr: messages.OrderResource, *, alternatives: bool = False
) -> messages.OrderResource:
    """Wait for the answered authorizations (polled faster than acme's 1 s), then let
    acme check them (ValidationError if one is invalid) and finalize."""
    deadline = dt.datetime.now() + DEADLINE
    for authz in orderr.authorizations:
        while authz.body.status == messages.STATUS_PENDING and dt.datetime.now() < deadline:
            authz, _ = account.acme.poll(authz)
            time.sleep(0.05)
    orderr = account.acme.poll_authorizations(orderr, deadline)
    return account.acme.finalize_order(orderr, deadline, fetch_alternative_chains=alternatives)


def verify_chain(server: Pebble, fullchain_pem: str, name: str) -> x509.Certificate:
    """The chain pebble returned (leaf + intermediates) verifies for `name` against
    the harness's roots_pem(); returns the leaf."""
    leaf, *intermediates = x509.load_pem_x509_certificates(fullchain_pem.encode())
    roots = x509.load_pem_x509_certificates(server.roots_pem())
    verifier = PolicyBuilder().store(Store(roots)).build_server_verifier(x509.DNSName(name))
    verifier.verify(leaf, intermediates)
    return leaf


# -- challenge responders -------------------------------------------------------------


@contextlib.contextmanager
def http01_responder(
    port: int, answers: Mapping[str, str], host: str = "127.0.0.1"
) -> Iterator[list[str]]:
    """HTTP on host:port answering /.well-known/acme-challenge/<token> from `answers`
    (404 otherwise); yields the list of Host headers + paths it was asked for."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"{self.headers.get('Host')}{self.path}")
            token = self.path.removeprefix("/.well-known/acme-challenge/")
            body = answers.get(token)
            self.send_response(200 if body is not None else 404)
            payload = (body or "not found").encode()
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def tls_alpn01_certificate(domain: str, key_auth: str, out: Path) -> tuple[Path, Path]:
    """RFC 8737 section 3: self-signed, the domain as its only SAN, and a critical
    acmeIdentifier extension holding the DER OCTET STRING of SHA-256(key authorization).
    Built with cryptography: acme 5 has no TLS-ALPN-01 helper any more."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_auth.encode("ascii")).digest()
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        # 0x04 0x20: OCTET STRING, 32 bytes.
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = out / "alpn.pem", out / "alpn-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(private_key_pem(key))
    return cert_path, key_path


@contextlib.contextmanager
def tls_alpn01_responder(
    port: int, cert: Path, key: Path
) -> Iterator[list[tuple[str | None, str | None]]]:
    """TLS on 127.0.0.1:port offering only ALPN acme-tls/1 with the challenge
    certificate; yields (SNI, ALPN protocol) of each handshake it completed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ACME_TLS_1])
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    handshakes: list[tuple[str | None, str | None]] = []

    def remember(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = remember
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError), conn:
                conn.settimeout(5)
                with context.wrap_socket(conn, server_side=True) as tls:
                    handshakes.append((names[-1] if names else None, tls.selected_alpn_protocol()))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield handshakes
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def always_valid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with pebble(
        tmp_path_factory.mktemp("always-valid"),
        http_port=free_port(),
        tls_port=free_port(),
        always_valid=True,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def validating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with pebble(
        tmp_path_factory.mktemp("validating"), http_port=free_port(), tls_port=free_port()
    ) as server:
        yield server


# -- tests ------------------------------------------------------------------------------


def test_always_valid_issues_a_chain_to_the_roots(always_valid: Pebble) -> None:
    account = register(always_valid)
    assert account.regr is not None and account.regr.body.status == "valid"
    orderr, key = new_order(account, "app.test")
    # Still pending: the challenge must be POSTed (it then passes without any request).
    authz = orderr.authorizations[0]
    assert authz.body.status == messages.STATUS_PENDING
    chall = http01(account, orderr)
    account.acme.answer_challenge(chall.body, chall.response)
    done = issue(account, orderr)

    leaf = verify_chain(always_valid, done.fullchain_pem, "app.test")
    assert leaf.public_key() == key.public_key()
    chain = x509.load_pem_x509_certificates(done.fullchain_pem.encode())
    assert len(chain) == 2  # leaf + intermediate; the root is not sent
    roots = x509.load_pem_x509_certificates(always_valid.roots_pem())
    assert chain[1].issuer == roots[0].subject
    assert x509.load_pem_x509_certificates(always_valid.intermediates_pem()) == chain[1:]
    # The leaf alone does not verify: whoever serves it must send the intermediate too.
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(VerificationError):
        verify_chain(always_valid, leaf_pem, "app.test")


def test_http01_validation_reaches_the_http_port(validating: Pebble) -> None:
    account = register(validating)
    orderr, _ = new_order(account, "app.test")
    chall = http01(account, orderr)
    with http01_responder(validating.http_port, {chall.token: chall.validation}) as seen:
        account.acme.answer_challenge(chall.body, chall.response)
        done = issue(account, orderr)
    verify_chain(validating, done.fullchain_pem, "app.test")
    # pebble resolved app.test through its DNS server to 127.0.0.1 and dialled http_port.
    path = f"/.well-known/acme-challenge/{chall.token}"
    assert set(seen) == {f"app.test:{validating.http_port}{path}"}, seen


def test_http01_answered_404_invalidates_the_authorization(validating: Pebble) -> None:
    account = register(validating)
    orderr, _ = new_order(account, "missing.test")
    chall = http01(account, orderr)
    with (
        http01_responder(validating.http_port, {}),
        pytest.raises(errors.ValidationError) as failed,
    ):
        account.acme.answer_challenge(chall.body, chall.response)
        issue(account, orderr)
    (authz,) = failed.value.failed_authzrs
    assert authz.body.status == messages.STATUS_INVALID
    assert authz.body.identifier.value == "missing.test"
    problem = next(c.error for c in authz.body.challenges if c.error is not None)
    assert problem.code == "unauthorized", problem
    assert "404" in str(problem.detail), problem


def test_add_a_record_sends_validation_to_another_address(validating: Pebble) -> None:
    validating.add_a_record("elsewhere.test", "127.0.0.2")
    try:
        account = register(validating)
        orderr, _ = new_order(account, "elsewhere.test")
        chall = http01(account, orderr)
        answers = {chall.token: chall.validation}
        # Only 127.0.0.2 answers: success proves pebble used the record.
        with http01_responder(validating.http_port, answers, host="127.0.0.2") as seen:
            account.acme.answer_challenge(chall.body, chall.response)
            issue(account, orderr)
        assert seen
    finally:
        validating.clear_a_record("elsewhere.test")


def test_tls_alpn01_validation_reaches_the_tls_port(validating: Pebble, tmp_path: Path) -> None:
    account = register(validating)
    orderr, _ = new_order(account, "app.test")
    alpn = challenge(orderr.authorizations[0], "tls-alpn-01")
    key_auth = key_authorization(alpn, account.key)
    cert, key = tls_alpn01_certificate("app.test", key_auth, tmp_path)
    with tls_alpn01_responder(validating.tls_port, cert, key) as handshakes:
        account.acme.answer_challenge(alpn, TLSALPN01Response(key_authorization=key_auth))
        done = issue(account, orderr)
    verify_chain(validating, done.fullchain_pem, "app.test")
    # pebble dialled tls_port with SNI app.test and ALPN acme-tls/1.
    assert set(handshakes) == {("app.test", ACME_TLS_1)}, handshakes


def test_external_account_binding_is_required_when_configured(tmp_path: Path) -> None:
    kid = "vallum-kid"
    hmac_key = b64encode(secrets.token_bytes(32)).decode()
    with pebble(
        tmp_path,
        http_port=free_port(),
        tls_port=free_port(),
        always_valid=True,
        eab={kid: hmac_key},
    ) as server:
        account = connect(server)
        assert account.acme.directory.meta.external_account_required is True
        with pytest.raises(messages.Error) as refused:
            account.acme.new_account(
                messages.NewRegistration.from_data(terms_of_service_agreed=True)
            )
        assert refused.value.code == "externalAccountRequired", refused.value

        wrong = b64encode(secrets.token_bytes(32)).decode()
        for bad_kid, bad_key in ((kid, wrong), ("other-kid", hmac_key)):
            binding = messages.ExternalAccountBinding.from_data(
                account.key.public_key(), bad_kid, bad_key, account.acme.directory
            )
            with pytest.raises(messages.Error):
                account.acme.new_account(
                    messages.NewRegistration.from_data(
                        terms_of_service_agreed=True, external_account_binding=binding
                    )
                )

        binding = messages.ExternalAccountBinding.from_data(
            account.key.public_key(), kid, hmac_key, account.acme.directory
        )
        regr = account.acme.new_account(
            messages.NewRegistration.from_data(
                terms_of_service_agreed=True, external_account_binding=binding
            )
        )
        assert regr.body.status == "valid"


def test_validity_chain_length_and_alternate_roots(tmp_path: Path) -> None:
    with pebble(
        tmp_path,
        http_port=free_port(),
        tls_port=free_port(),
        always_valid=True,
        validity_seconds=90,
        chain_length=2,
        alternate_roots=1,
    ) as server:
        account = register(server)
        orderr, _ = new_order(account, "a.localhost")
        chall = http01(account, orderr)
        account.acme.answer_challenge(chall.body, chall.response)
        done = issue(account, orderr, alternatives=True)

        leaf = verify_chain(server, done.fullchain_pem, "a.localhost")
        # notBefore is the moment of issue (not backdated); notAfter is 1 s short of it.
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert lifetime == dt.timedelta(seconds=89), lifetime
        assert len(x509.load_pem_x509_certificates(done.fullchain_pem.encode())) == 3
        # One alternate chain (Link rel="alternate") per extra root; the same leaf,
        # each chain to its own root of roots_pem().
        (alternate,) = done.alternative_fullchains_pem
        assert verify_chain(server, alternate, "a.localhost") == leaf
        assert len(x509.load_pem_x509_certificates(server.roots_pem())) == 2


def test_restart_answers_on_the_same_ports_with_a_new_root(tmp_path: Path) -> None:
    with pebble(tmp_path, http_port=free_port(), tls_port=free_port(), always_valid=True) as server:
        account = register(server)
        root = server.roots_pem()
        directory_url, management_url = server.directory_url, server.management_url

        server.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(directory_url, verify=server.ssl_context())
        server.stop()  # idempotent

        server.restart()
        assert (server.directory_url, server.management_url) == (directory_url, management_url)
        directory = httpx.get(directory_url, verify=server.ssl_context()).json()
        assert "newOrder" in directory
        assert server.roots_pem() != root
        # Everything was in memory: the account is gone.
        with pytest.raises(messages.Error) as gone:
            assert account.regr is not None
            connect(server).acme.query_registration(account.regr)
        assert gone.value.code == "accountDoesNotExist", gone.value


def test_a_failed_start_shows_pebbles_output(tmp_path: Path, always_valid: Pebble) -> None:
    """When pebble exits instead of serving, the error carries what it said."""
    config = json.loads(always_valid.config_path.read_text())
    config["pebble"]["certificate"] = str(tmp_path / "missing.pem")
    port = free_port()
    config["pebble"]["listenAddress"] = f"127.0.0.1:{port}"
    config["pebble"]["managementListenAddress"] = f"127.0.0.1:{free_port()}"
    config_path = tmp_path / "broken.json"
    config_path.write_text(json.dumps(config))
    argv = [
        config_path.as_posix() if arg == str(always_valid.config_path) else arg
        for arg in always_valid.argv
    ]
    server = Pebble(
        directory_url=f"https://127.0.0.1:{port}/dir",
        management_url=always_valid.management_url,
        server_ca=always_valid.server_ca,
        dns_port=always_valid.dns_port,
        dns_management_url=always_valid.dns_management_url,
        http_port=always_valid.http_port,
        tls_port=always_valid.tls_port,
        config_path=config_path,
        argv=argv,
        env=always_valid.env,
    )
    try:
        with pytest.raises(AssertionError, match=r"(?s)pebble exited .*missing\.pem"):
            server.start()
    finally:
        server.close()
