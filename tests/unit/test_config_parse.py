"""parse_config: the pure whole-configuration parser (no files, no os.environ)."""

from __future__ import annotations

import base64
import dataclasses
import pickle
from typing import Any

import pytest

from shared.config import (
    ALL_SERVICES,
    Address,
    CertificatePair,
    ConfigError,
    DirectResponse,
    Problem,
    Redirect,
    Route,
    Source,
    WeightedURL,
    parse_config,
)

CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
KEY_PEM = b"-----BEGIN PRIVATE KEY-----\nMIGHfake\n-----END PRIVATE KEY-----\n"
SECRET = bytes(range(32))
SECRET_B64 = base64.b64encode(SECRET).decode()
BASE = "/etc/vallum"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def split_mode(**extra: Any) -> dict[str, Any]:
    """A valid configuration for a proxy-only process."""
    return {
        "services": "proxy",
        "shared_secret": SECRET_B64,
        "cookie_secret": SECRET_B64,
        "certificate_authority": b64(CERT_PEM),
        "internal_certificate": b64(CERT_PEM),
        "internal_certificate_key": b64(KEY_PEM),
        **extra,
    }


def route(**extra: Any) -> dict[str, Any]:
    return {"from": "https://app.example.com", "to": "http://app:8080", **extra}


def problems(raw: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {}, BASE)
    return [str(p) for p in caught.value.problems]


def paths(raw: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {}, BASE)
    return [p.path for p in caught.value.problems]


def test_empty_config_is_all_in_one_with_defaults() -> None:
    config = parse_config({}, {}, BASE)
    assert config.services == ALL_SERVICES
    assert config.all_in_one
    assert config.address == Address("", 443)
    assert config.grpc_address is None
    assert config.insecure_server is False
    assert config.authorize_service_url == ("https://127.0.0.1:5443",)
    assert config.databroker_service_url == ("https://127.0.0.1:5444",)
    assert config.shared_secret is None
    assert config.trust_domain == "vallum.internal"
    assert config.data_dir == "/var/lib/vallum"
    assert config.log_level == "info"
    assert config.routes == ()
    assert config.base_dir == BASE
    assert config.source_path is None


def test_a_full_split_mode_config_parses_to_typed_values() -> None:
    raw = split_mode(
        services=["authorize", "proxy"],
        address="0.0.0.0:8443",
        grpc_address="[::1]:5443",
        http_redirect_addr=":80",
        insecure_server=False,
        authenticate_service_url="https://authenticate.example.com/",
        authorize_service_url="https://authz-1:5443,https://authz-2:5443",
        databroker_service_url=["https://authn:5444"],
        certificate_file="tls/cert.pem",
        certificate_key_file="/keys/key.pem",
        certificates=[{"cert": b64(CERT_PEM), "key": "extra/key.pem"}],
        trust_domain="corp.example",
        data_dir="state",
        log_level="warn",
        pass_identity_headers=True,
        routes=[route()],
    )
    config = parse_config(raw, {}, BASE)
    assert config.services == frozenset({"authorize", "proxy"})
    assert not config.all_in_one
    assert config.address == Address("0.0.0.0", 8443)
    assert config.grpc_address == Address("::1", 5443)
    assert config.http_redirect_addr == Address("", 80)
    assert config.authenticate_service_url == "https://authenticate.example.com"
    assert config.authorize_service_url == ("https://authz-1:5443", "https://authz-2:5443")
    assert config.databroker_service_url == ("https://authn:5444",)
    assert config.shared_secret == SECRET
    assert config.cookie_secret == SECRET
    assert config.certificate == Source("/etc/vallum/tls/cert.pem", None)
    assert config.certificate_key == Source("/keys/key.pem", None)
    assert config.certificates == (
        CertificatePair(Source(None, CERT_PEM), Source("/etc/vallum/extra/key.pem", None)),
    )
    assert config.certificate_authority == Source(None, CERT_PEM)
    assert config.internal_certificate_key == Source(None, KEY_PEM)
    assert config.trust_domain == "corp.example"
    assert config.data_dir == "/etc/vallum/state"
    assert config.log_level == "warning"
    assert config.pass_identity_headers is True
    assert config.routes[0].from_url == "https://app.example.com"
    assert config.routes[0].to == (WeightedURL("http://app:8080", 1),)


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    raw = split_mode(
        address="localhost",
        log_level="loud",
        routes=[
            route(),
            route(timeout=30),
            route(to="ftp://x", regex="(unclosed"),
        ],
    )
    assert sorted(paths(raw)) == sorted(
        ["address", "log_level", "routes[1].timeout", "routes[2].to", "routes[2].regex"]
    )


