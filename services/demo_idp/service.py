"""Running the demo IdP: HTTPS with uvicorn on the configured address.

DEVELOPMENT ONLY. `start(config)` returns a handle with `describe()` and
`stop(grace)`, like the other services; the supervisor starts it only when the
configuration asks for the demo IdP.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Generator
from dataclasses import dataclass

import uvicorn

from services.demo_idp.app import build_app
from services.demo_idp.authorization import AuthorizationServer
from services.demo_idp.config import DemoIdPConfig
from shared.rpc import StartupError

log = logging.getLogger("vallum.demo_idp")

WARNING = "DEVELOPMENT ONLY: the demo identity provider lets anyone sign in as a demo user"


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process's runtime owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class DemoIdP:
    config: DemoIdPConfig
    authorization: AuthorizationServer
    server: uvicorn.Server
    task: asyncio.Task[None]
    bound: str

    def describe(self) -> str:
        users = ", ".join(user.email for user in self.config.users)
        return (
            f"demo IdP (DEVELOPMENT ONLY) on https://{self.bound}, issuer "
            f"{self.config.issuer_url}, client {self.config.client_id}, users {users}"
        )

    async def stop(self, grace: float) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.server.force_exit = True
            await self.task


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        hint = " (another process holds it)" if e.errno == errno.EADDRINUSE else ""
        address = _address(host, port)
        raise StartupError(f"demo IdP: cannot listen on {address}: {e.strerror}{hint}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def start(config: DemoIdPConfig) -> DemoIdP:
    for path, what in ((config.cert_file, "certificate"), (config.key_file, "key")):
        if not path.is_file():
            raise StartupError(f"demo IdP: TLS {what} file {path} does not exist")
    authorization = AuthorizationServer(config)
    sock = _bind(config.host, config.port)
    uv_config = uvicorn.Config(
        build_app(authorization),
        ssl_certfile=str(config.cert_file),
        ssl_keyfile=str(config.key_file),
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    try:
        uv_config.load()  # reads the certificate and key now, so a bad file is named
    except (OSError, ssl.SSLError) as e:
        sock.close()
        raise StartupError(f"demo IdP: cannot load the TLS certificate or key: {e}") from None
    server = _Server(uv_config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            sock.close()
            reason = task.exception() if not task.cancelled() else "cancelled"
            raise StartupError(f"demo IdP: the server did not start: {reason}")
        await asyncio.sleep(0.02)
    host, port = sock.getsockname()[:2]
    log.warning("%s (issuer %s)", WARNING, config.issuer_url)
    return DemoIdP(config, authorization, server, task, _address(host, port))
