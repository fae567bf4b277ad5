"""Prometheus metrics on `metrics_address`: the supervisor serves every child's
metrics together; a service in a process of its own serves its own."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_proxy import put_session
from tests.integration.test_run import split_config, split_env, split_pki
from tests.support.net import free_port, wait_for_port
from tests.support.procs import vallum, vallum_once
from tests.support.stack import Upstream, Vallum, all_in_one, route_host, upstream

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def total(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum over every series of `metric` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == metric and want <= ls)


def eventually(port: int, ready: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    """Children add to the shared metrics once a second: scrape until `ready`."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def not_after(pem: bytes) -> float:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def served_not_after(port: int, server_name: str) -> float:
    """notAfter of the certificate the proxy presents for `server_name`."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vallum, Upstream, int]]:
    tmp = tmp_path_factory.mktemp("metrics")
    port, metrics_port = free_port(), free_port()
    closed = free_port()  # nothing listens here
    public = {"allow_public_unauthenticated_access": True}
    with upstream() as app:
        routes: list[dict[str, Any]] = [
            {"from": route_host("open", port), "to": app.url, "name": "open", **public},
            {
                "from": route_host("adm", port),
                "to": app.url,
                "id": "adm-route",
                **public,
                "policy": [{"deny": {"or": [{"http_path": {"starts_with": "/admin"}}]}}],
            },
            {"from": route_host("exact", port), "to": app.url, "path": "/exact", **public},
            {"from": route_host("dead", port), "to": f"http://127.0.0.1:{closed}", **public},
            {
                "from": route_host("private", port),
                "to": app.url,
                "policy": {"allow": {"or": [{"email": {"is": "x@example.com"}}]}},
            },
        ]
        with all_in_one(
            tmp,
            routes,
            port,
            metrics_address=f"127.0.0.1:{metrics_port}",
            # Never reached: the sign-in failures counted below happen before any IdP call.
            idp_provider_url=f"https://127.0.0.1:{closed}",
            idp_client_id="vallum",
            idp_client_secret="unused",
        ) as v:
            yield v, app, metrics_port


async def test_counts_latencies_decisions_and_sessions(
    stack: tuple[Vallum, Upstream, int],
) -> None:
    v, _, metrics_port = stack
    private = route_host("private", v.port)
    for i in range(3):
        assert v.request("GET", "open.localhost", f"/o{i}").status_code == 200
    assert v.request("POST", "open.localhost", "/o-post").status_code == 200
    for _ in range(2):
        assert v.request("GET", "adm.localhost", "/admin").status_code == 403
    assert v.request("GET", "exact.localhost", "/not-exact").status_code == 404
    assert v.request("GET", "private.localhost", "/").status_code == 401
    handle = await put_session(v, "x@example.com", [])
    cookie = {"Cookie": f"_pomerium={handle}"}
    assert v.request("GET", "private.localhost", "/in", headers=cookie).status_code == 200

    requests = "vallum_proxy_requests_total"
    # Each process adds its counts on its own second: wait for the last of each
    # (the proxy's requests, authorize's decisions, authenticate's store get).
    samples = eventually(
        metrics_port,
        lambda s: (
            total(s, requests) >= 9
            and total(s, "vallum_authorize_decisions_total") >= 8
            and total(s, "vallum_session_store_duration_seconds_count", operation="get") >= 1
        ),
    )
    assert value(samples, requests, route="open", method="GET", status="200") == 3
    assert value(samples, requests, route="open", method="POST", status="200") == 1
    assert value(samples, requests, route="adm-route", method="GET", status="403") == 2
    assert value(samples, requests, route="", method="GET", status="404") == 1
    assert value(samples, requests, route=private, method="GET", status="401") == 1
    assert value(samples, requests, route=private, method="GET", status="200") == 1
    assert total(samples, requests) == 9

    # Histograms: one observation per request, per check, per forwarded request.
    duration = "vallum_proxy_request_duration_seconds"
    for route, count in (("open", 4), ("adm-route", 2), ("", 1), (private, 2)):
        assert value(samples, f"{duration}_count", route=route) == count
        assert value(samples, f"{duration}_bucket", route=route, le="+Inf") == count
    assert value(samples, "vallum_proxy_authorize_check_duration_seconds_count") == 8
    upstream_count = "vallum_proxy_upstream_response_duration_seconds_count"
    assert value(samples, upstream_count, route="open") == 4
    assert value(samples, upstream_count, route=private) == 1
    assert value(samples, upstream_count, route="adm-route") == 0

    # authorize: every check decided, by result and reasons.
    decisions = "vallum_authorize_decisions_total"
    assert total(samples, decisions, result="allow") == 5
    assert total(samples, decisions, result="deny") == 2
    assert total(samples, decisions, result="sign-in-required") == 1
    deny_reasons = [
        dict(ls)["reason"] for (n, ls) in samples if n == decisions and dict(ls)["result"] == "deny"
    ]
    assert deny_reasons and all("http-path" in r for r in deny_reasons), deny_reasons
    assert value(samples, "vallum_authorize_evaluation_duration_seconds_count") == 8
    fetch = "vallum_authorize_session_fetch_duration_seconds_count"
    assert value(samples, fetch, result="found") == 1

    # authenticate: the session put above and authorize's get, timed in the store.
    store = "vallum_session_store_duration_seconds_count"
    assert value(samples, store, operation="put", store="sqlite") == 1
    assert value(samples, store, operation="get", store="sqlite") == 1


def test_certificate_expiry_is_the_real_not_after(stack: tuple[Vallum, Upstream, int]) -> None:
    v, _, metrics_port = stack
    pki = v.data / "pki"
    gauge = "vallum_certificate_expiry_timestamp_seconds"
    samples = scrape(metrics_port)
    for service in ("authenticate", "authorize", "proxy"):
        expected = not_after((pki / f"{service}.pem").read_bytes())
        assert value(samples, gauge, kind="internal", name=service) == expected
    ca = [
        (dict(ls), val)
        for (n, ls), val in samples.items()
        if n == gauge and dict(ls)["kind"] == "internal_ca"
    ]
    assert [val for _, val in ca] == [not_after((pki / "ca.pem").read_bytes())]
    served = served_not_after(v.port, "open.localhost")
    server = [
        val for (n, ls), val in samples.items() if n == gauge and dict(ls)["kind"] == "server"
    ]
    assert server == [served]


def test_upstream_failures_are_counted_by_kind(stack: tuple[Vallum, Upstream, int]) -> None:
    v, _, metrics_port = stack
    for _ in range(2):
        assert v.request("GET", "dead.localhost", "/").status_code == 502
    errors = "vallum_proxy_errors_total"
    samples = eventually(metrics_port, lambda s: total(s, errors) >= 2)
    assert value(samples, errors, kind="upstream-connection-refused") == 2
    dead = route_host("dead", v.port)
    requests = "vallum_proxy_requests_total"
    assert value(samples, requests, route=dead, method="GET", status="502") == 2
    # No response head came: nothing to time.
    assert value(samples, "vallum_proxy_upstream_response_duration_seconds_count", route=dead) == 0


def test_sign_in_failures_are_counted_by_reason(stack: tuple[Vallum, Upstream, int]) -> None:
    v, _, metrics_port = stack
    refused = v.request("GET", "authenticate.localhost", "/oauth2/callback?error=access_denied")
    assert refused.status_code == 403
    for _ in range(2):
        bad = v.request("GET", "authenticate.localhost", "/oauth2/callback?code=x&state=y")
        assert bad.status_code == 400
    sign_ins = "vallum_authenticate_sign_ins_total"
    samples = eventually(metrics_port, lambda s: total(s, sign_ins) >= 3)
    assert value(samples, sign_ins, result="idp-refused") == 1
    assert value(samples, sign_ins, result="sign-in-state-invalid") == 2


def test_only_metrics_is_served(stack: tuple[Vallum, Upstream, int]) -> None:
    _, _, metrics_port = stack
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/").status_code == 404
    assert httpx.post(f"http://127.0.0.1:{metrics_port}/metrics").status_code == 405


def test_two_workers_add_up(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    app_route = route_host("app", port)
    with upstream() as app:
        routes = [
            {
                "from": app_route,
                "to": app.url,
                "allow_public_unauthenticated_access": True,
            }
        ]
        with all_in_one(
            tmp_path, routes, port, proxy_workers=2, metrics_address=f"127.0.0.1:{metrics_port}"
        ) as v:
            count = 32
            for i in range(count):
                # A new connection each: the kernel spreads them across the workers.
                with v.client(timeout=10) as client:
                    response = client.get(
                        f"https://127.0.0.1:{port}/w{i}",
                        headers={"Host": f"app.localhost:{port}", "Accept": "application/json"},
                        extensions={"sni_hostname": "app.localhost"},
                    )
                assert response.status_code == 200
            served = {
                line.split(" ", 1)[0]
                for line in v.proc.lines
                if "status=200" in line and "path=/w" in line
            }
            assert served == {"proxy#1", "proxy#2"}
            requests = "vallum_proxy_requests_total"
            samples = eventually(metrics_port, lambda s: total(s, requests) >= count)
            assert value(samples, requests, route=app_route, method="GET", status="200") == count
            expected = not_after((v.data / "pki" / "proxy.pem").read_bytes())
            gauge = "vallum_certificate_expiry_timestamp_seconds"
            # Both workers report it: the scrape shows it once (livemax).
            assert value(samples, gauge, kind="internal", name="proxy") == expected


def test_one_service_alone_serves_its_own(tmp_path: Path) -> None:
    pki = split_pki(tmp_path)
    ports = {"proxy": free_port(), "authorize": free_port(), "authenticate": free_port()}
    config = split_config(tmp_path, ports, pki / "server.pem", pki / "server-key.pem")
    metrics_port = free_port()
    env = {**split_env(pki, "authorize"), "METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}
    proc = vallum("run", "--config", str(config), "--services", "authorize", env=env)
    try:
        proc.wait_for("authorize ready:")
        wait_for_port(metrics_port)
        samples = scrape(metrics_port)
        gauge = "vallum_certificate_expiry_timestamp_seconds"
        expected = not_after((pki / "authorize.pem").read_bytes())
        assert value(samples, gauge, kind="internal", name="authorize") == expected
        assert total(samples, gauge, kind="internal_ca") == not_after((pki / "ca.pem").read_bytes())
    finally:
        assert proc.stop() == 0


def test_metrics_address_in_use_is_one_clear_line(tmp_path: Path) -> None:
    metrics_port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", metrics_port))
        squatter.listen()
        # The supervisor (all-in-one) ...
        port = free_port()
        config = tmp_path / "config.yaml"
        config.write_text(
            "\n".join(
                [
                    f"address: 127.0.0.1:{port}",
                    f"authorize_service_url: https://127.0.0.1:{free_port()}",
                    f"databroker_service_url: https://127.0.0.1:{free_port()}",
                    f"data_dir: {tmp_path / 'data'}",
                    f"metrics_address: 127.0.0.1:{metrics_port}",
                    "routes: []",
                ]
            )
        )
        result = vallum_once("run", "--config", str(config))
        assert result.returncode == 78, result.stdout + result.stderr
        out = result.stdout + result.stderr
        assert f"metrics_address: cannot listen on 127.0.0.1:{metrics_port}" in out
        assert "Traceback" not in out
        # ... and a service alone.
        pki = split_pki(tmp_path)
        ports = {"proxy": free_port(), "authorize": free_port(), "authenticate": free_port()}
        split = split_config(tmp_path, ports, pki / "server.pem", pki / "server-key.pem")
        env = {**split_env(pki, "authorize"), "METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}
        result = vallum_once("run", "--config", str(split), "--services", "authorize", env=env)
        assert result.returncode == 78
        assert f"metrics_address: cannot listen on 127.0.0.1:{metrics_port}" in result.stderr
        assert "Traceback" not in result.stderr
