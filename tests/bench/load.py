"""Vallum side by side with a trivial upstream and the reference proxies, in one run.

Targets, all hit by wrk on loopback (one thread, fixed seconds per run), alternating
round after round so that every target sees the same machine state:

  (a) direct to a trivial upstream (nginx `return 200`, plain HTTP);
  (b) Vallum all-in-one, public route, TLS, `pass_identity_headers`;
  (c) Vallum, a route that needs a signed-in session, `pass_identity_headers`; the
      session is made by the real sign-in flow with the demo IdP (alice / demo) and its
      `_pomerium` cookie is sent by wrk;
  (d) nginx, TLS reverse proxy with `auth_request` (a real subrequest per request to
      an auth endpoint in its own nginx process: the shape of Envoy's ext_authz);
  (e) Caddy, TLS reverse proxy with `forward_auth` to the same auth endpoint;
  (f) as (c), in a second all-in-one with `proxy_workers: 2` (two proxy processes on
      one port, SO_REUSEPORT), to compare with (c)'s one worker;
  (g) as (b), in a third all-in-one whose hosts all ask for client certificates
      (`downstream_mtls` with `enforcement: policy`, wrk presents none): the TLS of
      such hosts is pyOpenSSL's through memory BIOs, not the event loop's, and each
      Check carries the certificate verdict, so (g)/(b) is what that costs.

TLS for (b)-(f) uses certificates from the project's CA (ECDSA P-256). CPU per request
and peak RSS (VmHWM) are read from /proc for each process that serves a target.
A target that cannot run is reported as "not measured: <why>".
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from shared.pki import init_ca, issue_server, load_ca, write_issued
from tests.bench import paced
from tests.support.browser import Browser
from tests.support.net import free_port, wait_for_port
from tests.support.procs import Proc, children, vallum

CLK_TCK = os.sysconf("SC_CLK_TCK")
SECONDS, ROUNDS, CONNECTIONS = 4, 3, 32
# Per target before the rounds: TLS session caches, pools and the Check stream warm up
# in well under a second of wrk.
WARMUP_SECONDS = 1
# wrk gets a CPU of its own only where that leaves the servers at least 3; on fewer,
# pinning it would only take a core away from the workers it is meant to measure.
PIN_MIN_CPUS = 4

NGINX_HEAD = """
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
"""
UPSTREAM_CONF = (
    NGINX_HEAD
    + """
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""
)
# The authorization endpoint: 200 at /auth, 403 anywhere else (a misrouted check fails).
AUTH_CONF = (
    NGINX_HEAD
    + """
  server {{
    listen 127.0.0.1:{port};
    location = /auth {{ return 200; }}
    location / {{ return 403; }}
  }}
}}
"""
)
AUTH_REQUEST_CONF = (
    NGINX_HEAD
    + """
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  upstream authz {{ server 127.0.0.1:{auth}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      auth_request /_auth;
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
    location = /_auth {{
      internal;
      proxy_pass http://authz/auth;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
    }}
  }}
}}
"""
)
CADDYFILE = """
{{
  admin off
  auto_https off
  skip_install_trust
}}
https://127.0.0.1:{port} {{
  tls {cert} {key}
  forward_auth 127.0.0.1:{auth} {{
    uri /auth
  }}
  reverse_proxy 127.0.0.1:{upstream}
}}
"""


@dataclass
class Target:
    key: str
    title: str
    url: str = ""
    headers: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)  # process label -> pid
    skipped: str | None = None  # "not measured" reason
    ca: Path | None = None  # its server certificate's CA, when not the first Vallum's


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: dict[str, float]
    errors: int = 0


@dataclass
class Result:
    target: Target
    run: Run | None
    rss_mib: dict[str, float]
    # (a) and (c) at half of (c)'s requests/s, paced (tests/bench/paced.py).
    paced: paced.Paced | None = None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def service_pids(proc: Proc) -> dict[str, int]:
    """Each Vallum service child of a supervisor by name, a proxy worker as `proxy#N`
    (the demo IdP and app are no `--services` children, so they are left out)."""
    found = {}
    for pid, argv in children(proc.process.pid).items():
        if b"--services" not in argv:
            continue
        name = argv[argv.index(b"--services") + 1].decode()
        if b"--worker" in argv:
            name += "#" + argv[argv.index(b"--worker") + 1].decode()
        found[name] = pid
    return dict(sorted(found.items()))


