"""Downstream mTLS configuration: downstream_mtls, the older client_ca and route keys."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.commands import check
from shared.config import (
    ENFORCEMENT_MODES,
    SAN_KINDS,
    Config,
    ConfigError,
    DownstreamMTLS,
    Route,
    SanMatcher,
    Source,
    load_config,
    parse_config,
)
from shared.config.parse import parse_config_partial
from shared.config.policies import compile_routes
from shared.policy import ClientCertView, PolicyInput

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def make_ca(name: str = "Test Client CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_crl(key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> bytes:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(NOW - dt.timedelta(hours=1))
        .next_update(NOW + dt.timedelta(days=7))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(42).revocation_date(NOW).build()
        )
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.PEM)


CA_KEY, CA_CERT = make_ca()
CA_PEM = CA_CERT.public_bytes(serialization.Encoding.PEM)
OTHER_CA_PEM = make_ca("Other CA")[1].public_bytes(serialization.Encoding.PEM)
CRL_PEM = make_crl(CA_KEY, CA_CERT)
KEY_PEM = CA_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
FAKE_CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
FAKE_CRL_PEM = b"-----BEGIN X509 CRL-----\nMIIBfake\n-----END X509 CRL-----\n"
ROUTE = {"from": "https://app.example.com", "to": "http://10.0.0.1:8080"}
PUBLIC_ROUTE = {**ROUTE, "allow_public_unauthenticated_access": True}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parse(raw: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    return parse_config(raw, environ or {}, "/etc/vallum")


def problems(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(raw, environ)
    return [str(p) for p in caught.value.problems]


def mtls(**keys: Any) -> dict[str, Any]:
    return {"downstream_mtls": keys}


# --- defaults and parsing -------------------------------------------------------------


def test_defaults() -> None:
    config = parse({})
    assert config.downstream_mtls == DownstreamMTLS()
    assert config.downstream_mtls.ca is None
    assert config.downstream_mtls.crl is None
    assert config.downstream_mtls.enforcement == "policy_with_default_deny"
    assert config.downstream_mtls.match_subject_alt_names == ()
    assert config.downstream_mtls.max_verify_depth == 1
    assert config.client_ca is None
    assert config.notices == ()
    assert ENFORCEMENT_MODES[0] == DownstreamMTLS().enforcement


def test_an_empty_downstream_mtls_is_unset() -> None:
    assert parse({"downstream_mtls": None}).downstream_mtls == DownstreamMTLS()
    assert parse({"downstream_mtls": {}}).downstream_mtls == DownstreamMTLS()


def test_every_key_parses() -> None:
    config = parse(
        mtls(
            ca=b64(CA_PEM + OTHER_CA_PEM),
            crl=b64(CRL_PEM),
            enforcement="reject_connection",
            match_subject_alt_names=[
                {"dns": r".*\.corp\.example"},
                {"email": r".*@example\.com"},
                {"ip_address": r"10\..*"},
                {"uri": "spiffe://example/.*"},
                {"user_principal_name": r".*@example\.com"},
            ],
            max_verify_depth=3,
        )
    )
    assert config.downstream_mtls == DownstreamMTLS(
        ca=Source(None, CA_PEM + OTHER_CA_PEM),
        crl=Source(None, CRL_PEM),
        enforcement="reject_connection",
        match_subject_alt_names=(
            SanMatcher("dns", r".*\.corp\.example"),
            SanMatcher("email", r".*@example\.com"),
            SanMatcher("ip_address", r"10\..*"),
            SanMatcher("uri", "spiffe://example/.*"),
            SanMatcher("user_principal_name", r".*@example\.com"),
        ),
        max_verify_depth=3,
    )
    assert tuple(m.kind for m in config.downstream_mtls.match_subject_alt_names) == SAN_KINDS


def test_raw_pem_blocks_are_accepted_inline() -> None:
    config = parse(mtls(ca=CA_PEM.decode(), crl=CRL_PEM.decode()))
    assert config.downstream_mtls.ca == Source(None, CA_PEM)
    assert config.downstream_mtls.crl == Source(None, CRL_PEM)


@pytest.mark.parametrize("mode", ENFORCEMENT_MODES)
def test_each_enforcement_mode(mode: str) -> None:
    assert parse(mtls(enforcement=mode)).downstream_mtls.enforcement == mode


@pytest.mark.parametrize(("given", "expected"), [(0, 0), (100, 100), ("2", 2)])
def test_max_verify_depth_range(given: Any, expected: int) -> None:
    assert parse(mtls(max_verify_depth=given)).downstream_mtls.max_verify_depth == expected


def test_file_forms_record_resolved_paths() -> None:
    config = parse({**mtls(ca_file="ca.pem", crl_file="/crl/all.pem"), "routes": [ROUTE]})
    assert config.downstream_mtls.ca == Source("/etc/vallum/ca.pem", None)
    assert config.downstream_mtls.crl == Source("/crl/all.pem", None)


def test_client_ca_inline_file_and_environment() -> None:
    assert parse({"client_ca": b64(CA_PEM)}).client_ca == Source(None, CA_PEM)
    assert parse({"client_ca_file": "ca.pem"}).client_ca == Source("/etc/vallum/ca.pem", None)
    assert parse({}, {"CLIENT_CA": b64(CA_PEM)}).client_ca == Source(None, CA_PEM)
    assert parse({}, {"CLIENT_CA_FILE": "/x/ca.pem"}).client_ca == Source("/x/ca.pem", None)


def test_nested_keys_do_not_come_from_the_environment() -> None:
    config = parse({}, {"DOWNSTREAM_MTLS": "x", "DOWNSTREAM_MTLS_CA": b64(CA_PEM)})
    assert config.downstream_mtls == DownstreamMTLS()


# --- errors ---------------------------------------------------------------------------


def test_unknown_key_suggests_the_nearest() -> None:
    assert problems(mtls(enforcment="policy")) == [
        'downstream_mtls.enforcment: unknown key (did you mean "enforcement"?)'
    ]
    assert problems(mtls(ca_fil="x")) == [
        'downstream_mtls.ca_fil: unknown key (did you mean "ca_file"?)'
    ]
    assert problems({"downstream_mtl": {}}) == [
        'downstream_mtl: unknown key (did you mean "downstream_mtls"?)'
    ]


def test_downstream_mtls_must_be_a_mapping() -> None:
    assert problems({"downstream_mtls": "on"}) == [
        "downstream_mtls: expected a mapping, got string 'on'"
    ]


def test_enforcement_must_be_a_mode() -> None:
    assert problems(mtls(enforcement="deny")) == [
        "downstream_mtls.enforcement: must be one of policy_with_default_deny, policy, "
        "reject_connection; got 'deny'"
    ]
    assert problems(mtls(enforcement=True)) == [
        "downstream_mtls.enforcement: expected a string, got boolean"
    ]


def test_match_subject_alt_names_shape_errors() -> None:
    found = problems(
        mtls(
            match_subject_alt_names=[
                {"dns": ".*"},
                "dns: .*",
                {"dns": ".*", "email": ".*"},
                {},
                {"dsn": ".*"},
                {"uri": 7},
            ]
        )
    )
    assert [p.split(": ", 1)[0] for p in found] == [
        "downstream_mtls.match_subject_alt_names[1]",
        "downstream_mtls.match_subject_alt_names[2]",
        "downstream_mtls.match_subject_alt_names[3]",
        "downstream_mtls.match_subject_alt_names[4]",
        "downstream_mtls.match_subject_alt_names[5].uri",
    ]
    assert "must be a mapping with exactly one key" in found[0]
    assert "got string 'dns: .*'" in found[0]
    assert "got 2 keys (dns, email)" in found[1]
    assert "got 0 keys" in found[2]
    assert "unknown SAN type 'dsn' (did you mean \"dns\"?)" in found[3]
    for kind in SAN_KINDS:
        assert kind in found[0]
    assert found[4].endswith("expected a string, got integer 7")


def test_match_subject_alt_names_invalid_regex() -> None:
    found = problems(mtls(match_subject_alt_names=[{"email": ".*"}, {"uri": "x"}, {"dns": "(a"}]))
    assert len(found) == 1
    assert found[0].startswith(
        "downstream_mtls.match_subject_alt_names[2].dns: invalid regular expression: "
    )


def test_match_subject_alt_names_must_be_a_list() -> None:
    assert problems(mtls(match_subject_alt_names={"dns": ".*"})) == [
        "downstream_mtls.match_subject_alt_names: expected a list of "
        "{SAN type: regular expression} mappings, got mapping"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (101, "must be between 0 and 100, got 101"),
        (-1, "must be between 0 and 100, got -1"),
        ("deep", "expected an integer, got string 'deep'"),
        (1.5, "expected an integer, got number 1.5"),
    ],
)
def test_max_verify_depth_errors(value: Any, message: str) -> None:
    assert problems(mtls(max_verify_depth=value)) == [
        f"downstream_mtls.max_verify_depth: {message}"
    ]


def test_ca_and_ca_file_not_both() -> None:
    assert problems(mtls(ca=b64(CA_PEM), ca_file="ca.pem")) == [
        "downstream_mtls.ca: set either ca or ca_file, not both"
    ]
    assert problems(mtls(crl=b64(CRL_PEM), crl_file="crl.pem")) == [
        "downstream_mtls.crl: set either crl or crl_file, not both"
    ]


@pytest.mark.parametrize(
    ("legacy", "environ", "path"),
    [
        ({"client_ca": b64(CA_PEM)}, {}, "client_ca"),
        ({"client_ca_file": "old.pem"}, {}, "client_ca_file"),
        ({}, {"CLIENT_CA": b64(CA_PEM)}, "CLIENT_CA (environment)"),
    ],
)
def test_client_ca_with_downstream_mtls_ca_is_refused(
    legacy: dict[str, str], environ: dict[str, str], path: str
) -> None:
    for current in ({"ca": b64(CA_PEM)}, {"ca_file": "ca.pem"}):
        found = problems({**legacy, "downstream_mtls": current}, environ)
        assert found == [
            f"{path}: set one of downstream_mtls.ca and client_ca, not both "
            "(downstream_mtls.ca is the current name; client_ca is Pomerium's older one)"
        ]


def test_ca_must_hold_a_parseable_certificate() -> None:
    found = problems(mtls(ca=b64(FAKE_CERT_PEM)))
    assert len(found) == 1
    assert found[0].startswith("downstream_mtls.ca: holds a certificate that does not parse (")
    assert problems(mtls(ca=b64(CRL_PEM))) == [
        "downstream_mtls.ca: holds no PEM certificate (found X509 CRL)"
    ]
    assert problems({"client_ca": b64(FAKE_CERT_PEM)})[0].startswith(
        "client_ca: holds a certificate that does not parse"
    )
    route = {**ROUTE, "tls_downstream_client_ca": b64(FAKE_CERT_PEM)}
    assert problems({"routes": [route]})[0].startswith(
        "routes[0].tls_downstream_client_ca: holds a certificate that does not parse"
    )


def test_crl_refuses_a_certificate_or_key_given_by_mistake() -> None:
    assert problems(mtls(crl=b64(CA_PEM))) == [
        "downstream_mtls.crl: holds no PEM CRL (expected -----BEGIN X509 CRL-----, "
        "found CERTIFICATE)"
    ]
    assert problems(mtls(crl=b64(KEY_PEM))) == [
        "downstream_mtls.crl: holds no PEM CRL (expected -----BEGIN X509 CRL-----, "
        "found PRIVATE KEY)"
    ]
    assert problems(mtls(crl=b64(CRL_PEM + CA_PEM))) == [
        "downstream_mtls.crl: holds CERTIFICATE besides the CRLs; "
        "give a file of X509 CRL blocks only"
    ]


def test_every_crl_block_must_parse() -> None:
    other_key, other_ca = make_ca("Other CA")
    assert parse(mtls(crl=b64(CRL_PEM + make_crl(other_key, other_ca)))).downstream_mtls.crl
    found = problems(mtls(crl=b64(CRL_PEM + FAKE_CRL_PEM)))
    assert len(found) == 1
    assert found[0].startswith("downstream_mtls.crl: CRL 2 of 2 does not parse (")
    truncated = CRL_PEM.split(b"-----END")[0]
    assert problems(mtls(crl=truncated.decode())) == [
        "downstream_mtls.crl: holds an X509 CRL block without its -----END X509 CRL----- line"
    ]


def test_crl_hint_names_the_file_form() -> None:
    assert problems(mtls(crl="/etc/crl.pem")) == [
        "downstream_mtls.crl: not base64-encoded PEM (use crl_file for a path)"
    ]


# --- files, through load_config ---------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_ca_file_and_crl_file_are_read_and_keep_their_paths(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki/clients.pem").write_bytes(CA_PEM)
    (tmp_path / "pki/clients.crl").write_bytes(CRL_PEM)
    path = write_config(
        tmp_path,
        "downstream_mtls:\n  ca_file: pki/clients.pem\n  crl_file: pki/clients.crl\n",
    )
    config = load_config(str(path), {})
    assert config.downstream_mtls.ca == Source(str(tmp_path / "pki/clients.pem"), CA_PEM)
    assert config.downstream_mtls.crl == Source(str(tmp_path / "pki/clients.crl"), CRL_PEM)


def test_client_ca_file_is_read_from_the_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(CA_PEM)
    path = write_config(tmp_path, "client_ca_file: ca.pem\n")
    assert load_config(str(path), {}).client_ca == Source(str(tmp_path / "ca.pem"), CA_PEM)
    empty = write_config(tmp_path, "{}\n")
    environ = {"CLIENT_CA_FILE": str(tmp_path / "ca.pem")}
    assert load_config(str(empty), environ).client_ca == Source(str(tmp_path / "ca.pem"), CA_PEM)


def load_problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ or {})
    return [str(p) for p in caught.value.problems]


def test_file_problems_name_the_full_key_path(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_bytes(CA_PEM)
    (tmp_path / "fake.pem").write_bytes(FAKE_CERT_PEM)
    (tmp_path / "bad.crl").write_bytes(CRL_PEM + FAKE_CRL_PEM)
    path = write_config(
        tmp_path,
        "downstream_mtls:\n  ca_file: fake.pem\n  crl_file: cert.pem\n"
        "routes:\n  - from: https://app.example.com\n    to: http://10.0.0.1\n"
        "    tls_downstream_client_ca_file: missing.pem\n",
    )
    found = load_problems(path)
    assert [p.split(": ", 1)[0] for p in found] == [
        "downstream_mtls.ca_file",
        "downstream_mtls.crl_file",
        "routes[0].tls_downstream_client_ca_file",
    ]
    assert found[0].startswith(
        f"downstream_mtls.ca_file: {tmp_path / 'fake.pem'}: holds a certificate that does not "
    )
    assert found[1] == (
        f"downstream_mtls.crl_file: {tmp_path / 'cert.pem'}: holds no PEM CRL "
        "(expected -----BEGIN X509 CRL-----, found CERTIFICATE)"
    )
    assert "cannot read" in found[2] and "missing.pem" in found[2]
    bad = write_config(tmp_path, "downstream_mtls:\n  crl_file: bad.crl\n")
    (message,) = load_problems(bad)
    assert message.startswith(
        f"downstream_mtls.crl_file: {tmp_path / 'bad.crl'}: CRL 2 of 2 does not parse"
    )


def test_client_ca_file_problem_names_the_variable(tmp_path: Path) -> None:
    empty = write_config(tmp_path, "{}\n")
    (message,) = load_problems(empty, {"CLIENT_CA_FILE": str(tmp_path / "none.pem")})
    assert message.startswith("CLIENT_CA_FILE (environment): cannot read")


# --- notices ----------------------------------------------------------------------------


def test_client_ca_is_deprecated() -> None:
    assert parse({"client_ca": b64(CA_PEM)}).notices == (
        "client_ca: deprecated (Pomerium's older name); use downstream_mtls.ca",
    )
    assert parse({"client_ca_file": "ca.pem"}).notices == (
        "client_ca_file: deprecated (Pomerium's older name); use downstream_mtls.ca_file",
    )
    assert parse({}, {"CLIENT_CA": b64(CA_PEM)}).notices == (
        "CLIENT_CA (environment): deprecated (Pomerium's older name); use downstream_mtls.ca",
    )


def test_route_client_ca_is_honoured_with_a_notice() -> None:
    routes = [
        ROUTE,
        {**ROUTE, "from": "https://b.example.com", "tls_downstream_client_ca": b64(CA_PEM)},
        {**ROUTE, "from": "https://c.example.com", "tls_downstream_client_ca_file": "c.pem"},
    ]
    notices = parse({"routes": routes}).notices
    assert len(notices) == 2
    assert notices[0].startswith("routes[1].tls_downstream_client_ca: ")
    assert notices[1].startswith("routes[2].tls_downstream_client_ca_file: ")
    for notice, host in zip(notices, ("b.example.com", "c.example.com"), strict=True):
        assert "Pomerium's older per-route key" in notice
        assert "downstream_mtls.ca" in notice
        assert "this route's own client CA" in notice
        assert f"only {host} asks for certificates from it" in notice


def test_settings_without_a_ca_have_no_effect() -> None:
    settings: dict[str, Any] = {
        "crl_file": "crl.pem",
        "enforcement": "policy",
        "match_subject_alt_names": [{"dns": ".*"}],
        "max_verify_depth": 2,
    }
    assert parse({"downstream_mtls": settings}).notices == tuple(
        f"downstream_mtls.{name}: has no effect until a client CA is set "
        "(downstream_mtls.ca or downstream_mtls.ca_file)"
        for name in settings
    )
    # A CA anywhere gives them their effect.
    with_ca: list[dict[str, Any]] = [
        {"downstream_mtls": {**settings, "ca": b64(CA_PEM)}},
        {"downstream_mtls": settings, "client_ca": b64(CA_PEM)},
        {
            "downstream_mtls": settings,
            "routes": [{**ROUTE, "tls_downstream_client_ca": b64(CA_PEM)}],
        },
    ]
    for raw in with_ca:
        assert not any("no effect" in n for n in parse(raw).notices)


def test_notices_come_from_the_partial_parser_too() -> None:
    config, found = parse_config_partial({"client_ca": b64(CA_PEM)}, {}, "/")
    assert found == []
    assert config.notices == (
        "client_ca: deprecated (Pomerium's older name); use downstream_mtls.ca",
    )


def test_vallum_check_prints_notices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ca.pem").write_bytes(CA_PEM)
    path = write_config(tmp_path, "client_ca_file: ca.pem\n")
    assert check.handle(argparse.Namespace(config=str(path))) == 0
    err = capsys.readouterr().err
    assert err == (
        "warning: client_ca_file: deprecated (Pomerium's older name); use downstream_mtls.ca_file\n"
    )


# --- which CA applies -------------------------------------------------------------------


def test_client_ca_for_precedence() -> None:
    route_ca, global_ca, legacy_ca = (Source(f"/{n}.pem", None) for n in ("r", "g", "l"))
    plain_route = Route(from_url="https://a.example.com")
    own_route = Route(from_url="https://b.example.com", tls_downstream_client_ca=route_ca)

    config = Config()
    assert config.client_ca_for(plain_route) is None
    assert not config.requires_client_certificate(plain_route)
    assert config.client_ca_for(own_route) is route_ca
    assert config.requires_client_certificate(own_route)

    config = Config(client_ca=legacy_ca)
    assert config.client_ca_for(plain_route) is legacy_ca
    assert config.client_ca_for(own_route) is route_ca

    config = Config(downstream_mtls=DownstreamMTLS(ca=global_ca), client_ca=legacy_ca)
    assert config.client_ca_for(plain_route) is global_ca
    assert config.client_ca_for(own_route) is route_ca
    assert config.requires_client_certificate(plain_route)


# --- the default deny ---------------------------------------------------------------------


def no_certificate(host: str = "app.example.com") -> PolicyInput:
    return PolicyInput(
        method="GET",
        path="/",
        host=host,
        headers={},
        source_ip="10.1.2.3",
        now=NOW,
        client_cert=ClientCertView(presented=False),
    )


def decisions(raw: dict[str, Any]) -> list[str]:
    config = parse(raw)
    compiled, found = compile_routes(config.routes, config)
    assert found == []
    out = []
    for policy in compiled:
        decision = policy.evaluate(no_certificate())
        if decision.allowed:
            out.append("allow")
        else:
            assert decision.needs_client_certificate
            out.append("certificate")
    return out


@pytest.mark.parametrize(
    ("enforcement", "expected"),
    [
        (None, "certificate"),
        ("policy_with_default_deny", "certificate"),
        ("reject_connection", "certificate"),
        ("policy", "allow"),
    ],
)
def test_default_deny_follows_enforcement(enforcement: str | None, expected: str) -> None:
    settings: dict[str, Any] = {"ca": b64(CA_PEM)}
    if enforcement is not None:
        settings["enforcement"] = enforcement
    assert decisions({"downstream_mtls": settings, "routes": [PUBLIC_ROUTE]}) == [expected]
    # The older global key means the same.
    legacy = {k: v for k, v in settings.items() if k != "ca"}
    raw = {"client_ca": b64(CA_PEM), "downstream_mtls": legacy, "routes": [PUBLIC_ROUTE]}
    assert decisions(raw) == [expected]


def test_default_deny_only_where_a_client_ca_applies() -> None:
    routes = [
        PUBLIC_ROUTE,
        {**PUBLIC_ROUTE, "from": "https://b.example.com", "tls_downstream_client_ca": b64(CA_PEM)},
    ]
    assert decisions({"routes": routes}) == ["allow", "certificate"]
    mode = {"enforcement": "policy"}
    assert decisions({"downstream_mtls": mode, "routes": routes}) == ["allow", "allow"]
    # Without any CA, no mode adds the deny.
    for enforcement in ENFORCEMENT_MODES:
        raw = {"downstream_mtls": {"enforcement": enforcement}, "routes": [PUBLIC_ROUTE]}
        assert decisions(raw) == ["allow"]


def test_policy_mode_leaves_the_route_policy_in_charge() -> None:
    route = {
        **PUBLIC_ROUTE,
        "policy": [{"deny": {"or": [{"invalid_client_certificate": True}]}}],
    }
    raw = {"downstream_mtls": {"ca": b64(CA_PEM), "enforcement": "policy"}, "routes": [route]}
    assert decisions(raw) == ["certificate"]


def test_insecure_server_with_a_client_ca_is_warned_about() -> None:
    notices = parse({"insecure_server": True, "downstream_mtls": {"ca": b64(CA_PEM)}}).notices
    assert len(notices) == 1
    assert notices[0].startswith("insecure_server: ")
    assert "495" in notices[0]
    assert parse({"insecure_server": True}).notices == ()
