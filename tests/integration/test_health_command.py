"""`vallum health` against real Vallum processes: the probe the deploy artefacts use
(Docker HEALTHCHECK, compose healthchecks, Kubernetes exec probes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.net import free_port
from tests.support.procs import vallum, vallum_once
from tests.support.stack import all_in_one

pytestmark = pytest.mark.integration

SHARED = "c2hhcmVkLXNlY3JldC1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg5"
COOKIE = "Y29va2llLXNlY3JldC1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg5"


def health(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = vallum_once("health", "--config", str(config), *args, env=env, timeout=30)
    return result.returncode, result.stdout + result.stderr


def test_all_in_one_every_service_is_healthy_then_none_is(tmp_path: Path) -> None:
    port = free_port()
    routes = [{"from": f"https://app.localhost:{port}", "to": "http://127.0.0.1:9"}]
    with all_in_one(tmp_path, routes, port) as stack:
        assert stack.config_path is not None
        config = stack.config_path
        code, out = health(config)
        assert code == 0, out
        lines = out.strip().splitlines()
        assert [line.split(":")[0] for line in lines] == ["authenticate", "authorize", "proxy"]
        assert "authorize: ok: SERVING at 127.0.0.1:" in out
        assert "authenticate: ok: SERVING at 127.0.0.1:" in out
        assert f"proxy: ok: https://127.0.0.1:{port}/healthz: HTTP 200, authorize SERVING" in out

        code, out = health(config, "--service", "authorize", "--timeout", "1.5")
        assert code == 0, out
        assert out.strip().splitlines() == [out.strip()]  # exactly one line
        assert out.startswith("authorize: ok: SERVING")

    # The stack is stopped: every check fails, each with one line saying why.
    code, out = health(config)
    assert code == 1, out
    lines = out.strip().splitlines()
    assert len(lines) == 3, out
    assert lines[0].startswith("authenticate: FAILED: https://127.0.0.1:")
    assert "is unreachable" in lines[0]
    assert lines[1].startswith("authorize: FAILED: https://127.0.0.1:")
    assert lines[2].startswith(f"proxy: FAILED: https://127.0.0.1:{port}/healthz: ")
    assert "Traceback" not in out


def split_authorize(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """authorize alone, listening on every interface, with a certificate that names
    only `authorize` (no loopback names): the probe dials 127.0.0.1 and must verify
    the certificate against a name it carries."""
    pki = tmp_path / "pki"
    assert vallum_once("ca", "init", "--dir", str(pki)).returncode == 0
    for service in ("authorize", "proxy"):
        result = vallum_once(
            "ca", "issue", "--dir", str(pki), "--service", service,
            "--dns", service, "--no-loopback", "--out", str(pki),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    grpc_port = free_port()
    config = tmp_path / "authorize.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "services": "authorize",
                "grpc_address": f":{grpc_port}",
                "authorize_service_url": f"https://authorize:{grpc_port}",
                "databroker_service_url": f"https://127.0.0.1:{free_port()}",
                "shared_secret": SHARED,
                "cookie_secret": COOKIE,
                "certificate_authority_file": str(pki / "ca.pem"),
                "internal_certificate_file": str(pki / "authorize.pem"),
                "internal_certificate_key_file": str(pki / "authorize-key.pem"),
                "data_dir": str(tmp_path / "data"),
            }
        )
    )
    return config, {"grpc_port": str(grpc_port), "pki": str(pki)}


def test_split_authorize_on_every_interface_with_a_certificate_without_loopback(
    tmp_path: Path,
) -> None:
    config, info = split_authorize(tmp_path)
    proc = vallum("run", "--config", str(config))
    try:
        proc.wait_for("authorize ready:")
        code, out = health(config)
        assert code == 0, out
        assert out.strip() == (
            f"authorize: ok: SERVING at 127.0.0.1:{info['grpc_port']} over mTLS "
            "(TLS name authorize)"
        )
    finally:
        assert proc.stop() == 0
    code, out = health(config)
    assert code == 1
    assert out.startswith(f"authorize: FAILED: https://127.0.0.1:{info['grpc_port']} ")
    assert "unreachable" in out


def test_a_certificate_from_another_ca_fails_clearly(tmp_path: Path) -> None:
    """The probe proves mTLS works, not just that a port is open."""
    config, _ = split_authorize(tmp_path)
    other = tmp_path / "other"
    assert vallum_once("ca", "init", "--dir", str(other)).returncode == 0
    issued = vallum_once(
        "ca", "issue", "--dir", str(other), "--service", "authorize", "--out", str(other)
    )
    assert issued.returncode == 0, issued.stderr
    proc = vallum("run", "--config", str(config))
    try:
        proc.wait_for("authorize ready:")
        env = {
            "CERTIFICATE_AUTHORITY_FILE": str(other / "ca.pem"),
            "INTERNAL_CERTIFICATE_FILE": str(other / "authorize.pem"),
            "INTERNAL_CERTIFICATE_KEY_FILE": str(other / "authorize-key.pem"),
        }
        code, out = health(config, env=env)
        assert code == 1, out
        assert out.startswith("authorize: FAILED: ")
        assert "refused the TLS handshake" in out
    finally:
        proc.stop()


def test_proxy_alone_is_unhealthy_while_authorize_is_down(tmp_path: Path) -> None:
    """/healthz answers 503 without authorize: the probe reports it, exit 1."""
    config, info = split_authorize(tmp_path)
    pki = Path(info["pki"])
    issued = vallum_once(
        "ca", "issue", "--dir", str(pki), "--server", "localhost", "--name", "server",
        "--out", str(pki),
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    port = free_port()
    env = {
        "SERVICES": "proxy",
        "ADDRESS": f"127.0.0.1:{port}",
        "AUTHORIZE_SERVICE_URL": f"https://127.0.0.1:{free_port()}",
        "INTERNAL_CERTIFICATE_FILE": str(pki / "proxy.pem"),
        "INTERNAL_CERTIFICATE_KEY_FILE": str(pki / "proxy-key.pem"),
        "CERTIFICATE_FILE": str(pki / "server.pem"),
        "CERTIFICATE_KEY_FILE": str(pki / "server-key.pem"),
    }
    proc = vallum("run", "--config", str(config), env=env)
    try:
        proc.wait_for("proxy ready:")
        code, out = health(config, env=env)
        assert code == 1, out
        assert out.startswith(f"proxy: FAILED: https://127.0.0.1:{port}/healthz: HTTP 503")
        assert "unreachable" in out
    finally:
        assert proc.stop() == 0
