"""The sign-in keys: idp_* (the OpenID Connect provider) and cookie_* (the session cookie)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from shared.config import ConfigError, Source, load_config, parse_config

BASE = "/etc/vallum"
CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
KEY_PEM = b"-----BEGIN PRIVATE KEY-----\nMIGHfake\n-----END PRIVATE KEY-----\n"
SECRET_B64 = base64.b64encode(bytes(range(32))).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def idp(**extra: Any) -> dict[str, Any]:
    return {
        "idp_provider_url": "https://idp.example.com",
        "idp_client_id": "vallum",
        "idp_client_secret": "s3cret",
        **extra,
    }


def split(services: str, **extra: Any) -> dict[str, Any]:
    """A valid configuration for a process running only `services`."""
    return {
        "services": services,
        "shared_secret": SECRET_B64,
        "cookie_secret": SECRET_B64,
        "certificate_authority": b64(CERT_PEM),
        "internal_certificate": b64(CERT_PEM),
        "internal_certificate_key": b64(KEY_PEM),
        **extra,
    }


def problems(raw: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {}, BASE)
    return [str(p) for p in caught.value.problems]


def test_defaults_follow_pomerium() -> None:
    config = parse_config({}, {}, BASE)
    assert config.idp_provider == "oidc"
    assert config.idp_provider_url is None and config.idp_client_id is None
    assert config.idp_scopes == ("openid", "profile", "email", "offline_access")
    assert dict(config.idp_request_params) == {}
    assert config.idp_ca is None
    assert config.cookie_name == "_pomerium"
    assert config.cookie_domain is None
    assert config.cookie_expire == 14 * 3600
    assert config.cookie_same_site == "lax"
    assert config.cookie_http_only is True and config.cookie_secure is True


def test_a_full_idp_configuration() -> None:
    config = parse_config(
        idp(
            idp_provider="keycloak",
            idp_provider_url="https://sso.example.com/realms/staff",
            idp_scopes="openid, email groups",
            idp_request_params={"prompt": "login", "max_age": 300},
            idp_ca=b64(CERT_PEM),
            cookie_name="__Host-vallum",
            cookie_expire="8h30m",
            cookie_same_site="Strict",
            cookie_http_only="false",
        ),
        {},
        BASE,
    )
    assert config.idp_provider == "keycloak"
    assert config.idp_provider_url == "https://sso.example.com/realms/staff"
    assert config.idp_client_id == "vallum" and config.idp_client_secret == "s3cret"
    assert config.idp_scopes == ("openid", "email", "groups")
    assert dict(config.idp_request_params) == {"prompt": "login", "max_age": "300"}
    assert config.idp_ca == Source(None, CERT_PEM)
    assert config.cookie_name == "__Host-vallum"
    assert config.cookie_expire == 8.5 * 3600
    assert config.cookie_same_site == "strict"
    assert config.cookie_http_only is False
    assert "s3cret" not in repr(config)


def test_the_issuer_is_kept_exactly_as_given() -> None:
    # Discovery must echo it byte for byte, trailing slash included.
    config = parse_config(idp(idp_provider_url="https://idp.example.com/"), {}, BASE)
    assert config.idp_provider_url == "https://idp.example.com/"


@pytest.mark.parametrize(
    ("provider", "url"),
    [("google", "https://accounts.google.com"), ("gitlab", "https://gitlab.com")],
)
def test_a_preset_with_a_fixed_issuer_fills_in_its_url(provider: str, url: str) -> None:
    config = parse_config(
        {"idp_provider": provider, "idp_client_id": "c", "idp_client_secret": "s"}, {}, BASE
    )
    assert config.idp_provider == provider and config.idp_provider_url == url


def test_keys_come_from_the_environment() -> None:
    environ = {
        "IDP_PROVIDER": "okta",
        "IDP_PROVIDER_URL": "https://example.okta.com",
        "IDP_CLIENT_ID": "0oa1",
        "IDP_CLIENT_SECRET": "s",
        "IDP_SCOPES": "openid email",
        "IDP_REQUEST_PARAMS": '{"prompt": "consent"}',
        "COOKIE_NAME": "_vallum",
        "COOKIE_SECURE": "false",
    }
    config = parse_config({}, environ, BASE)
    assert config.idp_provider == "okta" and config.idp_client_id == "0oa1"
    assert config.idp_scopes == ("openid", "email")
    assert dict(config.idp_request_params) == {"prompt": "consent"}
    assert config.cookie_name == "_vallum" and config.cookie_secure is False


def test_an_all_digit_client_id_is_still_an_id() -> None:
    assert parse_config(idp(idp_client_id=1234567), {}, BASE).idp_client_id == "1234567"


BAD: list[tuple[dict[str, Any], str]] = [
    (
        {"idp_provider": "github"},
        "idp_provider: unknown identity provider 'github' (accepted: oidc, auth0, azure, "
        "cognito, gitlab, google, keycloak, okta, onelogin, ping;",
    ),
    ({"idp_provider_url": "idp.example.com"}, "idp_provider_url: must be an absolute https URL"),
    ({"idp_provider_url": "http://idp.example.com"}, "idp_provider_url: must use https"),
    (
        {"idp_provider_url": "https://idp.example.com/?x=1"},
        "idp_provider_url: must not have a query",
    ),
    ({"idp_provider_url": "https://u:p@idp.example.com"}, "idp_provider_url: must not contain"),
    ({"idp_client_id": ""}, "idp_client_id: must be non-empty printable ASCII"),
    ({"idp_client_secret": 12345}, "idp_client_secret: expected a string, got integer"),
    ({"idp_client_secret": "  "}, "idp_client_secret: must not be empty"),
    ({"idp_scopes": ["profile", "email"]}, "idp_scopes: must include openid"),
    ({"idp_scopes": ["openid", 'bad"scope']}, "idp_scopes: item 1 is not a scope token"),
    ({"idp_scopes": 5}, "idp_scopes: expected a list of scopes, got integer 5"),
    ({"idp_request_params": ["prompt"]}, "idp_request_params: expected a mapping"),
    ({"idp_request_params": {"prompt": True}}, "idp_request_params: value of prompt must be a"),
    ({"idp_request_params": {"state": "x"}}, "idp_request_params: state is set by Vallum itself"),
    ({"idp_request_params": {"scope": "x"}}, "(use idp_scopes)"),
    ({"idp_request_params": "{not json"}, "idp_request_params: expected a mapping"),
    ({"idp_ca": "bm90IHBlbQ=="}, "idp_ca: not base64-encoded PEM (use idp_ca_file for a path)"),
    ({"idp_ca": b64(KEY_PEM)}, "idp_ca: holds no PEM certificate"),
    ({"cookie_name": "bad name"}, "cookie_name: must be a cookie name token"),
    ({"cookie_domain": "bad_domain!"}, "cookie_domain: must be a domain name"),
    ({"cookie_expire": "0s"}, "cookie_expire: must be longer than 0s"),
    ({"cookie_expire": 3600}, "cookie_expire: use a unit"),
    ({"cookie_same_site": "relaxed"}, "cookie_same_site: must be one of lax, strict, none"),
    ({"cookie_http_only": "maybe"}, "cookie_http_only: expected a boolean"),
    (
        {"cookie_same_site": "none", "cookie_secure": False},
        "cookie_same_site: none requires cookie_secure: true",
    ),
    (
        {"cookie_name": "__Secure-s", "cookie_secure": False},
        "cookie_name: a __Secure- cookie requires cookie_secure: true",
    ),
    (
        {"cookie_name": "__Host-s", "cookie_domain": "example.com"},
        "cookie_name: a __Host- cookie must not have a cookie_domain",
    ),
    ({"idp_clientid": "x"}, 'idp_clientid: unknown key (did you mean "idp_client_id"?)'),
]


@pytest.mark.parametrize(("raw", "message"), BAD, ids=[message for _, message in BAD])
def test_bad_values_are_reported_at_their_key(raw: dict[str, Any], message: str) -> None:
    (problem,) = problems(raw)
    assert problem.startswith(message) or message in problem


def test_secrets_are_never_quoted() -> None:
    (problem,) = problems({"idp_client_secret": ["hunter2"]})
    assert "hunter2" not in problem


def test_loopback_issuers_may_use_http() -> None:
    for url in ("http://localhost:9000", "http://127.0.0.1:9000/oidc", "http://idp.localhost"):
        assert parse_config(idp(idp_provider_url=url), {}, BASE).idp_provider_url == url


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"idp_provider_url": "https://idp.example.com"},
            [
                "idp_client_id: required when idp_provider_url is set",
                "idp_client_secret: required when idp_provider_url is set",
            ],
        ),
        (
            {"idp_provider_url": "https://idp.example.com", "idp_client_id": "c"},
            ["idp_client_secret: required when idp_provider_url is set"],
        ),
        (
            {"idp_provider": "okta", "idp_client_id": "c", "idp_client_secret": "s"},
            ["idp_provider_url: required when idp_provider is okta"],
        ),
        (
            {"idp_provider": "google"},
            [
                "idp_client_id: required when idp_provider_url is set",
                "idp_client_secret: required when idp_provider_url is set",
            ],
        ),
    ],
)
def test_authenticate_needs_a_complete_client(raw: dict[str, Any], expected: list[str]) -> None:
    for config in (raw, split("authenticate", **raw)):
        found = problems(config)
        assert [p.split(" (")[0] for p in found] == expected


def test_only_authenticate_needs_the_client() -> None:
    config = parse_config(split("proxy", idp_provider_url="https://idp.example.com"), {}, BASE)
    assert config.idp_client_id is None


def test_client_secret_file_is_read_as_text(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret value\n")
    (tmp_path / "ca.pem").write_bytes(CERT_PEM)
    path = tmp_path / "c.yaml"
    path.write_text(
        "idp_provider_url: https://idp.example.com\n"
        "idp_client_id: vallum\n"
        "idp_client_secret_file: secret\n"
        "idp_ca_file: ca.pem\n"
    )
    config = load_config(str(path), {})
    assert config.idp_client_secret == "s3cret value"
    assert config.idp_client_secret_file == str(tmp_path / "secret")
    assert config.idp_ca == Source(str(tmp_path / "ca.pem"), CERT_PEM)


@pytest.mark.parametrize(
    ("files", "lines", "path", "message"),
    [
        ({}, "idp_client_secret_file: nowhere\n", "idp_client_secret_file", "cannot read"),
        ({"empty": b"\n"}, "idp_client_secret_file: empty\n", "idp_client_secret_file", "empty"),
        ({"bin": b"\xff\xfe"}, "idp_client_secret_file: bin\n", "idp_client_secret_file", "UTF-8"),
        ({"k.pem": KEY_PEM}, "idp_ca_file: k.pem\n", "idp_ca_file", "no PEM certificate"),
    ],
)
def test_bad_files_are_reported_at_their_key(
    tmp_path: Path, files: dict[str, bytes], lines: str, path: str, message: str
) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    config = tmp_path / "c.yaml"
    config.write_text("idp_provider_url: https://idp.example.com\nidp_client_id: c\n" + lines)
    if "idp_client_secret" not in lines:
        config.write_text(config.read_text() + "idp_client_secret: s\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(config), {})
    (problem,) = caught.value.problems
    assert problem.path == path and message in problem.message


def test_secret_and_secret_file_together_are_refused() -> None:
    assert problems(idp(idp_client_secret_file="s")) == [
        "idp_client_secret: set either idp_client_secret or idp_client_secret_file, not both"
    ]
