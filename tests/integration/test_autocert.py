"""Autocert against Debian's pebble (Let's Encrypt's ACME test server) on 127.0.0.1.

Real validation throughout: pebble's validation authority dials Vallum's own
HTTP-01 listener (`http_redirect_addr`) or its HTTPS listener with ALPN `acme-tls/1`
(TLS-ALPN-01), resolving the route hosts to 127.0.0.1 through pebble-challtestsrv's
DNS. Clients connect to 127.0.0.1 with the route host as SNI and verify the served
chain against pebble's root.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.support.net import free_port
from tests.support.pebble import Pebble, pebble
from tests.support.procs import vallum_once
from tests.support.stack import Upstream, all_in_one, upstream

pytestmark = pytest.mark.integration

HOSTS = ("app1.test", "app2.test")


@dataclass
class Served:
    serial: int
    issuer: str
    status: int


def served(port: int, host: str, roots: bytes) -> Served:
    """Handshake with SNI `host`, verifying against pebble's `roots`; GET /."""
    ctx = ssl.create_default_context(cadata=roots.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        cert = x509.load_der_x509_certificate(der)
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        head = tls.recv(4096).split(b"\r\n", 1)[0]
    return Served(cert.serial_number, cert.issuer.rfc4514_string(), int(head.split()[1]))


def wait_until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ssl.SSLError, AssertionError) as e:
            last = e
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout}s (last error: {last})")


def routes(port: int, app: Upstream) -> list[dict[str, Any]]:
    return [
        {
            "from": f"https://{host}:{port}",
            "to": app.url,
            "allow_public_unauthenticated_access": True,
        }
        for host in HOSTS
    ]


def autocert_keys(acme: Pebble, directory: Path) -> dict[str, Any]:
    return {
        "autocert": True,
        "autocert_ca": acme.directory_url,
        "autocert_trusted_ca_file": str(acme.server_ca),
        "autocert_dir": str(directory),
        "autocert_email": "ops@example.com",
    }


@pytest.fixture(scope="module")
def app() -> Iterator[Upstream]:
    with upstream() as a:
        yield a


def test_http01_two_hosts_chain_to_pebble(tmp_path: Path, app: Upstream) -> None:
    port, redirect = free_port(), free_port()
    with (
        pebble(tmp_path, http_port=redirect, tls_port=port) as acme,
        all_in_one(
            tmp_path,
            routes(port, app),
            port,
            http_redirect_addr=f"127.0.0.1:{redirect}",
            **autocert_keys(acme, tmp_path / "autocert"),
        ) as v,
    ):
        roots = acme.roots_pem()
        for host in HOSTS:
            got = wait_until(
                f"{host} served a pebble certificate", lambda h=host: served(port, h, roots), 60
            )
            assert got.status == 200
            assert "Pebble Intermediate" in got.issuer
        log = v.proc.output
        for host in HOSTS:
            lines = [ln for ln in log.splitlines() if f"autocert: {host}:" in ln]
            assert log.count(f"autocert: {host}: ordering a certificate") == 1, lines
        # `vallum autocert status` reads the same directory.
        result = vallum_once("autocert", "status", "--config", str(v.config_path), "--json")
        assert result.returncode == 0, result.stderr
        status = {entry["host"]: entry for entry in json.loads(result.stdout)}
        # The sign-in host the proxy serves gets one too, as in Pomerium.
        assert set(status) == {*HOSTS, "authenticate.localhost"}
        wait_until(
            "every host valid in `vallum autocert status`",
            lambda: all(
                e["state"] == "valid"
                for e in json.loads(
                    vallum_once(
                        "autocert", "status", "--config", str(v.config_path), "--json"
                    ).stdout
                )
            ),
            30,
        )


def test_tls_alpn01_on_the_https_listener(tmp_path: Path, app: Upstream) -> None:
    port = free_port()
    with (
        pebble(tmp_path, http_port=free_port(), tls_port=port) as acme,
        all_in_one(
            tmp_path, routes(port, app)[:1], port, **autocert_keys(acme, tmp_path / "ac")
        ) as v,
    ):
        roots = acme.roots_pem()
        got = wait_until("a TLS-ALPN-01 certificate", lambda: served(port, HOSTS[0], roots), 60)
        assert got.status == 200
        assert "answering a TLS-ALPN-01 validation for app1.test" in v.proc.output


def test_renewal_swaps_live_and_a_down_acme_server_is_contained(
    tmp_path: Path, app: Upstream
) -> None:
    """30 s certificates: renewal is due after 20 s. The new one is served to new
    connections while one opened before keeps working; then pebble stops and the old
    certificate keeps serving while the log shows the backoff."""
    port, redirect = free_port(), free_port()
    with (
        pebble(tmp_path, http_port=redirect, tls_port=port, validity_seconds=30) as acme,
        all_in_one(
            tmp_path,
            routes(port, app)[:1],
            port,
            http_redirect_addr=f"127.0.0.1:{redirect}",
            **autocert_keys(acme, tmp_path / "ac"),
        ) as v,
    ):
        roots = acme.roots_pem()
        host = HOSTS[0]
        first = wait_until("the first certificate", lambda: served(port, host, roots), 60)
        ctx = ssl.create_default_context(cadata=roots.decode())
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        before = ctx.wrap_socket(raw, server_hostname=host)
        second = wait_until(
            "a renewed certificate",
            lambda: (s := served(port, host, roots)).serial != first.serial and s,
            45,
        )
        assert second.status == 200
        # The connection opened before the swap still works, with the old certificate.
        before.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        assert before.recv(4096).startswith(b"HTTP/1.1 200")
        old = x509.load_der_x509_certificate(before.getpeercert(binary_form=True) or b"")
        assert old.serial_number == first.serial
        before.close()

        acme.stop()
        # The renewed certificate falls due 20 s after it was issued; the attempt fails.
        wait_until("a failed renewal in the log", lambda: "(failure 1)" in v.proc.output, 40)
        still = served(port, host, roots)  # still valid for about 10 s
        assert (still.serial, still.status) == (second.serial, 200)
        wait_until("a second failure, later", lambda: "(failure 2)" in v.proc.output, 30)
        delays = [
            float(line.split("next attempt in ")[1].split("s")[0])
            for line in v.proc.output.splitlines()
            if "next attempt in " in line
        ]
        assert len(delays) >= 2 and all(d > 0 for d in delays)


