"""`vallum run` as users run it: all-in-one under the supervisor, and split."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import stat
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.net import free_port, wait_for_port
from tests.support.procs import Proc, child_pid, vallum, vallum_once
from tests.support.tools import require_tool

pytestmark = pytest.mark.integration


def write_config(path: Path, **values: object) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def all_in_one_config(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    ports = {"proxy": free_port(), "authorize": free_port(), "authenticate": free_port()}
    config = write_config(
        tmp_path / "config.yaml",
        address=f"127.0.0.1:{ports['proxy']}",
        authenticate_service_url=f"https://authenticate.localhost:{ports['proxy']}",
        authorize_service_url=f"https://127.0.0.1:{ports['authorize']}",
        databroker_service_url=f"https://127.0.0.1:{ports['authenticate']}",
        data_dir=str(tmp_path / "data"),
        routes=[{"from": f"https://app.localhost:{ports['proxy']}", "to": "http://127.0.0.1:9"}],
    )
    return config, ports


def healthz(port: int, ca: Path) -> httpx.Response:
    ctx = ssl.create_default_context(cafile=str(ca))
    return httpx.get(f"https://localhost:{port}/healthz", verify=ctx, timeout=10)


@pytest.fixture
def all_in_one(tmp_path: Path):  # type: ignore[no-untyped-def]
    config, ports = all_in_one_config(tmp_path)
    proc = vallum("run", "--config", str(config))
    proc.wait_for("all services ready")
    yield proc, ports, tmp_path / "data"
    proc.stop()


def test_all_in_one_starts_three_services_that_find_each_other(all_in_one) -> None:  # type: ignore[no-untyped-def]
    proc, ports, data = all_in_one
    response = healthz(ports["proxy"], data / "pki" / "ca.pem")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "authorize": "SERVING"}
    for name in ("authenticate", "authorize", "proxy"):
        proc.wait_for(f"{name} ready:")
    out = proc.output
    assert "authorize    | " in out and "authenticate | " in out and "proxy        | " in out
    assert "as authorize" in out and "as authenticate" in out
    # The data_dir material is private.
    for key in ("ca-key.pem", "proxy-key.pem", "authorize-key.pem", "authenticate-key.pem"):
        assert stat.S_IMODE(os.stat(data / "pki" / key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data / "secrets" / "shared_secret").st_mode) == 0o600


def test_supervisor_restarts_a_crashed_child(all_in_one) -> None:  # type: ignore[no-untyped-def]
    proc, ports, data = all_in_one
    mark = len(proc.lines)
    os.kill(child_pid(proc, "authorize"), signal.SIGKILL)
    proc.wait_for("authorize exited with signal SIGKILL; restarting", start=mark)
    proc.wait_for("authorize ready:", start=mark)
    for _ in range(50):
        if healthz(ports["proxy"], data / "pki" / "ca.pem").status_code == 200:
            break
        time.sleep(0.2)
    assert healthz(ports["proxy"], data / "pki" / "ca.pem").status_code == 200


def test_sigterm_stops_everything_and_exits_zero(tmp_path: Path) -> None:
    config, ports = all_in_one_config(tmp_path)
    proc = vallum("run", "--config", str(config))
    proc.wait_for("all services ready")
    assert proc.stop(signal.SIGTERM) == 0
    for name in ("authenticate", "authorize", "proxy"):
        proc.wait_for(f"{name} stopped")
    proc.wait_for("vallum       | stopped")
    # Every listener is gone (SO_REUSEADDR: TIME_WAIT leftovers are not listeners).
    for port in ports.values():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()


def test_restart_reuses_the_internal_pki(tmp_path: Path) -> None:
    config, _ = all_in_one_config(tmp_path)
    proc = vallum("run", "--config", str(config))
    proc.wait_for("all services ready")
    proc.stop()
    ca = (tmp_path / "data" / "pki" / "ca.pem").read_bytes()
    proc = vallum("run", "--config", str(config))
    proc.wait_for("all services ready")
    proc.stop()
    assert (tmp_path / "data" / "pki" / "ca.pem").read_bytes() == ca
    assert "creating the internal CA" not in proc.output


def split_pki(tmp_path: Path) -> Path:
    pki = tmp_path / "pki"
    assert vallum_once("ca", "init", "--dir", str(pki)).returncode == 0
    for service in ("authenticate", "authorize", "proxy"):
        result = vallum_once(
            "ca",
            "issue",
            "--dir",
            str(pki),
            "--service",
            service,
            "--trust-domain",
            "vallum.internal",
            "--out",
            str(pki),
        )
        assert result.returncode == 0, result.stderr
    result = vallum_once(
        "ca",
        "issue",
        "--dir",
        str(pki),
        "--server",
        "localhost",
        "--name",
        "server",
        "--out",
        str(pki),
    )
    assert result.returncode == 0, result.stderr
    return pki


def split_env(pki: Path, service: str, ca: str = "ca.pem") -> dict[str, str]:
    return {
        "CERTIFICATE_AUTHORITY_FILE": str(pki / ca),
        "INTERNAL_CERTIFICATE_FILE": str(pki / f"{service}.pem"),
        "INTERNAL_CERTIFICATE_KEY_FILE": str(pki / f"{service}-key.pem"),
    }


def split_config(
    tmp_path: Path, ports: dict[str, int], server_cert: Path, server_key: Path
) -> Path:
    return write_config(
        tmp_path / "split.yaml",
        address=f"127.0.0.1:{ports['proxy']}",
        authenticate_service_url="https://authenticate.localhost",
        authorize_service_url=f"https://127.0.0.1:{ports['authorize']}",
        databroker_service_url=f"https://127.0.0.1:{ports['authenticate']}",
        shared_secret="c2hhcmVkLXNlY3JldC1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg5",
        cookie_secret="Y29va2llLXNlY3JldC1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg5",
        certificate_file=str(server_cert),
        certificate_key_file=str(server_key),
        data_dir=str(tmp_path / "data"),
    )


def run_split(config: Path, envs: dict[str, dict[str, str]]) -> list[Proc]:
    procs = []
    for service in ("authenticate", "authorize", "proxy"):
        proc = vallum("run", "--config", str(config), "--services", service, env=envs[service])
        proc.wait_for(f"{service} ready:")
        procs.append(proc)
    return procs


def test_split_services_with_certificates_from_vallum_ca(tmp_path: Path) -> None:
    pki = split_pki(tmp_path)
    ports = {"proxy": free_port(), "authorize": free_port(), "authenticate": free_port()}
    config = split_config(tmp_path, ports, pki / "server.pem", pki / "server-key.pem")
    procs = run_split(
        config, {s: split_env(pki, s) for s in ("authenticate", "authorize", "proxy")}
    )
    try:
        procs[1].wait_for("authenticate (sessions) reachable")
        response = healthz(ports["proxy"], pki / "ca.pem")
        assert response.json() == {"status": "ok", "authorize": "SERVING"}
    finally:
        for proc in procs:
            assert proc.stop() == 0


def test_split_services_with_mkcert_certificates(tmp_path: Path) -> None:
    """Users follow mkcert guides: its certificates work for every hop."""
    import shutil
    import subprocess

    require_tool("mkcert")
    caroot, out = tmp_path / "caroot", tmp_path / "mk"
    out.mkdir()
    env = {**os.environ, "CAROOT": str(caroot)}
    for service in ("authenticate", "authorize", "proxy"):
        subprocess.run(
            [
                "mkcert",
                "-client",
                "-cert-file",
                str(out / f"{service}.pem"),
                "-key-file",
                str(out / f"{service}-key.pem"),
                f"spiffe://vallum.internal/{service}",
                "localhost",
                "127.0.0.1",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [
            "mkcert",
            "-cert-file",
            str(out / "server.pem"),
            "-key-file",
            str(out / "server-key.pem"),
            "localhost",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    shutil.copy(caroot / "rootCA.pem", out / "ca.pem")
    ports = {"proxy": free_port(), "authorize": free_port(), "authenticate": free_port()}
    config = split_config(tmp_path, ports, out / "server.pem", out / "server-key.pem")
    procs = run_split(
        config, {s: split_env(out, s) for s in ("authenticate", "authorize", "proxy")}
    )
    try:
        response = healthz(ports["proxy"], out / "ca.pem")
        assert response.json() == {"status": "ok", "authorize": "SERVING"}
    finally:
        for proc in procs:
            proc.stop()


def test_unreachable_authorize_is_one_clear_line_and_healthz_fails(tmp_path: Path) -> None:
    pki = split_pki(tmp_path)
    ports = {"proxy": free_port(), "authorize": free_port(), "authenticate": free_port()}
    config = split_config(tmp_path, ports, pki / "server.pem", pki / "server-key.pem")
    proc = vallum(
        "run", "--config", str(config), "--services", "proxy", env=split_env(pki, "proxy")
    )
    try:
        proc.wait_for("proxy ready:")
        proc.wait_for(
            f"authorize unreachable: https://127.0.0.1:{ports['authorize']} is unreachable"
        )
        response = healthz(ports["proxy"], pki / "ca.pem")
        assert response.status_code == 503
        assert "unreachable" in response.json()["authorize"]
        assert "Traceback" not in proc.output
    finally:
        proc.stop()


def test_split_mode_without_internal_certificates_is_refused(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        services="authorize",
        shared_secret="c2hhcmVkLXNlY3JldC1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg5",
        cookie_secret="Y29va2llLXNlY3JldC1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg5",
    )
    result = vallum_once("run", "--config", str(config))
    assert result.returncode == 78
    for key in ("certificate_authority", "internal_certificate", "internal_certificate_key"):
        assert key in result.stderr
    assert "Traceback" not in result.stderr


def test_key_that_does_not_match_its_certificate(tmp_path: Path) -> None:
    pki = split_pki(tmp_path)
    env = split_env(pki, "authorize")
    env["INTERNAL_CERTIFICATE_KEY_FILE"] = str(pki / "proxy-key.pem")
    config = split_config(
        tmp_path,
        {"proxy": free_port(), "authorize": free_port(), "authenticate": free_port()},
        pki / "server.pem",
        pki / "server-key.pem",
    )
    result = vallum_once("run", "--config", str(config), "--services", "authorize", env=env)
    assert result.returncode == 78
    lines = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1
    assert f"the key in {pki / 'proxy-key.pem'} does not match the certificate" in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_certificate_file_is_named(tmp_path: Path) -> None:
    pki = split_pki(tmp_path)
    config = split_config(
        tmp_path,
        {"proxy": free_port(), "authorize": free_port(), "authenticate": free_port()},
        tmp_path / "nope.pem",
        pki / "server-key.pem",
    )
    result = vallum_once(
        "run", "--config", str(config), "--services", "proxy", env=split_env(pki, "proxy")
    )
    assert result.returncode == 78
    assert "certificate_file" in result.stderr and str(tmp_path / "nope.pem") in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("service", ["proxy", "authorize"])
def test_port_in_use_is_one_clear_line(tmp_path: Path, service: str) -> None:
    pki = split_pki(tmp_path)
    ports = {"proxy": free_port(), "authorize": free_port(), "authenticate": free_port()}
    config = split_config(tmp_path, ports, pki / "server.pem", pki / "server-key.pem")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[service]))
        squatter.listen()
        result = vallum_once(
            "run", "--config", str(config), "--services", service, env=split_env(pki, service)
        )
    assert result.returncode == 78
    assert (
        f"127.0.0.1:{ports[service]}" in result.stderr
        or f"localhost:{ports[service]}" in result.stderr
    )
    assert "address already in use" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_check_reports_every_problem(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.yaml",
        adress=":443",
        log_level="loud",
        routes=[{"from": "https://a.example.com", "to": "ftp://x"}, {"form": "x"}],
    )
    result = vallum_once("check", "--config", str(config))
    assert result.returncode == 1
    for expected in (
        "adress",
        'did you mean "address"',
        "log_level",
        "routes[0].to",
        "routes[1].form",
    ):
        assert expected in result.stderr, result.stderr


def test_check_accepts_a_good_config(tmp_path: Path) -> None:
    config, _ = all_in_one_config(tmp_path)
    result = vallum_once("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "OK (1 route(s)" in result.stdout


def test_check_finds_a_mismatched_server_key(tmp_path: Path) -> None:
    pki = split_pki(tmp_path)
    config = split_config(
        tmp_path,
        {"proxy": 1, "authorize": 2, "authenticate": 3},
        pki / "server.pem",
        pki / "proxy-key.pem",
    )
    result = vallum_once("check", "--config", str(config), env=split_env(pki, "proxy"))
    assert result.returncode == 1
    assert "certificate_key" in result.stderr and "does not match" in result.stderr


def test_wait_for_port_helper_reports_timeout() -> None:
    with pytest.raises(TimeoutError):
        wait_for_port(free_port(), timeout=0.3)