def test_problem_and_error_formatting() -> None:
    found = problems(split_mode(routes=[route(), route(), route(to="ftp://x")]))
    assert found == ["routes[2].to: must be an http or https URL, got 'ftp://x'"]
    error = ConfigError([Problem("a", "one"), Problem("b[0].c", "two")])
    assert str(error) == "a: one\nb[0].c: two"
    assert str(Problem("", "top")) == "top"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"adress": ":443"}, 'adress: unknown key (did you mean "address"?)'),
        (
            {"shared_secret_fil": "x"},
            'shared_secret_fil: unknown key (did you mean "shared_secret_file"?)',
        ),
        ({"Log_Level": "info"}, 'Log_Level: unknown key (did you mean "log_level"?)'),
        ({"zzzz": 1}, "zzzz: unknown key"),
        ({"routes": [route(form="x")]}, 'routes[0].form: unknown key (did you mean "from"?)'),
        (
            {"routes": [{"from": "https://a.example.com", "redirect": {"https_redirct": True}}]},
            'routes[0].redirect.https_redirct: unknown key (did you mean "https_redirect"?)',
        ),
        (
            {"certificates": [{"cert": b64(CERT_PEM), "key": b64(KEY_PEM), "kye": "x"}]},
            'certificates[0].kye: unknown key (did you mean "key"?)',
        ),
    ],
)
def test_unknown_keys_suggest_the_nearest_known_key(raw: dict[str, Any], expected: str) -> None:
    assert problems(raw) == [expected]


def test_type_errors_name_expected_and_given() -> None:
    found = problems({"insecure_server": "sometimes", "routes": {"from": "x"}, 5: "x"})
    assert "keys must be strings, got integer 5" in found
    assert "insecure_server: expected a boolean (true or false), got string 'sometimes'" in found
    assert "routes: expected a list of routes, got mapping" in found


def test_top_level_must_be_a_mapping() -> None:
    found = problems(["routes"])
    assert found == ["the top level must be a mapping of keys to values, got list"]


def test_null_values_mean_unset() -> None:
    config = parse_config({"log_level": None, "routes": [route(timeout=None)]}, {}, BASE)
    assert config.log_level == "info"
    assert config.routes[0].timeout == 30.0


# --- environment -----------------------------------------------------------------


def test_environment_overrides_the_file() -> None:
    environ = {
        "LOG_LEVEL": "error",
        "ADDRESS": "127.0.0.1:8443",
        "SERVICES": "authorize,proxy",
        "INSECURE_SERVER": "yes",
        "AUTHORIZE_SERVICE_URL": "https://a:1,https://b:2",
        "SHARED_SECRET": base64.urlsafe_b64encode(b"\x01" * 32).decode(),
        "DATA_DIR": "data",
        "PASS_IDENTITY_HEADERS": "0",
    }
    raw = split_mode(log_level="debug", address=":443", services="all", data_dir="/x")
    config = parse_config(raw, environ, BASE)
    assert config.log_level == "error"
    assert config.address == Address("127.0.0.1", 8443)
    assert config.services == frozenset({"authorize", "proxy"})
    assert config.insecure_server is True
    assert config.authorize_service_url == ("https://a:1", "https://b:2")
    assert config.shared_secret == b"\x01" * 32
    assert config.data_dir == "/etc/vallum/data"
    assert config.pass_identity_headers is False


def test_unrelated_empty_and_non_scalar_environment_variables_are_ignored() -> None:
    environ = {"PATH": "/bin", "FOO": "bar", "ROUTES": "x", "CERTIFICATES": "y", "LOG_LEVEL": ""}
    config = parse_config({"log_level": "debug"}, environ, BASE)
    assert config.log_level == "debug"
    assert config.routes == ()


