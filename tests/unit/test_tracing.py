"""shared.tracing's start-up line: where spans go, without the collector's credentials."""

from __future__ import annotations

import logging

import pytest

from shared import tracing
from shared.config import parse_config


def test_the_start_line_hides_credentials_in_the_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    raw = {
        "otel_traces_exporter": "otlp",
        "otel_exporter_otlp_traces_endpoint": "https://user:pw-7c1e@collector.example:4318/v1/traces",
    }
    caplog.set_level(logging.INFO, logger="vallum.tracing")
    try:
        assert tracing.start(parse_config(raw, {}, "/etc/vallum"), "proxy")
    finally:
        tracing.stop(timeout=0.1)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "vallum.tracing"]
    assert "pw-7c1e" not in line and "user" not in line
    assert "https://***@collector.example:4318/v1/traces" in line


def test_an_endpoint_without_credentials_is_shown_as_it_is() -> None:
    url = "http://collector:4318/v1/traces"
    assert tracing._without_userinfo(url) == url
