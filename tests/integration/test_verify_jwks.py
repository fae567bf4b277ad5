"""shared.verify against real JWKS endpoints over HTTPS on 127.0.0.1.

First a real Vallum all-in-one: the assertion the upstream received verifies with
the route host's own JWKS (Vallum's CA, the host name checked by TLS; `resolve` sends
`*.localhost` to 127.0.0.1, which Python here cannot resolve). Then a small JWKS
server of the test's own, to count fetches and to rotate keys and go down at will.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from shared.jwt import AssertionSigner, SigningKey, SigningKeys, identity_claims
from shared.pki import init_ca, issue_server, write_issued
from shared.verify import VerificationError, Verifier
from tests.support.net import free_port
from tests.support.stack import Vallum, all_in_one, route_host, upstream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vallum]:
    tmp = tmp_path_factory.mktemp("verify")
    port = free_port()
    with upstream() as app:
        public = {"allow_public_unauthenticated_access": True, "pass_identity_headers": True}
        routes: list[dict[str, Any]] = [
            {"from": route_host("echo", port), "to": app.url, **public},
            {"from": route_host("uri", port), "to": app.url, "jwt_issuer_format": "uri", **public},
        ]
        with all_in_one(tmp, routes, port) as v:
            yield v


def assertion(v: Vallum, name: str) -> str:
    echoed = v.request("GET", f"{name}.localhost", "/echo").json()
    (token,) = [value for key, value in echoed["headers"] if key == "x-pomerium-jwt-assertion"]
    assert isinstance(token, str)
    return token


def jwks_url(v: Vallum, name: str) -> str:
    return f"https://{name}.localhost:{v.port}/.well-known/pomerium/jwks.json"


def test_vallums_assertion_verifies_against_the_route_hosts_jwks(stack: Vallum) -> None:
    offset = [0.0]
    verifier = Verifier(
        jwks_url=jwks_url(stack, "echo"),
        ca_file=str(stack.ca),
        issuer="echo.localhost",
        audience="echo.localhost",
        resolve={"echo.localhost": "127.0.0.1"},
        clock=lambda: time.time() + offset[0],
    )
    identity = verifier.verify(assertion(stack, "echo"))
    # A public route: Vallum vouches for the request, with empty user fields.
    assert (
        identity.user == "" and identity.groups == () and identity.audience == ("echo.localhost",)
    )
    assert verifier.fetches == 1
    # Vallum serves the JWKS with max-age=60: within it, no second fetch.
    verifier.verify(assertion(stack, "echo"))
    assert verifier.fetches == 1
    offset[0] = 61
    verifier.verify(assertion(stack, "echo"))
    assert verifier.fetches == 2
    # Another route's assertion is not for this app.
    with pytest.raises(VerificationError) as info:
        verifier.verify(assertion(stack, "uri"))
    assert info.value.code == "wrong-issuer"
    verifier.close()


async def test_averify_against_vallum(stack: Vallum) -> None:
    verifier = Verifier(
        jwks_url=jwks_url(stack, "echo"),
        ca_file=str(stack.ca),
        issuer="echo.localhost",
        audience="echo.localhost",
        resolve={"echo.localhost": "127.0.0.1"},
    )
    identity = await verifier.averify(assertion(stack, "echo"))
    assert identity.issuer == "echo.localhost"
    await verifier.aclose()


def test_trust_on_first_use_pins_the_issuers_jwks(stack: Vallum) -> None:
    issuer = f"https://uri.localhost:{stack.port}/"
    verifier = Verifier(
        trust_on_first_use=True,
        ca_file=str(stack.ca),
        issuer=issuer,
        audience="uri.localhost",
        resolve={"uri.localhost": "127.0.0.1"},
    )
    assert verifier.verify(assertion(stack, "uri")).issuer == issuer
    assert verifier.jwks_url == jwks_url(stack, "uri")
    verifier.close()


def test_a_jwks_server_the_ca_does_not_vouch_for(stack: Vallum, tmp_path: Path) -> None:
    other_ca = init_ca(tmp_path / "other")
    verifier = Verifier(
        jwks_url=jwks_url(stack, "echo"),
        ca_file=str(other_ca.cert_path),
        issuer="echo.localhost",
        audience="echo.localhost",
        resolve={"echo.localhost": "127.0.0.1"},
    )
    with pytest.raises(VerificationError) as info:
        verifier.verify(assertion(stack, "echo"))
    assert info.value.code == "jwks-unavailable"
    verifier.close()


# --- a JWKS server of our own ---


@dataclass
class JWKSServer:
    port: int
    ca: Path
    document: dict[str, Any]
    cache_control: str = "max-age=60"
    hits: int = 0
    server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/.well-known/pomerium/jwks.json"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def jwks_server(tmp_path: Path) -> Iterator[JWKSServer]:
    ca = init_ca(tmp_path / "pki")
    paths = write_issued(issue_server(ca, ["localhost"]), tmp_path, "jwks")
    state = JWKSServer(free_port(), ca.cert_path, {"keys": []})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            body = json.dumps(state.document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", state.cache_control)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(paths.cert, paths.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        state.stop()


@dataclass(frozen=True)
class Nobody:
    user_id: str = "u"
    email: str = "u@example.com"
    name: str = "U"
    groups: tuple[str, ...] = ()
    claims: dict[str, object] = field(default_factory=dict)


def new_key() -> SigningKeys:
    return SigningKeys((SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1())),))


def token(keys: SigningKeys, kid: str | None = None, now: float | None = None) -> str:
    signer = AssertionSigner(keys.signer)
    signed = signer.sign(
        signer.template(identity_claims(Nobody(), host="app")), now or time.time(), "j"
    )
    if kid is None:
        return signed
    header = base64.urlsafe_b64encode(json.dumps({"alg": "ES256", "kid": kid}).encode()).rstrip(
        b"="
    )
    return header.decode() + signed[signed.index(".") :]


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_cache_control_is_honoured(jwks_server: JWKSServer) -> None:
    keys = new_key()
    jwks_server.document = keys.jwks()
    jwks_server.cache_control = "public, max-age=120"
    clock = Clock()
    verifier = Verifier(
        jwks_url=jwks_server.url,
        ca_file=str(jwks_server.ca),
        issuer="app",
        audience="app",
        clock=clock,
    )
    for _ in range(5):
        verifier.verify(token(keys))
    assert jwks_server.hits == 1
    clock.offset = 100
    verifier.verify(token(keys))
    assert jwks_server.hits == 1
    clock.offset = 121
    verifier.verify(token(keys))
    assert jwks_server.hits == 2
    verifier.close()


def test_unknown_kid_refetches_once_per_interval(jwks_server: JWKSServer) -> None:
    old, new = new_key(), new_key()
    jwks_server.document = old.jwks()
    clock = Clock()
    verifier = Verifier(
        jwks_url=jwks_server.url,
        ca_file=str(jwks_server.ca),
        issuer="app",
        audience="app",
        clock=clock,
        min_refetch_interval=30,
    )
    verifier.verify(token(old))
    assert jwks_server.hits == 1
    # Vallum rotates a key in: published first, then used.
    jwks_server.document = {"keys": old.jwks()["keys"] + new.jwks()["keys"]}
    # A flood of made-up kids within the interval: no fetch at all.
    for n in range(20):
        with pytest.raises(VerificationError) as info:
            verifier.verify(token(old, kid=f"forged-{n}"))
        assert info.value.code == "unknown-key"
    assert jwks_server.hits == 1
    clock.offset = 31
    assert verifier.verify(token(new)).user == "u"  # unknown kid: one refetch finds it
    assert jwks_server.hits == 2
    for n in range(20):
        with pytest.raises(VerificationError):
            verifier.verify(token(old, kid=f"forged-again-{n}"))
    assert jwks_server.hits == 2
    verifier.close()


async def test_server_down_keeps_the_cached_keys(jwks_server: JWKSServer) -> None:
    keys = new_key()
    jwks_server.document = keys.jwks()
    clock = Clock()
    verifier = Verifier(
        jwks_url=jwks_server.url,
        ca_file=str(jwks_server.ca),
        issuer="app",
        audience="app",
        clock=clock,
        timeout=2,
    )
    await verifier.averify(token(keys))
    jwks_server.stop()
    clock.offset = 3600  # long stale: a refetch is due, and fails
    assert (await verifier.averify(token(keys, now=clock()))).email == "u@example.com"
    assert verifier.verify(token(keys, now=clock())).email == "u@example.com"
    assert verifier.fetches == 2  # the failed retry, once: rate limited after it
    await verifier.aclose()


def test_server_down_with_nothing_cached(jwks_server: JWKSServer) -> None:
    keys = new_key()
    jwks_server.stop()
    verifier = Verifier(
        jwks_url=jwks_server.url,
        ca_file=str(jwks_server.ca),
        issuer="app",
        audience="app",
        timeout=2,
    )
    for _ in range(3):
        with pytest.raises(VerificationError) as info:
            verifier.verify(token(keys))
        assert info.value.code == "jwks-unavailable"
    assert verifier.fetches == 1
    verifier.close()
