"""Upstream TLS against real peers: `openssl s_server -www` with certificates from
mkcert and from the project's own CA, reached with the route's context the way the
proxy reaches an app.

Locally a missing tool skips the test with its name; under CI=true it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.proxy.upstream_tls import UpstreamTLS
from shared import pki
from shared.config import Route, Source, WeightedURL
from tests.support.certs import Pair, raw_pair
from tests.support.net import free_port
from tests.support.procs import Proc
from tests.support.tools import require_tool as tool

pytestmark = pytest.mark.integration

NO_CLIENT_CERT = "no client certificate available"
APP_NAME = "app.internal.test"


@dataclass(frozen=True)
class Material:
    project_ca: Path
    project_server: Pair  # localhost, 127.0.0.1
    project_client: Pair  # Vallum's own client certificate (CN=proxy)
    expired: Pair
    mkcert_ca: Path
    mkcert_server: Pair  # localhost, 127.0.0.1
    mkcert_named: Pair  # APP_NAME only
    mkcert_client: Pair
    stranger_server: Pair  # from a CA nobody is told about


def _mkcert(caroot: Path, out: Path, name: str, *args: str) -> Pair:
    mkcert = tool("mkcert")
    pair = Pair(out / f"{name}.pem", out / f"{name}-key.pem")
    # CAROOT in a temporary directory, and never -install: the machine's trust store
    # stays untouched.
    subprocess.run(
        [mkcert, "-cert-file", str(pair.cert), "-key-file", str(pair.key), *args],
        env={**os.environ, "CAROOT": str(caroot)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return pair


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    base = tmp_path_factory.mktemp("upstream-tls")
    out = base / "out"
    out.mkdir()
    ca = pki.init_ca(base / "ca")
    server = pki.write_issued(pki.issue_server(ca, ["localhost", "127.0.0.1"]), out, "server")
    client = pki.write_issued(pki.issue_service(ca, "proxy", "vallum.test"), out, "proxy")
    now = dt.datetime.now(dt.UTC)
    expired = raw_pair(
        ca,
        out,
        "expired",
        uris=[],
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    caroot = base / "mkcert"
    return Material(
        project_ca=ca.cert_path,
        project_server=Pair(server.cert, server.key),
        project_client=Pair(client.cert, client.key),
        expired=expired,
        mkcert_ca=caroot / "rootCA.pem",
        mkcert_server=_mkcert(caroot, out, "mk-server", "localhost", "127.0.0.1"),
        mkcert_named=_mkcert(caroot, out, "mk-named", APP_NAME),
        mkcert_client=_mkcert(caroot, out, "mk-client", "-client", "proxy@vallum.test"),
        stranger_server=_mkcert(base / "stranger", out, "stranger", "127.0.0.1"),
    )


@contextlib.contextmanager
def s_server(pair: Pair, *extra: str) -> Iterator[int]:
    openssl = tool("openssl")
    port = free_port()
    argv = [openssl, "s_server", "-www", "-accept", f"127.0.0.1:{port}"]
    argv += ["-cert", str(pair.cert), "-key", str(pair.key), *extra]
    proc = Proc(argv)
    try:
        proc.wait_for("ACCEPT", timeout=15)
        yield port
    finally:
        proc.stop()


def route(**kw: object) -> Route:
    return Route(
        from_url="https://app.localhost",
        to=(WeightedURL("https://127.0.0.1"),),
        **kw,  # type: ignore[arg-type]
    )


def src(path: Path) -> Source:
    return Source(str(path), None)


async def fetch(
    tls: UpstreamTLS, port: int, host: str = "127.0.0.1", *, settle: float = 0.0
) -> str:
    """GET / over a connection made exactly as the proxy makes one to an upstream."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=tls.context, server_hostname=tls.server_name(host)
        ),
        10,
    )
    try:
        if settle:
            # In TLS 1.3 the server judges the client certificate after the client's
            # handshake is done, then alerts and closes. A request written meanwhile
            # meets a closed socket, and the reset can overtake the alert; waiting for
            # the alert first keeps the test about its classification, not that race.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), settle)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):  # ssl.SSLError is an OSError
            await writer.wait_closed()
    text = data.decode("utf-8", "replace")
    # An upstream that cut the connection after the handshake sends nothing.
    assert text, "empty answer"
    return text


async def failure(tls: UpstreamTLS, port: int, host: str = "127.0.0.1") -> str:
    # Any failure at all: what is tested is how it is classified.
    with pytest.raises(Exception) as info:
        await fetch(tls, port, host, settle=0.5)
    code, words = tls.describe_failure(info.value)
    assert words and "127.0.0.1" not in words and str(port) not in words
    return code


# --- trust --------------------------------------------------------------------------


async def test_custom_ca_from_mkcert_reaches_the_page(material: Material) -> None:
    tls = UpstreamTLS(route(tls_custom_ca=src(material.mkcert_ca)))
    with s_server(material.mkcert_server) as port:
        page = await fetch(tls, port)
    assert "s_server" in page
    assert NO_CLIENT_CERT in page


