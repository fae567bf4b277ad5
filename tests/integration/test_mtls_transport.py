"""The pyOpenSSL transport of client-certificate hosts carries real traffic as the event
loop's TLS does: large bodies both ways with back-pressure, keep-alive, websockets.

One all-in-one: host `m.localhost` has its own client CA (made with the project's CA
module), `plain.localhost` none. Clients present a certificate from that CA.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.pki import init_ca, issue_client, write_issued
from tests.support.net import free_port
from tests.support.stack import Upstream, Vallum, all_in_one, route_host, upstream

pytestmark = pytest.mark.integration

BIG = 24 * 1024 * 1024
PUBLIC = {"allow_public_unauthenticated_access": True}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vallum, Upstream, Path]]:
    tmp = tmp_path_factory.mktemp("mtls-transport")
    ca = init_ca(tmp / "client-ca")
    user = write_issued(issue_client(ca, "ada@example.com"), tmp / "users", "ada")
    port = free_port()
    with upstream() as app:
        routes = [
            {
                "from": route_host("m", port),
                "to": app.url,
                **PUBLIC,
                "allow_websockets": True,
                "tls_downstream_client_ca_file": str(ca.cert_path),
            },
            {"from": route_host("plain", port), "to": app.url, **PUBLIC},
        ]
        with all_in_one(tmp, routes, port) as v:
            yield v, app, user.cert.parent


def client_context(v: Vallum, users: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(v.ca))
    ctx.load_cert_chain(users / "ada.pem", users / "ada-key.pem")
    return ctx


def client(v: Vallum, users: Path) -> httpx.Client:
    return httpx.Client(verify=client_context(v, users), timeout=60)


def get(c: httpx.Client, v: Vallum, host: str, path: str, **kw: object) -> httpx.Response:
    return c.get(
        f"https://127.0.0.1:{v.port}{path}",
        headers={"Host": f"{host}:{v.port}", "Accept": "application/json"},
        extensions={"sni_hostname": host},
        **kw,  # type: ignore[arg-type]
    )


def test_a_large_download_to_a_slow_reader(stack: tuple[Vallum, Upstream, Path]) -> None:
    v, _, users = stack
    with client(v, users) as c:
        with c.stream(
            "GET",
            f"https://127.0.0.1:{v.port}/bytes?size={BIG}",
            headers={"Host": f"m.localhost:{v.port}"},
            extensions={"sni_hostname": "m.localhost"},
        ) as r:
            assert r.status_code == 200
            got = 0
            for i, chunk in enumerate(r.iter_raw(65536)):
                got += len(chunk)
                if i % 64 == 0:
                    time.sleep(0.02)  # the proxy must pause the upstream, not buffer it all
        assert got == BIG


def test_a_large_upload(stack: tuple[Vallum, Upstream, Path]) -> None:
    v, _, users = stack
    payload = os.urandom(BIG)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 256 * 1024):
            yield payload[i : i + 256 * 1024]

    with client(v, users) as c:
        r = c.post(
            f"https://127.0.0.1:{v.port}/upload",
            content=chunks(),
            headers={"Host": f"m.localhost:{v.port}", "Accept": "application/json"},
            extensions={"sni_hostname": "m.localhost"},
        )
    assert r.status_code == 200
    assert r.json() == {"size": BIG, "sha256": hashlib.sha256(payload).hexdigest()}


def test_keep_alive_on_one_connection(stack: tuple[Vallum, Upstream, Path]) -> None:
    v, _, users = stack
    peers = set()
    with client(v, users) as c:
        for i in range(50):
            r = get(c, v, "m.localhost", f"/n/{i}")
            assert r.status_code == 200, r.text
            assert r.json()["path"] == f"/n/{i}"
            stream = r.extensions["network_stream"]
            peers.add(stream.get_extra_info("client_addr"))
    assert len(peers) == 1  # every request on the same TLS connection


def test_the_same_client_needs_no_certificate_on_the_plain_host(
    stack: tuple[Vallum, Upstream, Path],
) -> None:
    v, _, _ = stack
    assert v.request("GET", "plain.localhost").status_code == 200
    r = v.request("GET", "m.localhost")
    assert r.status_code == 495
    assert r.json()["reasons"][0]["name"] == "client-certificate-required"


async def test_websocket_over_a_client_certificate_host(
    stack: tuple[Vallum, Upstream, Path],
) -> None:
    from websockets.asyncio.client import connect

    v, _, users = stack
    async with connect(
        f"wss://m.localhost:{v.port}/ws",
        ssl=client_context(v, users),
        host="127.0.0.1",
        port=v.port,
        server_hostname="m.localhost",
    ) as ws:
        await ws.send("hello")
        assert await ws.recv() == "echo: hello"
        big = os.urandom(1_000_000)
        await ws.send(big)
        assert await ws.recv() == big
