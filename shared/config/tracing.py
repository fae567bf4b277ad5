"""OpenTelemetry tracing: Pomerium's `otel_*` keys (its config.yaml names).

Their upper-cased names are the OpenTelemetry SDK's own environment variables
(OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT, ...), so a deployment that sets
those for every process configures Vallum too. Vallum exports over OTLP/HTTP
(`http/protobuf`) only; `grpc` is refused by name rather than silently sent as HTTP.
Durations are integer milliseconds as in Pomerium (a duration such as `10s` also
works). `traces_*` keys win over their general form, as in the OTLP exporter spec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.config.errors import FieldError
from shared.config.fields import got, parse_duration, parse_header_name, parse_str, parse_str_list
from shared.config.model import Config
from shared.config.schema import Ctx, Given, Key, plain

TRACES_EXPORTERS = ("none", "otlp")
OTLP_PROTOCOLS = ("http/protobuf",)
# The OTLP exporter spec's default for OTLP/HTTP.
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
# Where collectors listen for OTLP/gRPC; Pomerium guesses grpc from it.
OTLP_GRPC_PORT = 4317
# Pomerium's floor: a shorter delay only makes more export requests.
MIN_SCHEDULE_DELAY_MS = 100


def parse_traces_exporter(value: Any) -> str:
    text = parse_str(value).strip().lower()
    if text not in TRACES_EXPORTERS:
        raise FieldError(f"must be one of {', '.join(TRACES_EXPORTERS)}; got {value!r}")
    return text


def parse_protocol(value: Any) -> str:
    text = parse_str(value).strip().lower()
    if text == "grpc":
        raise FieldError(
            "grpc (OTLP/gRPC) is not supported by Vallum; use http/protobuf and the "
            "collector's OTLP/HTTP endpoint (port 4318 by default)"
        )
    if text not in OTLP_PROTOCOLS:
        raise FieldError(f"must be http/protobuf (OTLP/HTTP); got {value!r}")
    return text


def parse_endpoint(value: Any) -> str:
    text = parse_str(value).strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise FieldError(f"expected an http:// or https:// URL, got {value!r} ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FieldError(f"expected an http:// or https:// URL such as {DEFAULT_OTLP_ENDPOINT}")
    if parts.query or parts.fragment:
        raise FieldError(f"must not have a query or fragment, got {value!r}")
    return text


def parse_ratio(value: Any) -> float:
    if isinstance(value, bool):
        raise FieldError(f"expected a number from 0 to 1, got {got(value)}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise FieldError(f"expected a number from 0 to 1, got {value!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise FieldError(f"expected a number from 0 to 1, got {got(value)}")
    return float(value)


def _pairs(value: Any, what: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for item in parse_str_list(value):
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise FieldError(f"expected {what} as key=value, got {item!r}")
        pairs.append((name.strip(), text.strip()))
    return tuple(pairs)


def parse_headers(value: Any) -> tuple[tuple[str, str], ...]:
    """`Name=value` items (a list, or one comma-separated string as in the environment).

    The values are credentials (an API key, `Authorization`), so an error names the
    item by its position and never shows it: `Authorization: Bearer ...` written for
    `Authorization=Bearer ...` would otherwise put the token in the error.
    """
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(parse_str_list(value)):
        name, sep, text = item.partition("=")
        name = name.strip()
        if ":" in name:
            raise FieldError(
                f"item {i}: expected headers as key=value, not `Name: value` "
                "(the item is not shown: it may hold a secret)"
            )
        if not sep or not name:
            raise FieldError(
                f"item {i}: expected headers as key=value "
                "(the item is not shown: it may hold a secret)"
            )
        parse_header_name(name)
        if "\r" in text or "\n" in text:
            raise FieldError(f"the value of header {name} has a line break")
        pairs.append((name, text.strip()))
    return tuple(pairs)


def parse_resource_attributes(value: Any) -> tuple[tuple[str, str], ...]:
    return _pairs(value, "resource attributes")


def parse_millis(value: Any) -> float:
    """Milliseconds as an integer (Pomerium, the OTel environment) or a duration; seconds."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise FieldError(f"must not be negative, got {value}")
        return value / 1000.0
    return parse_duration(value)