def test_two_proxy_workers_sharing_autocert_dir_order_once(tmp_path: Path, app: Upstream) -> None:
    port, redirect = free_port(), free_port()
    with (
        pebble(tmp_path, http_port=redirect, tls_port=port) as acme,
        all_in_one(
            tmp_path,
            routes(port, app),
            port,
            proxy_workers=2,
            http_redirect_addr=f"127.0.0.1:{redirect}",
            **autocert_keys(acme, tmp_path / "ac"),
        ) as v,
    ):
        roots = acme.roots_pem()
        serials = set()
        for host in HOSTS:
            wait_until(f"{host} certificate", lambda h=host: served(port, h, roots), 60)
        time.sleep(2 * 2.0 + 1)  # both workers' store polls
        for host in HOSTS:
            for _ in range(10):  # SO_REUSEPORT spreads connections over both workers
                serials.add((host, served(port, host, roots).serial))
        assert len(serials) == len(HOSTS)  # one certificate per host, served by both
        for host in HOSTS:  # both workers ran autocert; one of them ordered
            assert v.proc.output.count(f"autocert: {host}: ordering a certificate") == 1


def test_a_refused_host_is_contained(tmp_path: Path, app: Upstream) -> None:
    """The ACME server refuses one host by policy: that host keeps its self-signed
    stand-in and its failure is logged and kept for `vallum autocert status`; the other
    host gets its certificate all the same."""
    port, redirect = free_port(), free_port()
    with (
        pebble(tmp_path, http_port=redirect, tls_port=port, blocked=["app2.test"]) as acme,
        all_in_one(
            tmp_path,
            routes(port, app),
            port,
            http_redirect_addr=f"127.0.0.1:{redirect}",
            **autocert_keys(acme, tmp_path / "ac"),
        ) as v,
    ):
        roots = acme.roots_pem()
        assert wait_until("app1.test", lambda: served(port, "app1.test", roots), 60).status == 200
        wait_until("app2.test's failure", lambda: "autocert: app2.test: " in v.proc.output
                   and "(failure 1)" in v.proc.output, 30)  # fmt: skip
        failure = next(
            ln
            for ln in v.proc.output.splitlines()
            if "autocert: app2.test:" in ln and "failure" in ln
        )
        assert "refused" in failure or "rejectedIdentifier" in failure, failure
        # app2.test still answers TLS, with the stand-in (not trusted, not broken).
        with pytest.raises(ssl.SSLCertVerificationError):
            served(port, "app2.test", roots)
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            insecure.wrap_socket(raw, server_hostname="app2.test") as tls,
        ):
            der = tls.getpeercert(binary_form=True) or b""
        assert "no certificate yet" in x509.load_der_x509_certificate(der).subject.rfc4514_string()
        result = vallum_once("autocert", "status", "--config", str(v.config_path), "--json")
        status = {e["host"]: e for e in json.loads(result.stdout)}
        assert status["app2.test"]["state"] == "none"
        assert status["app2.test"]["failures"] >= 1 and status["app2.test"]["last_error"]
        assert status["app1.test"]["state"] == "valid"


def test_external_account_binding(tmp_path: Path, app: Upstream) -> None:
    port = free_port()
    key_id, mac = "vallum-test", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
    with (
        pebble(tmp_path, http_port=free_port(), tls_port=port, eab={key_id: mac}) as acme,
        all_in_one(
            tmp_path,
            routes(port, app)[:1],
            port,
            autocert_eab_key_id=key_id,
            autocert_eab_mac_key=mac,
            **autocert_keys(acme, tmp_path / "ac"),
        ),
    ):
        roots = acme.roots_pem()
        assert wait_until("an EAB-bound account's certificate",
                          lambda: served(port, HOSTS[0], roots), 60).status == 200  # fmt: skip


def test_a_stored_certificate_for_other_names_is_replaced_at_once(
    tmp_path: Path, app: Upstream
) -> None:
    """autocert_dir holds a valid certificate, but for another name (a renamed route):
    it is due at once, and the pebble one replaces it."""
    from services.proxy.autocert.store import AutocertStore
    from shared.pki import init_ca, issue_server

    stale = issue_server(init_ca(tmp_path / "old-ca"), ["renamed.test"])
    AutocertStore(tmp_path / "ac").save_certificate(
        HOSTS[0], stale.cert_pem() + stale.chain_pem(), stale.key_pem()
    )
    port = free_port()
    with (
        pebble(tmp_path, http_port=free_port(), tls_port=port, always_valid=True) as acme,
        all_in_one(
            tmp_path, routes(port, app)[:1], port, **autocert_keys(acme, tmp_path / "ac")
        ) as v,
    ):
        roots = acme.roots_pem()
        assert (
            wait_until("the replacement", lambda: served(port, HOSTS[0], roots), 60).status == 200
        )
        assert v.proc.output.count(f"autocert: {HOSTS[0]}: ordering a certificate") == 1
