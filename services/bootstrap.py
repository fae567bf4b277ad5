"""What the all-in-one supervisor prepares in `data_dir` before starting children.

On first start: an internal CA, one certificate per service (its SPIFFE identity),
a server certificate for the route hosts when none is configured, and the shared
and cookie secrets when none are configured. Later starts reuse them, re-issuing a
certificate only when it is near expiry or no longer names what it must. The result
is, per child, the environment that points it at its material.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from services.reload import file_signature, next_poll
from services.topology import (
    GRPC_SERVICES,
    default_authenticate_internal_url,
    grpc_listen_address,
)
from shared.config import Config, ConfigError
from shared.pki import (
    CA,
    PKIError,
    init_ca,
    issue_server,
    issue_service,
    load_ca,
    load_certificates,
    spiffe_ids,
    write_issued,
)
from shared.rpc import StartupError, spiffe_id

log = logging.getLogger("vallum.supervisor")

SERVICES = ("authenticate", "authorize", "proxy")
RENEW_BEFORE = dt.timedelta(days=30)


def route_hosts(config: Config) -> list[str]:
    hosts: list[str] = []
    for url in [r.from_url for r in config.routes] + [config.authenticate_service_url or ""]:
        host = urlsplit(url).hostname
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def own_server_certificate(config: Config) -> bool:
    """Whether the proxy serves a certificate the supervisor makes (none configured)."""
    return not config.insecure_server and config.certificate is None and not config.certificates


def server_certificate(config: Config, ca: CA) -> Path:
    """The proxy's server certificate from the internal CA, (re)issued when it does not
    name every route host; the proxy re-reads the file when it changes."""
    pki = Path(config.data_dir) / "pki"
    # With autocert the route hosts get public certificates; the internal one
    # only serves direct checks such as https://localhost/healthz.
    routes = [] if config.autocert else route_hosts(config)
    hosts = [*routes, "localhost", "127.0.0.1"]
    cert = pki / "proxy-server.pem"
    if _needs_issue(cert, hosts):
        write_issued(issue_server(ca, hosts), pki, "proxy-server", force=True)
    return cert


class ServerCertificateFollower:
    """All-in-one: when a reloaded config names new route hosts, the server certificate
    the supervisor made is issued again to name them (on SIGHUP or a file change)."""

    def __init__(self, config: Config, load: Callable[[], Config]) -> None:
        self._path = config.source_path
        self._load = load
        self._seen = file_signature(self._path)
        self._wake = asyncio.Event()

    def now(self) -> None:
        self._wake.set()

    async def watch(self) -> None:
        while True:
            woken = await next_poll(self._wake)
            seen = file_signature(self._path)
            if woken or seen != self._seen:
                self._seen = seen
                await asyncio.to_thread(self._follow)

    def _follow(self) -> None:
        try:
            config = self._load()
        except ConfigError:
            return  # each service says why it refuses the file
        if not own_server_certificate(config):
            return
        try:
            # The CA made at start: never a new one here (that would be a second root).
            server_certificate(config, load_ca(Path(config.data_dir) / "pki"))
        except (PKIError, OSError) as e:
            log.error("the server certificate could not be issued for the new routes: %s", e)


def _needs_issue(path: Path, must_name: list[str]) -> bool:
    try:
        cert = load_certificates(path.read_bytes())[0]
    except (OSError, PKIError):
        return True
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return True
    names = set(spiffe_ids(cert))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.update(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return not set(must_name) <= names


def _ca(pki: Path) -> CA:
    if (pki / "ca.pem").exists():
        return load_ca(pki)
    log.info("creating the internal CA in %s", pki)
    return init_ca(pki)


def _secret_file(directory: Path, name: str) -> str:
    path = directory / name
    if not path.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        log.info("generated %s in %s", name, path)
    return str(path)


def prepare(config: Config) -> dict[str, dict[str, str]]:
    """Make the data_dir material and return each child's environment overrides."""
    if config.internal_certificate is not None:
        raise StartupError(
            "internal_certificate: all-in-one issues one certificate per service from its "
            "own CA in data_dir; remove the internal_* keys, or run the services separately"
        )
    data = Path(config.data_dir)
    pki = data / "pki"
    try:
        ca = _ca(pki)
        common: dict[str, str] = {"CERTIFICATE_AUTHORITY_FILE": str(pki / "ca.pem")}
        env: dict[str, dict[str, str]] = {}
        for service in SERVICES:
            cert = pki / f"{service}.pem"
            if _needs_issue(cert, [spiffe_id(config.trust_domain, service)]):
                issued = issue_service(ca, service, config.trust_domain)
                write_issued(issued, pki, service, force=True)
            env[service] = {
                **common,
                "INTERNAL_CERTIFICATE_FILE": str(cert),
                "INTERNAL_CERTIFICATE_KEY_FILE": str(pki / f"{service}-key.pem"),
            }
        if own_server_certificate(config):
            cert = server_certificate(config, ca)
            env["proxy"]["CERTIFICATE_FILE"] = str(cert)
            env["proxy"]["CERTIFICATE_KEY_FILE"] = str(pki / "proxy-server-key.pem")
        if config.demo:
            cert = pki / "demo-idp.pem"
            if _needs_issue(cert, ["localhost"]):
                write_issued(
                    issue_server(ca, ["localhost", "127.0.0.1"]), pki, "demo-idp", force=True
                )
            # The demo IdP's certificate is from the internal CA: authenticate trusts it.
            env["authenticate"]["IDP_CA_FILE"] = str(pki / "ca.pem")
    except PKIError as e:
        raise StartupError(f"data_dir: cannot prepare the internal PKI in {pki}: {e}") from None
    for key in ("shared_secret", "cookie_secret"):
        if getattr(config, key) is None:
            path = _secret_file(data / "secrets", key)
            for overrides in env.values():
                overrides[f"{key.upper()}_FILE"] = path
    for service in GRPC_SERVICES:
        env[service]["GRPC_ADDRESS"] = grpc_listen_address(config, service)
    # Sign-in pages exist only with an identity provider; without one the
    # authenticate host stays an ordinary host (no route: 404).
    if (
        config.authenticate_service_url
        and config.idp_provider_url
        and not config.authenticate_internal_service_url
    ):
        internal = default_authenticate_internal_url(config)
        for service in ("authenticate", "proxy"):
            env[service]["AUTHENTICATE_INTERNAL_SERVICE_URL"] = internal
    return env
