"""`vallum run`: one service in this process, or several under the supervisor.

`proxy_workers` above 1 makes the proxy several processes, so then even a proxy alone
(`--services proxy`, a proxy-only container) runs under the supervisor; each worker
is started with `--worker N` and serves in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from services import runtime
from services.bootstrap import (
    SERVICES,
    ServerCertificateFollower,
    own_server_certificate,
    prepare,
)
from services.supervisor import Supervisor, make_children
from services.topology import proxy_listeners
from shared.config import Config, ConfigError, load_config
from shared.listen import ensure_free
from shared.logs import setup_logging
from shared.metrics.multiproc import SharedMetrics
from shared.rpc import StartupError

log = logging.getLogger("vallum")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run Vallum's services")
    p.add_argument("--config", "-c", help="config.yaml (environment variables override it)")
    p.add_argument(
        "--services",
        help="all (default: the supervisor runs each service as a child process), or one "
        "of authenticate, authorize, proxy, or a comma list; or sidecar (the verifying "
        "sidecar, alone); overrides `services`",
    )
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.set_defaults(handler=handle)


def load(path: str | None, services: str | None) -> Config:
    environ = dict(os.environ)
    if services:
        environ["SERVICES"] = services
    return load_config(path, environ)


def handle(args: argparse.Namespace) -> int:
    try:
        config = load(args.config, args.services)
    except ConfigError as e:
        setup_logging("info")
        log.error("the configuration has problems:\n%s", e)
        return runtime.EXIT_CONFIG
    setup_logging(config.log_level, config.log_format, process_name(config, args.worker))
    if args.ready_fd is None:
        # Only the supervisor passes --ready-fd: its children load the same file, and
        # the supervisor has already told the user, so each warning appears once.
        report_notices(config)
    if config.sidecar_only:
        return runtime.run_service(config, "sidecar", starter("sidecar"), ready_fd=args.ready_fd)
    services = [s for s in SERVICES if s in config.services]
    workers = 1 if args.worker is not None else config.proxy_workers
    if len(services) == 1 and (services != ["proxy"] or workers == 1):
        return runtime.run_service(
            config,
            services[0],
            starter(services[0]),
            ready_fd=args.ready_fd,
            reload=lambda: load(args.config, args.services),
        )
    try:
        if "proxy" in services and workers > 1:
            check_shared_ports(config)
        overrides = prepare(config) if config.all_in_one else {}
    except StartupError as e:
        log.error("%s", e)
        return runtime.EXIT_CONFIG
    if config.all_in_one and config.demo:
        # DEVELOPMENT ONLY: the demo IdP and app start first, so sign-in works at once.
        services = ["demo-idp", "demo-app", *services]
    try:
        metrics = SharedMetrics(config.metrics_address) if config.metrics_address else None
    except StartupError as e:
        log.error("%s", e)
        return runtime.EXIT_CONFIG
    base_env = {**os.environ, **(metrics.child_env() if metrics else {})}
    children = make_children(services, args.config, overrides, base_env, workers)
    supervisor = Supervisor(
        children,
        banner=banner(config),
        metrics=metrics,
        json_logs=config.log_format == "json",
    )
    if config.all_in_one and own_server_certificate(config):
        supervisor.on_reload = ServerCertificateFollower(
            config, lambda: load(args.config, args.services)
        )
    return asyncio.run(supervisor.run())


def process_name(config: Config, worker: int | None) -> str:
    """This process in the logs: its service (a worker: `proxy#2`, as the supervisor
    names it), or `vallum` for the supervisor."""
    if config.sidecar_only:
        return "sidecar"
    services = [s for s in SERVICES if s in config.services]
    if worker is not None:
        return f"{services[0]}#{worker}"
    if len(services) == 1 and (services != ["proxy"] or config.proxy_workers == 1):
        return services[0]
    return "vallum"


def report_notices(config: Config) -> None:
    """Warnings about a configuration that was accepted (deprecated keys and the like)."""
    for notice in config.notices:
        log.warning("%s", notice)


def check_shared_ports(config: Config) -> None:
    """Before workers bind with SO_REUSEPORT: refuse a port anything else holds, even a
    program that set SO_REUSEPORT too (the kernel would let the two share it)."""
    if sys.platform != "linux":
        # Elsewhere SO_REUSEPORT does not spread connections (BSD: the last bind wins).
        raise StartupError(
            f"proxy_workers: {config.proxy_workers} workers share their port with Linux's "
            "SO_REUSEPORT; on this system run one worker and more replicas"
        )
    for address, key in proxy_listeners(config):
        ensure_free(address, key)


def starter(name: str) -> runtime.Starter:
    # Imported here so a process pays only for the service it runs.
    if name == "authenticate":
        from services.authenticate.service import start as start_authenticate

        return start_authenticate
    if name == "authorize":
        from services.authorize.service import start as start_authorize

        return start_authorize
    if name == "sidecar":
        from services.sidecar.service import start as start_sidecar

        return start_sidecar
    from services.proxy.service import start as start_proxy

    return start_proxy


def banner(config: Config) -> str:
    scheme = "http" if config.insecure_server else "https"
    port = "" if config.address.port in (80, 443) else f":{config.address.port}"
    lines = ["all services ready"]
    for route in config.routes:
        lines.append(f"  route {route.from_url} -> {', '.join(t.url for t in route.to) or '-'}")
    if config.authenticate_service_url:
        lines.append(f"  sign in at {config.authenticate_service_url}")
    lines.append(f"  health: {scheme}://localhost{port}/healthz")
    if config.metrics_address is not None:
        where = config.metrics_address
        metrics_host = where if where.host else f"localhost:{where.port}"
        lines.append(f"  metrics: http://{metrics_host}/metrics")
    if not config.insecure_server and config.certificate is None and not config.certificates:
        lines.append(
            f"  the server certificate is from Vallum's own CA: trust "
            f"{config.data_dir}/pki/ca.pem (e.g. curl --cacert)"
        )
    return "\n".join(lines)
