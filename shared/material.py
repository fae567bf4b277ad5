"""Certificate material from config sources, checked once and re-read when it changes.

A certificate, key or CA bundle comes inline (bytes in the config) or from a file
path. Files are watched by their stat signature so that rotation on disk reaches a
running service without a restart; inline material never changes.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from shared.pki import (
    PKIError,
    key_matches_certificate,
    load_certificates,
    load_private_key,
)


class SourceLike(Protocol):
    """A config value that is either inline bytes or a path (shared.config.Source)."""

    @property
    def path(self) -> str | None: ...

    @property
    def data(self) -> bytes | None: ...


class MaterialError(Exception):
    """Certificate material that cannot be used; the message names the file and the fix."""


def describe_source(source: SourceLike, key: str) -> str:
    return source.path if source.path else f"{key} (inline)"


def read_source(source: SourceLike, key: str) -> bytes:
    if source.path is None:
        if source.data is None:
            raise MaterialError(f"{key}: no value")
        return source.data
    try:
        with open(source.path, "rb") as f:
            return f.read()
    except OSError as e:
        raise MaterialError(f"{key}: cannot read {source.path}: {e.strerror}") from None


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate chain (leaf first) and its private key, both as PEM, known to match."""

    cert_pem: bytes
    key_pem: bytes
    leaf: x509.Certificate


def load_key_pair(cert: SourceLike, key: SourceLike, *, cert_key: str, key_key: str) -> KeyPair:
    cert_pem = read_source(cert, cert_key)
    key_pem = read_source(key, key_key)
    try:
        chain = load_certificates(cert_pem)
    except PKIError as e:
        raise MaterialError(f"{cert_key}: {describe_source(cert, cert_key)}: {e}") from None
    try:
        private_key = load_private_key(key_pem)
    except PKIError as e:
        raise MaterialError(f"{key_key}: {describe_source(key, key_key)}: {e}") from None
    if not key_matches_certificate(private_key, chain[0]):
        raise MaterialError(
            f"{key_key}: the key in {describe_source(key, key_key)} does not match the "
            f"certificate in {describe_source(cert, cert_key)}; give the key that was "
            "issued with this certificate"
        )
    return KeyPair(cert_pem=cert_pem, key_pem=key_pem, leaf=chain[0])


def load_cert_chain(ctx: ssl.SSLContext, pair: KeyPair) -> None:
    """Give `ctx` the pair to present, for servers and clients alike."""
    # ssl can load a chain only from files: write it to a private directory for the
    # instant it takes, so inline certificates work too.
    with tempfile.TemporaryDirectory(prefix="vallum-tls-") as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        for path, data in ((cert_path, pair.cert_pem), (key_path, pair.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)


def load_ca_bundle(source: SourceLike, key: str) -> tuple[bytes, list[x509.Certificate]]:
    pem = read_source(source, key)
    try:
        certs = load_certificates(pem)
    except PKIError as e:
        raise MaterialError(f"{key}: {describe_source(source, key)}: {e}") from None
    return pem, certs


class FileWatch:
    """Tells whether any of a set of files changed since the last look.

    The signature is (inode, size, mtime): an atomic rename-over, which is how
    certificate tools replace files, changes the inode even within one mtime tick.
    """

    def __init__(self, paths: Sequence[str | None]) -> None:
        self._paths = [p for p in paths if p]
        self._seen = self._signature()

    def _signature(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for path in self._paths:
            try:
                st = os.stat(path)
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((0, 0, 0))
        return tuple(out)

    @property
    def watching(self) -> bool:
        return bool(self._paths)

    def changed(self) -> bool:
        now = self._signature()
        if now == self._seen:
            return False
        self._seen = now
        return True