def _at_least_one(value: Any, unit: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise FieldError(f"expected a whole number of {unit}, at least 1, got {got(value)}")
    return value


def parse_batch_size(value: Any) -> int:
    return _at_least_one(value, "spans")


def parse_length_limit(value: Any) -> int:
    return _at_least_one(value, "characters")


def parse_otel_log_level(value: Any) -> str:
    text = parse_str(value).strip().lower()
    levels = ("debug", "info", "warn", "error")
    text = "warn" if text == "warning" else text
    if text not in levels:
        raise FieldError(f"must be one of {', '.join(levels)}; got {value!r}")
    return text


TRACING_KEYS: tuple[Key, ...] = (
    Key("otel_traces_exporter", plain(parse_traces_exporter)),
    Key("otel_traces_sampler_arg", plain(parse_ratio)),
    Key("otel_resource_attributes", plain(parse_resource_attributes)),
    Key("otel_log_level", plain(parse_otel_log_level)),
    Key("otel_attribute_value_length_limit", plain(parse_length_limit)),
    Key("otel_exporter_otlp_endpoint", plain(parse_endpoint)),
    Key("otel_exporter_otlp_traces_endpoint", plain(parse_endpoint)),
    Key("otel_exporter_otlp_protocol", plain(parse_protocol)),
    Key("otel_exporter_otlp_traces_protocol", plain(parse_protocol)),
    Key("otel_exporter_otlp_headers", plain(parse_headers)),
    Key("otel_exporter_otlp_traces_headers", plain(parse_headers)),
    Key("otel_exporter_otlp_timeout", plain(parse_millis)),
    Key("otel_exporter_otlp_traces_timeout", plain(parse_millis)),
    Key("otel_bsp_schedule_delay", plain(parse_millis)),
    Key("otel_bsp_max_export_batch_size", plain(parse_batch_size)),
)

_ENDPOINT_KEYS = ("otel_exporter_otlp_traces_endpoint", "otel_exporter_otlp_endpoint")
_PROTOCOL_KEYS = ("otel_exporter_otlp_traces_protocol", "otel_exporter_otlp_protocol")


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """What the exporter is built from, each key resolved against its general form."""

    endpoint: str  # the full URL spans are POSTed to
    headers: Mapping[str, str]
    timeout: float | None  # seconds; None: the exporter's default (10 s)
    sampler_ratio: float
    schedule_delay: float | None  # seconds
    max_export_batch_size: int | None
    resource_attributes: Mapping[str, str]
    attribute_value_length_limit: int | None
    log_level: str | None


def traces_endpoint(config: Config) -> str:
    """The OTLP exporter spec's rule: a signal endpoint is used as given; the general
    one is a base URL that /v1/traces is appended to."""
    if config.otel_exporter_otlp_traces_endpoint:
        return config.otel_exporter_otlp_traces_endpoint
    base = config.otel_exporter_otlp_endpoint or DEFAULT_OTLP_ENDPOINT
    return base.rstrip("/") + "/v1/traces"


def tracing_settings(config: Config) -> TracingSettings | None:
    """None while tracing is off."""
    if config.otel_traces_exporter != "otlp":
        return None
    timeout = config.otel_exporter_otlp_traces_timeout
    if timeout is None:
        timeout = config.otel_exporter_otlp_timeout
    return TracingSettings(
        endpoint=traces_endpoint(config),
        headers={
            **dict(config.otel_exporter_otlp_headers),
            **dict(config.otel_exporter_otlp_traces_headers),
        },
        timeout=timeout,
        sampler_ratio=config.otel_traces_sampler_arg,
        schedule_delay=config.otel_bsp_schedule_delay,
        max_export_batch_size=config.otel_bsp_max_export_batch_size,
        resource_attributes=dict(config.otel_resource_attributes),
        attribute_value_length_limit=config.otel_attribute_value_length_limit,
        log_level=config.otel_log_level,
    )


def check_tracing(config: Config, given: Mapping[str, Given], ctx: Ctx) -> None:
    delay = config.otel_bsp_schedule_delay
    if delay is not None and delay * 1000 < MIN_SCHEDULE_DELAY_MS:
        ctx.child("otel_bsp_schedule_delay").add(
            f"must be at least {MIN_SCHEDULE_DELAY_MS} (milliseconds), got {delay * 1000:g}"
        )
    if config.otel_traces_exporter != "otlp":
        return
    if any(name in given for name in _PROTOCOL_KEYS):
        return
    # Pomerium (and the exporter spec's examples) take 4317 to mean OTLP/gRPC: sending
    # OTLP/HTTP there would fail at every export, long after start-up.
    for name in _ENDPOINT_KEYS:
        value = getattr(config, name)
        if value is None:
            continue
        if urlsplit(value).port == OTLP_GRPC_PORT:
            ctx.child(name).add(
                f"port {OTLP_GRPC_PORT} is OTLP/gRPC, which Vallum does not speak; give the "
                "collector's OTLP/HTTP endpoint (port 4318 by default), or set "
                "otel_exporter_otlp_protocol: http/protobuf if this port speaks OTLP/HTTP"
            )
        return


def tracing_notices(config: Config, given: Mapping[str, Given]) -> list[str]:
    if config.otel_traces_exporter == "otlp":
        return []
    ignored = [
        key.name for key in TRACING_KEYS if key.name != "otel_traces_exporter" and key.name in given
    ]
    if not ignored:
        return []
    return [
        f"{ignored[0]}: has no effect while otel_traces_exporter is none (tracing is off); "
        f"set otel_traces_exporter: otlp to export spans"
    ]
