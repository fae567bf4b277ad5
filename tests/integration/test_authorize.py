"""Authorizer.Check against real services on 127.0.0.1: authenticate holds the
sessions, authorize decides, the proxy serves the JWKS that upstreams verify with."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt as pyjwt
import pytest
import yaml
from google.protobuf import struct_pb2, timestamp_pb2

from services.authenticate.service import start as start_authenticate
from services.authorize.service import start as start_authorize
from services.proxy.service import start as start_proxy
from shared.config import load_config
from shared.pb import authorize_pb2, authorize_pb2_grpc, session_pb2, session_pb2_grpc
from shared.pki import load_ca
from shared.rpc import ServiceChannel
from shared.sessions import HandleCodec
from tests.support.certs import TRUST_DOMAIN, make_ca, service_pair
from tests.support.net import free_port

pytestmark = pytest.mark.integration

SECRET = b"0123456789abcdef0123456789abcdef"
ROUTES: list[dict[str, Any]] = [
    {
        "from": "https://public.localhost",
        "to": "http://127.0.0.1:9",
        "allow_public_unauthenticated_access": True,
        "pass_identity_headers": True,
    },
    {
        "from": "https://app.localhost",
        "to": "http://127.0.0.1:9",
        "pass_identity_headers": True,
        "policy": [
            {
                "allow": {
                    "or": [{"email": {"is": "alice@example.com"}}, {"groups": {"has": "admins"}}]
                }
            },
            {"deny": {"or": [{"http_path": {"starts_with": "/admin"}}]}},
        ],
    },
    {
        "from": "https://*.wild.localhost",
        "to": "http://127.0.0.1:9",
        "allow_any_authenticated_user": True,
    },
]


@dataclass
class Stack:
    proxy: ServiceChannel  # a channel with the proxy's identity, to call Check
    owner: session_pb2_grpc.SessionServiceStub  # authenticate's identity, to Put/Delete
    handles: HandleCodec
    http_port: int
    authenticate: Any


async def check(
    stack: Stack, host: str, path: str = "/", handle: str = "", **kw: Any
) -> authorize_pb2.CheckResponse:
    request = authorize_pb2.CheckRequest(
        request_id="req-1",
        scheme="https",
        host=host,
        method=kw.get("method", "GET"),
        path=path,
        source_ip="127.0.0.1",
        session_handle=handle,
    )
    response: authorize_pb2.CheckResponse = await authorize_pb2_grpc.AuthorizerStub(
        stack.proxy.get()
    ).Check(request, timeout=5)
    return response


async def put_session(
    stack: Stack,
    sid: str,
    *,
    email: str,
    groups: list[str],
    ttl: int = 3600,
    claims: dict[str, Any] | None = None,
) -> str:
    struct = struct_pb2.Struct()
    struct.update(claims or {})
    now = int(time.time())
    session = session_pb2.Session(
        id=sid,
        user_id=f"user-{sid}",
        email=email,
        name="Alice Example",
        groups=groups,
        claims=struct,
        issued_at=timestamp_pb2.Timestamp(seconds=now),
        expires_at=timestamp_pb2.Timestamp(seconds=now + ttl),
    )
    await stack.owner.Put(session_pb2.PutRequest(session=session), timeout=5)
    return stack.handles.seal(sid, now + 3600)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    ca = make_ca(tmp_path / "ca")
    certs = {
        s: service_pair(ca, tmp_path / "certs", s) for s in ("authenticate", "authorize", "proxy")
    }
    ports = {"authorize": free_port(), "authenticate": free_port(), "http": free_port()}
    base: dict[str, Any] = {
        "shared_secret": base64.b64encode(SECRET).decode(),
        "cookie_secret": base64.b64encode(SECRET).decode(),
        "certificate_authority_file": str(tmp_path / "ca" / "ca.pem"),
        "trust_domain": TRUST_DOMAIN,
        "authorize_service_url": f"https://127.0.0.1:{ports['authorize']}",
        "databroker_service_url": f"https://127.0.0.1:{ports['authenticate']}",
        "authenticate_service_url": "https://authenticate.localhost",
        "address": f"127.0.0.1:{ports['http']}",
        "insecure_server": True,
        "jwt_claims_headers": ["email", "family_name"],
        "routes": ROUTES,
        "data_dir": str(tmp_path / "data"),
    }

    def config_for(service: str) -> Any:
        path = tmp_path / f"{service}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    **base,
                    "services": service,
                    "internal_certificate_file": str(certs[service].cert),
                    "internal_certificate_key_file": str(certs[service].key),
                }
            )
        )
        return load_config(str(path), {})

    authn = await start_authenticate(config_for("authenticate"))
    authz = await start_authorize(config_for("authorize"))
    proxy = await start_proxy(config_for("proxy"))
    ca_pem = tmp_path / "ca" / "ca.pem"
    owner_channel = ServiceChannel(
        base["databroker_service_url"], certs["authenticate"].tls(ca_pem)
    )
    stack = Stack(
        proxy=ServiceChannel(base["authorize_service_url"], certs["proxy"].tls(ca_pem)),
        owner=session_pb2_grpc.SessionServiceStub(owner_channel.get()),
        handles=HandleCodec(SECRET),
        http_port=ports["http"],
        authenticate=authn,
    )
    # Wait until authorize's Watch stream is live, so caching is on as in production.
    for _ in range(100):
        if authz.servicer_cache_live():
            break
        await asyncio.sleep(0.05)
    yield stack
    await proxy.stop(1)
    await authz.stop(1)
    await authn.stop(1)
    await stack.proxy.close()
    await owner_channel.close()


async def jwks(stack: Stack, host: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"http://127.0.0.1:{stack.http_port}/.well-known/pomerium/jwks.json",
            headers={"Host": host},
        )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "max-age=60"
    document: dict[str, Any] = response.json()
    return document


def verify(
    token: str, keys: dict[str, Any], audience: str, issuer: str | None = None
) -> dict[str, Any]:
    kid = pyjwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in keys["keys"] if k["kid"] == kid)
    key = pyjwt.PyJWK(jwk)
    claims: dict[str, Any] = pyjwt.decode(
        token, key=key.key, algorithms=["ES256"], audience=audience, issuer=issuer or audience
    )
    return claims


def header(response: authorize_pb2.CheckResponse, name: str) -> str:
    values = [h.value for h in response.set_headers if h.name.lower() == name.lower()]
    assert len(values) == 1, response
    return values[0]


async def test_public_route_allows_and_signs_an_anonymous_assertion(stack: Stack) -> None:
    response = await check(stack, "public.localhost")
    assert response.outcome == authorize_pb2.ALLOW
    claims = verify(
        header(response, "X-Pomerium-JWT-Assertion"),
        await jwks(stack, "public.localhost"),
        "public.localhost",
    )
    assert claims["sub"] == "" and claims["email"] == "" and claims["groups"] == []
    assert claims["exp"] - claims["iat"] == 300


async def test_signed_in_user_gets_a_verified_identity(stack: Stack) -> None:
    handle = await put_session(
        stack,
        "s-alice",
        email="alice@example.com",
        groups=["dev"],
        claims={"family_name": "Example"},
    )
    response = await check(stack, "app.localhost", "/docs", handle)
    assert response.outcome == authorize_pb2.ALLOW, response
    assert "email-ok" in response.reasons
    token = header(response, "X-Pomerium-JWT-Assertion")
    claims = verify(token, await jwks(stack, "app.localhost"), "app.localhost")
    assert claims["email"] == "alice@example.com"
    assert claims["sub"] == claims["user"] == "user-s-alice"
    assert claims["groups"] == ["dev"] and claims["sid"] == "s-alice"
    assert claims["name"] == "Alice Example" and claims["family_name"] == "Example"
    assert header(response, "X-Pomerium-Claim-Email") == "alice@example.com"
    assert header(response, "X-Pomerium-Claim-Family_name") == "Example"
    # jti is unique per request, even for the same session and route.
    again = await check(stack, "app.localhost", "/docs", handle)
    other = verify(
        header(again, "X-Pomerium-JWT-Assertion"),
        await jwks(stack, "app.localhost"),
        "app.localhost",
    )
    assert other["jti"] != claims["jti"]


async def test_tampered_assertion_or_wrong_audience_is_rejected_by_pyjwt(stack: Stack) -> None:
    handle = await put_session(stack, "s-t", email="alice@example.com", groups=[])
    token = header(await check(stack, "app.localhost", "/", handle), "X-Pomerium-JWT-Assertion")
    keys = await jwks(stack, "app.localhost")
    head, payload, signature = token.split(".")
    forged = (
        base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(payload + "==").replace(b"alice", b"mallo")
        )
        .rstrip(b"=")
        .decode()
    )
    with pytest.raises(pyjwt.InvalidSignatureError):
        verify(f"{head}.{forged}.{signature}", keys, "app.localhost")
    with pytest.raises(pyjwt.InvalidAudienceError):
        verify(token, keys, "public.localhost", issuer="app.localhost")


async def test_deny_wins_over_allow(stack: Stack) -> None:
    handle = await put_session(stack, "s-a2", email="alice@example.com", groups=[])
    response = await check(stack, "app.localhost", "/admin/users", handle)
    assert response.outcome == authorize_pb2.DENY
    assert "http-path-ok" in response.reasons
    assert not response.set_headers


async def test_wrong_user_is_denied_and_signed_out_must_sign_in(stack: Stack) -> None:
    handle = await put_session(stack, "s-bob", email="bob@example.com", groups=["dev"])
    denied = await check(stack, "app.localhost", "/", handle)
    assert denied.outcome == authorize_pb2.DENY
    assert {"email-unauthorized", "groups-unauthorized"} <= set(denied.reasons)
    assert (await check(stack, "app.localhost", "/")).outcome == authorize_pb2.SIGN_IN_REQUIRED


async def test_group_member_is_allowed(stack: Stack) -> None:
    handle = await put_session(stack, "s-carol", email="carol@example.com", groups=["admins"])
    response = await check(stack, "app.localhost", "/", handle)
    assert response.outcome == authorize_pb2.ALLOW and "groups-ok" in response.reasons


@pytest.mark.parametrize(
    "handle",
    [
        "v1.garbage",
        "not-a-handle",
        HandleCodec(b"another-secret-another-secret-xx").seal("s-x", 2**31),
    ],
)
async def test_forged_handles_are_treated_as_signed_out(stack: Stack, handle: str) -> None:
    await put_session(stack, "s-x", email="alice@example.com", groups=[])
    response = await check(stack, "app.localhost", "/", handle)
    assert response.outcome == authorize_pb2.SIGN_IN_REQUIRED


async def test_expired_session_is_never_accepted(stack: Stack) -> None:
    handle = await put_session(stack, "s-old", email="alice@example.com", groups=[], ttl=1)
    assert (await check(stack, "app.localhost", "/", handle)).outcome == authorize_pb2.ALLOW
    await asyncio.sleep(1.2)  # the cached copy expires; no event tells authorize
    assert (
        await check(stack, "app.localhost", "/", handle)
    ).outcome == authorize_pb2.SIGN_IN_REQUIRED


async def test_sign_out_takes_effect_on_the_next_request(stack: Stack) -> None:
    handle = await put_session(stack, "s-out", email="alice@example.com", groups=[])
    assert (await check(stack, "app.localhost", "/", handle)).outcome == authorize_pb2.ALLOW
    assert (
        await check(stack, "app.localhost", "/", handle)
    ).outcome == authorize_pb2.ALLOW  # cached
    await stack.owner.Delete(session_pb2.DeleteRequest(id="s-out"), timeout=5)
    for _ in range(50):  # the Watch event crosses a socket; allow it a moment
        if (await check(stack, "app.localhost", "/", handle)).outcome != authorize_pb2.ALLOW:
            break
        await asyncio.sleep(0.01)
    assert (
        await check(stack, "app.localhost", "/", handle)
    ).outcome == authorize_pb2.SIGN_IN_REQUIRED


async def test_changed_session_is_seen_at_once(stack: Stack) -> None:
    handle = await put_session(stack, "s-chg", email="dave@example.com", groups=[])
    assert (await check(stack, "app.localhost", "/", handle)).outcome == authorize_pb2.DENY
    await put_session(stack, "s-chg", email="dave@example.com", groups=["admins"])
    for _ in range(50):
        if (await check(stack, "app.localhost", "/", handle)).outcome == authorize_pb2.ALLOW:
            break
        await asyncio.sleep(0.01)
    assert (await check(stack, "app.localhost", "/", handle)).outcome == authorize_pb2.ALLOW


async def test_unknown_host_is_route_not_found_and_wildcards_match(stack: Stack) -> None:
    missing = await check(stack, "nowhere.localhost")
    assert missing.outcome == authorize_pb2.ROUTE_NOT_FOUND and missing.route_index == -1
    handle = await put_session(stack, "s-w", email="erin@example.com", groups=[])
    response = await check(stack, "a.b.wild.localhost", "/", handle)
    assert response.outcome == authorize_pb2.ALLOW and response.route_index == 2


async def test_batched_stream_matches_ids(stack: Stack) -> None:
    handle = await put_session(stack, "s-batch", email="alice@example.com", groups=[])
    call = authorize_pb2_grpc.AuthorizerStub(stack.proxy.get()).CheckStream()
    batch = authorize_pb2.CheckBatch()
    for i, (host, path, h) in enumerate(
        [
            ("app.localhost", "/", handle),
            ("app.localhost", "/admin", handle),
            ("nowhere.localhost", "/", ""),
            ("app.localhost", "/", ""),
        ]
    ):
        batch.checks.add(
            id=100 + i,
            request=authorize_pb2.CheckRequest(
                request_id=f"r{i}",
                scheme="https",
                host=host,
                method="GET",
                path=path,
                session_handle=h,
            ),
        )
    await call.write(batch)
    result = await asyncio.wait_for(call.read(), 5)
    await call.done_writing()
    outcomes = {r.id: (r.response.request_id, r.response.outcome) for r in result.results}
    assert outcomes == {
        100: ("r0", authorize_pb2.ALLOW),
        101: ("r1", authorize_pb2.DENY),
        102: ("r2", authorize_pb2.ROUTE_NOT_FOUND),
        103: ("r3", authorize_pb2.SIGN_IN_REQUIRED),
    }


async def test_sessions_unreachable_fails_closed(stack: Stack) -> None:
    handle = await put_session(stack, "s-down", email="alice@example.com", groups=[])
    await stack.authenticate.stop(0)
    response = await check(stack, "app.localhost", "/", handle)
    assert response.outcome == authorize_pb2.UNAVAILABLE
    assert "session-store-unavailable" in response.reasons
    # A public route needs no session and still decides.
    assert (await check(stack, "public.localhost")).outcome == authorize_pb2.ALLOW


async def test_refusals_are_logged_at_info_and_allows_at_debug(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vallum.authorize.decision")
    handle = await put_session(stack, "s-log", email="alice@example.com", groups=[])
    await check(stack, "app.localhost", "/x y", handle)
    await check(stack, "app.localhost", "/signed-out")
    lines = [r.getMessage() for r in caplog.records if r.name == "vallum.authorize.decision"]
    assert lines == [
        "decision=sign-in-required request_id=req-1 route=1 host=app.localhost method=GET "
        'path=/signed-out user="" reasons=user-unauthenticated'
    ]
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="vallum.authorize.decision")
    await check(stack, "app.localhost", "/x y", handle)
    lines = [r.getMessage() for r in caplog.records if r.name == "vallum.authorize.decision"]
    assert lines == [
        'decision=allow request_id=req-1 route=1 host=app.localhost method=GET path="/x y" '
        "user=alice@example.com reasons=email-ok"
    ]


async def test_only_the_proxy_may_check(stack: Stack, tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    pair = service_pair(load_ca(ca_dir), tmp_path / "x", "authenticate", name="impostor")
    channel = ServiceChannel(stack.proxy.url, pair.tls(ca_dir / "ca.pem"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await authorize_pb2_grpc.AuthorizerStub(channel.get()).Check(
            authorize_pb2.CheckRequest(), timeout=5
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await channel.close()


async def test_a_batch_waiting_for_its_session_does_not_hold_up_the_next(tmp_path: Path) -> None:
    # authorize's sessions come from an address that accepts connections and never
    # answers, so a session lookup hangs until its timeout. A batch that needs one must
    # not delay the batches behind it on the same stream; it fails closed in the end.
    ca = make_ca(tmp_path / "ca")
    certs = {s: service_pair(ca, tmp_path / "certs", s) for s in ("authorize", "proxy")}
    blackhole = socket.create_server(("127.0.0.1", 0))
    authorize_port = free_port()
    path = tmp_path / "authorize.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "services": "authorize",
                "shared_secret": base64.b64encode(SECRET).decode(),
                "cookie_secret": base64.b64encode(SECRET).decode(),
                "certificate_authority_file": str(tmp_path / "ca" / "ca.pem"),
                "trust_domain": TRUST_DOMAIN,
                "authorize_service_url": f"https://127.0.0.1:{authorize_port}",
                "databroker_service_url": f"https://127.0.0.1:{blackhole.getsockname()[1]}",
                "internal_certificate_file": str(certs["authorize"].cert),
                "internal_certificate_key_file": str(certs["authorize"].key),
                "routes": ROUTES,
            }
        )
    )
    authz = await start_authorize(load_config(str(path), {}))
    channel = ServiceChannel(
        f"https://127.0.0.1:{authorize_port}", certs["proxy"].tls(tmp_path / "ca" / "ca.pem")
    )
    try:
        call = authorize_pb2_grpc.AuthorizerStub(channel.get()).CheckStream()
        handle = HandleCodec(SECRET).seal("s-slow", int(time.time()) + 3600)
        waiting = authorize_pb2.CheckBatch()
        waiting.checks.add(id=1).request.CopyFrom(
            authorize_pb2.CheckRequest(
                scheme="https", host="app.localhost", path="/", session_handle=handle
            )
        )
        public = authorize_pb2.CheckBatch()
        public.checks.add(id=2).request.CopyFrom(
            authorize_pb2.CheckRequest(scheme="https", host="public.localhost", path="/")
        )
        await call.write(waiting)
        await call.write(public)
        first = await asyncio.wait_for(call.read(), timeout=10)
        assert [(r.id, r.response.outcome) for r in first.results] == [(2, authorize_pb2.ALLOW)]
        second = await asyncio.wait_for(call.read(), timeout=10)
        assert [(r.id, r.response.outcome) for r in second.results] == [
            (1, authorize_pb2.UNAVAILABLE)
        ]
        call.cancel()
    finally:
        await channel.close()
        await authz.stop(0)
        blackhole.close()
