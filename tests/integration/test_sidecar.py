"""The verifying sidecar as a real process between Vallum's proxy and an app, on 127.0.0.1.

One Vallum all-in-one serves a public route whose upstream is a sidecar (upstream mTLS
with a client certificate from the project's CA, pass_identity_headers) and publishes
the JWKS the sidecars fetch. Each test starts the sidecars it needs in front of the
echo app; tokens for direct requests are minted with Vallum's own signing key.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from shared.jwt.keys import SigningKey
from shared.pki import init_ca, issue_server, issue_service, private_key_pem, write_issued
from tests.support.net import free_port, wait_for_port
from tests.support.procs import Proc, vallum, vallum_once
from tests.support.stack import Upstream, Vallum, all_in_one, upstream

pytestmark = pytest.mark.integration

TRUST_DOMAIN = "vallum.internal"
PROXY_ID = f"spiffe://{TRUST_DOMAIN}/proxy"
IDENTITY = {"X-Remote-User": "email", "X-Remote-Groups": "groups", "X-Remote-Name": "name"}


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA of the sidecar's server certificate and of allowed clients
    server: tuple[Path, Path]  # the sidecar's (localhost, 127.0.0.1)
    proxy: tuple[Path, Path]  # spiffe://vallum.internal/proxy: what Vallum presents
    other_name: tuple[Path, Path]  # same CA, spiffe://vallum.internal/intruder
    other_ca: tuple[Path, Path]  # a "proxy" certificate from a CA nobody trusts


@dataclass
class Env:
    tmp: Path
    certs: Certs
    app: Upstream
    vallum: Vallum
    sidecar_port: int  # the route's upstream: the fixture's own sidecar listens here
    signing: SigningKey

    @property
    def host(self) -> str:
        return "localhost"

    @property
    def jwks_url(self) -> str:
        return f"https://localhost:{self.vallum.port}/.well-known/pomerium/jwks.json"


def _pair(paths: Any) -> tuple[Path, Path]:
    return (paths.cert, paths.key)


def make_certs(base: Path) -> Certs:
    ca = init_ca(base / "ca")
    other = init_ca(base / "other-ca")
    out = base / "issued"
    server = write_issued(issue_server(ca, ["localhost", "127.0.0.1"]), out, "sidecar")
    proxy = write_issued(issue_service(ca, "proxy", TRUST_DOMAIN), out, "proxy")
    intruder = write_issued(issue_service(ca, "intruder", TRUST_DOMAIN), out, "intruder")
    foreign = write_issued(issue_service(other, "proxy", TRUST_DOMAIN), out, "foreign")
    return Certs(
        base / "ca" / "ca.pem", _pair(server), _pair(proxy), _pair(intruder), _pair(foreign)
    )


def sidecar_config(env: Env, port: int, *, mtls: bool = True, jwt_mode: bool = True) -> Any:
    config: dict[str, Any] = {
        "services": "sidecar",
        "sidecar_address": f"127.0.0.1:{port}",
        "sidecar_upstream": env.app.url,
        "sidecar_certificate_file": str(env.certs.server[0]),
        "sidecar_certificate_key_file": str(env.certs.server[1]),
    }
    if mtls:
        config["sidecar_client_ca_file"] = str(env.certs.ca)
        config["sidecar_allowed_client_names"] = [PROXY_ID]
    if jwt_mode:
        config.update(
            sidecar_jwks_url=env.jwks_url,
            sidecar_jwks_ca_file=str(env.vallum.ca),
            sidecar_jwt_issuer=env.host,
            sidecar_jwt_audience=env.host,
            sidecar_identity_headers=IDENTITY,
        )
    return config


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("sidecar")
    certs = make_certs(tmp)
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "signing.pem").write_bytes(private_key_pem(key))
    signing = SigningKey.from_private_key(key)
    sidecar_port = free_port()
    port = free_port()
    route = {
        "from": f"https://localhost:{port}",
        "to": f"https://localhost:{sidecar_port}",
        "allow_public_unauthenticated_access": True,
        "pass_identity_headers": True,
        "tls_custom_ca_file": str(certs.ca),
        "tls_client_cert_file": str(certs.proxy[0]),
        "tls_client_key_file": str(certs.proxy[1]),
    }
    with (
        upstream() as app,
        all_in_one(tmp, [route], port, signing_key_file=str(tmp / "signing.pem")) as v,
    ):
        yield Env(tmp, certs, app, v, sidecar_port, signing)


def start_sidecar(env: Env, config: Any, port: int | None = None) -> tuple[Proc, int]:
    port = port or free_port()
    config = {**config, "sidecar_address": f"127.0.0.1:{port}"}
    path = env.tmp / f"sidecar-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = vallum("run", "--services", "sidecar", "--config", str(path))
    try:
        proc.wait_for("sidecar ready", timeout=20)
        wait_for_port(port)
    except BaseException:
        proc.stop()
        raise
    return proc, port


def client(env: Env, cert: tuple[Path, Path] | None) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(env.certs.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return httpx.Client(verify=ctx, timeout=10)


def token(env: Env, key: SigningKey | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": env.host,
        "aud": env.host,
        "sub": "u-1",
        "user": "u-1",
        "email": "ada@example.com",
        "groups": ["admins", "dev"],
        "name": "Ada",
        "sid": "s-1",
        "jti": f"j-{time.monotonic_ns()}",
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    signer = key or env.signing
    return jwt.encode(body, signer.private_key, algorithm="ES256", headers={"kid": env.signing.kid})


def refusal(response: httpx.Response) -> tuple[int, str]:
    """(status, first reason) of Vallum's JSON error page."""
    page = response.json()
    assert page["status"] == response.status_code and page["request_id"] is not None
    return response.status_code, page["reasons"][0]["name"]


