"""The proxy as users meet it: real Vallum (all-in-one, TLS), real upstreams."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
import yaml
from google.protobuf import struct_pb2, timestamp_pb2

from shared.config import Source
from shared.pb import session_pb2, session_pb2_grpc
from shared.rpc import InternalTLS, ServiceChannel
from shared.sessions import HandleCodec, new_session_id
from tests.support.net import free_port
from tests.support.procs import child_pid
from tests.support.stack import Upstream, Vallum, all_in_one, route_host, upstream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vallum, Upstream, Upstream]]:
    tmp = tmp_path_factory.mktemp("proxy")
    port = free_port()
    closed = free_port()  # nothing listens here
    with upstream() as a, upstream() as b:
        public = {"allow_public_unauthenticated_access": True}

        def h(name: str) -> str:
            return route_host(name, port)

        routes: list[dict[str, Any]] = [
            {
                "from": h("echo"),
                "to": a.url,
                **public,
                "pass_identity_headers": True,
                "set_request_headers": {"X-Static": "hello"},
                "remove_request_headers": ["X-Secret"],
                "set_response_headers": {"X-Frame-Options": "DENY"},
            },
            {
                "from": h("adm"),
                "to": a.url,
                **public,
                "policy": [{"deny": {"or": [{"http_path": {"starts_with": "/admin"}}]}}],
            },
            {"from": h("rw"), "to": a.url, **public, "prefix": "/api/", "prefix_rewrite": "/"},
            {
                "from": h("rx"),
                "to": a.url,
                **public,
                "regex_rewrite_pattern": "^/v1/(.*)$",
                "regex_rewrite_substitution": "/\\1",
            },
            {"from": h("hr"), "to": a.url, **public, "host_rewrite": "internal.example"},
            {"from": h("ph"), "to": a.url, **public, "preserve_host_header": True},
            {"from": h("hh"), "to": a.url, **public, "host_rewrite_header": "X-Target-Host"},
            {"from": h("lb"), "to": [a.url, b.url], **public},
            {"from": h("down"), "to": [a.url, f"http://127.0.0.1:{closed}"], **public},
            {"from": h("slow"), "to": a.url, **public, "timeout": "1s"},
            {"from": h("idle"), "to": a.url, **public, "idle_timeout": "1s"},
            {"from": h("ws"), "to": a.url, **public, "allow_websockets": True},
            {"from": h("nows"), "to": a.url, **public},
            {
                "from": h("redir"),
                "to": None,
                **public,
                "redirect": {"host_redirect": "echo.localhost", "response_code": 302},
            },
            {"from": h("resp"), **public, "response": {"status": 418, "body": "teapot"}},
            {"from": h("dead"), "to": f"http://127.0.0.1:{closed}", **public},
            {"from": h("exact"), "to": a.url, **public, "path": "/exact"},
            {
                "from": h("tpl"),
                "to": a.url,
                **public,
                "pass_identity_headers": False,
                "set_request_headers": {
                    "X-Jwt": "${pomerium.jwt}",
                    "X-Email": "${pomerium.email}",
                    "X-Price": "$$5",
                },
            },
            {
                "from": h("private"),
                "to": a.url,
                "policy": {"allow": {"or": [{"email": {"is": "x@example.com"}}]}},
            },
        ]
        for r in routes:
            if r.get("to") is None:
                r.pop("to", None)
        with all_in_one(tmp, routes, port) as v:
            yield v, a, b


@pytest.fixture
def client(stack: tuple[Vallum, Upstream, Upstream]) -> Iterator[httpx.Client]:
    with stack[0].client(timeout=30) as c:
        yield c


def get(
    stack: tuple[Vallum, Upstream, Upstream],
    client: httpx.Client,
    host: str,
    path: str = "/echo",
    **kw: Any,
) -> httpx.Response:
    return stack[0].request(kw.pop("method", "GET"), f"{host}.localhost", path, **kw)


def echoed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    data["h"] = {}
    for name, value in data["headers"]:
        data["h"].setdefault(name, []).append(value)
    return data


def test_forwarding_sets_and_strips_headers(stack, client) -> None:  # type: ignore[no-untyped-def]
    response = get(
        stack,
        client,
        "echo",
        "/echo?x=1&y=2",
        headers={
            "X-Pomerium-Jwt-Assertion": "forged",
            "x-pomerium-claim-email": "ceo@example.com",
            "X-Secret": "s3cret",
            "X-Forwarded-For": "6.6.6.6",
            "Cookie": "_pomerium=abc; theme=dark",
        },
    )
    data = echoed(response)
    h = data["h"]
    assert data["path"] == "/echo" and data["query"] == "x=1&y=2"
    assert "x-pomerium-claim-email" not in h and "x-secret" not in h
    assert h["x-static"] == ["hello"]
    assert h["x-forwarded-for"] == ["127.0.0.1"]  # the spoofed hop is not trusted
    assert h["x-forwarded-proto"] == ["https"]
    assert h["x-forwarded-host"] == [f"echo.localhost:{stack[0].port}"]
    assert h["cookie"] == ["theme=dark"]  # Vallum's session cookie stays with Vallum
    assert h["x-request-id"] == [response.headers["x-request-id"]]
    # The assertion is Vallum's, the only one, and verifies against the host's JWKS.
    (token,) = h["x-pomerium-jwt-assertion"]
    jwks = get(stack, client, "echo", "/.well-known/pomerium/jwks.json").json()
    key = next(k for k in jwks["keys"] if k["kid"] == pyjwt.get_unverified_header(token)["kid"])
    claims = pyjwt.decode(
        token,
        pyjwt.PyJWK(key).key,
        algorithms=["ES256"],
        audience="echo.localhost",
        issuer="echo.localhost",
    )
    assert claims["sub"] == ""
    # Response side: set_response_headers applied, repeated Set-Cookie kept apart.
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]


def test_set_request_headers_templates(stack, client) -> None:  # type: ignore[no-untyped-def]
    h = echoed(get(stack, client, "tpl"))["h"]
    # ${pomerium.jwt} is the signed assertion even when pass_identity_headers is off.
    (token,) = h["x-jwt"]
    assert pyjwt.get_unverified_header(token)["alg"] == "ES256"
    assert "x-pomerium-jwt-assertion" not in h
    assert h["x-email"] == [""]  # signed out: the variable is empty, the header still sent
    assert h["x-price"] == ["$5"]


def test_host_header_default_rewrite_preserve_and_from_header(stack, client) -> None:  # type: ignore[no-untyped-def]
    v, a, _ = stack
    assert echoed(get(stack, client, "echo"))["h"]["host"] == [f"127.0.0.1:{a.port}"]
    assert echoed(get(stack, client, "hr"))["h"]["host"] == ["internal.example"]
    assert echoed(get(stack, client, "ph"))["h"]["host"] == [f"ph.localhost:{v.port}"]
    data = echoed(get(stack, client, "hh", headers={"X-Target-Host": "app.internal"}))
    assert data["h"]["host"] == ["app.internal"]


def test_prefix_and_regex_rewrites(stack, client) -> None:  # type: ignore[no-untyped-def]
    assert echoed(get(stack, client, "rw", "/api/echo"))["path"] == "/echo"
    assert get(stack, client, "rw", "/other").status_code == 404  # outside the prefix
    assert echoed(get(stack, client, "rx", "/v1/echo"))["path"] == "/echo"
    assert echoed(get(stack, client, "exact", "/exact"))["path"] == "/exact"
    assert get(stack, client, "exact", "/exact/more").status_code == 404


@pytest.mark.parametrize(
    "path",
    ["/admin", "/%61dmin", "//admin", "/./admin", "/x/../admin", "/admin/", "/x/%2e%2e/admin"],
)
def test_path_tricks_cannot_reach_a_denied_path(stack, client, path) -> None:  # type: ignore[no-untyped-def]
    _, a, _ = stack
    before = a.hits().get("/admin", 0) + a.hits().get("/admin/", 0)
    response = get(stack, client, "adm", path)
    assert response.status_code == 403, (path, response.text)
    after = a.hits().get("/admin", 0) + a.hits().get("/admin/", 0)
    assert after == before


@pytest.mark.parametrize("path", ["/admin%2fx", "/admin%5Cx", "/a%00b"])
def test_ambiguous_paths_are_refused(stack, client, path) -> None:  # type: ignore[no-untyped-def]
    response = get(stack, client, "adm", path)
    assert response.status_code == 400
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_allowed_normalised_path_is_what_the_upstream_sees(stack, client) -> None:  # type: ignore[no-untyped-def]
    assert echoed(get(stack, client, "adm", "/x/../%65cho"))["raw_path"] == "/echo"


def test_load_balancing_uses_every_upstream(stack, client) -> None:  # type: ignore[no-untyped-def]
    _, a, b = stack
    before_a, before_b = a.hits().get("/lb", 0), b.hits().get("/lb", 0)
    for _ in range(40):
        assert get(stack, client, "lb", "/lb").status_code == 200
    assert a.hits().get("/lb", 0) > before_a and b.hits().get("/lb", 0) > before_b


def test_an_unreachable_upstream_is_skipped(stack, client) -> None:  # type: ignore[no-untyped-def]
    statuses = [get(stack, client, "down", "/down").status_code for _ in range(20)]
    assert statuses == [200] * 20


def test_dead_upstream_is_a_502_page_without_internal_addresses(stack, client) -> None:  # type: ignore[no-untyped-def]
    response = get(stack, client, "dead", "/", headers={"Accept": "text/html"})
    assert response.status_code == 502
    assert "text/html" in response.headers["content-type"]
    assert response.headers["x-request-id"] in response.text
    assert "127.0.0.1" not in response.text and "Traceback" not in response.text
    api = get(stack, client, "dead", "/")
    assert (
        api.status_code == 502 and api.json()["reasons"][0]["name"] == "upstream-connection-refused"
    )
    stack[0].proc.wait_for(
        f"request_id={api.headers['x-request-id']} upstream_failure=upstream-connection-refused"
    )


def test_timeouts_are_504(stack, client) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    response = get(stack, client, "slow", "/slow?delay=5")
    assert response.status_code == 504 and time.monotonic() - started < 4
    assert response.json()["reasons"][0]["name"] == "upstream-timeout"
    assert get(stack, client, "idle", "/slow?delay=5").status_code == 504
    assert get(stack, client, "slow", "/slow?delay=0.1").status_code == 200


def test_redirect_and_response_routes(stack, client) -> None:  # type: ignore[no-untyped-def]
    v = stack[0]
    response = get(stack, client, "redir", "/a/b?q=1")
    assert response.status_code == 302
    assert response.headers["location"] == f"https://echo.localhost:{v.port}/a/b?q=1"
    teapot = get(stack, client, "resp", "/")
    assert teapot.status_code == 418 and teapot.text == "teapot"


def test_no_route_is_404_html_or_json(stack, client) -> None:  # type: ignore[no-untyped-def]
    # authenticate.localhost is in the server certificate but has no route (yet).
    html = get(stack, client, "authenticate", "/", headers={"Accept": "text/html"})
    assert html.status_code == 404 and "<html" in html.text.lower()
    api = get(stack, client, "exact", "/not-exact")
    assert api.status_code == 404 and api.json()["status"] == 404


def test_host_must_match_the_tls_server_name(stack, client) -> None:  # type: ignore[no-untyped-def]
    response = get(stack, client, "echo", "/echo", sni="adm.localhost")
    assert response.status_code == 421
    assert response.json()["reasons"][0]["name"] == "misdirected-request"


def test_signed_out_api_client_gets_401(stack, client) -> None:  # type: ignore[no-untyped-def]
    _, a, _ = stack
    response = get(stack, client, "private", "/private-page")
    assert response.status_code == 401
    assert a.hits().get("/private-page", 0) == 0


def test_builtin_endpoints_on_every_host(stack, client) -> None:  # type: ignore[no-untyped-def]
    for host in ("echo", "adm", "authenticate"):
        assert get(stack, client, host, "/ping").text == "OK"
        assert get(stack, client, host, "/healthz").json()["status"] == "ok"
        meta = get(stack, client, host, "/.well-known/pomerium").json()
        assert meta["jwks_uri"].endswith("/.well-known/pomerium/jwks.json")


def test_keep_alive_and_pipelining(stack) -> None:  # type: ignore[no-untyped-def]
    v = stack[0]
    ctx = ssl.create_default_context(cafile=str(v.ca))

    with (
        socket.create_connection(("127.0.0.1", v.port)) as raw,
        ctx.wrap_socket(raw, server_hostname="echo.localhost") as tls,
    ):
        host = f"echo.localhost:{v.port}".encode()
        tls.sendall(
            b"GET /echo?n=1 HTTP/1.1\r\nHost: %s\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: %s\r\n\r\n"
            % (host, host)
        )
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b'"query": "n=') < 2 and time.monotonic() < deadline:
            data += tls.recv(65536)
    assert data.index(b'"query": "n=1"') < data.index(b'"query": "n=2"')
    assert data.count(b"HTTP/1.1 200 OK") == 2


def test_upstream_closing_after_a_response_leaves_the_client_connection_alone(stack) -> None:  # type: ignore[no-untyped-def]
    # The app closes its connection after every response (as nginx does after
    # keepalive_requests): that close is no concern of the client's keep-alive
    # connection, which must go on serving request after request.
    v = stack[0]
    ctx = ssl.create_default_context(cafile=str(v.ca))
    host = f"echo.localhost:{v.port}".encode()
    with (
        socket.create_connection(("127.0.0.1", v.port)) as raw,
        ctx.wrap_socket(raw, server_hostname="echo.localhost") as tls,
    ):
        tls.settimeout(10)
        for n in range(20):
            tls.sendall(b"GET /close?n=%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (n, host))
            data = b""
            while not data.endswith(b"bye\n"):
                chunk = tls.recv(65536)
                assert chunk, f"the proxy closed the client's connection after {n} requests"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 "), data[:200]
            assert b"connection: close" not in data.lower()
            # Give the app's close time to reach the proxy before the next request.
            time.sleep(0.02)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def proxy_pid(v: Vallum) -> int:
    return child_pid(v.proc, "proxy")


class PeakRSS:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_kib(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


GIB = 1024**3


def test_one_gib_download_streams_in_constant_memory(stack, client) -> None:  # type: ignore[no-untyped-def]
    v = stack[0]
    pid = proxy_pid(v)
    get(stack, client, "echo", "/bytes?size=1048576")  # warm up pools and caches
    baseline = rss_kib(pid)
    received = 0
    with (
        PeakRSS(pid) as peak,
        client.stream(
            "GET",
            f"https://127.0.0.1:{v.port}/bytes?size={GIB}",
            headers={"Host": f"echo.localhost:{v.port}"},
            extensions={"sni_hostname": "echo.localhost"},
        ) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += len(chunk)
    assert received == GIB
    assert peak.peak - baseline < 48 * 1024, (
        f"proxy RSS grew by {(peak.peak - baseline) // 1024} MiB"
    )


def test_one_gib_upload_streams_in_constant_memory(stack, client) -> None:  # type: ignore[no-untyped-def]
    v = stack[0]
    pid = proxy_pid(v)
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    for _ in range(1024):
        digest.update(block)

    def body() -> Iterator[bytes]:
        for _ in range(1024):
            yield block

    baseline = rss_kib(pid)
    with PeakRSS(pid) as peak:
        response = v.request(
            "POST",
            "echo.localhost",
            "/upload",
            content=body(),
            headers={"Content-Length": str(GIB)},
        )
    assert response.json() == {"size": GIB, "sha256": digest.hexdigest()}
    assert peak.peak - baseline < 48 * 1024, (
        f"proxy RSS grew by {(peak.peak - baseline) // 1024} MiB"
    )


def test_chunked_upload(stack, client) -> None:  # type: ignore[no-untyped-def]
    parts = [b"x" * 1000, b"y" * 70000, b"z"]
    response = stack[0].request("POST", "echo.localhost", "/upload", content=iter(parts))
    assert response.json() == {"size": 71001, "sha256": hashlib.sha256(b"".join(parts)).hexdigest()}


async def test_websocket_on_allowed_route_only(stack) -> None:  # type: ignore[no-untyped-def]
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    v = stack[0]
    ctx = ssl.create_default_context(cafile=str(v.ca))
    uri = f"wss://ws.localhost:{v.port}/ws"
    async with connect(
        uri, ssl=ctx, host="127.0.0.1", port=v.port, server_hostname="ws.localhost"
    ) as ws:
        await ws.send("hello")
        assert await ws.recv() == "echo: hello"
        big = os.urandom(300_000)
        await ws.send(big)
        assert await ws.recv() == big
    with pytest.raises(InvalidStatus):
        async with connect(
            f"wss://nows.localhost:{v.port}/ws",
            ssl=ctx,
            host="127.0.0.1",
            port=v.port,
            server_hostname="nows.localhost",
        ):
            pass


def test_access_log_has_one_line_per_request(stack, client) -> None:  # type: ignore[no-untyped-def]
    response = get(stack, client, "echo", "/echo?logged=1")
    rid = response.headers["x-request-id"]
    stack[0].proc.wait_for(
        f"request_id={rid} method=GET host=echo.localhost:{stack[0].port} path=/echo status=200"
    )


def test_authorize_down_is_503_and_nothing_is_forwarded(tmp_path: Path) -> None:
    port = free_port()
    with (
        upstream() as a,
        all_in_one(
            tmp_path,
            [
                {
                    "from": route_host("app", port),
                    "to": a.url,
                    "allow_public_unauthenticated_access": True,
                }
            ],
            port,
        ) as v,
    ):
        assert v.request("GET", "app.localhost", "/before").status_code == 200
        os.kill(child_pid(v.proc, "authorize"), signal.SIGSTOP)  # alive but silent
        try:
            response = v.request("GET", "app.localhost", "/while-down")
            assert response.status_code == 503
            assert response.json()["reasons"][0]["name"] == "authorize-unavailable"
            assert a.hits().get("/while-down", 0) == 0
        finally:
            os.kill(child_pid(v.proc, "authorize"), signal.SIGCONT)


async def put_session(v: Vallum, email: str, groups: list[str]) -> str:
    """Act as authenticate (with its certificate from data_dir): store a session and
    return the sealed handle a browser's cookie would carry."""
    pki = v.data / "pki"
    config = yaml.safe_load((v.data.parent / "config.yaml").read_text())
    tls = InternalTLS(
        Source(str(pki / "ca.pem"), None),
        Source(str(pki / "authenticate.pem"), None),
        Source(str(pki / "authenticate-key.pem"), None),
        "vallum.internal",
    )
    channel = ServiceChannel(config["databroker_service_url"], tls)
    now = int(time.time())
    sid = new_session_id()
    claims = struct_pb2.Struct()
    claims.update({"department": "eng"})
    await session_pb2_grpc.SessionServiceStub(channel.get()).Put(
        session_pb2.PutRequest(
            session=session_pb2.Session(
                id=sid,
                user_id="u-" + email,
                email=email,
                name="Test User",
                groups=groups,
                claims=claims,
                issued_at=timestamp_pb2.Timestamp(seconds=now),
                expires_at=timestamp_pb2.Timestamp(seconds=now + 3600),
            )
        ),
        timeout=5,
    )
    await channel.close()
    secret = base64.b64decode((v.data / "secrets" / "cookie_secret").read_text().strip())
    return HandleCodec(secret).seal(sid, now + 3600)


