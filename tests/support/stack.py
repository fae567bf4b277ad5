"""Vallum all-in-one plus real upstreams, as separate processes on 127.0.0.1.

Host names: the client connects to 127.0.0.1 and names the route host in the TLS
server name (httpx's `sni_hostname` extension) and the Host header; nothing edits
/etc/hosts.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.net import free_port, wait_for_port
from tests.support.procs import Proc, vallum


@dataclass
class Upstream:
    port: int
    proc: Proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def https_url(self) -> str:
        """For an upstream started with `certfile`/`keyfile` (it then speaks only TLS)."""
        return f"https://127.0.0.1:{self.port}"

    def hits(self) -> dict[str, int]:
        result: dict[str, int] = httpx.get(f"{self.url}/__hits").json()
        return result


@contextmanager
def upstream(**kw: str) -> Iterator[Upstream]:
    port = free_port()
    args = [sys.executable, "-m", "tests.support.upstream_app", "--port", str(port)]
    for key, value in kw.items():
        args += [f"--{key}", value]
    proc = Proc(args)
    try:
        wait_for_port(port)
        yield Upstream(port, proc)
    finally:
        proc.stop()


@dataclass
class Vallum:
    proc: Proc
    port: int
    data: Path
    _clients: dict[str, httpx.Client] = field(default_factory=dict)
    # The CA of configured server certificates (`certificates:`), when not Vallum's own.
    server_ca: Path | None = None
    # insecure_server: plain HTTP on `address`.
    insecure: bool = False
    # The config file `all_in_one` wrote (what `restart` starts again with).
    config_path: Path | None = None

    def restart(self, timeout: float = 30.0) -> int:
        """Stop this all-in-one completely (SIGTERM, wait for the supervisor to exit),
        then start it again with the same config file and data_dir; returns the old
        supervisor's exit code."""
        assert self.config_path is not None, "only an all_in_one() stack can restart"
        for c in self._clients.values():
            c.close()
        self._clients.clear()
        code = self.proc.stop()
        self.proc = vallum("run", "--config", str(self.config_path))
        self.proc.wait_for("all services ready", timeout=timeout)
        return code

    @property
    def ca(self) -> Path:
        if self.server_ca is not None:
            return self.server_ca
        return self.data / "pki" / "ca.pem"

    @property
    def scheme(self) -> str:
        return "http" if self.insecure else "https"

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.ca)), **kw)

    def request(
        self,
        method: str,
        host: str,
        path: str = "/",
        *,
        sni: str | None = None,
        headers: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """`host` is the route host without port; the request goes to 127.0.0.1.

        One client (one connection pool) per TLS server name: httpx pools by
        origin, and a connection opened for one name must not carry another's
        requests (Vallum answers those with 421, as it should).
        """
        name = sni or host
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.client(timeout=30)
        # JSON unless the test asks otherwise: `*/*` gets HTML, as from Pomerium.
        all_headers = {
            "Host": f"{host}:{self.port}",
            "Accept": "application/json",
            **(headers or {}),
        }
        return client.request(
            method,
            f"{self.scheme}://127.0.0.1:{self.port}{path}",
            headers=all_headers,
            extensions={"sni_hostname": name},
            **kw,
        )


def route_host(name: str, port: int) -> str:
    return f"https://{name}.localhost:{port}"


@contextmanager
def all_in_one(
    tmp_path: Path,
    routes: list[dict[str, Any]],
    port: int,
    *,
    server_ca: Path | None = None,
    **extra: Any,
) -> Iterator[Vallum]:
    """`extra` are more config keys; `server_ca` is what clients trust for the proxy's
    own certificate when `certificates` come from elsewhere (mkcert)."""
    config = {
        "address": f"127.0.0.1:{port}",
        "authorize_service_url": f"https://127.0.0.1:{free_port()}",
        "databroker_service_url": f"https://127.0.0.1:{free_port()}",
        "authenticate_service_url": route_host("authenticate", port),
        "data_dir": str(tmp_path / "data"),
        "routes": routes,
        **extra,
    }
    if "idp_provider_url" in config:
        # Its default is the sessions port + 1, which nobody reserved for the test.
        config.setdefault("authenticate_internal_service_url", f"https://127.0.0.1:{free_port()}")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = vallum("run", "--config", str(path))
    try:
        proc.wait_for("all services ready", timeout=30)
        v = Vallum(
            proc,
            port,
            tmp_path / "data",
            server_ca=server_ca,
            insecure=bool(extra.get("insecure_server")),
            config_path=path,
        )
        yield v
    finally:
        for c in v._clients.values() if "v" in locals() else ():
            c.close()
        proc.stop()
        if "v" in locals() and v.proc is not proc:  # restarted: stop the current one too
            v.proc.stop()
