"""Rotation under load: the internal service certificates, the downstream (server)
certificate and the assertion's signing key are replaced while requests keep coming,
and not one request fails, nor one assertion fails a real verifier."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509

from shared.verify import Verifier
from tests.support.certs import signing_key_pem
from tests.support.net import free_port
from tests.support.procs import vallum_once
from tests.support.stack import Upstream, Vallum, all_in_one, route_host, upstream

pytestmark = pytest.mark.integration

CLIENTS = 4
# Every this many requests a client opens a new connection: new TLS handshakes must
# meet the new server certificate, and new upstream checks the new keys.
REQUESTS_PER_CONNECTION = 20


@dataclass
class Load:
    """Clients that run until stopped, each response checked twice over: a 200 from
    the app, and an assertion a real verifier (fetching the JWKS from Vallum) accepts."""

    v: Vallum
    verifier: Verifier
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    kids: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(CLIENTS):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _client(self) -> None:
        context = ssl.create_default_context(cafile=str(self.v.ca))
        while not self._stop.is_set():
            with httpx.Client(verify=context, timeout=10) as client:
                for _ in range(REQUESTS_PER_CONNECTION):
                    if self._stop.is_set():
                        return
                    self._one(client)

    def _one(self, client: httpx.Client) -> None:
        try:
            response = client.get(
                f"https://127.0.0.1:{self.v.port}/echo",
                headers={"Host": f"app.localhost:{self.v.port}", "Accept": "application/json"},
                extensions={"sni_hostname": "app.localhost"},
            )
            if response.status_code != 200:
                raise AssertionError(f"status {response.status_code}: {response.text[:200]}")
            headers = dict(response.json()["headers"])
            token = headers["x-pomerium-jwt-assertion"]
            self.verifier.verify(token)
            kid = _kid(token)
        except Exception as e:  # every kind of failure counts, and is kept to show
            with self._lock:
                self.failures.append(f"{type(e).__name__}: {e}")
            return
        with self._lock:
            self.ok += 1
            self.kids.add(kid)

    def wait_for_more(self, count: int = 100, timeout: float = 30.0) -> None:
        """Let at least `count` more requests finish (the load reaches the new state)."""
        target = self.ok + count
        deadline = time.monotonic() + timeout
        while self.ok < target:
            assert time.monotonic() < deadline, f"the load stalled at {self.ok} requests"
            assert not self.failures, self.failures[:5]
            time.sleep(0.05)


def _kid(token: str) -> str:
    import base64
    import json

    header = token.split(".")[0]
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    return str(decoded["kid"])


@pytest.fixture
def app() -> Iterator[Upstream]:
    with upstream() as up:
        yield up


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    first, second = signing_key_pem(), signing_key_pem()
    path = tmp_path / "signing.pem"
    path.write_bytes(first)
    return path, first, second


@pytest.fixture
def stack(tmp_path: Path, app: Upstream, keys: tuple[Path, bytes, bytes]) -> Iterator[Vallum]:
    port = free_port()
    routes: list[dict[str, Any]] = [
        {
            "from": route_host("app", port),
            "to": app.url,
            "allow_public_unauthenticated_access": True,
            "pass_identity_headers": True,
        }
    ]
    with all_in_one(tmp_path, routes, port, signing_key_file=str(keys[0])) as v:
        yield v


@pytest.fixture
def load(stack: Vallum) -> Iterator[Load]:
    verifier = Verifier(
        jwks_url=f"https://app.localhost:{stack.port}/.well-known/pomerium/jwks.json",
        ca_file=str(stack.ca),
        issuer="app.localhost",
        audience="app.localhost",
        resolve={"app.localhost": "127.0.0.1"},
        # A verifier refetches the JWKS for an unknown key at most this often; the
        # rotation waits longer than this between publishing a key and signing with it.
        min_refetch_interval=2.0,
    )
    running = Load(stack, verifier)
    running.start()
    running.wait_for_more()
    yield running
    running.stop()
    verifier.close()


def served_serial(port: int, ca: Path, name: str, client: Path | None = None) -> int:
    """The serial number of the server certificate a new connection to `port` gets;
    with `client` (a service's certificate stem), as that service (internal mTLS)."""
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(f"{client}.pem", f"{client}-key.pem")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def eventually_new(serial: Callable[[], int], old: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while serial() == old:
        assert time.monotonic() < deadline, "the new certificate was not served"
        time.sleep(0.2)


def issue(v: Vallum, *args: str) -> None:
    pki = v.data / "pki"
    result = vallum_once("ca", "issue", "--dir", str(pki), "--out", str(pki), "--force", *args)
    assert result.returncode == 0, result.stderr


def test_internal_and_server_certificates_rotate_under_load(stack: Vallum, load: Load) -> None:
    v = stack
    pki = v.data / "pki"
    assert v.config_path is not None
    config = yaml.safe_load(v.config_path.read_text())
    grpc_port = int(config["authorize_service_url"].rsplit(":", 1)[1])

    def internal() -> int:
        return served_serial(grpc_port, pki / "ca.pem", "localhost", client=pki / "proxy")

    def server() -> int:
        return served_serial(v.port, v.ca, "app.localhost")

    internal_before, server_before = internal(), server()
    for service in ("authenticate", "authorize", "proxy"):
        issue(v, "--service", service)
    eventually_new(internal, internal_before)  # authorize's gRPC server: the new pair
    load.wait_for_more(300)
    mark = len(v.proc.lines)
    hosts = ("app.localhost", "authenticate.localhost", "localhost", "127.0.0.1")
    issue(v, "--server", *hosts, "--name", "proxy-server")
    v.proc.child_line("proxy", "server certificates reloaded", start=mark)
    eventually_new(server, server_before)
    load.wait_for_more(300)
    load.stop()
    assert load.failures == []
    assert load.ok > 600


def test_the_signing_key_rotates_under_load(
    stack: Vallum, load: Load, keys: tuple[Path, bytes, bytes]
) -> None:
    v = stack
    path, first, second = keys
    (old_kid,) = load.kids

    def step(pem: bytes) -> None:
        mark = len(v.proc.lines)
        path.write_bytes(pem)
        for service in ("authorize", "proxy"):
            v.proc.child_line(service, "configuration reloaded (signing_key)", start=mark)
        # Longer than the verifier's refetch interval, so a verifier can learn a key
        # published in this step before the next step signs with it.
        time.sleep(2.5)
        load.wait_for_more(200)

    step(first + second)  # 1. publish the new key; the old one still signs
    assert load.kids == {old_kid}
    step(second + first)  # 2. sign with the new key; the old one still verifies
    new_kids = load.kids - {old_kid}
    assert len(new_kids) == 1
    step(second)  # 3. retire the old key
    jwks = v.request("GET", "app.localhost", "/.well-known/pomerium/jwks.json").json()
    assert [key["kid"] for key in jwks["keys"]] == list(new_kids)
    load.stop()
    assert load.failures == []
    assert load.verifier.fetches >= 2  # it learned the new key from Vallum itself
