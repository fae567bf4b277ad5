"""The proxy's spans (only while tracing is on: callers check `tracing.tracer`).

A server span per request, a child of the client's `traceparent` when it sent a
valid one; a client span around the authorize check, whose context rides in the
CheckRequest; and the upstream is handed a `traceparent` naming the request span.
Attribute names follow OpenTelemetry's HTTP semantic conventions where they have one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared import tracing
from shared.pb import authorize_pb2

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from services.proxy.http import Request

CHECK_SPAN = "vallum.authorize.v1.Authorizer/Check"
_TRACE_HEADERS = (b"traceparent", b"tracestate")
# The attribute's value per outcome, made once rather than looked up per check.
_DECISIONS = {
    value: authorize_pb2.Outcome.Name(value).lower() for value in authorize_pb2.Outcome.values()
}


def start_request(request: Request, request_id: str) -> Span:
    assert tracing.tracer is not None
    # Attributes given at the start cost one validation pass, not one per attribute.
    return tracing.tracer.start_span(
        request.method,
        context=tracing.parent_from(request.header(b"traceparent"), request.header(b"tracestate")),
        kind=tracing.SERVER,
        attributes={"http.request.method": request.method, "vallum.request_id": request_id},
    )


def end_request(span: Span, request: Request) -> None:
    if span.is_recording():
        attributes: dict[str, str | int] = {"http.response.status_code": request.status}
        if request.route_label:
            span.update_name(f"{request.method} {request.route_label}")
            attributes["vallum.route"] = request.route_label
        if request.host:
            attributes["server.address"] = request.host
        if request.path:
            attributes["url.path"] = request.path
        if request.decision:
            attributes["vallum.decision"] = request.decision
        span.set_attributes(attributes)
        if request.status >= 500:
            span.set_status(tracing.ERROR)
    span.end()


def start_check(parent: Span, check: authorize_pb2.CheckRequest) -> Span:
    """The check's span; authorize's is its child when the trace is sampled (a trace
    sampled out here is sampled out in authorize too, so it is told nothing)."""
    if not parent.is_recording():
        return parent  # sampled out: nothing to record (ending it again does nothing)
    assert tracing.tracer is not None
    span = tracing.tracer.start_span(
        CHECK_SPAN, context=tracing.child_context(parent), kind=tracing.CLIENT
    )
    if span.is_recording():
        check.traceparent = tracing.traceparent_for(span)
    return span


def end_check(
    span: Span, decision: authorize_pb2.CheckResponse | None, error: str | None = None
) -> None:
    if span.is_recording():
        if decision is not None:
            span.set_attributes(
                {
                    "vallum.decision": _DECISIONS.get(decision.outcome, "unknown"),
                    "vallum.reasons": decision.reasons[:],
                }
            )
        else:
            span.set_status(tracing.ERROR, error)
    span.end()


def with_trace_headers(headers: list[tuple[bytes, bytes]], span: Span) -> list[tuple[bytes, bytes]]:
    """The upstream request's headers, with the client's trace context (if any)
    replaced by one whose parent is the proxy's span: same trace, one hop further."""
    out = [pair for pair in headers if pair[0].lower() not in _TRACE_HEADERS]
    for name, value in tracing.carrier_for(span).items():
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    return out
