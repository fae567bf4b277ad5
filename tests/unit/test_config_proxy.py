"""Config for the proxy's header handling: trusted hops, XFF append, header templates."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import ConfigError, parse_config

BASE = "/etc/vallum"


def route(**extra: Any) -> dict[str, Any]:
    return {"from": "https://app.example.com", "to": "http://app:8080", **extra}


def problems(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {}, BASE)
    return [str(problem) for problem in caught.value.problems]


def test_defaults_trust_no_hop_and_append() -> None:
    config = parse_config({}, {}, BASE)
    assert config.xff_num_trusted_hops == 0
    assert config.skip_xff_append is False


@pytest.mark.parametrize(
    ("raw", "environ", "hops", "skip"),
    [
        ({"xff_num_trusted_hops": 1}, {}, 1, False),
        ({"xff_num_trusted_hops": 16, "skip_xff_append": True}, {}, 16, True),
        ({}, {"XFF_NUM_TRUSTED_HOPS": "2", "SKIP_XFF_APPEND": "true"}, 2, True),
        ({"xff_num_trusted_hops": 1}, {"XFF_NUM_TRUSTED_HOPS": "3"}, 3, False),
    ],
)
def test_trusted_hops_and_skip_append(
    raw: dict[str, Any], environ: dict[str, str], hops: int, skip: bool
) -> None:
    config = parse_config(raw, environ, BASE)
    assert config.xff_num_trusted_hops == hops
    assert config.skip_xff_append is skip


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "xff_num_trusted_hops: must be between 0 and 16, got -1"),
        (17, "xff_num_trusted_hops: must be between 0 and 16, got 17"),
        ("two", "xff_num_trusted_hops: expected an integer, got string 'two'"),
        (True, "xff_num_trusted_hops: expected an integer, got boolean"),
        (1.5, "xff_num_trusted_hops: expected an integer, got number 1.5"),
    ],
)
def test_bad_trusted_hops(value: Any, message: str) -> None:
    assert problems({"xff_num_trusted_hops": value}) == [message]


def test_bad_skip_append() -> None:
    assert problems({"skip_xff_append": "maybe"}) == [
        "skip_xff_append: expected a boolean (true or false), got string 'maybe'"
    ]


def test_set_request_header_templates_that_compile_are_kept_as_written() -> None:
    headers = {
        "X-Jwt": "${pomerium.jwt}",
        "Authorization": "Bearer ${pomerium.access_token}",
        "X-Price": "$$5",
        "X-Static": "plain",
    }
    config = parse_config({"routes": [route(set_request_headers=headers)]}, {}, BASE)
    assert dict(config.routes[0].set_request_headers) == headers


def test_every_bad_template_is_a_problem_at_its_header() -> None:
    raw = {
        "routes": [
            route(set_request_headers={"X-Ok": "${pomerium.email}", "X-Typo": "${pomerium.emial}"}),
            route(set_request_headers={"X-Old": "$pomerium.id_token", "X-Open": "${pomerium.jwt"}),
        ]
    }
    found = problems(raw)
    assert [problem.split(": ", 1)[0] for problem in found] == [
        "routes[0].set_request_headers.X-Typo",
        "routes[1].set_request_headers.X-Old",
        "routes[1].set_request_headers.X-Open",
    ]
    assert "unknown variable ${pomerium.emial}" in found[0]
    assert "write ${pomerium.id_token}" in found[1]
    assert "no closing }" in found[2]


def test_template_problems_come_with_the_routes_other_problems() -> None:
    raw = {"routes": [route(set_request_headers={"X-A": "${nope}"}, timeout="soon")]}
    paths = {problem.split(": ", 1)[0] for problem in problems(raw)}
    assert paths == {"routes[0].set_request_headers.X-A", "routes[0].timeout"}


def test_header_map_shape_is_still_checked_first() -> None:
    found = problems({"routes": [route(set_request_headers={"X-A": "a\nb"})]})
    assert found == ["routes[0].set_request_headers: value of X-A must not contain a line break"]
