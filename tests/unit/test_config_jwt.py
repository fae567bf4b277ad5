"""The identity-assertion keys: signing_key(_file), jwt_claims_headers, jwt_issuer_format,
jwt_groups_filter (global and per route)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from shared.config import ConfigError, Source, load_config, parse_config
from shared.jwt import SigningKeys

BASE = "/etc/vallum"


def pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


EC_PEM = pem(ec.generate_private_key(ec.SECP256R1()))
ED_PEM = pem(ed25519.Ed25519PrivateKey.generate())
P384_PEM = pem(ec.generate_private_key(ec.SECP384R1()))
CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def route(**extra: Any) -> dict[str, Any]:
    return {"from": "https://app.example.com", "to": "http://app:8080", **extra}


def problems(raw: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {}, BASE)
    return [str(p) for p in caught.value.problems]


def test_defaults() -> None:
    config = parse_config({"routes": [route()]}, {}, BASE)
    assert config.signing_key is None
    assert config.jwt_claims_headers == ()
    assert config.jwt_issuer_format == "hostOnly"
    assert config.jwt_groups_filter == ()
    assert config.routes[0].jwt_issuer_format is None
    assert config.jwt_issuer_format_for(config.routes[0]) == "hostOnly"
    assert config.jwt_groups_filter_for(config.routes[0]) == frozenset()


# --- signing_key -------------------------------------------------------------------


def test_signing_key_inline_base64_or_pem_block_with_several_keys() -> None:
    bundle = EC_PEM + ED_PEM
    for value in (b64(bundle), bundle.decode()):
        config = parse_config({"signing_key": value}, {}, BASE)
        assert config.signing_key == Source(None, bundle)
    assert config.signing_key is not None and config.signing_key.data is not None
    assert [k.alg for k in SigningKeys.from_pem(config.signing_key.data).keys] == ["ES256", "EdDSA"]


def test_signing_key_from_the_environment() -> None:
    config = parse_config({}, {"SIGNING_KEY": b64(EC_PEM)}, BASE)
    assert config.signing_key == Source(None, EC_PEM)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b64(P384_PEM), "signing_key: key 1: EC curve secp384r1 is not supported"),
        (b64(EC_PEM + P384_PEM), "signing_key: key 2: EC curve secp384r1 is not supported"),
        (b64(CERT_PEM), "signing_key: holds no PEM private key (found CERTIFICATE)"),
        ("not base64!", "signing_key: not base64-encoded PEM (use signing_key_file for a path)"),
        (42, "signing_key: expected base64-encoded PEM, got integer"),
        (
            b64(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            "signing_key: key 1 is not a readable private key",
        ),
    ],
)
def test_bad_signing_key_is_reported_at_its_key(value: Any, message: str) -> None:
    (problem,) = problems({"signing_key": value})
    assert problem.startswith(message)


def test_signing_key_and_file_together_are_refused() -> None:
    assert problems({"signing_key": b64(EC_PEM), "signing_key_file": "k.pem"}) == [
        "signing_key: set either signing_key or signing_key_file, not both"
    ]


def test_signing_key_file_is_read_and_checked(tmp_path: Path) -> None:
    (tmp_path / "good.pem").write_bytes(EC_PEM)
    (tmp_path / "bad.pem").write_bytes(P384_PEM)
    good = tmp_path / "good.yaml"
    good.write_text("signing_key_file: good.pem\n")
    config = load_config(str(good), {})
    assert config.signing_key == Source(str(tmp_path / "good.pem"), EC_PEM)

    bad = tmp_path / "bad.yaml"
    bad.write_text("signing_key_file: bad.pem\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(bad), {})
    (problem,) = caught.value.problems
    assert problem.path == "signing_key_file"
    assert problem.message.startswith(f"{tmp_path / 'bad.pem'}: key 1: EC curve secp384r1")


def test_missing_signing_key_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("signing_key_file: nowhere.pem\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), {})
    assert [p.path for p in caught.value.problems] == ["signing_key_file"]


# --- jwt_claims_headers ------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [["email", "groups", "family_name"], "email,groups family_name", "email, groups,,family_name"],
)
def test_claims_headers_list_and_string_forms(value: Any) -> None:
    config = parse_config({"jwt_claims_headers": value}, {}, BASE)
    assert config.jwt_claims_headers == (
        ("X-Pomerium-Claim-Email", "email"),
        ("X-Pomerium-Claim-Groups", "groups"),
        ("X-Pomerium-Claim-Family_name", "family_name"),
    )


def test_claims_headers_map_form_keeps_header_names_and_order() -> None:
    raw = {"jwt_claims_headers": {"X-Email": "email", "X-Roles": "https://example.com/roles"}}
    config = parse_config(raw, {}, BASE)
    assert config.jwt_claims_headers == (
        ("X-Email", "email"),
        ("X-Roles", "https://example.com/roles"),
    )


def test_claims_headers_from_the_environment() -> None:
    config = parse_config({}, {"JWT_CLAIMS_HEADERS": "email,groups"}, BASE)
    assert [claim for _, claim in config.jwt_claims_headers] == ["email", "groups"]


def test_claims_headers_repeated_claim_is_one_header() -> None:
    config = parse_config({"jwt_claims_headers": ["email", "email"]}, {}, BASE)
    assert config.jwt_claims_headers == (("X-Pomerium-Claim-Email", "email"),)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            42,
            "jwt_claims_headers: expected a list of claim names or a mapping of header name "
            "to claim name, got integer 42",
        ),
        (["email", 3], "jwt_claims_headers: item 1 must be a claim name, got integer 3"),
        (
            ["https://example.com/roles"],
            "jwt_claims_headers: claim 'https://example.com/roles' does not make a valid header "
            "name",
        ),
        ({"X Email": "email"}, "jwt_claims_headers: string 'X Email' is not a valid HTTP header"),
        ({"X-Email": ""}, "jwt_claims_headers: the claim for X-Email must be a claim name"),
        (
            {"X-Email": "email", "x-email": "mail"},
            "jwt_claims_headers: header x-email is named twice (also as X-Email)",
        ),
    ],
)
def test_bad_claims_headers_are_reported(value: Any, message: str) -> None:
    (problem,) = problems({"jwt_claims_headers": value})
    assert problem.startswith(message)


# --- jwt_issuer_format -------------------------------------------------------------


def test_issuer_format_global_and_per_route() -> None:
    raw = {
        "jwt_issuer_format": "uri",
        "routes": [route(), route(jwt_issuer_format="hostOnly")],
    }
    config = parse_config(raw, {}, BASE)
    assert config.jwt_issuer_format == "uri"
    assert [config.jwt_issuer_format_for(r) for r in config.routes] == ["uri", "hostOnly"]
    assert parse_config({}, {"JWT_ISSUER_FORMAT": "uri"}, BASE).jwt_issuer_format == "uri"


def test_bad_issuer_formats_are_reported_with_their_paths() -> None:
    raw = {"jwt_issuer_format": "url", "routes": [route(jwt_issuer_format=True)]}
    assert problems(raw) == [
        "jwt_issuer_format: must be hostOnly or uri, got 'url'",
        "routes[0].jwt_issuer_format: expected a string, got boolean",
    ]


# --- jwt_groups_filter -------------------------------------------------------------


def test_groups_filter_route_is_added_to_global() -> None:
    raw = {
        "jwt_groups_filter": ["admins", "eng"],
        "routes": [
            route(),
            route(jwt_groups_filter=["ops", "eng"]),
            route(jwt_groups_filter="x,y"),
        ],
    }
    config = parse_config(raw, {}, BASE)
    assert config.jwt_groups_filter == ("admins", "eng")
    assert config.routes[1].jwt_groups_filter == ("ops", "eng")
    assert [config.jwt_groups_filter_for(r) for r in config.routes] == [
        frozenset({"admins", "eng"}),
        frozenset({"admins", "eng", "ops"}),
        frozenset({"admins", "eng", "x", "y"}),
    ]


def test_groups_filter_only_on_a_route() -> None:
    config = parse_config({"routes": [route(jwt_groups_filter=["ops"])]}, {}, BASE)
    assert config.jwt_groups_filter_for(config.routes[0]) == frozenset({"ops"})


def test_groups_filter_from_the_environment() -> None:
    config = parse_config({}, {"JWT_GROUPS_FILTER": "a, b"}, BASE)
    assert config.jwt_groups_filter == ("a", "b")


def test_bad_groups_filters_are_reported_with_their_paths() -> None:
    raw = {
        "jwt_groups_filter": {"admins": True},
        "routes": [route(jwt_groups_filter=["ok", 7]), route(jwt_groups_filter=[" "])],
    }
    assert problems(raw) == [
        "jwt_groups_filter: expected a list of strings, got mapping",
        "routes[0].jwt_groups_filter: expected a list of strings: item 1 is integer 7",
        "routes[1].jwt_groups_filter: group names must not be empty",
    ]


def test_unknown_key_suggests_the_jwt_key() -> None:
    assert problems({"jwt_claim_headers": ["email"]}) == [
        'jwt_claim_headers: unknown key (did you mean "jwt_claims_headers"?)'
    ]