def test_environment_problems_name_the_variable() -> None:
    environ = {"SHARED_SECRET": b64(b"short"), "INSECURE_SERVER": "maybe", "SERVICES": "web"}
    assert sorted(problems({}, environ)) == [
        "INSECURE_SERVER (environment): expected a boolean (true or false), got string 'maybe'",
        "SERVICES (environment): unknown service 'web' "
        "(valid: all, authenticate, authorize, proxy, sidecar)",
        "SHARED_SECRET (environment): must decode to at least 32 bytes, got 5 "
        "(generate one with: head -c32 /dev/urandom | base64)",
    ]


def test_environment_inline_value_replaces_a_file_path_from_the_file() -> None:
    raw = {"certificate_file": "cert.pem", "certificate_key_file": "key.pem"}
    config = parse_config(raw, {"CERTIFICATE": b64(CERT_PEM)}, BASE)
    assert config.certificate == Source(None, CERT_PEM)
    assert config.certificate_key == Source("/etc/vallum/key.pem", None)


def test_environment_file_variable_is_resolved_and_both_forms_in_env_conflict() -> None:
    config = parse_config({}, {"SHARED_SECRET_FILE": "secret.b64"}, BASE)
    assert config.shared_secret_file == "/etc/vallum/secret.b64"
    both = {"COOKIE_SECRET": SECRET_B64, "COOKIE_SECRET_FILE": "/s"}
    assert problems({}, both) == [
        "COOKIE_SECRET (environment): set either cookie_secret or cookie_secret_file, not both"
    ]


# --- secrets and PEM sources -----------------------------------------------------


def test_secret_and_secret_file_together_is_a_problem() -> None:
    raw = {"shared_secret": SECRET_B64, "shared_secret_file": "s.b64"}
    assert problems(raw) == [
        "shared_secret: set either shared_secret or shared_secret_file, not both"
    ]


def test_secret_values_never_appear_in_messages() -> None:
    short = b64(b"sixteen bytes!!!")
    with pytest.raises(ConfigError) as caught:
        parse_config({"shared_secret": short, "cookie_secret": "%%%" + short}, {}, BASE)
    text = str(caught.value)
    assert len(caught.value.problems) == 2
    assert short not in text


def test_secret_bytes_are_kept_out_of_repr() -> None:
    config = parse_config({"shared_secret": SECRET_B64}, {}, BASE)
    assert SECRET_B64 not in repr(config)
    assert repr(SECRET) not in repr(config)


def test_inline_certificate_must_be_base64_pem() -> None:
    raw = {"certificate": "/etc/ssl/cert.pem", "certificate_key": b64(KEY_PEM)}
    assert problems(raw) == [
        "certificate: not base64-encoded PEM (use certificate_file for a path)"
    ]


def test_inline_and_file_certificates() -> None:
    config = parse_config(
        {"certificate": b64(CERT_PEM), "certificate_key_file": "~/key.pem"},
        {"HOME": "/home/vallum"},
        BASE,
    )
    assert config.certificate == Source(None, CERT_PEM)
    assert config.certificate_key == Source("/home/vallum/key.pem", None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"certificate": b64(CERT_PEM)}, "certificate_key: required when certificate is set"),
        ({"certificate_key_file": "k.pem"}, "certificate: required when certificate_key is set"),
        (
            {"certificates": [{"cert": "c.pem"}]},
            "certificates[0].key: required",
        ),
        (
            {"routes": [route(tls_client_cert_file="c.pem")]},
            "routes[0].tls_client_key: required when tls_client_cert is set",
        ),
        (
            {"routes": [route(regex_rewrite_substitution="/x")]},
            "routes[0].regex_rewrite_pattern: required when regex_rewrite_substitution is set",
        ),
    ],
)
def test_pairs_must_come_together(raw: dict[str, Any], expected: str) -> None:
    assert problems(raw) == [expected]


# --- split mode versus all-in-one ------------------------------------------------


def test_split_mode_requires_secrets_and_internal_tls() -> None:
    assert sorted(paths({"services": "authenticate"})) == [
        "certificate_authority",
        "cookie_secret",
        "internal_certificate",
        "internal_certificate_key",
        "shared_secret",
    ]
    assert not parse_config(split_mode(), {}, BASE).all_in_one


