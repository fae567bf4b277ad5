"""Requests through Vallum against the same upstream directly, side by side.

A trivial upstream (nginx `return 200`), Vallum all-in-one in front of it on a
public route over TLS, and wrk on loopback. Each run is a fixed number of seconds;
the two targets alternate, so both see the same machine state. CPU per request is
read from /proc for each Vallum process.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.net import free_port, wait_for_port
from tests.support.procs import Proc, child_pid, vallum

CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir};
  proxy_temp_path {dir};
  fastcgi_temp_path {dir};
  uwsgi_temp_path {dir};
  scgi_temp_path {dir};
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""


@dataclass
class Run:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: dict[str, float]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@contextmanager
def nginx_upstream(tmp: Path) -> Iterator[int]:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp, port=port))
    proc = Proc(["nginx", "-c", str(conf), "-g", "daemon off;"])
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.stop()


@contextmanager
def vallum_in_front(tmp: Path, upstream_port: int) -> Iterator[tuple[Proc, int]]:
    port = free_port()
    config = {
        "address": f"127.0.0.1:{port}",
        "authorize_service_url": f"https://127.0.0.1:{free_port()}",
        "databroker_service_url": f"https://127.0.0.1:{free_port()}",
        "authenticate_service_url": f"https://authenticate.localhost:{port}",
        "data_dir": str(tmp / "data"),
        "log_level": "warning",
        "routes": [
            {
                # wrk sends the URL's host as SNI and Host; the IP keeps the resolver out.
                "from": f"https://127.0.0.1:{port}",
                "to": f"http://127.0.0.1:{upstream_port}",
                "allow_public_unauthenticated_access": True,
                "pass_identity_headers": True,
            }
        ],
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    proc = vallum("run", "--config", str(tmp / "config.yaml"))
    try:
        proc.wait_for("all services ready", timeout=60)
        yield proc, port
    finally:
        proc.stop()


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} failed responses\n{out}")

    def pct(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    return rps, pct("50"), pct("99")


def measure(name: str, url: str, pids: dict[str, int], seconds: int, connections: int) -> Run:
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    started = time.monotonic()
    rps, p50, p99 = wrk(url, seconds, connections)
    elapsed = time.monotonic() - started
    requests = rps * elapsed
    cpu = {k: (cpu_seconds(p) - before[k]) * 1e6 / requests for k, p in pids.items()}
    return Run(name, rps, p50, p99, cpu)


def run(seconds: int = 5, rounds: int = 3, connections: int = 32) -> list[Run]:
    with tempfile.TemporaryDirectory(prefix="vallum-bench-") as d:
        tmp = Path(d)
        with nginx_upstream(tmp) as up, vallum_in_front(tmp, up) as (proc, port):
            pids = {s: child_pid(proc, s) for s in ("proxy", "authorize")}
            direct_url = f"http://127.0.0.1:{up}/"
            vallum_url = f"https://127.0.0.1:{port}/"
            wrk(vallum_url, 2, connections)  # warm up pools, caches and the Check stream
            direct, through = [], []
            for _ in range(rounds):
                direct.append(measure("direct", direct_url, {}, seconds, connections))
                through.append(measure("vallum", vallum_url, pids, seconds, connections))
    return [median_run(direct), median_run(through)]


def median_run(runs: list[Run]) -> Run:
    keys = runs[0].cpu_us.keys()
    return Run(
        runs[0].name,
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        {k: statistics.median(r.cpu_us[k] for r in runs) for k in keys},
    )


def report() -> str:
    direct, through = run()
    lines = [
        "| target | requests/s | p50 ms | p99 ms | proxy CPU µs/req | authorize CPU µs/req |",
        "|---|---|---|---|---|---|",
        f"| (a) direct to nginx (plain HTTP) | {direct.rps:,.0f} | {direct.p50_ms:.2f} | "
        f"{direct.p99_ms:.2f} | - | - |",
        f"| (b) Vallum public route, TLS, JWT | {through.rps:,.0f} | {through.p50_ms:.2f} | "
        f"{through.p99_ms:.2f} | {through.cpu_us['proxy']:.0f} | "
        f"{through.cpu_us['authorize']:.0f} |",
        "",
        f"ratio (b)/(a) requests/s: {through.rps / direct.rps:.2f}; "
        f"added p50: {through.p50_ms - direct.p50_ms:.2f} ms",
    ]
    return "\n".join(lines)
