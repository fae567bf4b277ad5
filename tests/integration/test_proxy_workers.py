"""`proxy_workers`: several proxy processes share the port (SO_REUSEPORT), each with
its own Check stream and upstream pool, each kept alive by the supervisor on its own."""

from __future__ import annotations

import os
import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared.pki import issue_server, write_issued
from tests.support.certs import make_ca, service_pair
from tests.support.net import free_port, tcp_peer_ports
from tests.support.procs import Proc, vallum, vallum_once, worker_pids
from tests.support.stack import Upstream, Vallum, all_in_one, route_host, upstream

pytestmark = pytest.mark.integration

# New connections are spread by a hash of their addresses: with this many, the chance
# that one worker gets none is 2**-31 for two workers.
CONNECTIONS = 32


@pytest.fixture
def app() -> Iterator[Upstream]:
    with upstream() as up:
        yield up


@pytest.fixture
def two_workers(tmp_path: Path, app: Upstream) -> Iterator[Vallum]:
    port = free_port()
    routes = [
        {
            "from": route_host("app", port),
            "to": app.url,
            "allow_public_unauthenticated_access": True,
        }
    ]
    with all_in_one(tmp_path, routes, port, proxy_workers=2) as v:
        yield v


def line_from(proc: Proc, name: str, text: str, start: int = 0) -> int:
    return proc.child_line(name, text, start=start)


def fresh_requests(v: Vallum, tag: str, count: int = CONNECTIONS) -> dict[str, int]:
    """`count` requests, each on a new TLS connection, to paths `/<tag>-<i>`; returns
    how many each worker served, from its access log line."""
    host = f"app.localhost:{v.port}"
    mark = len(v.proc.lines)
    for i in range(count):
        # A new client each time: a new connection, from a new source port.
        with v.client(timeout=10) as client:
            response = client.get(
                f"https://127.0.0.1:{v.port}/{tag}-{i}",
                headers={"Host": host, "Accept": "application/json"},
                extensions={"sni_hostname": "app.localhost"},
            )
        assert response.status_code == 200, response.text
        assert response.json()["path"] == f"/{tag}-{i}"
    served: dict[str, int] = {}
    for i in range(count):
        line = v.proc.lines[v.proc.wait_for(f"path=/{tag}-{i} status=200", start=mark)]
        name = line.split(" ", 1)[0]
        served[name] = served.get(name, 0) + 1
    return served


def test_both_workers_serve_each_with_its_own_check_stream(two_workers: Vallum) -> None:
    v = two_workers
    banner = v.proc.wait_for("all services ready")
    assert line_from(v.proc, "proxy#1", "proxy ready:") < banner
    assert line_from(v.proc, "proxy#2", "proxy ready:") < banner
    pids = worker_pids(v.proc)
    assert sorted(pids) == [1, 2] and len(set(pids.values())) == 2

    served = fresh_requests(v, "spread")
    assert set(served) == {"proxy#1", "proxy#2"}, served

    # Separate processes, so separate Check streams and pools: each worker holds its
    # own connection to authorize (the forwarded requests above were each checked).
    assert v.config_path is not None
    config = yaml.safe_load(v.config_path.read_text())
    authorize_port = int(config["authorize_service_url"].rsplit(":", 1)[1])
    for worker, pid in pids.items():
        assert authorize_port in tcp_peer_ports(pid), f"proxy#{worker} has no Check stream"


def test_a_killed_worker_is_restarted_and_the_other_keeps_serving(two_workers: Vallum) -> None:
    v = two_workers
    before = worker_pids(v.proc)
    mark = len(v.proc.lines)
    os.kill(before[1], signal.SIGKILL)
    v.proc.wait_for("proxy#1 exited with signal SIGKILL; restarting", start=mark)
    # The killed worker's socket is gone once the supervisor saw it exit: the kernel
    # sends every new connection to a live listener.
    served = fresh_requests(v, "survivor", 8)
    assert sum(served.values()) == 8
    line_from(v.proc, "proxy#1", "proxy ready:", start=mark)
    after = worker_pids(v.proc)
    assert after[2] == before[2], "the other worker must not be restarted"
    assert after[1] != before[1]
    assert "proxy#2 exited" not in v.proc.output
    assert set(fresh_requests(v, "again")) == {"proxy#1", "proxy#2"}


