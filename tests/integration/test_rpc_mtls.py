"""mTLS gRPC between services, against real servers on 127.0.0.1.

The right peer gets through; every other caller is refused, either in the TLS
handshake (no certificate, foreign CA, expired) or by the identity gate with
PERMISSION_DENIED naming the identity.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from services.authenticate.sessions_rpc import ACL as SESSION_ACL
from services.authenticate.sessions_rpc import SessionServicer
from services.authenticate.stores import MemoryStore
from services.authorize.authorizer import ACL as AUTHORIZE_ACL
from services.authorize.authorizer import AuthorizerServicer
from shared.config import Source
from shared.pb import authorize_pb2, authorize_pb2_grpc, session_pb2, session_pb2_grpc
from shared.rpc import (
    InternalTLS,
    RpcServer,
    ServiceChannel,
    call_once_each,
    check_health,
    start_server,
)
from tests.support.certs import TRUST_DOMAIN, Pair, make_ca, raw_pair, service_pair
from tests.support.net import free_port

pytestmark = pytest.mark.integration


class EchoAuthorizer(AuthorizerServicer):
    """The real servicer with a fixed decision: these tests are about who may ask."""

    def __init__(self) -> None:
        pass

    async def check(self, request: authorize_pb2.CheckRequest) -> authorize_pb2.CheckResponse:
        return authorize_pb2.CheckResponse(
            request_id=request.request_id, outcome=authorize_pb2.ALLOW
        )


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Pair | Path]:
    ca = make_ca(tmp_path / "ca")
    other = make_ca(tmp_path / "other-ca")
    now = dt.datetime.now(dt.UTC)
    out = tmp_path / "certs"
    return {
        "ca": tmp_path / "ca" / "ca.pem",
        "proxy": service_pair(ca, out, "proxy"),
        "authorize": service_pair(ca, out, "authorize"),
        "authenticate": service_pair(ca, out, "authenticate"),
        "foreign": service_pair(other, out, "proxy", name="foreign-proxy"),
        "other_domain": service_pair(ca, out, "proxy", "elsewhere.test", name="other-domain"),
        "expired": raw_pair(
            ca,
            out,
            "expired",
            uris=[f"spiffe://{TRUST_DOMAIN}/proxy"],
            not_before=now - dt.timedelta(days=2),
            not_after=now - dt.timedelta(days=1),
        ),
    }


@pytest.fixture
async def servers(pki: dict[str, Pair | Path]) -> AsyncIterator[dict[str, RpcServer]]:
    ca = pki["ca"]
    assert isinstance(ca, Path)
    authz = pki["authorize"]
    authn = pki["authenticate"]
    assert isinstance(authz, Pair) and isinstance(authn, Pair)
    store = MemoryStore()
    a = await start_server(
        "127.0.0.1:0",
        authz.tls(ca),
        AUTHORIZE_ACL,
        lambda s: authorize_pb2_grpc.add_AuthorizerServicer_to_server(EchoAuthorizer(), s),
    )
    b = await start_server(
        "127.0.0.1:0",
        authn.tls(ca),
        SESSION_ACL,
        lambda s: session_pb2_grpc.add_SessionServiceServicer_to_server(SessionServicer(store), s),
    )
    yield {"authorize": a, "authenticate": b}
    await a.stop(0)
    await b.stop(0)


def channel(pki: dict[str, Pair | Path], who: str, port: int) -> ServiceChannel:
    pair, ca = pki[who], pki["ca"]
    assert isinstance(pair, Pair) and isinstance(ca, Path)
    return ServiceChannel(f"https://127.0.0.1:{port}", pair.tls(ca))


async def check(ch: ServiceChannel) -> authorize_pb2.CheckResponse:
    stub = authorize_pb2_grpc.AuthorizerStub(ch.get())
    response: authorize_pb2.CheckResponse = await stub.Check(
        authorize_pb2.CheckRequest(request_id="r1"), timeout=5
    )
    return response


async def test_proxy_may_check(pki, servers) -> None:  # type: ignore[no-untyped-def]
    ch = channel(pki, "proxy", servers["authorize"].port)
    response = await check(ch)
    assert response.outcome == authorize_pb2.ALLOW and response.request_id == "r1"
    assert servers["authorize"].identity == "authorize"
    await ch.close()


@pytest.mark.parametrize("who", ["authorize", "authenticate"])
async def test_other_services_may_not_check(pki, servers, who) -> None:  # type: ignore[no-untyped-def]
    ch = channel(pki, who, servers["authorize"].port)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await check(ch)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"service identity '{who}' may not call /vallum.authorize.v1.Authorizer/Check" in (
        e.value.details() or ""
    )
    await ch.close()


async def test_identity_from_another_trust_domain_is_refused(pki, servers) -> None:  # type: ignore[no-untyped-def]
    ch = channel(pki, "other_domain", servers["authorize"].port)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await check(ch)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "spiffe://elsewhere.test/proxy" in (e.value.details() or "")
    await ch.close()


@pytest.mark.parametrize("who", ["foreign", "expired"])
async def test_untrusted_certificates_fail_the_handshake(pki, servers, who) -> None:  # type: ignore[no-untyped-def]
    pair, ca = pki[who], pki["ca"]
    assert isinstance(pair, Pair) and isinstance(ca, Path)
    # Build the channel by hand: the client-side checks in InternalTLS would refuse
    # these certificates before the server ever saw them.
    creds = grpc.ssl_channel_credentials(
        ca.read_bytes(), pair.key.read_bytes(), pair.cert.read_bytes()
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{servers['authorize'].port}", creds) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await authorize_pb2_grpc.AuthorizerStub(ch).Check(
                authorize_pb2.CheckRequest(), timeout=5
            )
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_no_client_certificate_fails_the_handshake(pki, servers) -> None:  # type: ignore[no-untyped-def]
    ca = pki["ca"]
    assert isinstance(ca, Path)
    creds = grpc.ssl_channel_credentials(ca.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{servers['authorize'].port}", creds) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await check_health(ch, timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_is_refused(servers) -> None:  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{servers['authorize'].port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await check_health(ch, timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_session_service_acl(pki, servers) -> None:  # type: ignore[no-untyped-def]
    port = servers["authenticate"].port
    owner = session_pb2_grpc.SessionServiceStub(channel(pki, "authenticate", port).get())
    reader = session_pb2_grpc.SessionServiceStub(channel(pki, "authorize", port).get())
    proxy = session_pb2_grpc.SessionServiceStub(channel(pki, "proxy", port).get())

    put = session_pb2.PutRequest(session=session_pb2.Session(id="s1", email="a@example.com"))
    assert (await owner.Put(put, timeout=5)).version == 1
    got = await reader.Get(session_pb2.GetRequest(id="s1"), timeout=5)
    assert got.found and got.session.email == "a@example.com"
    assert (await proxy.Get(session_pb2.GetRequest(id="s1"), timeout=5)).found
    for stub, who in ((reader, "authorize"), (proxy, "proxy")):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Put(put, timeout=5)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"'{who}'" in (e.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Delete(session_pb2.DeleteRequest(id="s1"), timeout=5)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await reader.Get(session_pb2.GetRequest(id="s1"), timeout=5)).found


async def test_watch_streams_changes_to_readers(pki, servers) -> None:  # type: ignore[no-untyped-def]
    port = servers["authenticate"].port
    owner = session_pb2_grpc.SessionServiceStub(channel(pki, "authenticate", port).get())
    reader = session_pb2_grpc.SessionServiceStub(channel(pki, "authorize", port).get())
    stream = reader.Watch(session_pb2.WatchRequest())
    first = await asyncio.wait_for(stream.read(), 5)
    assert first.kind == session_pb2.SessionEvent.RESET
    await owner.Put(session_pb2.PutRequest(session=session_pb2.Session(id="s2")), timeout=5)
    await owner.Delete(session_pb2.DeleteRequest(id="s2"), timeout=5)
    put = await asyncio.wait_for(stream.read(), 5)
    deleted = await asyncio.wait_for(stream.read(), 5)
    assert (put.kind, put.session_id, put.version) == (session_pb2.SessionEvent.PUT, "s2", 1)
    assert (deleted.kind, deleted.session_id) == (session_pb2.SessionEvent.DELETE, "s2")
    stream.cancel()

    outsider = channel(pki, "other_domain", port)
    denied = session_pb2_grpc.SessionServiceStub(outsider.get()).Watch(session_pb2.WatchRequest())
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await asyncio.wait_for(denied.read(), 5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def served_serial(port: int, pki: dict[str, Pair | Path]) -> int:
    pair, ca = pki["proxy"], pki["ca"]
    assert isinstance(pair, Pair) and isinstance(ca, Path)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(pair.cert, pair.key)
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_server_certificate_reloads_without_restart(pki, servers, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = servers["authorize"].port
    authz = pki["authorize"]
    assert isinstance(authz, Pair)
    before = await asyncio.to_thread(served_serial, port, pki)
    ch = channel(pki, "proxy", port)
    await check(ch)  # a connection opened before the rotation

    ca = make_ca_from(pki)
    fresh = service_pair(ca, tmp_path / "fresh", "authorize")
    shutil.copy(fresh.key, authz.key)
    shutil.copy(fresh.cert, authz.cert)

    after = await asyncio.to_thread(served_serial, port, pki)
    assert after != before
    assert after == x509.load_pem_x509_certificate(fresh.cert.read_bytes()).serial_number
    assert (await check(ch)).outcome == authorize_pb2.ALLOW  # the old connection still works
    await ch.close()


async def test_client_certificate_reloads_without_restart(pki, servers, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = servers["authorize"].port
    proxy = pki["proxy"]
    assert isinstance(proxy, Pair)
    ch = channel(pki, "proxy", port)
    assert (await check(ch)).outcome == authorize_pb2.ALLOW
    # Swap the proxy's files for an authorize identity: once the channel notices, the
    # server sees the new certificate, which proves the client presented it.
    ca = make_ca_from(pki)
    other = service_pair(ca, tmp_path / "swap", "authorize")
    shutil.copy(other.key, proxy.key)
    shutil.copy(other.cert, proxy.cert)
    await asyncio.sleep(1.1)  # the channel re-checks its files at most once a second
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await check(ch)
    assert "'authorize'" in (e.value.details() or "")
    await ch.close()


def make_ca_from(pki: dict[str, Pair | Path]):  # type: ignore[no-untyped-def]
    from shared.pki import load_ca

    ca = pki["ca"]
    assert isinstance(ca, Path)
    return load_ca(ca.parent)


def test_inline_material_is_accepted(pki) -> None:  # type: ignore[no-untyped-def]
    pair, ca = pki["proxy"], pki["ca"]
    assert isinstance(pair, Pair) and isinstance(ca, Path)
    tls = InternalTLS(
        Source(None, ca.read_bytes()),
        Source(None, pair.cert.read_bytes()),
        Source(None, pair.key.read_bytes()),
        TRUST_DOMAIN,
    )
    _, loaded = tls.load()
    assert tls.identity(loaded) == "proxy"


async def test_a_channel_to_replicas_fails_over_to_the_next_and_back(pki, servers) -> None:  # type: ignore[no-untyped-def]
    """databroker_service_url lists authenticate replicas: a dead one is passed over."""
    pair, ca = pki["authorize"], pki["ca"]
    assert isinstance(pair, Pair) and isinstance(ca, Path)
    live = f"https://127.0.0.1:{servers['authenticate'].port}"
    dead = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    ch = ServiceChannel([dead, live], pair.tls(ca))

    async def get(c: grpc.aio.Channel) -> session_pb2.GetResponse:
        stub = session_pb2_grpc.SessionServiceStub(c)
        response: session_pb2.GetResponse = await stub.Get(
            session_pb2.GetRequest(id="nobody"), timeout=5
        )
        return response

    assert ch.url == dead
    response = await call_once_each(ch, get)
    assert not response.found and ch.url == live
    # Failing calls on a channel no longer current do not move the index again.
    assert ch.failed(object()) is True and ch.url == live
    await ch.close()
    single = ServiceChannel(dead, pair.tls(ca))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call_once_each(single, get)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    await single.close()
