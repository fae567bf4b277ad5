"""Vallum split across processes on one machine, each service on its own loopback address.

    with split_topology(tmp_path, dsn, app_url) as s:
        s.proxies[0].ip                          # 127.0.1.4; s.proxy_lb, s.auth_lb in front
        s.proxies[0].send(signal.SIGKILL)        # by PID; .wait() for the exit code
        s.proxies[0].start_ready()               # the same process again, ready to serve

Linux routes all of 127/8 to `lo`, and a process that binds 127.0.1.x is reachable
only at that address, so each replica is a host of its own:

    127.0.1.1          authorize (gRPC + check channel)
    127.0.1.2, .3      authenticate: SessionService (gRPC) and the public sign-in pages
                       (`address`, split mode), one PostgreSQL schema for both
    127.0.1.4, .5, .6  proxy
    127.0.0.1          the balancers (tests/support/balancer.py): one in front of the
                       proxies (the route host), one in front of authenticate's pages
                       (`authenticate_service_url`); the demo IdP; the upstream app

Every replica of a kind listens on the same port as its balancer, so a route host's
URL (`https://app.localhost:<port>`) is the same whether a request goes through the
balancer or straight to one replica. Internal certificates come from the real CLI
(`vallum ca init` / `vallum ca issue`). The identity provider is Vallum's built-in
demo IdP (`vallum demo-idp`, HTTPS with a certificate from the same CA). Each process
writes its log to a file (under load a pipe read by the test process costs it CPU);
`Service.log` reads it.
"""

from __future__ import annotations

import base64
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.balancer import Backend, Balancer
from tests.support.net import free_port
from tests.support.procs import ROOT

APP_HOST = "app.localhost"
AUTH_HOST = "authenticate.localhost"
COOKIE = "_pomerium"
CLIENT_ID, CLIENT_SECRET = "vallum", "split-demo-client-secret"
AUTHORIZE_IP = "127.0.1.1"
AUTHENTICATE_IPS = ("127.0.1.2", "127.0.1.3")
PROXY_IPS = ("127.0.1.4", "127.0.1.5", "127.0.1.6")


@dataclass
class Service:
    """One `vallum` process, its config and its log file."""

    name: str  # authorize, authenticate-1, proxy-2, demo-idp, ...
    kind: str  # what it logs as "<kind> ready": authorize, authenticate, proxy, demo-idp
    ip: str
    port: int  # its public port (proxy, authenticate pages) or gRPC port (authorize)
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    exit_codes: list[int] = field(default_factory=list)

    @property
    def backend(self) -> Backend:
        return (self.ip, self.port)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} runs"
        with self.log_path.open("ab") as out:
            out.write(f"---- start {self.name}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )

    def wait_for(self, text: str, timeout: float = 30.0, *, after: int = 0) -> None:
        """Wait until `text` appears in the log after character `after`."""
        deadline = time.monotonic() + timeout
        while text not in self.log()[after:]:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} not in {self.name}'s log in {timeout}s:\n{self.log()}"
                )
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 30.0, *, after: int = 0) -> None:
        """Started, and (authorize, proxy) in touch with the service it calls first."""
        self.wait_for(f"{self.kind} ready", timeout, after=after)
        peer = {"authorize": "authenticate (sessions) reachable", "proxy": "authorize reachable"}
        if self.kind in peer:
            self.wait_for(peer[self.kind], timeout, after=after)

    def start_ready(self, timeout: float = 30.0) -> None:
        mark = len(self.log())
        self.start()
        self.wait_ready(timeout, after=mark)

    def send(self, sig: int) -> None:
        assert self.process is not None and self.process.poll() is None, f"{self.name} is not up"
        self.process.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        self.exit_codes.append(code)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Stop it (by PID) if it runs; its exit code, or None if it was not running."""
        if self.process is None or self.process.poll() is not None:
            return None
        self.process.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.wait(5)


@dataclass
class Split:
    tmp: Path
    ca: Path  # the internal CA, which also signed the route hosts' and the IdP's certificates
    signing_key: Path
    port: int  # the route host's port: the proxy balancer's and every proxy's
    auth_port: int  # authenticate's public port: its balancer's and every replica's
    authorize: Service
    authenticate: list[Service]
    proxies: list[Service]
    idp: Service
    proxy_lb: Balancer
    auth_lb: Balancer

    @property
    def app_origin(self) -> str:
        return f"https://{APP_HOST}:{self.port}"

    @property
    def auth_origin(self) -> str:
        return f"https://{AUTH_HOST}:{self.auth_port}"

    def services(self) -> list[Service]:
        return [self.idp, *self.authenticate, self.authorize, *self.proxies]

    def logs(self) -> str:
        """Every service's log, for an assertion message."""
        return "\n".join(f"===== {s.name}\n{s.log()[-6000:]}" for s in self.services())


def _vallum(*args: str) -> list[str]:
    return [sys.executable, "-m", "services", *args]