def header_values(response: httpx.Response, name: str) -> list[str]:
    echoed: list[list[str]] = response.json()["headers"]
    return [value for key, value in echoed if key.lower() == name.lower()]


def test_end_to_end_through_vallum(env: Env) -> None:
    proc, _ = start_sidecar(env, sidecar_config(env, 0), env.sidecar_port)
    try:
        response = env.vallum.request(
            "POST",
            env.host,
            "/echo?x=1",
            content=b"hello",
            headers={"X-Remote-User": "mallory@example.com"},
        )
        assert response.status_code == 200, response.text
        data = response.json()
        assert (data["method"], data["path"], data["query"], data["body_size"]) == (
            "POST",
            "/echo",
            "x=1",
            5,
        )
        # Anonymous on a public route: the assertion verifies, but its user claims are
        # empty, so the sidecar sets no identity header; the forged one never arrives.
        assert header_values(response, "x-remote-user") == []
        assert header_values(response, "x-remote-groups") == []
        assert len(header_values(response, "x-pomerium-jwt-assertion")) == 1
        assert header_values(response, "x-forwarded-proto") == ["https"]
        assert header_values(response, "x-forwarded-for")[0].startswith("127.0.0.1")
        assert response.headers["x-upstream"] == "yes"
    finally:
        proc.stop()


def test_client_certificates(env: Env) -> None:
    proc, port = start_sidecar(env, sidecar_config(env, 0, jwt_mode=False))
    url = f"https://localhost:{port}/echo"
    try:
        for cert, reason in (
            (None, "no-client-certificate"),
            (env.certs.other_ca, "untrusted-client-certificate"),
        ):
            with client(env, cert) as c, pytest.raises(httpx.TransportError):
                c.get(url)
            proc.wait_for(f"refused handshake reason={reason}")
        with client(env, env.certs.other_name) as c:
            response = c.get(url)
        assert response.status_code == 403
        assert refusal(response) == (403, "client-name-not-allowed")
        proc.wait_for("reason=client-name-not-allowed")
        # mTLS only: the right certificate is enough; Vallum-looking headers are dropped.
        with client(env, env.certs.proxy) as c:
            response = c.get(url, headers={"X-Pomerium-Claim-Email": "forged@example.com"})
        assert response.status_code == 200
        assert header_values(response, "x-pomerium-claim-email") == []
    finally:
        proc.stop()


def test_jwt_required_with_mtls(env: Env) -> None:
    proc, port = start_sidecar(env, sidecar_config(env, 0))
    url = f"https://localhost:{port}/echo"
    other = SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    cases = [
        ({}, "missing"),
        ({"X-Pomerium-JWT-Assertion": token(env, key=other)}, "bad-signature"),
        ({"X-Pomerium-JWT-Assertion": token(env, exp=int(time.time()) - 3600)}, "expired"),
        ({"X-Pomerium-JWT-Assertion": token(env, aud="elsewhere")}, "wrong-audience"),
    ]
    try:
        with client(env, env.certs.proxy) as c:
            for headers, reason in cases:
                response = c.get(url, headers=headers)
                assert response.status_code == 401, (reason, response.text)
                assert refusal(response) == (401, reason)
                proc.wait_for(f"reason={reason}")
            response = c.get(
                url,
                headers={
                    "X-Pomerium-JWT-Assertion": token(env),
                    "x-remote-user": "mallory@example.com",
                    "X-Remote-Name": "forged",
                },
            )
        assert response.status_code == 200, response.text
        assert header_values(response, "x-remote-user") == ["ada@example.com"]
        assert header_values(response, "x-remote-groups") == ["admins,dev"]
        assert header_values(response, "x-remote-name") == ["Ada"]
        assert env.app.hits().get("/echo", 0) >= 1
    finally:
        proc.stop()