def test_sigterm_stops_every_worker(tmp_path: Path, app: Upstream) -> None:
    port = free_port()
    routes = [{"from": route_host("app", port), "to": app.url}]
    with all_in_one(tmp_path, routes, port, proxy_workers=3) as v:
        assert len(worker_pids(v.proc)) == 3
        assert v.proc.stop(signal.SIGTERM) == 0
        for name in ("proxy#1", "proxy#2", "proxy#3"):
            line_from(v.proc, name, "proxy stopped")
        v.proc.wait_for("vallum       | stopped")
    # Nothing holds the port any more, with or without SO_REUSEPORT.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def proxy_only_config(tmp_path: Path, port: int, **extra: Any) -> tuple[Path, dict[str, str]]:
    """A split-mode proxy (a proxy-only container) with certificates from a test CA."""
    pki = tmp_path / "pki"
    ca = make_ca(pki)
    pair = service_pair(ca, pki, "proxy", trust_domain="vallum.internal")
    server = write_issued(issue_server(ca, ["localhost"]), pki, "server")
    config = tmp_path / "proxy.yaml"
    values = {
        "services": "proxy",
        "address": f"127.0.0.1:{port}",
        "authorize_service_url": f"https://127.0.0.1:{free_port()}",
        "databroker_service_url": f"https://127.0.0.1:{free_port()}",
        "shared_secret": "c2hhcmVkLXNlY3JldC1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg5",
        "cookie_secret": "Y29va2llLXNlY3JldC1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg5",
        "certificate_file": str(server.cert),
        "certificate_key_file": str(server.key),
        "data_dir": str(tmp_path / "data"),
        **extra,
    }
    config.write_text(yaml.safe_dump(values))
    env = {
        "CERTIFICATE_AUTHORITY_FILE": str(pki / "ca.pem"),
        "INTERNAL_CERTIFICATE_FILE": str(pair.cert),
        "INTERNAL_CERTIFICATE_KEY_FILE": str(pair.key),
    }
    return config, env


def test_a_proxy_only_process_supervises_its_workers(tmp_path: Path) -> None:
    port = free_port()
    config, env = proxy_only_config(tmp_path, port, proxy_workers=2)
    proc = vallum("run", "--config", str(config), env=env)
    try:
        banner = proc.wait_for("all services ready")
        assert line_from(proc, "proxy#1", "proxy ready:") < banner
        assert line_from(proc, "proxy#2", "proxy ready:") < banner
        ctx = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.pem"))
        response = httpx.get(f"https://localhost:{port}/ping", verify=ctx, timeout=10)
        assert response.text == "OK"
    finally:
        assert proc.stop() == 0


def squat(port: int, *, reuse_port: bool) -> socket.socket:
    s = socket.socket()
    if reuse_port:
        # Like a second Vallum with workers, or nginx `listen ... reuseport`: the kernel
        # would let workers join it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def assert_port_refused(result: Any, port: int) -> None:
    assert result.returncode == 78, result.stdout + result.stderr
    expected = f"address: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("reuse_port", [False, True])
def test_a_taken_port_is_one_clear_line_with_workers(tmp_path: Path, reuse_port: bool) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "address": f"127.0.0.1:{port}",
                "authorize_service_url": f"https://127.0.0.1:{free_port()}",
                "databroker_service_url": f"https://127.0.0.1:{free_port()}",
                "data_dir": str(tmp_path / "data"),
                "proxy_workers": 2,
            }
        )
    )
    with squat(port, reuse_port=reuse_port):
        result = vallum_once("run", "--config", str(config))
    assert_port_refused(result, port)


def test_a_taken_port_is_refused_in_a_proxy_only_process(tmp_path: Path) -> None:
    port = free_port()
    config, env = proxy_only_config(tmp_path, port, proxy_workers=2)
    with squat(port, reuse_port=True):
        result = vallum_once("run", "--config", str(config), env=env)
    assert_port_refused(result, port)


def test_bad_proxy_workers_is_named(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"proxy_workers": 0, "data_dir": str(tmp_path)}))
    result = vallum_once("run", "--config", str(config))
    assert result.returncode == 78
    assert "proxy_workers: must be between 1 and 64, got 0" in result.stderr
    result = vallum_once("check", "--config", str(config), env={"PROXY_WORKERS": "many"})
    assert result.returncode == 1
    assert "PROXY_WORKERS (environment): expected an integer, got string 'many'" in result.stderr
