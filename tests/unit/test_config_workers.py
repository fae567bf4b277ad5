"""Config for proxy worker processes: `proxy_workers` and the ports workers share."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import ConfigError, parse_config

BASE = "/etc/vallum"


def problems(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {}, BASE)
    return [str(problem) for problem in caught.value.problems]


def test_one_worker_by_default() -> None:
    assert parse_config({}, {}, BASE).proxy_workers == 1


@pytest.mark.parametrize(
    ("raw", "environ", "workers"),
    [
        ({"proxy_workers": 2}, {}, 2),
        ({"proxy_workers": 64}, {}, 64),
        ({}, {"PROXY_WORKERS": "4"}, 4),
        ({"proxy_workers": 2}, {"PROXY_WORKERS": "3"}, 3),
        ({"proxy_workers": "2"}, {}, 2),
    ],
)
def test_proxy_workers(raw: dict[str, Any], environ: dict[str, str], workers: int) -> None:
    assert parse_config(raw, environ, BASE).proxy_workers == workers


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "proxy_workers: must be between 1 and 64, got 0"),
        (-2, "proxy_workers: must be between 1 and 64, got -2"),
        (65, "proxy_workers: must be between 1 and 64, got 65"),
        (1000, "proxy_workers: must be between 1 and 64, got 1000"),
        ("two", "proxy_workers: expected an integer, got string 'two'"),
        (True, "proxy_workers: expected an integer, got boolean"),
        (1.5, "proxy_workers: expected an integer, got number 1.5"),
    ],
)
def test_bad_proxy_workers(value: Any, message: str) -> None:
    assert problems({"proxy_workers": value}) == [message]


def test_bad_proxy_workers_from_the_environment_names_the_variable() -> None:
    assert problems({}, {"PROXY_WORKERS": "0"}) == [
        "PROXY_WORKERS (environment): must be between 1 and 64, got 0"
    ]


def test_workers_cannot_share_port_zero() -> None:
    raw = {"proxy_workers": 2, "address": "127.0.0.1:0", "http_redirect_addr": ":0"}
    assert problems(raw) == [
        "address: port 0 (any free port) cannot be shared by proxy_workers: 2; give a fixed port",
        "http_redirect_addr: port 0 (any free port) cannot be shared by proxy_workers: 2; "
        "give a fixed port",
    ]


def test_one_worker_may_listen_on_port_zero() -> None:
    assert parse_config({"address": "127.0.0.1:0"}, {}, BASE).address.port == 0