def test_split_mode_accepts_file_forms() -> None:
    raw = {
        "services": "authorize",
        "shared_secret_file": "s",
        "cookie_secret_file": "c",
        "certificate_authority_file": "ca.pem",
        "internal_certificate_file": "svc.pem",
        "internal_certificate_key_file": "svc-key.pem",
    }
    config = parse_config(raw, {}, BASE)
    assert config.cookie_secret_file == "/etc/vallum/c"
    assert config.internal_certificate == Source("/etc/vallum/svc.pem", None)


def test_all_in_one_needs_all_internal_tls_keys_or_none() -> None:
    assert parse_config({"services": "all"}, {}, BASE).all_in_one
    assert sorted(paths({"internal_certificate": b64(CERT_PEM)})) == [
        "certificate_authority",
        "internal_certificate_key",
    ]


def test_listing_all_three_services_is_all_in_one() -> None:
    config = parse_config({"services": "proxy,authorize,authenticate"}, {}, BASE)
    assert config.all_in_one


# --- routes ----------------------------------------------------------------------


def test_route_fields_parse() -> None:
    raw = route(
        to=["https://a:8443,3", "https://b:8443"],
        prefix="/api/",
        prefix_rewrite="/",
        host_rewrite_header="X-Host",
        preserve_host_header=True,
        set_request_headers={"X-Env": "prod"},
        remove_request_headers=["X-Debug"],
        set_response_headers={"Strict-Transport-Security": "max-age=63072000"},
        allow_websockets=True,
        timeout="1m",
        idle_timeout="5m",
        policy=[{"allow": {"or": [{"domain": {"is": "example.com"}}]}}],
        allowed_users=["a@example.com"],
        allowed_idp_claims={"groups": ["admins"]},
        tls_custom_ca=b64(CERT_PEM),
        tls_skip_verify=False,
        tls_client_cert=b64(CERT_PEM),
        tls_client_key_file="client-key.pem",
        tls_downstream_client_ca_file="/ca.pem",
        name="api",
        id="r1",
    )
    (parsed,) = parse_config({"routes": [raw]}, {}, BASE).routes
    assert parsed.to == (WeightedURL("https://a:8443", 3), WeightedURL("https://b:8443", 1))
    assert parsed.prefix == "/api/"
    assert parsed.preserve_host_header is True
    assert dict(parsed.set_request_headers) == {"X-Env": "prod"}
    assert parsed.remove_request_headers == ("X-Debug",)
    assert parsed.timeout == 60.0
    assert parsed.idle_timeout == 300.0
    assert parsed.policy[0]["allow"]["or"][0]["domain"]["is"] == "example.com"
    assert isinstance(parsed.policy, tuple)
    assert parsed.allowed_idp_claims["groups"] == ("admins",)
    assert parsed.tls_custom_ca == Source(None, CERT_PEM)
    assert parsed.tls_client_key == Source("/etc/vallum/client-key.pem", None)
    assert parsed.tls_downstream_client_ca == Source("/ca.pem", None)
    assert (parsed.name, parsed.id, parsed.description) == ("api", "r1", None)