def nginx_workers(proc: Proc, label: str) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = sorted(children(proc.process.pid))
        if kids:
            return {label if len(kids) == 1 else f"{label}#{i}": p for i, p in enumerate(kids)}
        time.sleep(0.05)
    raise RuntimeError(f"nginx {proc.process.pid} has no workers")


@contextmanager
def started(proc: Proc, port: int) -> Iterator[Proc]:
    try:
        try:
            wait_for_port(port)
        except TimeoutError:
            last = (proc.output.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{proc.argv[0]} did not listen: {last}") from None
        yield proc
    finally:
        proc.stop()


def nginx(tmp: Path, name: str, template: str, **values: object) -> tuple[Proc, int]:
    d = tmp / name
    d.mkdir()
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(template.format(dir=d, port=port, **values))
    return Proc(["nginx", "-c", str(conf), "-g", "daemon off;"]), port


def vallum_config(tmp: Path, upstream: int, **extra: object) -> tuple[Path, int]:
    """The demo all-in-one (built-in IdP, alice / demo) in front of the upstream;
    `extra` are more config keys."""
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    config = {
        "address": f"127.0.0.1:{port}",
        "authenticate_service_url": f"https://authenticate.localhost:{port}",
        "authorize_service_url": f"https://127.0.0.1:{free_port()}",
        "databroker_service_url": f"https://127.0.0.1:{free_port()}",
        # Else the sign-in pages take the SessionService port + 1: a port nobody
        # checked, odd, so where Linux puts outgoing connections' local ports.
        "authenticate_internal_service_url": f"https://127.0.0.1:{free_port()}",
        "data_dir": str(tmp / "data"),
        "log_level": "warning",
        "demo": True,
        "idp_provider_url": f"https://localhost:{free_port()}",
        "idp_client_id": "vallum-demo",
        "idp_client_secret": "demo-client-secret-not-a-real-secret",
        "routes": [
            # routes[0].to is where the demo app listens; the bench does not use it.
            {
                "from": f"https://demo.localhost:{port}",
                "to": f"http://127.0.0.1:{free_port()}",
                "allow_public_unauthenticated_access": True,
            },
            # wrk sends the URL's host as SNI and Host; the IP keeps the resolver out.
            {
                "from": base,
                "prefix": "/public/",
                "to": f"http://127.0.0.1:{upstream}",
                "allow_public_unauthenticated_access": True,
                "pass_identity_headers": True,
            },
            {
                "from": base,
                "to": f"http://127.0.0.1:{upstream}",
                "allow_any_authenticated_user": True,
                "pass_identity_headers": True,
            },
        ],
        **extra,
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port


def sign_in(ca: Path, url: str) -> str:
    """alice signs in through the demo IdP; returns her `_pomerium` cookie for url's host."""
    alice = Browser(ca)
    try:
        final, page = alice.navigate(url, fill={"login": "alice", "password": "demo"})
        if page.status_code != 200 or final != url:
            raise RuntimeError(f"sign-in ended at {final} with {page.status_code}")
        host = url.split("/")[2]
        return alice.cookies[host]["_pomerium"]
    finally:
        alice.close()


def check_once(ca: Path, url: str, headers: dict[str, str]) -> None:
    """wrk counts a redirect as a success: make sure the target answers 200 itself."""
    r = httpx.get(url, headers=headers, verify=ssl.create_default_context(cafile=str(ca)))
    if r.status_code != 200:
        raise RuntimeError(f"{url} answered {r.status_code}, not 200")


def wrk_cpu() -> int | None:
    """The CPU wrk is pinned to (the last one), or None where it is not pinned."""
    cpus = os.cpu_count() or 1
    if cpus < PIN_MIN_CPUS or shutil.which("taskset") is None:
        return None
    return cpus - 1


def wrk(url: str, seconds: int, headers: list[str]) -> tuple[float, float, float, int]:
    cpu = wrk_cpu()
    pin = [] if cpu is None else ["taskset", "-c", str(cpu)]
    argv = [*pin, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if failed:
        raise RuntimeError(f"{url}: {failed.group(0)}\n{out}")
    # Socket errors (e.g. the server closing a keep-alive connection) are counted, not fatal.
    line = re.search(r"Socket errors: (.*)", out)
    errors = sum(int(n) for n in re.findall(r"\d+", line.group(1))) if line else 0

    def pct(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return rps, pct("50"), pct("99"), errors


def measure(t: Target, seconds: int) -> Run:
    before = {k: cpu_seconds(p) for k, p in t.pids.items()}
    started_at = time.monotonic()
    rps, p50, p99, errors = wrk(t.url, seconds, t.headers)
    requests = rps * (time.monotonic() - started_at)
    cpu = {k: (cpu_seconds(p) - before[k]) * 1e6 / requests for k, p in t.pids.items()}
    return Run(rps, p50, p99, cpu, errors)


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        {k: statistics.median(r.cpu_us[k] for r in runs) for k in runs[0].cpu_us},
        sum(r.errors for r in runs),
    )


def run(seconds: int = SECONDS, rounds: int = ROUNDS) -> list[Result]:
    targets = {
        "a": Target("a", "(a) direct to nginx `return 200` (HTTP)"),
        "b": Target("b", "(b) Vallum public route, TLS, identity headers"),
        "c": Target("c", "(c) Vallum signed-in route (alice), TLS, identity headers"),
        "d": Target("d", "(d) nginx TLS + `auth_request` subrequest"),
        "e": Target("e", "(e) Caddy TLS + `forward_auth`"),
        "f": Target("f", "(f) Vallum signed-in route, 2 proxy workers"),
        "g": Target("g", "(g) as (b), on a host that asks for client certificates"),
    }
    with tempfile.TemporaryDirectory(prefix="vallum-bench-") as d, ExitStack() as stack:
        tmp = Path(d)
        up_proc, up = nginx(tmp, "upstream", UPSTREAM_CONF)
        stack.enter_context(started(up_proc, up))
        upstream_pid = nginx_workers(up_proc, "upstream")
        auth_proc, auth = nginx(tmp, "auth", AUTH_CONF)
        stack.enter_context(started(auth_proc, auth))
        auth_pid = nginx_workers(auth_proc, "auth endpoint")

        a = targets["a"]
        a.url, a.pids = f"http://127.0.0.1:{up}/", dict(upstream_pid)

        # Vallum: (b) and (c) in one all-in-one; (f) in a second one with two proxy
        # workers, started at the same time.
        config, port = vallum_config(tmp, up)
        vproc = vallum("run", "--config", str(config))
        stack.callback(vproc.stop)
        (tmp / "workers").mkdir()
        config_f, port_f = vallum_config(tmp / "workers", up, proxy_workers=2)
        fproc = vallum("run", "--config", str(config_f))
        stack.callback(fproc.stop)
        (tmp / "mtls").mkdir()
        client_ca = init_ca(tmp / "mtls" / "client-ca")
        config_g, port_g = vallum_config(
            tmp / "mtls",
            up,
            downstream_mtls={
                "ca_file": str(client_ca.cert_path),
                "enforcement": "policy",
            },
        )
        gproc = vallum("run", "--config", str(config_g))
        stack.callback(gproc.stop)
        vproc.wait_for("all services ready", timeout=60)
        ca_dir = tmp / "data" / "pki"
        ca_pem = ca_dir / "ca.pem"
        vallum_pids = service_pids(vproc)
        b, c = targets["b"], targets["c"]
        b.url, b.pids = f"https://127.0.0.1:{port}/public/", {**vallum_pids, **upstream_pid}
        check_once(ca_pem, b.url, {})
        c.url = f"https://127.0.0.1:{port}/"
        cookie = f"_pomerium={sign_in(ca_pem, c.url)}"
        c.headers, c.pids = [f"Cookie: {cookie}"], {**vallum_pids, **upstream_pid}
        check_once(ca_pem, c.url, {"Cookie": cookie})
        ft = targets["f"]
        try:
            fproc.wait_for("all services ready", timeout=60)
            ft.ca = tmp / "workers" / "data" / "pki" / "ca.pem"
            ft.url = f"https://127.0.0.1:{port_f}/"
            cookie_f = f"_pomerium={sign_in(ft.ca, ft.url)}"
            ft.headers, ft.pids = [f"Cookie: {cookie_f}"], {**service_pids(fproc), **upstream_pid}
            check_once(ft.ca, ft.url, {"Cookie": cookie_f})
        except Exception as exc:
            # A child's error line says why better than a wait that ran out.
            lines = fproc.output.strip().splitlines() or ["no output"]
            why = next((ln for ln in reversed(lines) if " ERROR " in ln), lines[-1])
            ft.skipped = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}; {why[:160]}"

        gt = targets["g"]
        try:
            gproc.wait_for("all services ready", timeout=60)
            gt.ca = tmp / "mtls" / "data" / "pki" / "ca.pem"
            gt.url = f"https://127.0.0.1:{port_g}/public/"
            gt.pids = {**service_pids(gproc), **upstream_pid}
            check_once(gt.ca, gt.url, {})
        except Exception as exc:
            gt.skipped = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"

        # The reference proxies, with a server certificate from the same CA.
        paths = write_issued(
            issue_server(load_ca(ca_dir), ["127.0.0.1", "localhost"]), tmp, "bench-server"
        )
        dt = targets["d"]
        try:
            ng_proc, ng = nginx(
                tmp, "auth_request", AUTH_REQUEST_CONF,
                upstream=up, auth=auth, cert=paths.cert, key=paths.key,
            )  # fmt: skip
            stack.enter_context(started(ng_proc, ng))
            dt.url = f"https://127.0.0.1:{ng}/"
            dt.pids = {**nginx_workers(ng_proc, "nginx"), **auth_pid, **upstream_pid}
            check_once(ca_pem, dt.url, {})
        except Exception as exc:
            dt.skipped = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        et = targets["e"]
        if shutil.which("caddy") is None:
            et.skipped = "caddy is not installed (tests/tools/install-bench.sh could not)"
        else:
            try:
                cd = tmp / "caddy"
                cd.mkdir()
                cport = free_port()
                (cd / "Caddyfile").write_text(
                    CADDYFILE.format(
                        port=cport, auth=auth, upstream=up, cert=paths.cert, key=paths.key
                    )
                )
                env = {"XDG_DATA_HOME": str(cd), "XDG_CONFIG_HOME": str(cd), "HOME": str(cd)}
                cproc = Proc(
                    ["caddy", "run", "--config", str(cd / "Caddyfile"), "--adapter", "caddyfile"],
                    env=env,
                )
                stack.enter_context(started(cproc, cport))
                et.url = f"https://127.0.0.1:{cport}/"
                et.pids = {"caddy": cproc.process.pid, **auth_pid, **upstream_pid}
                check_once(ca_pem, et.url, {})
            except Exception as exc:
                et.skipped = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"

        live = [t for t in targets.values() if t.skipped is None]
        for t in live:  # warm up pools, caches, the Check stream, TLS sessions
            wrk(t.url, WARMUP_SECONDS, t.headers)
        runs: dict[str, list[Run]] = {t.key: [] for t in live}
        for _ in range(rounds):
            for t in live:
                runs[t.key].append(measure(t, seconds))
        half: dict[str, paced.Paced] = {}
        if "a" in runs and "c" in runs:
            rate = median_run(runs["c"]).rps / 2
            for key in ("a", "c"):
                half[key] = paced.measure(targets[key].url, rate, targets[key].headers)
        for t in live:  # the session must still be valid at the end: no silent redirects
            check_once(t.ca or ca_pem, t.url, dict(h.split(": ", 1) for h in t.headers))
        results = []
        for t in targets.values():
            rss = {k: peak_rss_mib(p) for k, p in t.pids.items()} if t.skipped is None else {}
            run_ = median_run(runs[t.key]) if t.key in runs else None
            results.append(Result(t, run_, rss, half.get(t.key)))
    return results


def _per_process(values: dict[str, float], fmt: str) -> str:
    return ", ".join(f"{k} {format(v, fmt)}" for k, v in values.items())


def _proxy_cpu(r: Result) -> float:
    """CPU µs/request of everything but the shared upstream (proxy + its authorization)."""
    assert r.run is not None
    return sum(v for k, v in r.run.cpu_us.items() if k != "upstream")


def report_tables(results: list[Result]) -> str:
    lines = [
        "| target | requests/s | p50 ms | p99 ms | CPU µs/req, proxy + auth total "
        "| CPU µs/req per process | peak RSS MiB per process | socket errors, all rounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.run is None:
            lines.append(f"| {r.target.title} | not measured: {r.target.skipped} | | | | | | |")
            continue
        total = "-" if r.target.key == "a" else f"{_proxy_cpu(r):.0f}"
        lines.append(
            f"| {r.target.title} | {r.run.rps:,.0f} | {r.run.p50_ms:.2f} | {r.run.p99_ms:.2f} "
            f"| {total} | {_per_process(r.run.cpu_us, '.0f')} | {_per_process(r.rss_mib, '.0f')} "
            f"| {r.run.errors} |"
        )
    by = {r.target.key: r for r in results}
    lines.append("")

    def ratio(x: str, y: str) -> str:
        rx, ry = by[x].run, by[y].run
        if rx is None or ry is None:
            why = by[x].target.skipped or by[y].target.skipped
            return f"- ({x})/({y}): not measured: {why}"
        return (
            f"- ({x})/({y}): requests/s {rx.rps / ry.rps:.2f}, p50 {rx.p50_ms / ry.p50_ms:.1f}x, "
            f"CPU/req (proxy + auth) {_proxy_cpu(by[x]) / _proxy_cpu(by[y]):.1f}x"
        )

    lines += [ratio("c", "d"), ratio("c", "e"), *workers_ratio(by["f"], by["c"]), ratio("g", "b")]
    a, c = by["a"].run, by["c"].run
    if a is not None and c is not None:
        lines.append(
            f"- added p50 of (c) over (a), both at full load: {c.p50_ms - a.p50_ms:.2f} ms"
        )
    pa, pc = by["a"].paced, by["c"].paced
    if pa is not None and pc is not None:
        lines.append(
            f"- added p50 of (c) over (a) at half of (c)'s requests/s ({pc.rate:,.0f}/s asked, "
            f"{paced.CONNECTIONS} paced connections; achieved (a) {pa.achieved:,.0f}/s, "
            f"(c) {pc.achieved:,.0f}/s): {pc.p50_ms - pa.p50_ms:.2f} ms "
            f"(p50 (a) {pa.p50_ms:.2f} ms, (c) {pc.p50_ms:.2f} ms; p99 (a) {pa.p99_ms:.2f} ms, "
            f"(c) {pc.p99_ms:.2f} ms)"
        )
    return "\n".join(lines)


def workers_ratio(f: Result, c: Result) -> list[str]:
    """(f) against (c): what a second proxy worker buys, and what it costs per request."""
    if f.run is None or c.run is None:
        return [f"- (f)/(c): not measured: {f.target.skipped or c.target.skipped}"]
    workers = {k: v for k, v in f.run.cpu_us.items() if k.startswith("proxy#")}
    cpus = os.cpu_count() or 1
    cpu = wrk_cpu()
    pinned = f"wrk pinned to CPU {cpu}" if cpu is not None else "wrk not pinned"
    return [
        f"- (f)/(c), 2 proxy workers over 1: requests/s {f.run.rps / c.run.rps:.2f}; "
        f"proxy CPU µs/req {sum(workers.values()):.0f} ({_per_process(workers, '.0f')}: "
        "each over all requests, shared as wrk's connections hashed to the workers) "
        f"against {c.run.cpu_us.get('proxy', float('nan')):.0f}; proxy + auth "
        f"{_proxy_cpu(f):.0f} against {_proxy_cpu(c):.0f}",
        f"- {cpus} CPUs, {pinned}: the proxy workers, authorize (one process for both) "
        "and wrk share the CPUs, so the requests/s ratio is bounded by the CPU left to "
        "the workers, not by the workers; CPU µs per request is the figure that holds "
        "on a bigger or shared machine",
    ]


def report(seconds: int = SECONDS, rounds: int = ROUNDS) -> str:
    return report_tables(run(seconds, rounds))


if __name__ == "__main__":  # a quick look: python -m tests.bench.load [seconds] [rounds]
    import sys

    print(report(*(int(x) for x in sys.argv[1:3])))
