"""Tracing across proxy → authorize → authenticate, exported to a real OTLP/HTTP receiver.

The receiver is a plain HTTP server in the test that decodes what the services POST
to /v1/traces with the OpenTelemetry protocol's own message classes.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.integration.test_proxy import echoed, put_session
from tests.support.net import free_port
from tests.support.stack import Vallum, all_in_one, route_host, upstream

pytestmark = pytest.mark.integration

CHECK = "vallum.authorize.v1.Authorizer/Check"
GET = "vallum.session.v1.SessionService/Get"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]


class Receiver:
    """An OTLP/HTTP trace receiver (POST /v1/traces, application/x-protobuf)."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.content_types: set[str] = set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.take(self.headers.get("content-type", ""), body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def take(self, content_type: str, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes: dict[str, Any] = {}
                    for a in span.attributes:
                        value = a.value
                        kind = value.WhichOneof("value")
                        if kind == "array_value":
                            attributes[a.key] = [v.string_value for v in value.array_value.values]
                        else:
                            attributes[a.key] = getattr(value, kind) if kind else None
                    found.append(
                        ReceivedSpan(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=attributes,
                        )
                    )
        with self._lock:
            self.content_types.add(content_type)
            self.spans.extend(found)

    def wait_for(
        self, trace_id: str, expected: set[tuple[str, str]], timeout: float = 15.0
    ) -> list[ReceivedSpan]:
        """The trace's spans once every (service, span name) expected has arrived (each
        process exports on its own schedule), or whatever came by the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = [s for s in self.spans if s.trace_id == trace_id]
            if expected <= {(s.service, s.name) for s in spans} or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def routes(port: int, upstream_url: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "private",
            "from": route_host("private", port),
            "to": upstream_url,
            "policy": {"allow": {"or": [{"email": {"is": "x@example.com"}}]}},
        },
        {
            "name": "public",
            "from": route_host("public", port),
            "to": upstream_url,
            "allow_public_unauthenticated_access": True,
        },
    ]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vallum, Receiver]]:
    tmp = tmp_path_factory.mktemp("tracing")
    port = free_port()
    with Receiver() as receiver, upstream() as app:
        config: dict[str, Any] = {
            "otel_traces_exporter": "otlp",
            "otel_exporter_otlp_endpoint": receiver.url,
            "otel_exporter_otlp_protocol": "http/protobuf",
            "otel_traces_sampler_arg": 1.0,
            "otel_bsp_schedule_delay": 100,
            "otel_resource_attributes": ["deployment.environment=test"],
        }
        with all_in_one(tmp, routes(port, app.url), port, **config) as v:
            yield v, receiver


def traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


async def test_one_trace_from_the_client_through_all_three_services(traced) -> None:  # type: ignore[no-untyped-def]
    v, receiver = traced
    # A session put just now: authorize has not cached it, so it asks authenticate.
    handle = await put_session(v, "x@example.com", ["eng"])
    header, trace_id, client_span = traceparent()
    response = v.request(
        "GET",
        "private.localhost",
        "/traced",
        headers={"Cookie": f"_pomerium={handle}", "traceparent": header},
    )
    data = echoed(response)
    request_id = response.headers["x-request-id"]

    spans = receiver.wait_for(
        trace_id,
        {
            ("vallum-proxy", "GET private"),
            ("vallum-proxy", CHECK),
            ("vallum-authorize", CHECK),
            ("vallum-authorize", GET),
            ("vallum-authenticate", GET),
        },
    )
    assert receiver.content_types == {"application/x-protobuf"}
    by_id = {s.span_id: s for s in spans}

    def one(service: str, name: str) -> ReceivedSpan:
        found = [s for s in spans if s.service == service and s.name == name]
        assert len(found) == 1, (service, name, spans)
        span: ReceivedSpan = found[0]
        return span

    server = one("vallum-proxy", "GET private")
    check = one("vallum-proxy", CHECK)
    decided = one("vallum-authorize", CHECK)
    fetch = one("vallum-authorize", GET)
    served = one("vallum-authenticate", GET)

    # The client's span is the root's parent; then each hop is the child of the last.
    assert server.parent_span_id == client_span
    assert check.parent_span_id == server.span_id
    assert decided.parent_span_id == check.span_id
    assert fetch.parent_span_id == decided.span_id
    assert served.parent_span_id == fetch.span_id
    assert all(s.parent_span_id in by_id for s in spans if s is not server)

    assert server.attributes["http.request.method"] == "GET"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["vallum.route"] == "private"
    assert server.attributes["vallum.request_id"] == request_id
    assert server.attributes["vallum.decision"] == "allow"
    assert decided.attributes["vallum.decision"] == "allow"
    assert decided.attributes["vallum.request_id"] == request_id
    assert served.attributes["vallum.session.found"] is True

    # The upstream is handed the trace, one hop on: the proxy's span is its parent.
    sent = data["h"]["traceparent"]
    assert sent == [f"00-{trace_id}-{server.span_id}-01"]


def test_a_request_without_traceparent_starts_a_trace(traced) -> None:  # type: ignore[no-untyped-def]
    v, receiver = traced
    response = v.request("GET", "public.localhost", "/fresh")
    data = echoed(response)
    (sent,) = data["h"]["traceparent"]
    version, trace_id, span_id, flags = sent.split("-")
    # Sampled (and, from a new SDK, the Trace Context level 2 "random" flag as well).
    assert version == "00" and int(flags, 16) & 1
    spans = receiver.wait_for(
        trace_id,
        {("vallum-proxy", "GET public"), ("vallum-proxy", CHECK), ("vallum-authorize", CHECK)},
    )
    server = next(s for s in spans if s.span_id == span_id)
    assert server.service == "vallum-proxy" and server.parent_span_id == ""
    assert server.name == "GET public"
    # A public route needs no session: authorize decides without asking authenticate.
    assert {s.service for s in spans} == {"vallum-proxy", "vallum-authorize"}


def test_without_tracing_the_client_traceparent_is_forwarded_as_is(tmp_path: Path) -> None:
    port = free_port()
    with upstream() as app, all_in_one(tmp_path, routes(port, app.url), port) as v:
        header, _, _ = traceparent()
        data = echoed(v.request("GET", "public.localhost", "/", headers={"traceparent": header}))
        assert data["h"]["traceparent"] == [header]
        # Nothing is added to a request that came without one.
        assert "traceparent" not in echoed(v.request("GET", "public.localhost", "/"))["h"]