def test_route_redirect_and_response_objects() -> None:
    redirect = {"from": "http://a.example.com", "redirect": {"https_redirect": True}}
    response = {"from": "https://b.example.com", "response": {"status": 204}}
    one, two = parse_config({"routes": [redirect, response]}, {}, BASE).routes
    assert one.redirect == Redirect(https_redirect=True)
    assert one.to == ()
    assert two.response == DirectResponse(status=204, body="")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"to": None}, ["routes[0].to: required (or set redirect or response)"]),
        (
            {"redirect": {"host_redirect": "b"}},
            ["routes[0].redirect: not allowed together with to"],
        ),
        (
            {"to": None, "redirect": {"response_code": 200}},
            ["routes[0].redirect.response_code: must be one of 301, 302, 303, 307, 308, got 200"],
        ),
        (
            {"to": None, "redirect": {"path_redirect": "/a", "prefix_rewrite": "/b"}},
            [
                "routes[0].redirect.prefix_rewrite: "
                "set either path_redirect or prefix_rewrite, not both"
            ],
        ),
        ({"to": None, "response": {"body": "x"}}, ["routes[0].response.status: required"]),
        (
            {"to": None, "response": {"status": 600}},
            ["routes[0].response.status: must be between 100 and 599, got 600"],
        ),
        (
            {"prefix": "/a", "path": "/b"},
            ["routes[0].path: set at most one of prefix, path and regex (already has prefix)"],
        ),
        (
            {"to": ["http://a", "ftp://b", "http://c,0"]},
            [
                "routes[0].to[1]: must be an http or https URL, got 'ftp://b'",
                "routes[0].to[2]: weight must be an integer of at least 1, got '0'",
            ],
        ),
        ({"to": []}, ["routes[0].to: must name at least one upstream URL"]),
        ({"from": None}, ["routes[0].from: required"]),
        (
            {"from": "https://app.example.com/admin"},
            [
                "routes[0].from: must not have a path (match paths with prefix, path or regex), "
                "got 'https://app.example.com/admin'"
            ],
        ),
        ({"timeout": 30}, ["routes[0].timeout: use a unit, e.g. 30s (got integer 30)"]),
        (
            {"regex_rewrite_pattern": "(", "regex_rewrite_substitution": "x"},
            [
                "routes[0].regex_rewrite_pattern: invalid regular expression (Python re syntax): "
                "missing ), unterminated subpattern at position 0"
            ],
        ),
        (
            {"from": "tcp+https://db.example.com:5432"},
            ["routes[0].to: a tcp+https route forwards to tcp://host:port, got 'http://app:8080'"],
        ),
        (
            {"to": "tcp://db:5432"},
            ["routes[0].to: must be an http or https URL, got 'tcp://db:5432'"],
        ),
        (
            {"allow_websockets": "sure"},
            ["routes[0].allow_websockets: expected a boolean (true or false), got string 'sure'"],
        ),
    ],
)
def test_route_constraints(extra: dict[str, Any], expected: list[str]) -> None:
    assert problems({"routes": [route(**extra)]}) == expected


def test_tcp_route_forwards_to_tcp() -> None:
    raw = {"from": "tcp+https://db.example.com:5432", "to": "tcp://db:5432"}
    (parsed,) = parse_config({"routes": [raw]}, {}, BASE).routes
    assert parsed.from_url == "tcp+https://db.example.com:5432"


def test_a_route_that_is_not_a_mapping_is_one_problem() -> None:
    assert problems({"routes": ["https://a.example.com"]}) == [
        "routes[0]: expected a mapping, got string 'https://a.example.com'"
    ]


def test_route_identity_headers_inherit_the_global_setting() -> None:
    raw = {
        "pass_identity_headers": True,
        "routes": [route(), route(pass_identity_headers=False)],
    }
    config = parse_config(raw, {}, BASE)
    inherits, overrides = config.routes
    assert inherits.pass_identity_headers is None
    assert config.passes_identity_headers(inherits) is True
    assert config.passes_identity_headers(overrides) is False
    assert parse_config({"routes": [route()]}, {}, BASE).passes_identity_headers(inherits) is False


# --- immutability ----------------------------------------------------------------


def test_config_and_its_parts_are_immutable() -> None:
    raw = {
        "routes": [
            route(set_request_headers={"X-A": "1"}, policy={"allow": {"and": [{"accept": True}]}})
        ]
    }
    config = parse_config(raw, {}, BASE)
    parsed: Route = config.routes[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.log_level = "debug"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.timeout = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.address.port = 80  # type: ignore[misc]
    with pytest.raises(TypeError):
        parsed.set_request_headers["X-B"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        parsed.policy["deny"] = {}
    assert isinstance(config.routes, tuple)
    assert isinstance(config.services, frozenset)


def test_config_values_are_not_aliases_of_the_input() -> None:
    raw_route = route(set_request_headers={"X-A": "1"}, allowed_users=["a@example.com"])
    config = parse_config({"routes": [raw_route]}, {}, BASE)
    raw_route["set_request_headers"]["X-A"] = "changed"
    raw_route["allowed_users"].append("b@example.com")
    assert config.routes[0].set_request_headers["X-A"] == "1"
    assert config.routes[0].allowed_users == ("a@example.com",)


def test_config_error_survives_pickling() -> None:
    error = ConfigError([Problem("routes[0].to", "required")])
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert copy.problems == error.problems
    assert str(copy) == "routes[0].to: required"
