"""The verifying sidecar's configuration keys (Vallum's own): parsing and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import Address, ConfigError, parse_config
from shared.config.parse import parse_config_partial

BASE = "/etc/vallum"
JWKS = "https://app.example.com/.well-known/pomerium/jwks.json"


def minimal(**extra: Any) -> dict[str, Any]:
    return {
        "services": "sidecar",
        "sidecar_upstream": "http://127.0.0.1:8080",
        "sidecar_certificate_file": "sidecar.pem",
        "sidecar_certificate_key_file": "sidecar-key.pem",
        "sidecar_client_ca_file": "ca.pem",
        **extra,
    }


def with_jwt(**extra: Any) -> dict[str, Any]:
    jwt_keys = {
        "sidecar_jwks_url": JWKS,
        "sidecar_jwt_issuer": "app.example.com",
        "sidecar_jwt_audience": "app.example.com",
    }
    return minimal(**{**jwt_keys, **extra})


def problems(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    _, found = parse_config_partial(raw, environ or {}, BASE)
    return [str(p) for p in found]


def test_a_full_sidecar_config_parses() -> None:
    config = parse_config(
        with_jwt(
            sidecar_address="127.0.0.1:9443",
            sidecar_allowed_client_names=["spiffe://vallum.internal/proxy", "proxy.internal"],
            sidecar_jwks_ca_file="jwks-ca.pem",
            sidecar_identity_headers={"X-Remote-User": "email", "X-Remote-Groups": "groups"},
        ),
        {},
        BASE,
    )
    assert config.sidecar_only and not config.all_in_one
    assert config.sidecar_address == Address("127.0.0.1", 9443)
    assert config.sidecar_upstream == "http://127.0.0.1:8080"
    assert config.sidecar_certificate is not None
    assert config.sidecar_certificate.path == "/etc/vallum/sidecar.pem"
    assert config.sidecar_client_ca is not None
    assert config.sidecar_client_ca.path == "/etc/vallum/ca.pem"
    assert config.sidecar_allowed_client_names == (
        "spiffe://vallum.internal/proxy",
        "proxy.internal",
    )
    assert config.sidecar_jwks_url == JWKS
    assert config.sidecar_identity_headers == (
        ("X-Remote-User", "email"),
        ("X-Remote-Groups", "groups"),
    )
    assert config.notices == ()


def test_the_sidecar_needs_no_secrets_or_internal_pki() -> None:
    # Split-mode services would need shared_secret and internal certificates.
    assert problems(minimal()) == []


def test_defaults() -> None:
    config = parse_config(minimal(), {}, BASE)
    assert config.sidecar_address == Address("", 8443)
    assert config.sidecar_jwks_url is None
    assert config.sidecar_allowed_client_names == ()


def test_a_sidecar_that_checks_nothing_is_refused() -> None:
    raw = minimal()
    del raw["sidecar_client_ca_file"]
    assert problems(raw) == [
        "sidecar_client_ca: the sidecar needs something to check: set sidecar_client_ca "
        "(mutual TLS) and/or sidecar_jwks_url (the JWT assertion)"
    ]


def test_jwt_mode_alone_is_enough() -> None:
    raw = with_jwt()
    del raw["sidecar_client_ca_file"]
    assert problems(raw) == []


def test_required_keys_name_themselves() -> None:
    assert problems({"services": "sidecar", "sidecar_client_ca_file": "ca.pem"}) == [
        "sidecar_upstream: required to run the sidecar (set sidecar_upstream)",
        "sidecar_certificate: required to run the sidecar "
        "(set sidecar_certificate or sidecar_certificate_file)",
        "sidecar_certificate_key: required to run the sidecar "
        "(set sidecar_certificate_key or sidecar_certificate_key_file)",
    ]


def test_jwks_url_needs_issuer_and_audience() -> None:
    assert problems(minimal(sidecar_jwks_url=JWKS)) == [
        "sidecar_jwt_issuer: required when sidecar_jwks_url is set (Vallum's assertion "
        "has the route host as both)",
        "sidecar_jwt_audience: required when sidecar_jwks_url is set (Vallum's assertion "
        "has the route host as both)",
    ]


def test_jwt_settings_without_a_jwks_url_are_refused() -> None:
    found = problems(
        minimal(
            sidecar_jwt_issuer="a",
            sidecar_identity_headers={"X-Remote-User": "email"},
            sidecar_jwks_ca_file="ca.pem",
        )
    )
    assert found == [
        "sidecar_jwt_issuer: requires sidecar_jwks_url",
        "sidecar_identity_headers: requires sidecar_jwks_url",
        "sidecar_jwks_ca_file: requires sidecar_jwks_url",
    ]


def test_allowed_names_need_a_client_ca() -> None:
    raw = with_jwt(sidecar_allowed_client_names=["spiffe://vallum.internal/proxy"])
    del raw["sidecar_client_ca_file"]
    assert problems(raw) == [
        "sidecar_allowed_client_names: requires sidecar_client_ca (names are read from "
        "its certificates)"
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sidecar_upstream", "ftp://app", "must be an absolute http or https URL"),
        ("sidecar_upstream", "http://app/sub", "must not have a path or query"),
        ("sidecar_upstream", "http://u:p@app", "must not contain credentials"),
        ("sidecar_jwks_url", "http://app.example.com/jwks.json", "must use https"),
        ("sidecar_address", 8443, "did you mean ':8443'?"),
        ("sidecar_allowed_client_names", ["a", " "], "names must not be empty"),
        ("sidecar_jwt_issuer", "  ", "must not be empty"),
        ("sidecar_identity_headers", ["email"], "expected a mapping"),
        ("sidecar_identity_headers", {"X-Pomerium-Email": "email"}, "Vallum's own"),
        ("sidecar_identity_headers", {"Host": "email"}, "cannot be set from a claim"),
        ("sidecar_identity_headers", {"Bad Name": "email"}, "not a valid HTTP header name"),
        ("sidecar_identity_headers", {"X-A": "email", "x-a": "sub"}, "named twice"),
        ("sidecar_identity_headers", {"X-A": 3}, "must be a claim name"),
    ],
)
def test_bad_values_name_their_key(key: str, value: Any, message: str) -> None:
    found = problems(with_jwt(**{key: value}))
    assert len(found) == 1, found
    assert found[0].startswith(f"{key}: ")
    assert message in found[0]


def test_plain_http_jwks_is_allowed_on_loopback() -> None:
    config = parse_config(
        with_jwt(sidecar_jwks_url="http://127.0.0.1:8000/.well-known/pomerium/jwks.json"),
        {},
        BASE,
    )
    assert config.sidecar_jwks_url is not None


def test_environment_variables() -> None:
    environ = {
        "SIDECAR_UPSTREAM": "https://app.internal:8443",
        "SIDECAR_ALLOWED_CLIENT_NAMES": "spiffe://vallum.internal/proxy,proxy.internal",
    }
    config = parse_config(minimal(), environ, BASE)
    assert config.sidecar_upstream == "https://app.internal:8443"
    assert config.sidecar_allowed_client_names == (
        "spiffe://vallum.internal/proxy",
        "proxy.internal",
    )


@pytest.mark.parametrize("services", ["sidecar,proxy", "all,sidecar"])
def test_the_sidecar_runs_alone(services: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(services=services), {}, BASE)
    assert "services: sidecar runs alone" in str(caught.value)


def test_the_all_in_one_default_never_includes_the_sidecar() -> None:
    config = parse_config({}, {}, BASE)
    assert "sidecar" not in config.services


def test_sidecar_keys_outside_a_sidecar_are_a_notice() -> None:
    config = parse_config({"sidecar_upstream": "http://127.0.0.1:8080"}, {}, BASE)
    assert config.notices == ("sidecar_upstream: has no effect unless services is sidecar",)
