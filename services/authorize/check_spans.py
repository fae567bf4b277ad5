"""authorize's span per check (only while tracing is on: callers check `tracing.tracer`).

The parent is the proxy's check span, named by the CheckRequest's traceparent (the
check channel carries no headers); the proxy sends one only for sampled requests,
so a check without it is not traced here either. A session fetch the check waits
for is a child of this span.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared import tracing
from shared.pb import authorize_pb2

if TYPE_CHECKING:
    from opentelemetry.trace import Span

CHECK_SPAN = "vallum.authorize.v1.Authorizer/Check"
# The attribute's value per outcome, made once rather than looked up per check.
_DECISIONS = {
    value: authorize_pb2.Outcome.Name(value).lower() for value in authorize_pb2.Outcome.values()
}


def start(request: authorize_pb2.CheckRequest) -> Span:
    assert tracing.tracer is not None
    return tracing.tracer.start_span(
        CHECK_SPAN,
        context=tracing.parent_from(request.traceparent),
        kind=tracing.SERVER,
        attributes={
            "vallum.request_id": request.request_id,
            "http.request.method": request.method,
            "server.address": request.host,
            "url.path": request.path,
        },
    )


def end(span: Span, response: authorize_pb2.CheckResponse) -> None:
    if span.is_recording():
        attributes: dict[str, str | int | list[str]] = {
            "vallum.decision": _DECISIONS.get(response.outcome, "unknown"),
            "vallum.reasons": response.reasons[:],
        }
        if response.outcome != authorize_pb2.ROUTE_NOT_FOUND:
            attributes["vallum.route_index"] = response.route_index
        span.set_attributes(attributes)
        if response.outcome == authorize_pb2.UNAVAILABLE:
            span.set_status(tracing.ERROR, response.explanation)
    span.end()