def test_jwt_only(env: Env) -> None:
    proc, port = start_sidecar(env, sidecar_config(env, 0, mtls=False))
    url = f"https://localhost:{port}/echo"
    try:
        with client(env, None) as c:
            assert refusal(c.get(url)) == (401, "missing")
            page = c.get(url, headers={"Accept": "text/html"})  # a browser gets the page
            assert page.status_code == 401
            assert page.headers["content-type"].startswith("text/html")
            assert "Not from Vallum" in page.text and "did not come through" in page.text
            response = c.get(url, headers={"X-Pomerium-JWT-Assertion": token(env, email="b@x")})
        assert response.status_code == 200, response.text
        assert header_values(response, "x-remote-user") == ["b@x"]
        # No trusted peer in front: forwarding headers are the sidecar's own.
        assert header_values(response, "x-forwarded-for") == ["127.0.0.1"]
    finally:
        proc.stop()


def test_app_unreachable_is_502(env: Env) -> None:
    config = {**sidecar_config(env, 0, jwt_mode=False), "sidecar_upstream": "http://127.0.0.1:1"}
    proc, port = start_sidecar(env, config)
    try:
        with client(env, env.certs.proxy) as c:
            response = c.get(f"https://localhost:{port}/echo")
        assert response.status_code == 502
        assert response.json()["status"] == 502
    finally:
        proc.stop()


def test_refuses_to_start_without_checks(env: Env) -> None:
    config = sidecar_config(env, free_port(), mtls=False, jwt_mode=False)
    path = env.tmp / "nothing.yaml"
    path.write_text(yaml.safe_dump(config))
    result = vallum_once("run", "--config", str(path))
    assert result.returncode == 78
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "sidecar_" in line]
    assert len(lines) == 1
    assert "sidecar_client_ca: the sidecar needs something to check" in lines[0]
    assert "Traceback" not in result.stderr


def test_bodies_stream_both_ways(env: Env) -> None:
    proc, port = start_sidecar(env, sidecar_config(env, 0, jwt_mode=False))
    size = 8 * 1024 * 1024 + 5
    blob = bytes(range(256)) * (size // 256) + b"x" * (size % 256)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(blob), 1 << 20):
            yield blob[start : start + (1 << 20)]

    try:
        with client(env, env.certs.proxy) as c:
            # A generator body goes out chunked; the sidecar re-chunks it to the app.
            up = c.post(f"https://localhost:{port}/upload", content=chunks())
            down = c.get(f"https://localhost:{port}/bytes", params={"size": str(size)})
        assert up.status_code == 200
        assert up.json() == {"size": size, "sha256": hashlib.sha256(blob).hexdigest()}
        assert down.status_code == 200 and len(down.content) == size
    finally:
        proc.stop()


def test_concurrent_keep_alive_requests(env: Env) -> None:
    proc, port = start_sidecar(env, sidecar_config(env, 0, mtls=False))
    url = f"https://localhost:{port}/echo"

    def run(worker: int) -> list[int]:
        statuses = []
        with client(env, None) as c:  # one connection, kept alive, per worker
            for _ in range(10):
                headers = {"X-Pomerium-JWT-Assertion": token(env, email=f"w{worker}@x")}
                response = c.get(url, headers=headers)
                assert header_values(response, "x-remote-user") == [f"w{worker}@x"]
                statuses.append(response.status_code)
        return statuses

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(run, range(8)))
        assert results == [[200] * 10] * 8
    finally:
        proc.stop()


def test_a_changed_client_ca_file_is_reloaded(env: Env) -> None:
    ca_file = env.tmp / "rotating-ca.pem"
    ca_file.write_bytes((env.tmp / "other-ca" / "ca.pem").read_bytes())
    config = {**sidecar_config(env, 0, jwt_mode=False), "sidecar_client_ca_file": str(ca_file)}
    proc, port = start_sidecar(env, config)
    url = f"https://localhost:{port}/echo"
    try:
        with client(env, env.certs.proxy) as c, pytest.raises(httpx.TransportError):
            c.get(url)
        staged = env.tmp / "rotating-ca.pem.new"
        staged.write_bytes(env.certs.ca.read_bytes())
        staged.replace(ca_file)  # an atomic rename, as certificate tools do
        proc.wait_for("sidecar TLS files reloaded", timeout=10)
        with client(env, env.certs.proxy) as c:
            assert c.get(url).status_code == 200
    finally:
        proc.stop()