def _cli(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        _vallum(*args), cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"vallum {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def make_pki(root: Path) -> Path:
    """The internal CA and every certificate, with the real CLI; returns pki/."""
    pki = root / "pki"
    _cli("ca", "init", "--dir", "pki", cwd=root)
    issue = ("ca", "issue", "--dir", "pki", "--out", "pki")
    _cli(*issue, "--service", "authorize", "--dns", "authorize", "--ip", AUTHORIZE_IP, cwd=root)
    _cli(*issue, "--service", "authenticate", "--ip", *AUTHENTICATE_IPS, cwd=root)
    _cli(*issue, "--service", "proxy", "--ip", *PROXY_IPS, cwd=root)
    _cli(*issue, "--server", APP_HOST, AUTH_HOST, "--name", "routes", cwd=root)
    # The demo IdP finds its certificate as data_dir/pki/demo-idp.pem.
    _cli(*issue, "--server", "127.0.0.1", "--name", "demo-idp", "--out", "idp/pki", cwd=root)
    return pki


def _secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _signing_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


@contextmanager
def split_topology(
    tmp: Path,
    dsn: str,
    app_url: str,
    *,
    routes: Sequence[dict[str, Any]] | None = None,
    log_level: str = "info",
) -> Iterator[Split]:
    """Start the split topology; stop every process it started (by PID) on exit.

    `dsn` is the PostgreSQL connection string both authenticate replicas share (give
    each test run a schema of its own). `routes` default to one route,
    `https://app.localhost:<port>` → `app_url`, for any signed-in user, with identity
    headers.
    """
    pki = make_pki(tmp)
    port, auth_port = free_port(), free_port()
    grpc_port, authorize_port, idp_port = free_port(), free_port(), free_port()
    app_origin = f"https://{APP_HOST}:{port}"
    auth_origin = f"https://{AUTH_HOST}:{auth_port}"
    common: dict[str, Any] = {
        "shared_secret": _secret(),
        "cookie_secret": _secret(),
        "signing_key_file": str(_signing_key(tmp / "signing-key.pem")),
        "certificate_authority_file": str(pki / "ca.pem"),
        "certificate_file": str(pki / "routes.pem"),
        "certificate_key_file": str(pki / "routes-key.pem"),
        "authenticate_service_url": auth_origin,
        "authorize_service_url": f"https://{AUTHORIZE_IP}:{authorize_port}",
        "databroker_service_url": [f"https://{ip}:{grpc_port}" for ip in AUTHENTICATE_IPS],
        "databroker_storage_type": "postgres",
        "databroker_storage_connection_string": dsn,
        "idp_provider_url": f"https://127.0.0.1:{idp_port}",
        "idp_client_id": CLIENT_ID,
        "idp_client_secret": CLIENT_SECRET,
        "idp_ca_file": str(pki / "ca.pem"),
        "jwt_claims_headers": ["email", "groups"],
        "log_level": log_level,
        "routes": list(routes)
        if routes is not None
        else [
            {
                "from": app_origin,
                "to": app_url,
                "allow_any_authenticated_user": True,
                "pass_identity_headers": True,
            }
        ],
    }

    def service(name: str, kind: str, ip: str, svc_port: int, **keys: Any) -> Service:
        data = tmp / name
        data.mkdir()
        config = {
            **common,
            "data_dir": str(data),
            "internal_certificate_file": str(pki / f"{kind}.pem"),
            "internal_certificate_key_file": str(pki / f"{kind}-key.pem"),
            **keys,
        }
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        argv = _vallum("run", "--config", str(path), "--services", kind)
        return Service(name, kind, ip, svc_port, argv, tmp / f"{name}.log")

    authenticate = [
        service(
            f"authenticate-{i}",
            "authenticate",
            ip,
            auth_port,
            address=f"{ip}:{auth_port}",
            grpc_address=f"{ip}:{grpc_port}",
        )
        for i, ip in enumerate(AUTHENTICATE_IPS, 1)
    ]
    authorize = service("authorize", "authorize", AUTHORIZE_IP, authorize_port)
    proxies = [
        service(f"proxy-{i}", "proxy", ip, port, address=f"{ip}:{port}")
        for i, ip in enumerate(PROXY_IPS, 1)
    ]
    idp_config = tmp / "demo-idp.yaml"
    # The demo IdP reads Vallum's config (issuer, client, authenticate's URL), which is
    # only valid with an internal certificate; it never uses it.
    idp_keys = {
        "data_dir": str(tmp / "idp"),
        "internal_certificate_file": str(pki / "authenticate.pem"),
        "internal_certificate_key_file": str(pki / "authenticate-key.pem"),
    }
    idp_config.write_text(yaml.safe_dump({**common, **idp_keys}))
    idp = Service(
        "demo-idp",
        "demo-idp",
        "127.0.0.1",
        idp_port,
        _vallum("demo-idp", "--config", str(idp_config)),
        tmp / "demo-idp.log",
    )
    with ExitStack() as stack:
        started: list[Service] = []

        @stack.callback
        def stop_all() -> None:
            for s in reversed(started):
                s.stop()

        # In dependency order, as a compose file's health checks would: the IdP and
        # authenticate, then authorize, then the proxies (each tier in parallel).
        for tier in ([idp, *authenticate], [authorize], proxies):
            for s in tier:
                s.start()
                started.append(s)
            for s in tier:
                s.wait_ready(40)
        proxy_lb = stack.enter_context(Balancer([p.backend for p in proxies], port=port))
        auth_lb = stack.enter_context(Balancer([a.backend for a in authenticate], port=auth_port))
        yield Split(
            tmp=tmp,
            ca=pki / "ca.pem",
            signing_key=tmp / "signing-key.pem",
            port=port,
            auth_port=auth_port,
            authorize=authorize,
            authenticate=authenticate,
            proxies=proxies,
            idp=idp,
            proxy_lb=proxy_lb,
            auth_lb=auth_lb,
        )
