"""Server certificates, chosen by SNI and reloaded when their files change.

Used by the proxy's listener and by authenticate's public pages (split mode).

Each configured pair gets its own SSLContext; the listener's SNI callback switches
the connection to the context whose certificate names the requested host (exact
name first, then a one-label wildcard), else to the default, the first pair.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from shared.config import Config
from shared.material import (
    FileWatch,
    KeyPair,
    MaterialError,
    SourceLike,
    load_cert_chain,
    load_key_pair,
)

log = logging.getLogger("vallum.proxy.tls")


@dataclass(frozen=True, slots=True)
class PairSource:
    cert: SourceLike
    key: SourceLike
    cert_key: str
    key_key: str


def context_for(pair: KeyPair) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    load_cert_chain(ctx, pair)
    return ctx


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)]


class CertificateSet:
    """The current certificates by name, swapped as a whole on reload.

    Besides the configured pairs, `set_dynamic` adds certificates obtained at run time
    (autocert), each for one exact name; a configured pair that names a host wins over
    them. `fallback` is the default when no pair is configured at all.
    """

    def __init__(self, sources: Sequence[PairSource], *, fallback: KeyPair | None = None) -> None:
        if not sources and fallback is None:
            raise MaterialError("no server certificate configured")
        self._sources = list(sources)
        self._fallback = fallback
        self._dynamic: dict[str, tuple[ssl.SSLContext, KeyPair]] = {}
        self._watch = FileWatch([p for s in sources for p in (s.cert.path, s.key.path)])
        self._by_name: dict[str, tuple[ssl.SSLContext, KeyPair]] = {}
        self._default: tuple[ssl.SSLContext, KeyPair]
        # Counts reloads, so that contexts built elsewhere from these pairs (the
        # client-certificate hosts' OpenSSL contexts) know when to rebuild.
        self.generation = 0
        self._load()
        self.listener = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.listener.sni_callback = self._select

    def _load(self) -> None:
        by_name: dict[str, tuple[ssl.SSLContext, KeyPair]] = {}
        default: tuple[ssl.SSLContext, KeyPair] | None = None
        for source in self._sources:
            pair = load_key_pair(
                source.cert, source.key, cert_key=source.cert_key, key_key=source.key_key
            )
            entry = (context_for(pair), pair)
            default = default or entry
            for name in dns_names(pair.leaf):
                by_name.setdefault(name, entry)
        if default is None:
            assert self._fallback is not None
            default = (context_for(self._fallback), self._fallback)
        self._by_name, self._default = by_name, default
        self.generation += 1

    def replace_sources(self, sources: Sequence[PairSource]) -> None:
        """Serve other configured pairs from the next handshake (a reloaded config);
        MaterialError, with the old pairs still serving, when one cannot be loaded."""
        if not sources and self._fallback is None:
            raise MaterialError("no server certificate configured")
        old = self._sources
        self._sources = list(sources)
        try:
            self._load()
        except (MaterialError, ssl.SSLError, OSError):
            self._sources = old
            raise
        self._watch = FileWatch([p for s in sources for p in (s.cert.path, s.key.path)])

    def covers(self, server_name: str) -> bool:
        """Whether a configured pair names `server_name` (exactly or by wildcard)."""
        name = server_name.lower()
        if name in self._by_name:
            return True
        return "." in name and "*." + name.split(".", 1)[1] in self._by_name

    def set_dynamic(self, server_name: str, pair: KeyPair) -> None:
        """Serve `pair` for `server_name` from the next handshake on."""
        self._dynamic[server_name.lower()] = (context_for(pair), pair)
        self.generation += 1

    def _select(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        sock.context = self.context_for_name(server_name)
        # The protocol reads it back to check that Host agrees with SNI (421).
        sock.vallum_sni = server_name  # type: ignore[attr-defined]

    def context_for_name(self, server_name: str | None) -> ssl.SSLContext:
        return self._entry(server_name)[0]

    def pair_for_name(self, server_name: str | None) -> KeyPair:
        """The certificate and key this set presents for `server_name`."""
        return self._entry(server_name)[1]

    def _entry(self, server_name: str | None) -> tuple[ssl.SSLContext, KeyPair]:
        if server_name:
            name = server_name.lower()
            entry = self._by_name.get(name)
            if entry is None and "." in name:
                entry = self._by_name.get("*." + name.split(".", 1)[1])
            if entry is None:
                entry = self._dynamic.get(name)
            if entry is not None:
                return entry
        return self._default

    def leaves(self) -> list[x509.Certificate]:
        """Every certificate this set serves now, each once (for expiry metrics)."""
        entries = [self._default, *self._by_name.values(), *self._dynamic.values()]
        unique = {id(pair): pair.leaf for _, pair in entries}
        return list(unique.values())

    def reload_if_changed(self) -> bool:
        if not self._watch.changed():
            return False
        try:
            self._load()
        except (MaterialError, ssl.SSLError, OSError) as e:
            log.error("server certificate change not applied, keeping the old ones: %s", e)
            return False
        log.info("server certificates reloaded")
        return True

    async def watch(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()


def certificate_sources(config: Config) -> list[PairSource]:
    sources = []
    if config.certificate is not None and config.certificate_key is not None:
        sources.append(
            PairSource(config.certificate, config.certificate_key, "certificate", "certificate_key")
        )
    for i, pair in enumerate(config.certificates):
        sources.append(
            PairSource(pair.cert, pair.key, f"certificates[{i}].cert", f"certificates[{i}].key")
        )
    return sources
