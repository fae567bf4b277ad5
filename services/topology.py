"""Where each service listens and whom it calls: pure functions of the config.

In a split deployment one process runs one service and `grpc_address` is its
gRPC listener. Under the all-in-one supervisor two gRPC services share a config, so
each listens where the others are told to find it: authorize at the first
`authorize_service_url`, authenticate's SessionService at the first
`databroker_service_url`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from shared.config import Address, Config

GRPC_SERVICES = ("authenticate", "authorize")


def format_address(address: Address) -> str:
    host = address.host or "0.0.0.0"  # noqa: S104 - empty host means all interfaces
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{address.port}"


def url_address(url: str) -> Address:
    parts = urlsplit(url)
    return Address(parts.hostname or "", parts.port or 443)


def service_url(config: Config, service: str) -> str:
    if service == "authorize":
        return config.authorize_service_url[0]
    if service == "authenticate":
        return config.databroker_service_url[0]
    raise ValueError(f"{service} has no gRPC service URL")


def grpc_listen_address(config: Config, service: str) -> str:
    grpc_in_process = [s for s in GRPC_SERVICES if s in config.services]
    if config.grpc_address is not None and grpc_in_process == [service]:
        return format_address(config.grpc_address)
    return format_address(url_address(service_url(config, service)))


def url_key(service: str) -> str:
    return "authorize_service_url" if service == "authorize" else "databroker_service_url"


def authenticate_http_address(config: Config) -> tuple[str, bool] | None:
    """Where authenticate serves its sign-in pages, and whether that is the public
    listener (`address`, split mode) or the internal one behind the proxy."""
    if (
        config.services == frozenset({"authenticate"})
        and not config.authenticate_internal_service_url
    ):
        return format_address(config.address), True
    if config.authenticate_internal_service_url:
        return format_address(url_address(config.authenticate_internal_service_url)), False
    return None


def default_authenticate_internal_url(config: Config) -> str:
    """All-in-one: the sign-in pages listen next to the SessionService port."""
    grpc = url_address(config.databroker_service_url[0])
    host = grpc.host or "127.0.0.1"
    return f"https://{host}:{grpc.port + 1}"


def proxy_listeners(config: Config) -> list[tuple[str, str]]:
    """(address, config key) of each socket the proxy listens on, as its start() binds
    them: the redirect listener exists only next to an HTTPS one."""
    listeners = [(format_address(config.address), "address")]
    if config.http_redirect_addr is not None and not config.insecure_server:
        listeners.append((format_address(config.http_redirect_addr), "http_redirect_addr"))
    return listeners
