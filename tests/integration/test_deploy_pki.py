"""The compose `pki` one-shot (deploy/compose/pki-init.sh), run for real: it makes
every file the compose containers' configs name, the certificates name the hosts
the containers dial, it changes nothing when run again, and `vallum check` accepts
each container's configuration with those files (the paths moved from the `pki`
volume's mount point to a temporary directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509

from tests.support.procs import ROOT, vallum_once

pytestmark = pytest.mark.integration

DEPLOY = ROOT / "deploy"
MOUNT = "/etc/vallum/pki"


def run_pki(pki: Path) -> subprocess.CompletedProcess[str]:
    # The image has `vallum` and `python` on PATH; here they are this venv's.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["/bin/sh", str(DEPLOY / "compose" / "pki-init.sh")],
        env={**os.environ, "PKI": str(pki), "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def dns_names(cert: Path) -> set[str]:
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("deploy") / "pki"
    result = run_pki(directory)
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


def test_running_it_again_changes_nothing(pki: Path) -> None:
    before = {p: p.read_bytes() for p in pki.rglob("*") if p.is_file()}
    result = run_pki(pki)
    assert result.returncode == 0, result.stderr
    assert "generated" not in result.stdout and "wrote" not in result.stdout
    assert {p: p.read_bytes() for p in pki.rglob("*") if p.is_file()} == before


def test_certificates_name_what_the_containers_dial(pki: Path) -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "config.yaml").read_text())
    for key, service in (
        ("authorize_service_url", "authorize"),
        ("databroker_service_url", "authenticate"),
        ("authenticate_internal_service_url", "authenticate"),
    ):
        host = urlsplit(config[key]).hostname
        assert host in dns_names(pki / f"{service}.pem"), key
    hosts = {urlsplit(r["from"]).hostname for r in config["routes"]}
    hosts.add(urlsplit(config["authenticate_service_url"]).hostname)
    assert hosts <= dns_names(pki / "proxy-server.pem")
    assert urlsplit(config["idp_provider_url"]).hostname in dns_names(pki / "demo-idp.pem")
    dsn = (pki / "secrets" / "postgres_dsn").read_text().strip()
    password = (pki / "secrets" / "postgres_password").read_text().strip()
    assert dsn == f"postgresql://vallum:{password}@postgres:5432/vallum"


def test_vallum_check_accepts_every_containers_configuration(pki: Path, tmp_path: Path) -> None:
    text = (DEPLOY / "compose" / "config.yaml").read_text().replace(MOUNT, str(pki))
    config = tmp_path / "config.yaml"
    config.write_text(text)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    checked = []
    for name, spec in compose["services"].items():
        if spec.get("image") != "vallum:latest" or name == "pki":
            continue
        env = {k: str(v).replace(MOUNT, str(pki)) for k, v in spec.get("environment", {}).items()}
        if env.get("DATA_DIR") == "/etc/vallum":  # the demo pieces: data_dir/pki is the volume
            env["DATA_DIR"] = str(pki.parent)
        result = vallum_once("check", "--config", str(config), env=env)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        checked.append(name)
    assert sorted(checked) == ["app", "authenticate", "authorize", "demo-idp", "proxy"]
