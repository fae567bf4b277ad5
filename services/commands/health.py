"""`vallum health`: is this host's Vallum service up? For container health checks and
Kubernetes exec probes.

authorize and authenticate serve the standard gRPC health service, but only over
mutual TLS (no service has an insecure port), so a probe that has no certificate
cannot ask them. This command asks with the process's own configuration: its own
internal certificate and CA, dialling its own gRPC listener on this host. The proxy
is asked for `/healthz` on its own `address`, like a load balancer would.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from cryptography import x509

from services.topology import grpc_listen_address
from shared.config import Config, ConfigError, Source, load_config
from shared.material import MaterialError
from shared.rpc import InternalTLS, StartupError, check_health, describe_rpc_error, internal_tls

SERVICES = ("authenticate", "authorize", "proxy")
DEFAULT_TIMEOUT = 2.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "health",
        help="check that this host's Vallum service answers (exit 0) or not (exit 1)",
        description=(
            "Check the health of the Vallum service(s) that this configuration runs on "
            "this host, for container health checks and Kubernetes exec probes. "
            "authorize and authenticate: the standard gRPC health Check over mTLS, with "
            "this configuration's own internal certificate and CA (all-in-one: the ones "
            "in data_dir/pki), on the service's own gRPC listen address (127.0.0.1 when "
            "it listens on every interface). proxy: GET /healthz on its own `address` "
            "over 127.0.0.1; it answers 200 only when authorize answers too. The proxy's "
            "server certificate is NOT verified: this is a local liveness check, not a "
            "check of the certificate users see. Exit 0 when every service checked is "
            "SERVING (HTTP 200), 1 otherwise, with one line per service."
        ),
    )
    p.add_argument("--config", "-c", help="config.yaml (environment variables override it)")
    p.add_argument(
        "--service",
        choices=SERVICES,
        help="the service to check (default: every service the configuration runs here, "
        "from `services` or SERVICES)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT:g})",
    )
    p.set_defaults(handler=handle)


@dataclass(frozen=True, slots=True)
class Result:
    service: str
    healthy: bool
    detail: str

    def line(self) -> str:
        return f"{self.service}: {'ok' if self.healthy else 'FAILED'}: {self.detail}"


def handle(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, dict(os.environ))
    except ConfigError as e:
        where = args.config or "configuration"
        print(f"vallum health: {where} has problems: {'; '.join(map(str, e.problems))}")
        return 1
    if args.service is not None:
        services = [args.service]
    else:
        services = [s for s in SERVICES if s in config.services]
    if not services:
        print("vallum health: this configuration runs no authenticate, authorize or proxy")
        return 1
    if args.timeout <= 0:
        print("vallum health: --timeout must be above 0")
        return 1
    results = asyncio.run(check_all(config, services, args.timeout))
    for result in results:
        print(result.line())
    sys.stdout.flush()
    return 0 if all(r.healthy for r in results) else 1


async def check_all(config: Config, services: list[str], timeout: float) -> list[Result]:  # noqa: ASYNC109
    """All at once, so a probe's own deadline covers one `timeout`, not one per service."""
    return list(
        await asyncio.gather(
            *(
                check_proxy(config, timeout)
                if service == "proxy"
                else check_grpc(config, service, timeout)
                for service in services
            )
        )
    )


# --- authorize, authenticate: gRPC health over mTLS ---------------------------------


def service_tls(config: Config, service: str) -> InternalTLS:
    """The process's own mTLS material. The all-in-one supervisor refuses internal_*
    keys and hands each child the certificate it made in data_dir/pki, so there the
    files are found by the same names."""
    if config.all_in_one and config.internal_certificate is None:
        pki = Path(config.data_dir) / "pki"
        return InternalTLS(
            Source(str(pki / "ca.pem"), None),
            Source(str(pki / f"{service}.pem"), None),
            Source(str(pki / f"{service}-key.pem"), None),
            config.trust_domain,
        )
    return internal_tls(config)


def dial_host(listen_host: str) -> str:
    """Where to reach a listener on `listen_host` from this host: every interface means
    loopback; a specific address or name is dialled as it is."""
    host = listen_host.strip("[]")
    try:
        address = ipaddress.ip_address(host or "0.0.0.0")  # noqa: S104 - empty: every interface
    except ValueError:
        return host
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


def tls_name(leaf: x509.Certificate, host: str) -> str | None:
    """The name to verify the server certificate against when dialling `host`.

    The server presents the same certificate as this process holds (it is the same
    service), so the name must be one it carries: `host` itself when it is among its
    SANs, else one of its DNS names (`vallum ca issue --service` adds the service
    name and localhost). None: verify `host` as it is and let the handshake say why.
    """
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    dns = san.get_values_for_type(x509.DNSName)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host.lower() in (name.lower() for name in dns):
            return None
    else:
        if ip in san.get_values_for_type(x509.IPAddress):
            return None
    plain = [name for name in dns if not name.startswith("*.")]
    if "localhost" in plain:
        return "localhost"
    return plain[0] if plain else None


async def check_grpc(config: Config, service: str, timeout: float) -> Result:  # noqa: ASYNC109
    listen = grpc_listen_address(config, service)
    listen_host, _, port = listen.rpartition(":")
    host = dial_host(listen_host)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        ca_pem, pair = service_tls(config, service).load()
    except (StartupError, MaterialError) as e:
        return Result(service, False, f"cannot load this service's certificate: {e}")
    name = tls_name(pair.leaf, host)
    options: list[tuple[str, str | int]] = []
    if name is not None:
        options.append(("grpc.ssl_target_name_override", name))
    creds = grpc.ssl_channel_credentials(ca_pem, pair.key_pem, pair.cert_pem)
    url = f"https://{target}"
    async with grpc.aio.secure_channel(target, creds, options=options) as channel:
        try:
            status = await check_health(channel, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            return Result(service, False, describe_rpc_error(e, url))
    via = f" (TLS name {name})" if name is not None else ""
    detail = f"{status} at {target} over mTLS{via}"
    return Result(service, status == "SERVING", detail)


# --- proxy: /healthz ----------------------------------------------------------------


def _unverified_context() -> ssl.SSLContext:
    # A liveness check of this host's own listener: which certificate it serves is
    # the business of `vallum check` and of the users' clients, not of this probe.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def check_proxy(config: Config, timeout: float) -> Result:  # noqa: ASYNC109
    host = dial_host(config.address.host)
    scheme = "http" if config.insecure_server else "https"
    netloc = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{netloc}:{config.address.port}/healthz"
    verify: ssl.SSLContext | bool = False if config.insecure_server else _unverified_context()
    try:
        async with httpx.AsyncClient(verify=verify, timeout=timeout) as client:
            response = await client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as e:
        reason = str(e) or type(e).__name__
        return Result("proxy", False, f"{url}: {reason}")
    detail = f"{url}: HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "authorize" in body:
        detail += f", authorize {body['authorize']}"
    return Result("proxy", response.status_code == 200, detail)
