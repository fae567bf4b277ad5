"""Autocert configuration: the autocert_* keys, their checks, notices and derived values."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.config import (
    LETS_ENCRYPT,
    LETS_ENCRYPT_STAGING,
    Config,
    ConfigError,
    Route,
    Source,
    load_config,
    parse_config,
)
from shared.config.autocert import decode_eab_mac_key

BASE = "/etc/vallum"
# Bytes whose base64url needs both - and _, so the URL-safe alphabet is exercised.
MAC_BYTES = b"\xfb\xff\xbf" * 11
MAC_KEY = base64.urlsafe_b64encode(MAC_BYTES).decode().rstrip("=")
ACME = "https://acme.internal:14000/dir"
REDIRECT = {"http_redirect_addr": ":80"}


def make_ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Private ACME CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


CA_PEM = make_ca_pem()
FAKE_CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parse(raw: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    return parse_config(raw, environ or {}, BASE)


def problems(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(raw, environ)
    return [str(p) for p in caught.value.problems]


def on(**keys: Any) -> dict[str, Any]:
    """Autocert on, with HTTP-01 available, so only the notices under test appear."""
    return {"autocert": True, **REDIRECT, **keys}


def route(from_url: str) -> dict[str, Any]:
    return {"from": from_url, "to": "http://10.0.0.1:8080"}


# --- defaults and parsing ---------------------------------------------------------------


def test_defaults() -> None:
    config = parse({})
    assert config.autocert is False
    assert config.autocert_dir is None
    assert config.autocert_ca is None
    assert config.autocert_use_staging is False
    assert config.autocert_email is None
    assert config.autocert_must_staple is False
    assert config.autocert_eab_key_id is None
    assert config.autocert_eab_mac_key is None
    assert config.autocert_eab_mac_key_file is None
    assert config.autocert_trusted_ca is None
    assert config.autocert_directory == "/var/lib/vallum/autocert"
    assert config.acme_directory_url == LETS_ENCRYPT
    assert config.autocert_hosts() == ()
    assert config.notices == ()


def test_every_key_parses() -> None:
    config = parse(
        on(
            autocert_dir="acme",
            autocert_ca=f"  {ACME}  ",
            autocert_email="ops@example.com",
            autocert_must_staple=True,
            autocert_eab_key_id="kid-1",
            autocert_eab_mac_key=MAC_KEY,
            autocert_trusted_ca=b64(CA_PEM),
        )
    )
    assert config.autocert is True
    assert config.autocert_dir == "/etc/vallum/acme"
    assert config.autocert_ca == ACME
    assert config.autocert_email == "ops@example.com"
    assert config.autocert_must_staple is True
    assert config.autocert_eab_key_id == "kid-1"
    assert config.autocert_eab_mac_key == MAC_KEY
    assert config.autocert_trusted_ca == Source(None, CA_PEM)
    assert config.notices == ()


def test_use_staging_and_string_booleans() -> None:
    config = parse({"autocert": "yes", "autocert_use_staging": "true", **REDIRECT})
    assert config.autocert is True
    assert config.autocert_use_staging is True
    assert config.acme_directory_url == LETS_ENCRYPT_STAGING


def test_the_mac_key_is_kept_out_of_repr() -> None:
    config = parse(on(autocert_eab_key_id="kid", autocert_eab_mac_key=MAC_KEY))
    assert MAC_KEY not in repr(config)
    assert "autocert_eab_key_id='kid'" in repr(config)


def test_mac_key_with_or_without_padding() -> None:
    raw = b"0123456789abcdef!"  # 17 bytes: base64 needs padding
    padded = base64.urlsafe_b64encode(raw).decode()
    assert padded.endswith("=")
    assert decode_eab_mac_key(padded) == raw
    assert decode_eab_mac_key(padded.rstrip("=")) == raw
    assert decode_eab_mac_key(MAC_KEY) == MAC_BYTES
    assert parse(on(autocert_eab_key_id="k", autocert_eab_mac_key=padded)).autocert_eab_mac_key
    assert parse(on(autocert_eab_key_id="k", autocert_eab_mac_key=f" {MAC_KEY}\n")) == parse(
        on(autocert_eab_key_id="k", autocert_eab_mac_key=MAC_KEY)
    )


def test_an_all_digit_key_id_is_a_string() -> None:
    config = parse(on(autocert_eab_key_id=12345, autocert_eab_mac_key=MAC_KEY))
    assert config.autocert_eab_key_id == "12345"


def test_dir_expands_home_and_keeps_absolute_paths() -> None:
    assert parse({"autocert_dir": "~/acme"}, {"HOME": "/home/v"}).autocert_dir == "/home/v/acme"
    assert parse({"autocert_dir": "/srv/acme/"}).autocert_dir == "/srv/acme"


def test_trusted_ca_file_records_the_resolved_path() -> None:
    config = parse(on(autocert_trusted_ca_file="pki/acme-ca.pem"))
    assert config.autocert_trusted_ca == Source("/etc/vallum/pki/acme-ca.pem", None)


def test_every_key_comes_from_the_environment() -> None:
    environ = {
        "AUTOCERT": "true",
        "HTTP_REDIRECT_ADDR": ":80",
        "AUTOCERT_DIR": "/srv/acme",
        "AUTOCERT_CA": ACME,
        "AUTOCERT_USE_STAGING": "false",
        "AUTOCERT_EMAIL": "ops@example.com",
        "AUTOCERT_MUST_STAPLE": "1",
        "AUTOCERT_EAB_KEY_ID": "kid",
        "AUTOCERT_EAB_MAC_KEY": MAC_KEY,
        "AUTOCERT_TRUSTED_CA": b64(CA_PEM),
    }
    config = parse({"autocert": False, "autocert_ca": "https://other.example/dir"}, environ)
    assert config.autocert is True
    assert config.autocert_dir == "/srv/acme"
    assert config.autocert_ca == ACME
    assert config.autocert_use_staging is False
    assert config.autocert_email == "ops@example.com"
    assert config.autocert_must_staple is True
    assert config.autocert_eab_key_id == "kid"
    assert config.autocert_eab_mac_key == MAC_KEY
    assert config.autocert_trusted_ca == Source(None, CA_PEM)
    assert config.notices == ()


def test_file_forms_come_from_the_environment() -> None:
    environ = {
        "AUTOCERT_EAB_MAC_KEY_FILE": "/run/secrets/mac",
        "AUTOCERT_TRUSTED_CA_FILE": "ca.pem",
    }
    config = parse(on(autocert_eab_key_id="kid"), environ)
    assert config.autocert_eab_mac_key_file == "/run/secrets/mac"
    assert config.autocert_trusted_ca == Source("/etc/vallum/ca.pem", None)


# --- files read by load_config ----------------------------------------------------------


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def load_problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ or {})
    return [str(p) for p in caught.value.problems]


def test_mac_key_file_and_trusted_ca_file_are_read(tmp_path: Path) -> None:
    write(tmp_path, "mac", MAC_KEY + "\n")
    write(tmp_path, "ca.pem", CA_PEM)
    config_path = write(
        tmp_path,
        "config.yaml",
        "autocert: true\nhttp_redirect_addr: ':80'\nautocert_eab_key_id: kid\n"
        "autocert_eab_mac_key_file: mac\nautocert_trusted_ca_file: ca.pem\n",
    )
    config = load_config(str(config_path), {})
    assert config.autocert_eab_mac_key == MAC_KEY
    assert config.autocert_eab_mac_key_file == str(tmp_path / "mac")
    assert config.autocert_trusted_ca == Source(str(tmp_path / "ca.pem"), CA_PEM)


def test_a_bad_mac_key_file_is_named_and_never_echoed(tmp_path: Path) -> None:
    short = base64.urlsafe_b64encode(b"0123456789").decode()
    write(tmp_path, "mac", short)
    config_path = write(
        tmp_path,
        "config.yaml",
        "autocert: true\nautocert_eab_key_id: kid\nautocert_eab_mac_key_file: mac\n",
    )
    (message,) = load_problems(config_path)
    assert message == (
        f"autocert_eab_mac_key_file: {tmp_path / 'mac'}: must decode to at least 16 bytes, "
        "got 10 (copy the whole MAC key the CA issued)"
    )
    assert short not in message
    (message,) = load_problems(config_path, {"AUTOCERT_EAB_MAC_KEY_FILE": str(tmp_path / "x")})
    assert message.startswith("AUTOCERT_EAB_MAC_KEY_FILE (environment): cannot read")


def test_a_bad_trusted_ca_file_is_named(tmp_path: Path) -> None:
    write(tmp_path, "ca.pem", FAKE_CERT_PEM)
    config_path = write(tmp_path, "config.yaml", "autocert_trusted_ca_file: ca.pem\n")
    (message,) = load_problems(config_path)
    assert message.startswith(
        f"autocert_trusted_ca_file: {tmp_path / 'ca.pem'}: holds a certificate that does not parse"
    )


# --- errors -----------------------------------------------------------------------------


def test_eab_key_id_and_mac_key_go_together() -> None:
    assert problems(on(autocert_eab_key_id="kid")) == [
        "autocert_eab_mac_key: required when autocert_eab_key_id is set"
    ]
    assert problems(on(autocert_eab_mac_key=MAC_KEY)) == [
        "autocert_eab_key_id: required when autocert_eab_mac_key is set"
    ]
    assert problems(on(autocert_eab_mac_key_file="mac")) == [
        "autocert_eab_key_id: required when autocert_eab_mac_key is set"
    ]
    assert problems(on(), {"AUTOCERT_EAB_KEY_ID": "kid"}) == [
        "autocert_eab_mac_key: required when autocert_eab_key_id is set"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("not base64!", "not valid base64url"),
        ("abcde", "not valid base64url"),
        ("ab=cd", "not valid base64url"),
        (
            base64.b64encode(MAC_BYTES).decode(),
            "must be base64url (- and _ where standard base64 has + and /), as the CA issued it",
        ),
        (
            base64.urlsafe_b64encode(b"\x01" * 15).decode(),
            "must decode to at least 16 bytes, got 15 (copy the whole MAC key the CA issued)",
        ),
        (123, "expected a base64url string, got integer (quote it)"),
        (True, "expected a base64url string, got boolean (quote it)"),
    ],
)
def test_bad_mac_keys_are_never_echoed(value: Any, message: str) -> None:
    found = problems(on(autocert_eab_key_id="kid", autocert_eab_mac_key=value))
    assert found == [f"autocert_eab_mac_key: {message}"]
    if isinstance(value, str) and value.strip():
        assert value not in found[0]


def test_a_bad_mac_key_from_the_environment_names_the_variable() -> None:
    environ = {"AUTOCERT_EAB_MAC_KEY": "tooShort"}
    assert problems(on(autocert_eab_key_id="kid"), environ) == [
        "AUTOCERT_EAB_MAC_KEY (environment): must decode to at least 16 bytes, got 6 "
        "(copy the whole MAC key the CA issued)"
    ]


@pytest.mark.parametrize("value", ["key id", "", "kid\x00", ["kid"]])
def test_bad_key_ids(value: Any) -> None:
    (message,) = problems(on(autocert_eab_key_id=value, autocert_eab_mac_key=MAC_KEY))
    assert message.startswith("autocert_eab_key_id: ")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "http://acme.internal/dir",
            "must be the https URL of an ACME directory, such as "
            "https://acme.example.com/directory; got 'http://acme.internal/dir'",
        ),
        (
            "acme.internal/dir",
            "must be the https URL of an ACME directory, such as "
            "https://acme.example.com/directory; got 'acme.internal/dir'",
        ),
        (
            "https:///dir",
            "must be the https URL of an ACME directory, such as "
            "https://acme.example.com/directory; got 'https:///dir'",
        ),
        (
            "https://bad host/dir",
            "must be the https URL of an ACME directory, such as "
            "https://acme.example.com/directory; got 'https://bad host/dir'",
        ),
        (
            "https://acme.internal:99999/dir",
            "has an invalid port: 'https://acme.internal:99999/dir'",
        ),
        ("https://user:pw@acme.internal/dir", "must not contain credentials"),
        (
            "https://acme.internal/dir#x",
            "must not have a fragment, got 'https://acme.internal/dir#x'",
        ),
        (42, "expected a string, got integer 42"),
    ],
)
def test_bad_acme_directories(value: Any, message: str) -> None:
    assert problems(on(autocert_ca=value)) == [f"autocert_ca: {message}"]


def test_acme_directory_is_kept_as_given() -> None:
    url = "https://ACME.example.com/acme/Directory?tenant=7"
    assert parse(on(autocert_ca=url)).autocert_ca == url
    assert parse(on(autocert_ca="https://[::1]:14000/dir")).autocert_ca == "https://[::1]:14000/dir"


@pytest.mark.parametrize("value", ["ops", "ops@", "@example.com", "a@b@c", "o ps@example.com", ""])
def test_bad_emails(value: str) -> None:
    assert problems(on(autocert_email=value)) == [
        f"autocert_email: must be an email address such as ops@example.com, got string {value!r}"
    ]


def test_email_must_be_a_string() -> None:
    assert problems(on(autocert_email=["ops@example.com"])) == [
        "autocert_email: expected a string, got list"
    ]


def test_bad_booleans_and_trusted_ca() -> None:
    assert problems(on(autocert_must_staple="maybe", autocert_trusted_ca="bm9wZQ==")) == [
        "autocert_must_staple: expected a boolean (true or false), got string 'maybe'",
        "autocert_trusted_ca: not base64-encoded PEM (use autocert_trusted_ca_file for a path)",
    ]
    assert problems({"autocert_trusted_ca": b64(FAKE_CERT_PEM)})[0].startswith(
        "autocert_trusted_ca: holds a certificate that does not parse"
    )


def test_autocert_cannot_go_with_insecure_server() -> None:
    message = (
        "cannot be used with insecure_server: true (the proxy does not terminate TLS then, "
        "so it can neither answer the TLS-ALPN-01 challenge nor serve the certificates); "
        "let the load balancer in front obtain them instead"
    )
    assert problems(on(insecure_server=True)) == [f"autocert: {message}"]
    assert problems({"insecure_server": True}, {"AUTOCERT": "on"}) == [
        f"AUTOCERT (environment): {message}"
    ]
    assert parse({"autocert": False, "insecure_server": True}).autocert is False


def test_unknown_autocert_keys_suggest_the_nearest() -> None:
    assert problems({"autocert_emial": "ops@example.com"}) == [
        'autocert_emial: unknown key (did you mean "autocert_email"?)'
    ]


# --- notices ----------------------------------------------------------------------------


def test_staging_with_a_ca_says_the_ca_wins() -> None:
    assert parse(on(autocert_ca=ACME, autocert_use_staging=True)).notices == (
        "autocert_use_staging: has no effect when autocert_ca is set (autocert_ca wins)",
    )
    config = parse(on(autocert_ca=ACME), {"AUTOCERT_USE_STAGING": "true"})
    assert config.notices == (
        "AUTOCERT_USE_STAGING (environment): has no effect when autocert_ca is set "
        "(autocert_ca wins)",
    )
    assert config.acme_directory_url == ACME
    assert parse(on(autocert_ca=ACME, autocert_use_staging=False)).notices == ()


def test_wildcard_routes_need_a_certificate_of_their_own() -> None:
    routes = [
        route("https://app.example.com"),
        route("https://*.apps.example.com"),
        route("http://*.plain.example.com"),
    ]
    assert parse(on(routes=routes)).notices == (
        "routes[1].from: autocert cannot obtain a certificate for *.apps.example.com (that "
        "needs the DNS-01 challenge); give it one in certificates",
    )


def test_ip_address_routes_need_a_certificate_of_their_own() -> None:
    routes = [route("https://10.0.0.7"), route("https://[2001:db8::1]:8443")]
    assert parse(on(routes=routes)).notices == (
        "routes[0].from: autocert obtains certificates for DNS names, not for the IP address "
        "10.0.0.7; give it one in certificates",
        "routes[1].from: autocert obtains certificates for DNS names, not for the IP address "
        "2001:db8::1; give it one in certificates",
    )


def test_without_http_redirect_addr_only_tls_alpn_can_be_answered() -> None:
    notice = (
        "only TLS-ALPN-01 can be answered; set http_redirect_addr (port 80) to allow HTTP-01 too"
    )
    assert parse({"autocert": True}).notices == (f"autocert: {notice}",)
    assert parse({}, {"AUTOCERT": "true"}).notices == (f"AUTOCERT (environment): {notice}",)


def test_settings_have_no_effect_while_autocert_is_off() -> None:
    settings: dict[str, Any] = {
        "autocert_dir": "/srv/acme",
        "autocert_ca": ACME,
        "autocert_use_staging": True,
        "autocert_email": "ops@example.com",
        "autocert_must_staple": False,
        "autocert_eab_key_id": "kid",
        "autocert_eab_mac_key_file": "mac",
        "autocert_trusted_ca_file": "ca.pem",
    }
    expected = tuple(f"{name}: has no effect unless autocert: true" for name in settings)
    assert parse(settings).notices == expected
    assert parse({"autocert": False, **settings}).notices == expected
    # Wildcards and the missing redirect listener only matter once autocert is on.
    assert parse({"routes": [route("https://*.example.com")]}).notices == ()
    assert parse({}, {"AUTOCERT_EMAIL": "ops@example.com"}).notices == (
        "AUTOCERT_EMAIL (environment): has no effect unless autocert: true",
    )


# --- derived values ---------------------------------------------------------------------


def test_autocert_directory() -> None:
    assert parse({"data_dir": "/data"}).autocert_directory == "/data/autocert"
    assert parse({"data_dir": "state"}).autocert_directory == "/etc/vallum/state/autocert"
    assert parse({"data_dir": "/data", "autocert_dir": "/acme"}).autocert_directory == "/acme"
    # A path only: nothing is looked at or created.
    assert Config(data_dir="/nonexistent/x").autocert_directory == "/nonexistent/x/autocert"


def test_acme_directory_url() -> None:
    assert Config().acme_directory_url == LETS_ENCRYPT
    assert Config(autocert_use_staging=True).acme_directory_url == LETS_ENCRYPT_STAGING
    assert Config(autocert_ca=ACME).acme_directory_url == ACME
    assert Config(autocert_ca=ACME, autocert_use_staging=True).acme_directory_url == ACME
    assert LETS_ENCRYPT == "https://acme-v02.api.letsencrypt.org/directory"
    assert LETS_ENCRYPT_STAGING == "https://acme-staging-v02.api.letsencrypt.org/directory"


def test_autocert_hosts() -> None:
    routes = [
        route("https://b.example.com"),
        route("https://A.Example.com:8443"),
        route("http://plain.example.com"),
        route("https://*.wild.example.com"),
        route("https://b.example.com:443"),
        route("https://10.0.0.7"),
        {"from": "tcp+https://db.example.com:5432", "to": "tcp://10.0.0.2:5432"},
        route("https://a.example.com"),
        route("https://c.example.com"),
    ]
    config = parse(on(routes=routes))
    assert config.autocert_hosts() == ("b.example.com", "a.example.com", "c.example.com")
    assert parse({"routes": routes}).autocert_hosts() == ()
    assert parse(on()).autocert_hosts() == ()


def test_autocert_hosts_skips_routes_it_cannot_read() -> None:
    config = Config(
        autocert=True,
        routes=(Route(from_url="not a url"), Route(from_url="https://ok.example.com")),
    )
    assert config.autocert_hosts() == ("ok.example.com",)