async def test_custom_ca_from_project_ca_reaches_the_page(material: Material) -> None:
    tls = UpstreamTLS(route(tls_custom_ca=src(material.project_ca)))
    with s_server(material.project_server) as port:
        assert NO_CLIENT_CERT in await fetch(tls, port)
        assert NO_CLIENT_CERT in await fetch(tls, port, host="localhost")


async def test_wrong_ca_is_untrusted(material: Material) -> None:
    with s_server(material.mkcert_server) as port:
        # The route's CA replaces the system store; another CA's server is refused ...
        assert await failure(UpstreamTLS(route(tls_custom_ca=src(material.project_ca))), port) == (
            "upstream-tls-untrusted"
        )
        # ... and so is it by the system store, which has never heard of mkcert's root.
        assert await failure(UpstreamTLS(route()), port) == "upstream-tls-untrusted"


async def test_expired_certificate(material: Material) -> None:
    tls = UpstreamTLS(route(tls_custom_ca=src(material.project_ca)))
    with s_server(material.expired) as port:
        assert await failure(tls, port) == "upstream-tls-expired"


async def test_skip_verify_connects_to_an_untrusted_upstream(material: Material) -> None:
    with s_server(material.stranger_server) as port:
        assert await failure(UpstreamTLS(route()), port) == "upstream-tls-untrusted"
        tls = UpstreamTLS(route(tls_skip_verify=True))
        assert tls.warnings()
        assert NO_CLIENT_CERT in await fetch(tls, port)


# --- names --------------------------------------------------------------------------


async def test_name_mismatch_and_tls_server_name(material: Material) -> None:
    with s_server(material.mkcert_named) as port:
        ca = src(material.mkcert_ca)
        # The upstream URL says 127.0.0.1; the certificate names only APP_NAME.
        assert await failure(UpstreamTLS(route(tls_custom_ca=ca)), port) == (
            "upstream-tls-name-mismatch"
        )
        wrong = UpstreamTLS(route(tls_custom_ca=ca, tls_server_name="other.internal.test"))
        assert await failure(wrong, port) == "upstream-tls-name-mismatch"
        fixed = UpstreamTLS(route(tls_custom_ca=ca, tls_server_name=APP_NAME))
        assert NO_CLIENT_CERT in await fetch(fixed, port)
        upstream_wins = UpstreamTLS(
            route(
                tls_custom_ca=ca,
                tls_server_name="other.internal.test",
                tls_upstream_server_name=APP_NAME,
            )
        )
        assert NO_CLIENT_CERT in await fetch(upstream_wins, port)


# --- client certificates ------------------------------------------------------------


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
async def test_upstream_requires_a_client_certificate(material: Material, version: str) -> None:
    verify = ["-Verify", "1", "-verify_return_error", "-CAfile", str(material.project_ca)]
    with s_server(material.project_server, version, *verify) as port:
        bare = UpstreamTLS(route(tls_custom_ca=src(material.project_ca)))
        assert await failure(bare, port) == "upstream-client-certificate-required"

        stranger = UpstreamTLS(
            route(
                tls_custom_ca=src(material.project_ca),
                tls_client_cert=src(material.mkcert_client.cert),
                tls_client_key=src(material.mkcert_client.key),
            )
        )
        assert await failure(stranger, port) == "upstream-client-certificate-rejected"

        ours = UpstreamTLS(
            route(
                tls_custom_ca=src(material.project_ca),
                tls_client_cert=src(material.project_client.cert),
                tls_client_key=src(material.project_client.key),
            )
        )
        page = await fetch(ours, port)
    assert NO_CLIENT_CERT not in page
    assert "Client certificate" in page
    assert "Subject: CN=proxy" in page.replace("CN = ", "CN=")


async def test_inline_client_certificate(material: Material) -> None:
    verify = ["-Verify", "1", "-verify_return_error", "-CAfile", str(material.project_ca)]
    tls = UpstreamTLS(
        route(
            tls_custom_ca=Source(None, material.project_ca.read_bytes()),
            tls_client_cert=Source(None, material.project_client.cert.read_bytes()),
            tls_client_key=Source(None, material.project_client.key.read_bytes()),
        )
    )
    with s_server(material.project_server, *verify) as port:
        assert "Client certificate" in await fetch(tls, port)


# --- faults and reload --------------------------------------------------------------


async def test_connection_refused() -> None:
    tls = UpstreamTLS(route())
    assert await failure(tls, free_port()) == "upstream-connection-refused"


async def test_changed_ca_file_is_picked_up(material: Material, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(material.project_ca.read_bytes())
    now = [0.0]
    tls = UpstreamTLS(route(tls_custom_ca=src(ca_file)), clock=lambda: now[0])
    with s_server(material.mkcert_server) as port:
        assert await failure(tls, port) == "upstream-tls-untrusted"
        staged = tmp_path / "staged.pem"
        staged.write_bytes(material.mkcert_ca.read_bytes())
        os.replace(staged, ca_file)  # how certificate tools rotate files
        now[0] += 1.5
        assert NO_CLIENT_CERT in await fetch(tls, port)
