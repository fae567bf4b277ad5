"""Config for OpenTelemetry tracing: Pomerium's otel_* keys and their OTEL_* variables."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import ConfigError, parse_config
from shared.config.reload import plan
from shared.config.tracing import tracing_settings

BASE = "/etc/vallum"
ON = {"otel_traces_exporter": "otlp"}


def problems(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {}, BASE)
    return [str(problem) for problem in caught.value.problems]


def test_off_by_default() -> None:
    config = parse_config({}, {}, BASE)
    assert config.otel_traces_exporter == "none"
    assert tracing_settings(config) is None


def test_otlp_defaults_follow_the_exporter_spec() -> None:
    settings = tracing_settings(parse_config(ON, {}, BASE))
    assert settings is not None
    assert settings.endpoint == "http://localhost:4318/v1/traces"
    assert settings.sampler_ratio == 1.0
    assert settings.headers == {} and settings.timeout is None


def test_every_key_from_the_file() -> None:
    raw = {
        **ON,
        "otel_exporter_otlp_endpoint": "https://collector.example:4318/",
        "otel_exporter_otlp_protocol": "http/protobuf",
        "otel_exporter_otlp_headers": ["Authorization=Bearer abc", "X-Team=a=b"],
        "otel_exporter_otlp_traces_headers": ["X-Team=traces"],
        "otel_exporter_otlp_timeout": 5000,
        "otel_exporter_otlp_traces_timeout": "2s",
        "otel_traces_sampler_arg": 0.25,
        "otel_resource_attributes": ["deployment.environment=prod"],
        "otel_bsp_schedule_delay": 250,
        "otel_bsp_max_export_batch_size": 64,
        "otel_attribute_value_length_limit": 512,
        "otel_log_level": "warning",
    }
    settings = tracing_settings(parse_config(raw, {}, BASE))
    assert settings is not None
    # The general endpoint is a base URL: /v1/traces is appended.
    assert settings.endpoint == "https://collector.example:4318/v1/traces"
    # traces_* wins over the general key, header by header.
    assert settings.headers == {"Authorization": "Bearer abc", "X-Team": "traces"}
    assert settings.timeout == 2.0
    assert settings.sampler_ratio == 0.25
    assert settings.resource_attributes == {"deployment.environment": "prod"}
    assert settings.schedule_delay == 0.25
    assert settings.max_export_batch_size == 64
    assert settings.attribute_value_length_limit == 512
    assert settings.log_level == "warn"


def test_a_traces_endpoint_is_used_as_given() -> None:
    raw = {
        **ON,
        "otel_exporter_otlp_endpoint": "http://a:4318",
        "otel_exporter_otlp_traces_endpoint": "http://b:4318/custom/path",
    }
    settings = tracing_settings(parse_config(raw, {}, BASE))
    assert settings is not None and settings.endpoint == "http://b:4318/custom/path"


def test_the_opentelemetry_environment_variables_configure_it() -> None:
    environ = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=secret,x-tenant=a",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "3000",
    }
    settings = tracing_settings(parse_config({}, environ, BASE))
    assert settings is not None
    assert settings.endpoint == "http://collector:4318/v1/traces"
    assert settings.headers == {"api-key": "secret", "x-tenant": "a"}
    assert settings.sampler_ratio == 0.5
    assert settings.timeout == 3.0


def test_headers_are_kept_out_of_repr() -> None:
    config = parse_config(
        {**ON, "otel_exporter_otlp_headers": ["Authorization=tok-8f2a91"]}, {}, BASE
    )
    assert "tok-8f2a91" not in repr(config)


@pytest.mark.parametrize(
    "item",
    [
        "Authorization: Bearer tok-8f2a91",  # `Name: value` for `Name=value`
        "Authorization: Basic tok-8f2a91=",  # ... with an `=` in the secret
        "tok-8f2a91",  # no name at all
    ],
)
@pytest.mark.parametrize("environment", [False, True])
def test_a_bad_header_is_refused_without_showing_it(item: str, environment: bool) -> None:
    if environment:
        environ = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": item}
        (problem,) = problems({}, environ)
    else:
        (problem,) = problems({**ON, "otel_exporter_otlp_headers": ["a=b", item]})
        assert problem.startswith("otel_exporter_otlp_headers: item 1: expected headers as key=")
    assert "tok-8f2a91" not in problem


@pytest.mark.parametrize(
    "key", ["otel_exporter_otlp_protocol", "otel_exporter_otlp_traces_protocol"]
)
def test_grpc_is_refused_naming_the_key(key: str) -> None:
    (problem,) = problems({**ON, key: "grpc"})
    assert problem.startswith(f"{key}: grpc (OTLP/gRPC) is not supported")
    assert "http/protobuf" in problem


def test_grpc_from_the_environment_names_the_variable() -> None:
    (problem,) = problems({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert problem.startswith("OTEL_EXPORTER_OTLP_PROTOCOL (environment): grpc")


def test_the_grpc_port_without_a_protocol_is_refused() -> None:
    (problem,) = problems({**ON, "otel_exporter_otlp_endpoint": "http://collector:4317"})
    assert problem.startswith("otel_exporter_otlp_endpoint: port 4317 is OTLP/gRPC")
    # Saying the protocol is HTTP is the way to keep an unusual port.
    raw = {
        **ON,
        "otel_exporter_otlp_endpoint": "http://collector:4317",
        "otel_exporter_otlp_protocol": "http/protobuf",
    }
    assert parse_config(raw, {}, BASE).otel_exporter_otlp_endpoint == "http://collector:4317"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("otel_traces_exporter", "jaeger", "must be one of none, otlp"),
        ("otel_exporter_otlp_protocol", "http/json", "must be http/protobuf"),
        ("otel_traces_sampler_arg", 1.5, "expected a number from 0 to 1"),
        ("otel_traces_sampler_arg", "half", "expected a number from 0 to 1"),
        ("otel_traces_sampler_arg", True, "expected a number from 0 to 1"),
        ("otel_exporter_otlp_endpoint", "collector:4318", "expected an http:// or https:// URL"),
        ("otel_exporter_otlp_traces_endpoint", "ftp://c/x", "expected an http:// or https:// URL"),
        ("otel_exporter_otlp_headers", ["novalue"], "expected headers as key=value"),
        ("otel_exporter_otlp_headers", ["bad name=x"], "bad name"),
        ("otel_resource_attributes", ["=x"], "expected resource attributes as key=value"),
        ("otel_exporter_otlp_timeout", -1, "must not be negative"),
        ("otel_bsp_schedule_delay", 50, "must be at least 100"),
        ("otel_bsp_max_export_batch_size", 0, "at least 1"),
        ("otel_attribute_value_length_limit", "lots", "at least 1"),
        ("otel_log_level", "loud", "must be one of debug, info, warn, error"),
    ],
)
def test_bad_values_name_their_key(key: str, value: Any, message: str) -> None:
    found = problems({**ON, key: value})
    assert len(found) == 1, found
    assert found[0].startswith(f"{key}: ") and message in found[0], found


def test_settings_without_the_exporter_are_a_notice() -> None:
    config = parse_config({"otel_exporter_otlp_endpoint": "http://c:4318"}, {}, BASE)
    assert tracing_settings(config) is None
    assert any(n.startswith("otel_exporter_otlp_endpoint: has no effect") for n in config.notices)


def test_tracing_keys_need_a_restart() -> None:
    running = parse_config({}, {}, BASE)
    loaded = parse_config({**ON, "otel_traces_sampler_arg": 0.1}, {}, BASE)
    reload = plan(running, loaded)
    assert set(reload.needs_restart) >= {"otel_traces_exporter", "otel_traces_sampler_arg"}
    assert reload.config.otel_traces_exporter == "none"
