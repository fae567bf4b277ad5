"""Autocert: every route host without a configured certificate gets one over ACME.

One task per host keeps its certificate current:

- On start, a host serves what autocert_dir holds, or a self-signed stand-in (clients
  warn, nothing breaks) until the first certificate arrives.
- A certificate is due when a third of its lifetime remains, at once when it is
  expired or does not name the host.
- Replicas that share autocert_dir take the host's lock (flock) before ordering; the
  others see the lock held and only watch the files. A replica picks up a certificate
  another wrote within STORE_POLL seconds: new handshakes get it at once, open
  connections are not touched.
- A failure is contained to its host: the old certificate (or the stand-in) keeps
  serving, the reason goes to the log and state.json, and the next attempt waits
  RETRY_FIRST * 2^(failures-1), capped at RETRY_MAX, times a random factor in [0.5, 1]
  (so replicas and hosts do not retry in step, and Let's Encrypt's rate limits are never
  hammered). The wait is shared through state.json, so a new replica does not retry
  early either.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import random
import ssl
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from services.proxy.autocert.acme_client import (
    HTTP01,
    AcmeFailure,
    AcmeSettings,
    obtain,
)
from services.proxy.autocert.challenges import self_signed as challenge_certificate
from services.proxy.autocert.challenges import (
    tls_alpn01_certificate,
    tls_alpn01_context,
)
from services.proxy.autocert.ocsp import Staple, must_staple, refresh
from services.proxy.autocert.store import AutocertStore, HostState, StoreError
from services.proxy.openssl_transport import server_context
from shared.config import Config, Source
from shared.material import KeyPair, MaterialError, load_key_pair, read_source
from shared.pki import PKIError, load_certificates, private_key_pem
from shared.pki.files import PUBLIC_MODE, write_file
from shared.server_tls import CertificateSet, dns_names

log = logging.getLogger("vallum.proxy.autocert")

RENEW_FRACTION = 1 / 3
RETRY_FIRST = 10.0
RETRY_MAX = 24 * 3600.0
STORE_POLL = 2.0


def self_signed(host: str) -> KeyPair:
    """The stand-in a host serves until its first certificate arrives."""
    return challenge_certificate(host, f"{host} (Vallum, no certificate yet)")


def retry_delay(failures: int) -> float:
    """Exponential backoff with jitter: RETRY_FIRST, doubling, at most RETRY_MAX."""
    base: float = min(RETRY_FIRST * 2.0 ** max(failures - 1, 0), RETRY_MAX)
    return base * random.uniform(0.5, 1.0)


def renewal_time(cert: x509.Certificate, host: str) -> float:
    """When `cert` should be replaced (epoch seconds): now if it does not name `host`."""
    if host not in dns_names(cert):
        return 0.0
    start = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    return end - (end - start) * RENEW_FRACTION


class Autocert:
    def __init__(self, config: Config, certificates: CertificateSet) -> None:
        self.store = AutocertStore(Path(config.autocert_directory))
        ca_bundle = acme_ca_bundle(config)
        self.certificates = certificates
        self.hosts = [h for h in config.autocert_hosts() if not certificates.covers(h)]
        self.settings = AcmeSettings(
            directory_url=config.acme_directory_url,
            email=config.autocert_email,
            eab_key_id=config.autocert_eab_key_id,
            eab_mac_key=config.autocert_eab_mac_key,
            must_staple=config.autocert_must_staple,
            ca_bundle=ca_bundle,
            challenge=HTTP01 if config.http_redirect_addr is not None else "tls-alpn-01",
        )
        # host → (stat signature of its fullchain.pem, the pair) as installed.
        self._installed: dict[str, tuple[tuple[int, int, int], KeyPair]] = {}
        # Must-Staple hosts: their OCSP responses, and pyOpenSSL contexts that staple them.
        self._staples: dict[str, Staple] = {}
        self._stapling: dict[str, tuple[tuple[int, int, int], SSL.Context]] = {}
        self._http: httpx.AsyncClient | None = None
        self._alpn: dict[str, tuple[bytes, ssl.SSLContext]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- what the listeners ask -----------------------------------------------------

    def http01(self, token: str) -> bytes | None:
        return self.store.http01(token)

    def tls_alpn01_context(self, host: str) -> ssl.SSLContext | None:
        """The validation context for `host` while a TLS-ALPN-01 challenge is pending."""
        key_authorization = self.store.tls_alpn01(host)
        if key_authorization is None:
            return None
        cached = self._alpn.get(host)
        if cached is None or cached[0] != key_authorization:
            pair = tls_alpn01_certificate(host, key_authorization.decode("ascii"))
            cached = self._alpn[host] = (key_authorization, tls_alpn01_context(pair))
        return cached[1]

    # -- Publisher, called from the ordering thread -----------------------------------

    def publish(self, kind: str, host: str, token: str, key_authorization: str) -> None:
        if kind == HTTP01:
            self.store.put_http01(token, key_authorization)
        else:
            self.store.put_tls_alpn01(host, key_authorization)

    def withdraw(self, kind: str, host: str, token: str) -> None:
        if kind == HTTP01:
            self.store.remove_http01(token)
        else:
            self.store.remove_tls_alpn01(host)

    # -- lifecycle --------------------------------------------------------------------

    def stapled_context(self, host: str) -> SSL.Context | None:
        """A pyOpenSSL context that staples `host`'s OCSP response, for a Must-Staple
        certificate; None for every other host (the loop's TLS serves those)."""
        installed = self._installed.get(host)
        if installed is None or not must_staple(installed[1].leaf):
            return None
        cached = self._stapling.get(host)
        if cached is None or cached[0] != installed[0]:
            ctx = server_context(installed[1], hashlib.sha256(host.encode()).digest())
            ctx.set_ocsp_server_callback(self._staple_for, host)
            cached = self._stapling[host] = (installed[0], ctx)
        return cached[1]

    def _staple_for(self, conn: SSL.Connection, host: str | None) -> bytes:
        staple = self._staples.get(host or "")
        if staple is None or staple.good_until is None:
            return b""
        return staple.der if staple.good_until > dt.datetime.now(dt.UTC) else b""

    async def _keep_stapled(self, host: str) -> None:
        installed = self._installed.get(host)
        if installed is None or not must_staple(installed[1].leaf):
            return
        chain = load_certificates(installed[1].cert_pem)
        if len(chain) < 2:
            log.warning("autocert: %s: Must-Staple, but no issuer in the chain to ask OCSP", host)
            return
        if self._http is None:
            self._http = httpx.AsyncClient()
        staple = self._staples.setdefault(host, Staple())
        await refresh(self._http, host, chain[0], chain[1], staple)

    def start(self) -> None:
        for host in self.hosts:
            if not self._install(host):
                self.certificates.set_dynamic(host, self_signed(host))
            self._tasks.append(asyncio.create_task(self._keep(host), name=f"autocert {host}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    async def _keep(self, host: str) -> None:
        while True:
            try:
                await self._step(host)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the host's renewals for good
                log.exception("autocert: %s: unexpected error; trying again later", host)
                await asyncio.sleep(RETRY_FIRST)

    async def _step(self, host: str) -> None:
        self._install(host)
        await self._keep_stapled(host)
        if self._due(host) > time.time():
            await asyncio.sleep(STORE_POLL)
            return
        with self.store.lock(host, wait=False) as mine:
            if not mine:  # another replica is ordering: watch for its files
                await asyncio.sleep(STORE_POLL)
                return
            self._install(host)  # it may have finished just before we took the lock
            if self._due(host) <= time.time():
                await self._order(host)

    def _due(self, host: str) -> float:
        installed = self._installed.get(host)
        due = renewal_time(installed[1].leaf, host) if installed is not None else 0.0
        state = self.store.state(host)
        if state.failures and state.next_attempt is not None:
            due = max(due, state.next_attempt)
        return due

    async def _order(self, host: str) -> None:
        key_pem = private_key_pem(ec.generate_private_key(ec.SECP256R1()))
        state = self.store.state(host)
        state.last_attempt = time.time()
        self.store.save_state(host, state)
        log.info("autocert: %s: ordering a certificate from %s", host, self.settings.directory_url)
        try:
            chain = await asyncio.to_thread(obtain, self.settings, self.store, self, host, key_pem)
            self._check(host, chain, key_pem)
            self.store.save_certificate(host, chain, key_pem)
        except (AcmeFailure, MaterialError, StoreError) as e:
            state.failures += 1
            delay = retry_delay(state.failures)
            state.last_error = str(e)
            state.next_attempt = time.time() + delay
            self.store.save_state(host, state)
            log.warning(
                "autocert: %s: %s; keeping the current certificate, next attempt in %.0fs "
                "(failure %d)",
                host,
                e,
                delay,
                state.failures,
            )
            return
        self.store.save_state(
            host, HostState(last_attempt=state.last_attempt, last_success=time.time())
        )
        self._install(host)
        leaf = self._installed[host][1].leaf
        log.info(
            "autocert: %s: new certificate from %s, serial %x, valid until %s",
            host,
            leaf.issuer.rfc4514_string(),
            leaf.serial_number,
            leaf.not_valid_after_utc.isoformat(),
        )

    @staticmethod
    def _check(host: str, chain: bytes, key_pem: bytes) -> None:
        pair = load_key_pair(
            Source(None, chain), Source(None, key_pem), cert_key="certificate", key_key="key"
        )
        if host not in dns_names(pair.leaf):
            raise MaterialError(f"the ACME server's certificate does not name {host}")

    def _install(self, host: str) -> bool:
        """Serve what autocert_dir holds for `host` if it changed; False if it holds none."""
        chain_path, key_path = self.store.certificate_paths(host)
        try:
            st = os.stat(chain_path)
        except FileNotFoundError:
            return host in self._installed
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        installed = self._installed.get(host)
        if installed is not None and installed[0] == signature:
            return True
        try:
            pair = load_key_pair(
                Source(None, chain_path.read_bytes()),
                Source(None, key_path.read_bytes()),
                cert_key=str(chain_path),
                key_key=str(key_path),
            )
        except (MaterialError, OSError) as e:
            # A replica may be between its two renames: look again on the next poll.
            log.debug("autocert: %s: stored certificate not usable yet: %s", host, e)
            return installed is not None
        self.certificates.set_dynamic(host, pair)
        self._installed[host] = (signature, pair)
        self._staples.pop(host, None)  # a new certificate needs its own response
        return True


def acme_ca_bundle(config: Config) -> str | None:
    """The CA file to verify the ACME server's HTTPS with: None for the system store,
    else the system's CAs plus `autocert_trusted_ca`, written into autocert_dir (the
    `acme` package's HTTP client takes a file path)."""
    if config.autocert_trusted_ca is None:
        return None
    extra = read_source(config.autocert_trusted_ca, "autocert_trusted_ca")
    paths = ssl.get_default_verify_paths()
    system = b""
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            with open(candidate, "rb") as f:
                system = f.read()
            break
    path = Path(config.autocert_directory) / "trusted-ca.pem"
    try:
        write_file(path, system + b"\n" + extra, mode=PUBLIC_MODE, overwrite=True)
    except PKIError as e:
        raise StoreError(f"autocert_dir: {e}") from None
    return str(path)
