"""OpenTelemetry tracing for one process: set up at start, flushed at stop.

`tracer` stays None while tracing is off (otel_traces_exporter: none, the default):
the OpenTelemetry packages are then never imported, and each place that could trace
pays one `is None` check. With tracing on, every service process has its own tracer
provider (service.name vallum-<service>), a parent-based ratio sampler and a batch
processor that exports over OTLP/HTTP from its own thread.

Trace context crosses hops as a W3C `traceparent` (Trace Context, section 3.2), read
and written by the SDK's propagator: from the client to the proxy and from the proxy
to the upstream as HTTP headers, from the proxy to authorize inside the CheckRequest
(the check channel is not HTTP), and from authorize to authenticate as gRPC metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from shared.config import Config
from shared.config.tracing import tracing_settings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("vallum.tracing")

# The only state the hot path reads: None while tracing is off.
tracer: Tracer | None = None
_provider: TracerProvider | None = None
_propagator: Any = None
_set_span_in_context: Any = None
# opentelemetry.trace's SpanKind.SERVER, SpanKind.CLIENT and StatusCode.ERROR, once on.
SERVER: Any = None
CLIENT: Any = None
ERROR: Any = None

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
SERVICE_PREFIX = "vallum-"
# OpenTelemetry's RPC semantic conventions, for both ends of SessionService.Get.
SESSION_GET_ATTRIBUTES = {
    "rpc.system": "grpc",
    "rpc.service": "vallum.session.v1.SessionService",
    "rpc.method": "Get",
}
_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def start(config: Config, service: str) -> bool:
    """Set up this process's tracer for `service` if tracing is on; whether it is."""
    global tracer, _provider, _propagator, _set_span_in_context, SERVER, CLIENT, ERROR
    settings = tracing_settings(config)
    if settings is None:
        return False
    # Imported here, not at the top: a process with tracing off never loads them.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits
    from opentelemetry.sdk.trace import TracerProvider as Provider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import SpanKind, StatusCode, set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if settings.log_level is not None:
        logging.getLogger("opentelemetry").setLevel(_LOG_LEVELS[settings.log_level])
    attributes = {
        **settings.resource_attributes,
        # Each service is its own entry in a trace viewer; the namespace groups them.
        "service.name": SERVICE_PREFIX + service,
        "service.namespace": settings.resource_attributes.get("service.namespace", "vallum"),
    }
    exporter = OTLPSpanExporter(
        endpoint=settings.endpoint,
        headers=dict(settings.headers),
        timeout=settings.timeout,
    )
    delay = settings.schedule_delay
    processor = BatchSpanProcessor(
        exporter,
        schedule_delay_millis=None if delay is None else delay * 1000,
        max_export_batch_size=settings.max_export_batch_size,
    )
    limit = settings.attribute_value_length_limit
    _provider = Provider(
        # A sampled-out proxy request is sampled out in authorize and authenticate too.
        sampler=ParentBased(TraceIdRatioBased(settings.sampler_ratio)),
        resource=Resource.create(attributes),
        span_limits=SpanLimits(max_span_attribute_length=limit) if limit else None,
        shutdown_on_exit=False,
    )
    _provider.add_span_processor(processor)
    _propagator = TraceContextTextMapPropagator()
    _set_span_in_context = set_span_in_context
    SERVER, CLIENT, ERROR = SpanKind.SERVER, SpanKind.CLIENT, StatusCode.ERROR
    tracer = _provider.get_tracer("vallum")
    log.info(
        "tracing on: spans go to %s (OTLP/HTTP), sampled at %g",
        _without_userinfo(settings.endpoint),
        settings.sampler_ratio,
    )
    return True


def stop(timeout: float = 5.0) -> None:
    """Export what is queued (up to `timeout` seconds), then stop the exporter."""
    global tracer, _provider
    provider, _provider, tracer = _provider, None, None
    if provider is None:
        return
    try:
        provider.force_flush(int(timeout * 1000))
    finally:
        provider.shutdown()


def parent_from(traceparent: str | bytes | None, tracestate: str | bytes | None = None) -> Context:
    """The remote parent named by a W3C traceparent; an invalid or missing one gives
    an empty context (the span becomes a root, as the Trace Context spec says)."""
    carrier: dict[str, str] = {}
    if traceparent:
        carrier[TRACEPARENT] = _text(traceparent)
        if tracestate:
            carrier[TRACESTATE] = _text(tracestate)
    context: Context = _propagator.extract(carrier)
    return context


def child_context(span: Span) -> Context:
    """A context whose current span is `span`, to start children of it."""
    context: Context = _set_span_in_context(span)
    return context


def carrier_for(span: Span) -> Mapping[str, str]:
    """traceparent (and tracestate, if any) naming `span` as the parent."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=child_context(span))
    return carrier


def traceparent_for(span: Span) -> str:
    return carrier_for(span).get(TRACEPARENT, "")


def _without_userinfo(url: str) -> str:
    """`url` fit for a log line: a collector's credentials may ride in it as user:pass@."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
