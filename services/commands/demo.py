"""`vallum demo-idp` / `vallum demo-app`: the DEVELOPMENT ONLY pieces of `make run`,
started by the all-in-one supervisor when the config says `demo: true`."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from services import runtime
from services.commands.run import load
from services.demo_app.app import app as demo_app
from services.demo_idp.config import DemoIdPConfig
from services.demo_idp.service import start as start_idp
from shared.config import Config, ConfigError
from shared.listen import bind
from shared.logs import setup_logging


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, handler in (("demo-idp", handle_idp), ("demo-app", handle_app)):
        p = sub.add_parser(name, help=argparse.SUPPRESS)
        p.add_argument("--config", "-c")
        p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
        p.set_defaults(handler=handler)


def idp_config(config: Config) -> DemoIdPConfig:
    assert config.idp_provider_url and config.authenticate_service_url
    issuer = urlsplit(config.idp_provider_url)
    pki = Path(config.data_dir) / "pki"
    auth = config.authenticate_service_url.rstrip("/")
    return DemoIdPConfig(
        issuer=config.idp_provider_url,
        cert_file=pki / "demo-idp.pem",
        key_file=pki / "demo-idp-key.pem",
        client_id=config.idp_client_id or "",
        client_secret=config.idp_client_secret or "",
        redirect_uris=(f"{auth}/oauth2/callback",),
        post_logout_redirect_uris=(f"{auth}/.pomerium/signed_out",),
        host="127.0.0.1",
        port=issuer.port or 443,
    )


def _config(args: argparse.Namespace) -> Config | None:
    try:
        return load(args.config, None)
    except ConfigError as e:
        print(f"the configuration has problems:\n{e}")
        return None


def handle_idp(args: argparse.Namespace) -> int:
    config = _config(args)
    if config is None:
        return runtime.EXIT_CONFIG
    setup_logging(config.log_level)

    async def start(cfg: Config) -> runtime.Running:
        return await start_idp(idp_config(cfg))

    return runtime.run_service(config, "demo-idp", start, ready_fd=args.ready_fd)


@dataclass
class DemoApp:
    server: uvicorn.Server
    task: asyncio.Task[None]
    address: str

    def describe(self) -> str:
        return f"demo app (DEVELOPMENT ONLY) on http://{self.address}"

    async def stop(self, grace: float) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, grace)


def handle_app(args: argparse.Namespace) -> int:
    config = _config(args)
    if config is None:
        return runtime.EXIT_CONFIG
    setup_logging(config.log_level)
    target = urlsplit(config.routes[0].to[0].url)

    async def start(cfg: Config) -> runtime.Running:
        address = f"{target.hostname}:{target.port or 80}"
        sock = bind(address, "routes[0].to")
        uv = uvicorn.Config(demo_app, log_config=None, access_log=False, lifespan="off")
        server = uvicorn.Server(uv)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # uvicorn reports start-up only through this flag
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        return DemoApp(server, task, address)

    return runtime.run_service(config, "demo-app", start, ready_fd=args.ready_fd)
