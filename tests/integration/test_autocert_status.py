"""`vallum autocert status` against an autocert_dir laid out as the proxy leaves it.

The certificates come from the project's own CA, and the per-host state is written
through the store, so the command is tested on the files, not on an ACME server.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from services.proxy.autocert.store import AutocertStore, HostState
from shared import pki
from tests.support.procs import vallum_once

pytestmark = pytest.mark.integration

ACME = "https://acme.internal:14000/dir"
NOW = int(time.time())
DAY = 86400
ROUTES = """
routes:
  - {from: "https://valid.example.com", to: "http://127.0.0.1:9"}
  - {from: "https://old.example.com:8443", to: "http://127.0.0.1:9"}
  - {from: "https://*.wild.example.com", to: "http://127.0.0.1:9"}
  - {from: "http://plain.example.com", to: "http://127.0.0.1:9"}
  - {from: "https://new.example.com", to: "http://127.0.0.1:9"}
  - {from: "https://broken.example.com", to: "http://127.0.0.1:9"}
  - {from: "https://VALID.example.com/", to: "http://127.0.0.1:9", prefix: /x}
"""
HOSTS = ["valid.example.com", "old.example.com", "new.example.com", "broken.example.com"]


@dataclass(frozen=True)
class Setup:
    config: Path
    store_dir: Path
    valid: pki.Issued
    expired: x509.Certificate


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expired_certificate(ca: pki.CA, issued: pki.Issued) -> x509.Certificate:
    """The issued leaf again, signed by the same CA but with its validity in the past
    (the CA refuses to issue one like that, rightly)."""
    now = dt.datetime.now(dt.UTC)
    leaf = issued.certificate
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(leaf.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=100))
        .not_valid_after(now - dt.timedelta(days=10, hours=1))
    )
    for extension in leaf.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(ca.private_key, hashes.SHA256())


def write_config(path: Path, store_dir: Path, extra: str = "") -> Path:
    path.write_text(
        f"autocert: true\nhttp_redirect_addr: ':80'\nautocert_ca: {ACME}\n"
        f"autocert_dir: {store_dir}\n{extra}{ROUTES}"
    )
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    base = tmp_path_factory.mktemp("autocert")
    ca = pki.init_ca(base / "ca")
    store_dir = base / "acme"
    store = AutocertStore(store_dir)

    valid = pki.issue_server(ca, ["valid.example.com"], days=90)
    # The files a route certificate is written as elsewhere, then assembled into the
    # store's fullchain layout (leaf first, then the CA).
    paths = pki.write_issued(valid, base / "issued", "valid.example.com")
    store.save_certificate(
        "valid.example.com", paths.cert.read_bytes() + valid.chain_pem(), paths.key.read_bytes()
    )
    store.save_state(
        "valid.example.com",
        HostState(last_attempt=NOW - DAY, last_success=NOW - DAY, next_attempt=NOW + 59 * DAY),
    )

    old = pki.issue_server(ca, ["old.example.com"], days=90)
    expired = expired_certificate(ca, old)
    store.save_certificate(
        "old.example.com",
        expired.public_bytes(serialization.Encoding.PEM) + ca.cert_pem(),
        old.key_pem(),
    )
    store.save_state(
        "old.example.com",
        HostState(
            last_attempt=NOW - 3600,
            last_success=NOW - 80 * DAY,
            last_error="urn:ietf:params:acme:error:connection: timeout during connect",
            next_attempt=NOW + 3600,
            failures=3,
        ),
    )

    # Never obtained: only the state of a failed first order.
    store.save_state(
        "new.example.com",
        HostState(
            last_attempt=NOW - 60,
            last_error="urn:ietf:params:acme:error:rateLimited:\n  too many\n  orders",
            next_attempt=NOW + 600,
            failures=1,
        ),
    )

    # A chain file that is not a certificate: the proxy could not serve it either.
    broken_chain, broken_key = store.certificate_paths("broken.example.com")
    broken_chain.parent.mkdir(parents=True)
    broken_chain.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    broken_key.write_bytes(old.key_pem())

    config = write_config(base / "config.yaml", store_dir)
    return Setup(config, store_dir, valid, expired)


def test_text_status_has_one_line_per_host(setup: Setup) -> None:
    result = vallum_once("autocert", "status", "--config", str(setup.config))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    header, *lines = result.stdout.splitlines()
    assert header == f"autocert_dir {setup.store_dir}, ACME directory {ACME}"
    assert [line.split()[:2] for line in lines] == [
        ["valid.example.com", "valid"],
        ["old.example.com", "expired"],
        ["new.example.com", "none"],
        ["broken.example.com", "none"],
    ]
    valid, old, new, broken = lines
    serial = pki.serial_hex(setup.valid.certificate.serial_number)
    not_after = setup.valid.certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert valid.endswith(
        f"issuer {pki.DEFAULT_CA_NAME}, not after {not_after} (89 days left), "
        f"serial {serial}, next attempt {iso(NOW + 59 * DAY)}"
    )
    expired_at = setup.expired.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert old.endswith(
        f"issuer {pki.DEFAULT_CA_NAME}, not after {expired_at} (expired 10 days ago), "
        f"serial {pki.serial_hex(setup.expired.serial_number)}, "
        f"last error ({iso(NOW - 3600)}, 3 failures): "
        "urn:ietf:params:acme:error:connection: timeout during connect, "
        f"next attempt {iso(NOW + 3600)}"
    )
    assert new.endswith(
        f"no certificate yet, last error ({iso(NOW - 60)}): "
        "urn:ietf:params:acme:error:rateLimited: too many orders, "
        f"next attempt {iso(NOW + 600)}"
    )
    assert "unusable certificate: " in broken
    assert broken.endswith("no attempt scheduled")
    # Columns line up: the state starts after the longest host name and two spaces.
    width = max(len(host) for host in HOSTS)
    assert [line[width + 2 :].split()[0] for line in lines] == ["valid", "expired", "none", "none"]


def test_json_status(setup: Setup) -> None:
    result = vallum_once("autocert", "status", "--config", str(setup.config), "--json")
    assert result.returncode == 0, result.stderr
    hosts = json.loads(result.stdout)
    assert [h["host"] for h in hosts] == HOSTS
    valid, old, new, broken = hosts
    assert valid == {
        "host": "valid.example.com",
        "state": "valid",
        "issuer": pki.DEFAULT_CA_NAME,
        "not_after": setup.valid.certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "days_left": 89,
        "serial": pki.serial_hex(setup.valid.certificate.serial_number),
        "last_error": None,
        "last_attempt": iso(NOW - DAY),
        "last_success": iso(NOW - DAY),
        "next_attempt": iso(NOW + 59 * DAY),
        "failures": 0,
        "certificate_error": None,
    }
    assert old["state"] == "expired"
    assert old["days_left"] == -10
    assert old["serial"] == pki.serial_hex(setup.expired.serial_number)
    assert old["last_error"] == "urn:ietf:params:acme:error:connection: timeout during connect"
    assert old["failures"] == 3
    assert old["next_attempt"] == iso(NOW + 3600)
    assert new == {
        "host": "new.example.com",
        "state": "none",
        "issuer": None,
        "not_after": None,
        "days_left": None,
        "serial": None,
        # Verbatim in JSON: only the text form folds it onto one line.
        "last_error": "urn:ietf:params:acme:error:rateLimited:\n  too many\n  orders",
        "last_attempt": iso(NOW - 60),
        "last_success": None,
        "next_attempt": iso(NOW + 600),
        "failures": 1,
        "certificate_error": None,
    }
    assert broken["state"] == "none"
    assert broken["certificate_error"].startswith(
        f"{setup.store_dir / 'certs/broken.example.com/fullchain.pem'}: malformed PEM certificate"
    )


def test_a_missing_directory_is_not_created(tmp_path: Path) -> None:
    store_dir = tmp_path / "not-yet"
    config = write_config(tmp_path / "config.yaml", store_dir)
    result = vallum_once("autocert", "status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{store_dir} does not exist: no certificate has been obtained yet",
        "valid.example.com   none     no certificate yet, no attempt scheduled",
        "old.example.com     none     no certificate yet, no attempt scheduled",
        "new.example.com     none     no certificate yet, no attempt scheduled",
        "broken.example.com  none     no certificate yet, no attempt scheduled",
    ]
    assert not store_dir.exists()

    result = vallum_once("autocert", "status", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    assert [(h["host"], h["state"]) for h in json.loads(result.stdout)] == [
        (host, "none") for host in HOSTS
    ]
    assert result.stderr.strip() == (
        f"{store_dir} does not exist: no certificate has been obtained yet"
    )
    assert not store_dir.exists()


def test_the_default_directory_is_under_data_dir(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"autocert: true\ndata_dir: {tmp_path / 'data'}\n{ROUTES}")
    result = vallum_once("autocert", "status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{tmp_path / 'data' / 'autocert'} does not exist")
    assert not (tmp_path / "data").exists()


def test_autocert_off_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(ROUTES)
    result = vallum_once("autocert", "status", "--config", str(config))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"vallum autocert: autocert is off in {config} (set autocert: true)\n"


def test_an_invalid_config_exits_2(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.yaml", tmp_path / "acme", extra="autocert_email: nobody\n"
    )
    result = vallum_once("autocert", "status", "--config", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"vallum autocert: {config}: 1 problem",
        "  autocert_email: must be an email address such as ops@example.com, got string 'nobody'",
    ]
    assert not (tmp_path / "acme").exists()
