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
from services.commands.health import dial_host
from services.commands.run import load
from services.demo_app.app import create_app
from services.demo_idp.config import DemoIdPConfig
from services.demo_idp.service import start as start_idp
from shared.config import Config, ConfigError
from shared.jwt import audience_for, issuer_for
from shared.listen import bind
from shared.logs import setup_logging
from shared.verify import Verifier


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


def demo_verifiers(config: Config) -> dict[str, Verifier]:
    """A Verifier per route host, with that host's own JWKS, as a real app would use.

    The JWKS is fetched from the proxy like any client would, trusting the internal
    CA that signed the proxy's certificate; `*.localhost` need not resolve, so the
    route hosts are sent to the proxy's listen address.
    """
    proxy_ip = dial_host(config.address.host)
    ca_file = str(Path(config.data_dir) / "pki" / "ca.pem")
    verifiers: dict[str, Verifier] = {}
    for route in config.routes:
        origin = urlsplit(route.from_url)
        if origin.scheme != "https" or not origin.hostname or origin.hostname in verifiers:
            continue
        verifiers[origin.hostname] = Verifier(
            jwks_url=f"https://{origin.netloc}/.well-known/pomerium/jwks.json",
            issuer=issuer_for(origin.netloc, config.jwt_issuer_format_for(route)),
            audience=audience_for(origin.netloc),
            algorithms=("ES256", "RS256", "EdDSA"),
            ca_file=ca_file,
            resolve={origin.hostname: proxy_ip},
        )
    return verifiers


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
    setup_logging(config.log_level, config.log_format, "demo-idp")

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
    setup_logging(config.log_level, config.log_format, "demo-app")
    target = urlsplit(config.routes[0].to[0].url)

    async def start(cfg: Config) -> runtime.Running:
        address = f"{target.hostname}:{target.port or 80}"
        sock = bind(address, "routes[0].to")
        demo_app = create_app(demo_verifiers(cfg))
        uv = uvicorn.Config(demo_app, log_config=None, access_log=False, lifespan="off")
        server = uvicorn.Server(uv)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # uvicorn reports start-up only through this flag
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        return DemoApp(server, task, address)

    return runtime.run_service(config, "demo-app", start, ready_fd=args.ready_fd)
