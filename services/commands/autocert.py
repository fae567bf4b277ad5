"""`vallum autocert status`: what the proxy has obtained from the ACME CA, host by host.

It only reads autocert_dir, as the proxy left it; it never orders, renews or creates
anything there, so it is safe to run next to live replicas.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from services.proxy.autocert.store import AutocertStore, HostState, StoreError
from shared.config import Config, ConfigError, load_config
from shared.pki import PKIError, load_certificates, serial_hex

# Distinct from 1 (autocert is off, or autocert_dir cannot be read), so a script can
# tell a configuration to fix from a deployment to look at.
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 1

_DAY = dt.timedelta(days=1)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("autocert", help="inspect the certificates obtained from an ACME CA")
    asub = p.add_subparsers(dest="autocert_command", required=True, metavar="COMMAND")
    status = asub.add_parser(
        "status",
        help="each autocert host's certificate, its last error and its next attempt",
    )
    status.add_argument("--config", "-c", help="config.yaml (environment variables override it)")
    status.add_argument(
        "--json", action="store_true", help="print a JSON list with one object per host"
    )
    status.set_defaults(handler=handle)


@dataclass(frozen=True, slots=True)
class HostStatus:
    host: str
    # valid | expired | none
    state: str
    issuer: str | None = None
    not_after: dt.datetime | None = None
    serial: str | None = None
    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str = ""
    next_attempt: float | None = None
    failures: int = 0
    # The stored certificate cannot be read or parsed; the proxy cannot serve it either.
    certificate_error: str | None = None

    def days_left(self, now: dt.datetime) -> int | None:
        """Whole days until not_after (rounded toward zero), negative once it has passed."""
        if self.not_after is None:
            return None
        return int((self.not_after - now) / _DAY)

    def to_json(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "host": self.host,
            "state": self.state,
            "issuer": self.issuer,
            "not_after": None if self.not_after is None else _iso(self.not_after),
            "days_left": self.days_left(now),
            "serial": self.serial,
            "last_error": self.last_error or None,
            "last_attempt": _iso_epoch(self.last_attempt),
            "last_success": _iso_epoch(self.last_success),
            "next_attempt": _iso_epoch(self.next_attempt),
            "failures": self.failures,
            "certificate_error": self.certificate_error,
        }

    def line(self, now: dt.datetime, width: int) -> str:
        parts: list[str] = []
        days = self.days_left(now)
        if self.not_after is not None and days is not None:
            when = f"{_days(days)} left" if self.state == "valid" else f"expired {_days(-days)} ago"
            parts += [
                f"issuer {self.issuer}",
                f"not after {_iso(self.not_after)} ({when})",
                f"serial {self.serial}",
            ]
        elif self.certificate_error is None:
            parts.append("no certificate yet")
        if self.certificate_error is not None:
            parts.append(f"unusable certificate: {self.certificate_error}")
        if self.last_error:
            count = f", {self.failures} failures" if self.failures > 1 else ""
            at = f" ({_iso_epoch(self.last_attempt)}{count})" if self.last_attempt else ""
            # One host, one line: an ACME problem document may span several.
            parts.append(f"last error{at}: {' '.join(self.last_error.split())}")
        next_attempt = _iso_epoch(self.next_attempt)
        parts.append(f"next attempt {next_attempt}" if next_attempt else "no attempt scheduled")
        return f"{self.host:<{width}}  {self.state:<7}  {', '.join(parts)}"


def _days(count: int) -> str:
    return f"{count} day{'s' * (count != 1)}"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_epoch(seconds: float | None) -> str | None:
    return None if seconds is None else _iso(dt.datetime.fromtimestamp(seconds, dt.UTC))


def _issuer(cert: x509.Certificate) -> str:
    names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names and isinstance(names[0].value, str):
        return names[0].value
    return cert.issuer.rfc4514_string()


def host_status(store: AutocertStore | None, host: str, now: dt.datetime) -> HostStatus:
    """One host's status; `store` None means autocert_dir does not exist yet."""
    if store is None:
        return HostStatus(host, "none")
    try:
        state = store.state(host)
        stored = store.certificate(host)
    except StoreError as e:
        return HostStatus(host, "none", certificate_error=str(e))
    timing = _timing(state)
    if stored is None:
        return HostStatus(host, "none", **timing)
    chain_path = store.certificate_paths(host)[0]
    try:
        # fullchain.pem holds the leaf first (RFC 8555 section 9.1).
        leaf = load_certificates(stored[0], source=str(chain_path))[0]
    except PKIError as e:
        return HostStatus(host, "none", certificate_error=str(e), **timing)
    not_after = leaf.not_valid_after_utc
    return HostStatus(
        host,
        "valid" if now < not_after else "expired",
        issuer=_issuer(leaf),
        not_after=not_after,
        serial=serial_hex(leaf.serial_number),
        **timing,
    )


def _timing(state: HostState) -> dict[str, Any]:
    return {
        "last_attempt": state.last_attempt,
        "last_success": state.last_success,
        "last_error": state.last_error,
        "next_attempt": state.next_attempt,
        "failures": state.failures,
    }


def _fail(code: int, message: str) -> int:
    print(f"vallum autocert: {message}", file=sys.stderr)
    return code


def handle(args: argparse.Namespace) -> int:
    name = args.config or "configuration"
    try:
        config = load_config(args.config, dict(os.environ))
    except ConfigError as e:
        n = len(e.problems)
        print(f"vallum autocert: {name}: {n} problem{'s' * (n != 1)}", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if not config.autocert:
        return _fail(EXIT_UNAVAILABLE, f"autocert is off in {name} (set autocert: true)")
    try:
        return _report(config, args.json)
    except (StoreError, OSError) as e:
        return _fail(EXIT_UNAVAILABLE, str(e))


def _report(config: Config, as_json: bool) -> int:
    now = dt.datetime.now(dt.UTC)
    directory = Path(config.autocert_directory)
    hosts = config.autocert_hosts()
    # The store creates its layout when opened; a directory the proxy has not made yet
    # must stay absent (it may not even be this machine's to create).
    missing = not directory.exists()
    if missing:
        note = f"{directory} does not exist: no certificate has been obtained yet"
        store = None
    elif not os.access(directory, os.R_OK | os.X_OK):
        # Opening the store would report this as a directory it cannot create.
        raise StoreError(f"cannot read {directory}: permission denied (run as the proxy's user)")
    else:
        note = f"autocert_dir {directory}, ACME directory {config.acme_directory_url}"
        store = AutocertStore(directory)
    statuses = [host_status(store, host, now) for host in hosts]
    if as_json:
        if missing:
            print(note, file=sys.stderr)
        print(json.dumps([s.to_json(now) for s in statuses], indent=2))
        return 0
    print(note)
    if not hosts:
        print(
            "no https route names a host autocert can obtain a certificate for "
            "(wildcard and IP-address hosts need certificates in certificates)"
        )
    width = max((len(host) for host in hosts), default=0)
    for status in statuses:
        print(status.line(now, width))
    return 0
