"""autocert_dir: certificates, per-host state, the ACME account and HTTP-01 answers.

Several proxy replicas may share the directory (a volume): one of them orders a
host's certificate while holding that host's lock (flock), the others pick the files
up when they change. Every file is written to a temporary name and renamed over, so a
reader sees the old file or the new one, never half. Keys are 0600.

Layout:
    accounts/<directory id>/key.pem       the ACME account key
    accounts/<directory id>/account.json  its registration (URI, contact)
    certs/<host>/fullchain.pem            leaf first, then the CA's chain
    certs/<host>/key.pem
    certs/<host>/state.json               last attempt, last error, next attempt
    http-01/<token>                       key authorizations, for whichever replica
                                          the ACME server's request reaches
    tls-alpn-01/<host>                    the same for TLS-ALPN-01, by host
    locks/<name>.lock
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.pki.errors import PKIError
from shared.pki.files import PRIVATE_MODE, PUBLIC_MODE, ensure_private_dir, write_file

# A host as a directory name: lower-case DNS labels only, so no name can climb out.
_HOST = re.compile(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
# RFC 8555 section 8.3: a token is base64url characters only.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


class StoreError(Exception):
    """autocert_dir cannot be used; the message names the path."""


@dataclass
class HostState:
    """What the last attempts for one host came to (state.json)."""

    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str = ""
    next_attempt: float | None = None
    failures: int = 0


def check_host(host: str) -> str:
    if len(host) > 253 or not _HOST.match(host):
        raise StoreError(f"not a host name autocert can store: {host!r}")
    return host


def directory_id(directory_url: str) -> str:
    """One account per ACME directory: staging and production never share one."""
    return hashlib.sha256(directory_url.encode()).hexdigest()[:16]


def _write(path: Path, data: bytes, mode: int) -> None:
    # StoreError, not PKIError: the manager counts it as a failed attempt and backs off
    # (a certificate ordered but not saved must not be ordered again at once).
    try:
        write_file(path, data, mode=mode, overwrite=True)
    except PKIError as e:
        raise StoreError(str(e)) from None


def _mkdir(path: Path) -> None:
    try:
        ensure_private_dir(path)
    except PKIError as e:
        raise StoreError(str(e)) from None


class AutocertStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            ensure_private_dir(directory)  # holds keys: not world-readable
            for sub in ("accounts", "certs", "http-01", "tls-alpn-01", "locks"):
                ensure_private_dir(directory / sub)
        except Exception as e:  # PKIError or OSError: one clear line either way
            raise StoreError(f"autocert_dir: {e}") from None

    # -- certificates ------------------------------------------------------------

    def _host_dir(self, host: str) -> Path:
        return self.directory / "certs" / check_host(host)

    def certificate_paths(self, host: str) -> tuple[Path, Path]:
        d = self._host_dir(host)
        return d / "fullchain.pem", d / "key.pem"

    def certificate(self, host: str) -> tuple[bytes, bytes] | None:
        """(fullchain PEM, key PEM), or None when there is none yet."""
        chain, key = self.certificate_paths(host)
        try:
            return chain.read_bytes(), key.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read {chain.parent}: {e.strerror}") from None

    def save_certificate(self, host: str, fullchain_pem: bytes, key_pem: bytes) -> None:
        chain, key = self.certificate_paths(host)
        _mkdir(chain.parent)
        # The key first: a reader that sees the new chain must find its key.
        _write(key, key_pem, PRIVATE_MODE)
        _write(chain, fullchain_pem, PUBLIC_MODE)

    def hosts(self) -> list[str]:
        return sorted(p.name for p in (self.directory / "certs").iterdir() if p.is_dir())

    # -- state -------------------------------------------------------------------

    def state(self, host: str) -> HostState:
        path = self._host_dir(host) / "state.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):  # none yet, or a torn or foreign file: start afresh
            return HostState()
        known = set(HostState.__dataclass_fields__)
        return HostState(**{k: v for k, v in raw.items() if k in known})

    def save_state(self, host: str, state: HostState) -> None:
        d = self._host_dir(host)
        _mkdir(d)
        data = json.dumps(asdict(state), indent=1, sort_keys=True).encode()
        _write(d / "state.json", data, PUBLIC_MODE)

    # -- the ACME account --------------------------------------------------------

    def registration(self, directory_url: str) -> dict[str, Any] | None:
        """The saved registration (its `uri`), or None: register (again) with the key."""
        path = self.directory / "accounts" / directory_id(directory_url) / "account.json"
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def account_key(self, directory_url: str) -> bytes | None:
        path = self.directory / "accounts" / directory_id(directory_url) / "key.pem"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def save_account_key(self, directory_url: str, key_pem: bytes) -> None:
        d = self.directory / "accounts" / directory_id(directory_url)
        _mkdir(d)
        _write(d / "key.pem", key_pem, PRIVATE_MODE)

    def save_account(self, directory_url: str, registration: dict[str, Any]) -> None:
        d = self.directory / "accounts" / directory_id(directory_url)
        _mkdir(d)
        data = json.dumps({"directory": directory_url, **registration}, indent=1).encode()
        _write(d / "account.json", data, PUBLIC_MODE)

    # -- HTTP-01 -----------------------------------------------------------------

    def put_http01(self, token: str, key_authorization: str) -> None:
        path = self._token_path(token)
        _write(path, key_authorization.encode(), PUBLIC_MODE)

    def http01(self, token: str) -> bytes | None:
        """The key authorization for `token`, or None (unknown or malformed token)."""
        if not _TOKEN.match(token):
            return None
        try:
            return self._token_path(token).read_bytes()
        except OSError:
            return None

    def remove_http01(self, token: str) -> None:
        with contextlib.suppress(OSError):
            self._token_path(token).unlink()

    def _token_path(self, token: str) -> Path:
        if not _TOKEN.match(token):
            raise StoreError(f"not an ACME token: {token!r}")
        return self.directory / "http-01" / token

    # -- TLS-ALPN-01 --------------------------------------------------------------

    def put_tls_alpn01(self, host: str, key_authorization: str) -> None:
        path = self.directory / "tls-alpn-01" / check_host(host)
        _write(path, key_authorization.encode(), PUBLIC_MODE)

    def tls_alpn01(self, host: str) -> bytes | None:
        try:
            return (self.directory / "tls-alpn-01" / check_host(host)).read_bytes()
        except (OSError, StoreError):
            return None

    def remove_tls_alpn01(self, host: str) -> None:
        with contextlib.suppress(OSError):
            (self.directory / "tls-alpn-01" / check_host(host)).unlink()

    # -- locks -------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str, *, wait: bool) -> Iterator[bool]:
        """An exclusive lock shared with every replica on this directory; yields False
        (at once) when another holds it and `wait` is off."""
        path = self.directory / "locks" / f"{check_host(name)}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)
