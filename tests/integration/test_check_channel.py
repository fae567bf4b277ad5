"""authorize's check channel against real peers on 127.0.0.1: the proxy's own client
uses it, and every other caller (another service, no certificate, a bad frame) is
turned away."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.authorize.service import start as start_authorize
from services.proxy.check_client import CheckClient
from shared.config import load_config
from shared.frames import FrameReader, frame
from shared.internal_ssl import client_context
from shared.pb import authorize_pb2, authorize_pb2_grpc
from shared.rpc import ServiceChannel
from tests.support.certs import TRUST_DOMAIN, Pair, make_ca, service_pair
from tests.support.net import free_port

pytestmark = pytest.mark.integration

SECRET = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@dataclass
class Authorize:
    ca_pem: Path
    certs: dict[str, Pair]
    url: str
    channel_port: int

    def client(self, who: str) -> ServiceChannel:
        return ServiceChannel(self.url, self.certs[who].tls(self.ca_pem))


@pytest.fixture
async def authorize(tmp_path: Path) -> AsyncIterator[Authorize]:
    ca = make_ca(tmp_path / "ca")
    ca_pem = tmp_path / "ca" / "ca.pem"
    certs = {
        s: service_pair(ca, tmp_path / "certs", s) for s in ("authorize", "proxy", "authenticate")
    }
    # Sessions are never needed: only a public route is checked.
    nobody = socket.create_server(("127.0.0.1", 0))
    url = f"https://127.0.0.1:{free_port()}"
    config: dict[str, Any] = {
        "services": "authorize",
        "shared_secret": SECRET,
        "cookie_secret": SECRET,
        "certificate_authority_file": str(ca_pem),
        "trust_domain": TRUST_DOMAIN,
        "authorize_service_url": url,
        "databroker_service_url": f"https://127.0.0.1:{nobody.getsockname()[1]}",
        "internal_certificate_file": str(certs["authorize"].cert),
        "internal_certificate_key_file": str(certs["authorize"].key),
        "routes": [
            {
                "from": "https://public.localhost",
                "to": "http://127.0.0.1:9",
                "allow_public_unauthenticated_access": True,
            }
        ],
    }
    path = tmp_path / "authorize.yaml"
    path.write_text(yaml.safe_dump(config))
    service = await start_authorize(load_config(str(path), {}))
    try:
        yield Authorize(ca_pem, certs, url, service.channel_port)
    finally:
        await service.stop(0)
        nobody.close()


def public_check(n: int) -> authorize_pb2.CheckRequest:
    return authorize_pb2.CheckRequest(
        request_id=f"r{n}", scheme="https", host="public.localhost", path="/", method="GET"
    )


async def test_the_proxy_checks_over_the_channel(authorize: Authorize) -> None:
    channel = authorize.client("proxy")
    client = CheckClient(channel)
    client.start()
    try:
        answers = await asyncio.gather(*(client.check(public_check(n)) for n in range(50)))
        assert {a.outcome for a in answers} == {authorize_pb2.ALLOW}
        assert client.transport == "check channel"
    finally:
        await client.close()
        await channel.close()


async def test_where_the_channel_is_is_told_only_to_the_proxy(authorize: Authorize) -> None:
    for who, allowed in (("proxy", True), ("authenticate", False)):
        channel = authorize.client(who)
        try:
            stub = authorize_pb2_grpc.AuthorizerStub(channel.get())
            call = stub.CheckChannel(authorize_pb2.CheckChannelRequest(), timeout=5)
            if allowed:
                assert (await call).port == authorize.channel_port
            else:
                with pytest.raises(Exception, match="may not call"):
                    await call
        finally:
            await channel.close()


async def exchange(authorize: Authorize, context: ssl.SSLContext, data: bytes) -> bytes:
    """Connect, send `data`, and read until the server closes (or 10 s pass)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", authorize.channel_port, ssl=context, server_hostname="127.0.0.1"
    )
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


def batch_frame() -> bytes:
    batch = authorize_pb2.CheckBatch()
    batch.checks.add(id=7).request.CopyFrom(public_check(7))
    return frame(batch.SerializeToString())


async def test_the_channel_answers_the_proxy_in_frames(authorize: Authorize) -> None:
    context = client_context(authorize.certs["proxy"].tls(authorize.ca_pem))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", authorize.channel_port, ssl=context, server_hostname="127.0.0.1"
    )
    try:
        writer.write(batch_frame())
        frames = FrameReader()
        messages: list[bytes] = []
        while not messages:
            messages = frames.feed(await asyncio.wait_for(reader.read(65536), timeout=10))
        result = authorize_pb2.CheckResultBatch.FromString(messages[0])
        assert [(r.id, r.response.outcome) for r in result.results] == [(7, authorize_pb2.ALLOW)]
    finally:
        writer.close()


async def test_another_service_is_closed_on_without_an_answer(authorize: Authorize) -> None:
    context = client_context(authorize.certs["authenticate"].tls(authorize.ca_pem))
    assert await exchange(authorize, context, batch_frame()) == b""


async def test_a_client_without_a_certificate_gets_no_answer(authorize: Authorize) -> None:
    context = ssl.create_default_context(cafile=str(authorize.ca_pem))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        answer = await exchange(authorize, context, batch_frame())
    except (ssl.SSLError, ConnectionError):
        return  # refused by an alert (with TLS 1.3 it arrives after the client's Finished)
    assert answer == b""


@pytest.mark.parametrize(
    "data",
    [
        (64 * 1024 * 1024).to_bytes(4, "big"),  # a frame longer than the limit
        frame(b"\xff\xff\xff\xff not a CheckBatch"),
    ],
    ids=["too-long", "not-protobuf"],
)
async def test_a_bad_frame_closes_the_connection(authorize: Authorize, data: bytes) -> None:
    context = client_context(authorize.certs["proxy"].tls(authorize.ca_pem))
    assert await exchange(authorize, context, data) == b""