async def test_signed_in_user_reaches_a_private_route_and_sees_who_they_are(stack) -> None:  # type: ignore[no-untyped-def]
    v = stack[0]
    handle = await put_session(v, "x@example.com", ["eng"])
    cookie = {"Cookie": f"_pomerium={handle}"}
    data = echoed(v.request("GET", "private.localhost", "/private-ok", headers=cookie))
    assert "cookie" not in data["h"]  # the handle never reaches the app
    me = v.request("GET", "private.localhost", "/.pomerium/user", headers=cookie)
    assert me.status_code == 200
    body = me.json()
    assert body["signed_in"] and body["email"] == "x@example.com" and body["groups"] == ["eng"]
    assert body["claims"] == {"department": "eng"} and "id_token" not in body
    page = v.request(
        "GET", "echo.localhost", "/.pomerium/", headers={**cookie, "Accept": "text/html"}
    )
    assert page.status_code == 200 and "x@example.com" in page.text and "Sign out" in page.text
    # Another user's handle is denied by the route's policy; a forged one is signed out.
    other = await put_session(v, "y@example.com", [])
    assert (
        v.request(
            "GET", "private.localhost", "/", headers={"Cookie": f"_pomerium={other}"}
        ).status_code
        == 403
    )
    forged = handle[:-4] + ("AAAA" if not handle.endswith("AAAA") else "BBBB")
    assert (
        v.request(
            "GET", "private.localhost", "/", headers={"Cookie": f"_pomerium={forged}"}
        ).status_code
        == 401
    )
    assert (
        v.request(
            "GET", "echo.localhost", "/.pomerium/user", headers={"Cookie": f"_pomerium={forged}"}
        ).status_code
        == 401
    )


def raw_request(v: Vallum, sni: str, request: bytes) -> bytes:
    ctx = ssl.create_default_context(cafile=str(v.ca))
    with (
        socket.create_connection(("127.0.0.1", v.port)) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        tls.sendall(request)
        data = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            data += tls.recv(65536)
    return data


def test_absolute_form_target_must_agree_with_host(stack) -> None:  # type: ignore[no-untyped-def]
    v, a, _ = stack
    host = f"echo.localhost:{v.port}".encode()
    other = f"adm.localhost:{v.port}".encode()
    refused = raw_request(
        v,
        "echo.localhost",
        b"GET https://%s/abs-mismatch HTTP/1.1\r\nHost: %s\r\n"
        b"Connection: close\r\n\r\n" % (other, host),
    )
    assert refused.startswith(b"HTTP/1.1 400 "), refused[:200]
    assert a.hits().get("/abs-mismatch", 0) == 0
    ok = raw_request(
        v,
        "echo.localhost",
        b"GET https://%s/abs-ok HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (host, host),
    )
    assert ok.startswith(b"HTTP/1.1 200 "), ok[:200]
