"""Let's Encrypt's ACME test server (Debian's `pebble` 2.4) on 127.0.0.1, for autocert tests.

    with pebble(tmp_path, http_port=redirect_port, tls_port=https_port) as acme:
        acme.directory_url      # https://127.0.0.1:<port>/dir: Vallum's `autocert_ca`
        acme.server_ca          # trust this for the ACME API (pebble's own HTTPS certificate)
        acme.roots_pem()        # what issued certificates chain to (new on every start)
        acme.add_a_record("app.test", "127.0.0.1")
        acme.stop(); acme.restart()   # "the ACME server is down, and back"

Two processes, both stopped by PID on exit:

- `pebble-challtestsrv` is only the DNS server pebble resolves challenged names with
  (`pebble -dnsserver`): every A query is answered with 127.0.0.1 (`-defaultIPv4`) and
  AAAA queries get no answer (`-defaultIPv6 ""`, so validation never goes to ::1), so any
  route host (`app.test`, `a.localhost`) is validated against 127.0.0.1. Its own
  HTTP-01/HTTPS/TLS-ALPN-01 responders are switched off, so they never take Vallum's
  ports; its plain-HTTP management API (`add_a_record`) is on a free loopback port.
- `pebble` itself: the ACME API and its management API (`/roots/0`, ...), both HTTPS with a
  certificate for 127.0.0.1/localhost from the project's own CA (`server_ca`).

The knobs of `pebble(...)`:

- `http_port` / `tls_port` (config `httpPort` / `tlsPort`): the ports pebble's validation
  authority dials on the challenged host for HTTP-01 and TLS-ALPN-01. Pass Vallum's
  `http_redirect_addr` port and its HTTPS port (pebble never listens on them).
- `always_valid` (`PEBBLE_VA_ALWAYS_VALID=1`): every challenge answered (POSTed) is valid
  without pebble contacting anything. Authorizations still start "pending": the client
  must still pick a challenge and POST it.
- `eab` (`externalAccountBindingRequired` + `externalAccountMACKeys`): key id -> HMAC key
  (base64url, no padding, as a CA hands them out); newAccount then requires an external
  account binding signed with one of them.
- `validity_seconds` (`certificateValidityPeriod`): lifetime of issued certificates
  (pebble's default is 157766400 s, 5 years); any value down to 1 works, e.g. 60 for
  renewal tests. notBefore is the moment of issue (not backdated) and notAfter is
  notBefore + validity - 1 s.
- `chain_length` (`PEBBLE_CHAIN_LENGTH`, default 1): intermediates between leaf and root;
  the chain pebble serves is the leaf and all of them, never the root.
- `alternate_roots` (`PEBBLE_ALTERNATE_ROOTS`, default 0): extra root hierarchies; the
  certificate URL then answers with `Link: rel="alternate"` chains, one per extra root,
  each ending in one of `roots_pem()`.
- `extra_env`: anything else for pebble's environment, and it wins over the defaults.
- `blocked` (`domainBlocklist`): names pebble refuses to issue for (`rejectedIdentifier`),
  as a CA refuses a host by policy.

Made deterministic here (pebble's defaults are deliberately hostile, to catch clients
that do not retry): `PEBBLE_VA_NOSLEEP=1` (no random 0-15 s sleep before each validation),
`PEBBLE_WFE_NONCEREJECT=0` (no random 5% of good nonces rejected as badNonce),
`PEBBLE_AUTHZREUSE=0` (a new order never reuses a valid authorization, 50% of the time
by default: every order needs its challenge answered) and `PEBBLE_WFE_ORDERS_PER_PAGE=100`
(no paging of an account's order list after 3 orders). A test of retry behaviour may
turn any of them back on through `extra_env`.

Fixed settings: `ocspResponderURL` empty (pebble has no OCSP responder, so issued
certificates carry no OCSP URL) and `-strict=false` (pebble's advice for client tests:
no upcoming breaking changes).

What pebble 2.4 serves, for whoever builds on it: a directory with newNonce, newAccount,
newOrder, revokeCert, keyChange and meta (termsOfService, externalAccountRequired), but
no renewalInfo (ARI) and no profiles; each authorization offers http-01, dns-01 and
tls-alpn-01 in random order; HTTP-01 and TLS-ALPN-01 are validated 3 times per POST
(each must pass), with Host / SNI the challenged name. Issued leaves: the key of the CSR,
CN = the first name, SANs as asked, serverAuth + clientAuth, no OCSP/CRL URL, no SCTs;
an OCSP must-staple request in the CSR is silently dropped. Roots and intermediates are
RSA 2048.

Pebble keeps everything in memory and makes a new root and intermediate on every start:
after `restart()` accounts, orders and authorizations are gone (an old account key gets
`accountDoesNotExist`) and certificates chain to a NEW root, so call `roots_pem()` again.
The ports, `server_ca` and the DNS server stay the same.

Without the binaries (tests/tools/install.sh installs Debian's `pebble`) a test skips, or
fails under CI=true.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.pki import init_ca, issue_server, write_issued
from tests.support.net import free_port
from tests.support.procs import Proc
from tests.support.tools import require_tool

# Deterministic, fast pebble: see the module docstring.
QUIET_ENV: Mapping[str, str] = {
    "PEBBLE_VA_NOSLEEP": "1",
    "PEBBLE_WFE_NONCEREJECT": "0",
    "PEBBLE_AUTHZREUSE": "0",
    "PEBBLE_WFE_ORDERS_PER_PAGE": "100",
}
START_TIMEOUT = 20.0


@dataclass
class Pebble:
    """A running pebble (with its DNS server): where it is and what it trusts."""

    directory_url: str  # https://127.0.0.1:<port>/dir
    management_url: str  # https://127.0.0.1:<mgmt port>
    server_ca: Path  # signed pebble's own HTTPS certificate: trust it for the ACME API
    dns_port: int  # pebble-challtestsrv's DNS (UDP and TCP), pebble's only resolver
    dns_management_url: str  # http://127.0.0.1:<port>, pebble-challtestsrv's API
    http_port: int  # where pebble's VA dials for HTTP-01
    tls_port: int  # where pebble's VA dials for TLS-ALPN-01
    config_path: Path
    argv: list[str]
    env: dict[str, str]
    proc: Proc | None = None
    _http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self._http = httpx.Client(verify=self.ssl_context(), timeout=10.0)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts pebble's HTTPS (ACME and management API)."""
        return ssl.create_default_context(cafile=str(self.server_ca))

    def roots_pem(self) -> bytes:
        """Pebble's root certificate(s), PEM: the trust anchors issued certificates chain
        to (`/roots/0`, plus `/roots/1`... with `alternate_roots`). New after a restart."""
        return b"".join(self._numbered("roots"))

    def intermediates_pem(self) -> bytes:
        """The intermediate that signs leaves, one per root (`/intermediates/N`); issued
        chains carry it already. With `chain_length` > 1 the ones above it are not here."""
        return b"".join(self._numbered("intermediates"))

    def add_a_record(self, host: str, ip: str = "127.0.0.1") -> None:
        """Answer A queries for `host` with `ip` instead of the default 127.0.0.1."""
        self._dns("add-a", {"host": host, "addresses": [ip]})

    def clear_a_record(self, host: str) -> None:
        """Back to the default answer (127.0.0.1) for `host`."""
        self._dns("clear-a", {"host": host})

    def stop(self) -> None:
        """Stop pebble (by PID); the DNS server keeps running. Idempotent."""
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def start(self) -> None:
        """Start pebble and wait until its directory answers over HTTPS."""
        if self.proc is not None:
            raise AssertionError("pebble is already running")
        proc = Proc(self.argv, env=self.env, cwd=self.config_path.parent)
        try:
            self._wait_ready(proc)
        except BaseException:
            proc.stop()
            raise
        self.proc = proc

    def restart(self) -> None:
        """Stop and start again on the same ports. Pebble forgets every account, order
        and authorization, and issues from a new root (see `roots_pem`)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._http.close()

    def _wait_ready(self, proc: Proc) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        error: Exception | None = None
        while time.monotonic() < deadline:
            if proc.process.poll() is not None:
                proc.wait(5)
                raise AssertionError(
                    f"pebble exited with {proc.process.returncode} before it was ready:\n"
                    f"{proc.output}"
                )
            try:
                response = self._http.get(self.directory_url, timeout=1.0)
                if response.status_code == 200 and "newAccount" in response.json():
                    return
                error = AssertionError(f"{response.status_code}: {response.text}")
            except (httpx.HTTPError, ValueError) as exc:
                error = exc
            time.sleep(0.05)
        raise AssertionError(
            f"pebble's directory {self.directory_url} did not answer within "
            f"{START_TIMEOUT}s (last error: {error!r}); its output:\n{proc.output}"
        )

    def _numbered(self, kind: str) -> list[bytes]:
        found: list[bytes] = []
        while True:
            response = self._http.get(f"{self.management_url}/{kind}/{len(found)}")
            if response.status_code == 404 and found:
                return found
            response.raise_for_status()
            found.append(response.content)

    def _dns(self, path: str, body: dict[str, Any]) -> None:
        response = self._http.post(f"{self.dns_management_url}/{path}", json=body)
        if response.status_code != 200:
            raise AssertionError(
                f"pebble-challtestsrv /{path}: {response.status_code} {response.text}"
            )


def _start_dns(dns_port: int, management_port: int) -> Proc:
    proc = Proc(
        [
            require_tool("pebble-challtestsrv"),
            "-dns01",
            f"127.0.0.1:{dns_port}",
            "-management",
            f"127.0.0.1:{management_port}",
            # Its own challenge responders: off, so they never take a port Vallum needs.
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ]
    )
    try:
        proc.wait_for(f"Starting management server on 127.0.0.1:{management_port}", START_TIMEOUT)
        # The line comes just before the listener: wait for a real answer.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                httpx.post(
                    f"http://127.0.0.1:{management_port}/clear-request-history",
                    json={"host": "", "type": "http"},
                    timeout=1.0,
                )
                return proc
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.process.poll() is not None:
                    raise AssertionError(
                        f"pebble-challtestsrv's management API did not answer:\n{proc.output}"
                    ) from None
                time.sleep(0.05)
    except BaseException:
        proc.stop()
        raise


@contextmanager
def pebble(
    tmp_path: Path,
    *,
    http_port: int,
    tls_port: int,
    always_valid: bool = False,
    eab: Mapping[str, str] | None = None,
    validity_seconds: int | None = None,
    chain_length: int | None = None,
    alternate_roots: int | None = None,
    extra_env: Mapping[str, str] | None = None,
    blocked: Sequence[str] = (),
) -> Iterator[Pebble]:
    """Start pebble-challtestsrv and pebble on free loopback ports; stop both on exit.
    The knobs are described in the module docstring."""
    binary = require_tool("pebble")
    require_tool("pebble-challtestsrv")
    workdir = tmp_path / "pebble"
    workdir.mkdir(parents=True, exist_ok=True)
    ca = init_ca(workdir / "https-ca", common_name="Vallum test CA for pebble's HTTPS")
    https = write_issued(
        issue_server(ca, ["127.0.0.1", "localhost"], days=2), workdir, "pebble-https", force=True
    )
    api_port, management_port = free_port(), free_port()
    dns_port, dns_management_port = free_port(), free_port()
    config: dict[str, Any] = {
        "listenAddress": f"127.0.0.1:{api_port}",
        "managementListenAddress": f"127.0.0.1:{management_port}",
        "certificate": str(https.cert),
        "privateKey": str(https.key),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": eab is not None,
    }
    if eab is not None:
        config["externalAccountMACKeys"] = dict(eab)
    if validity_seconds is not None:
        config["certificateValidityPeriod"] = validity_seconds
    if blocked:
        config["domainBlocklist"] = list(blocked)
    config_path = workdir / "pebble-config.json"
    config_path.write_text(json.dumps({"pebble": config}, indent=2))
    env = dict(QUIET_ENV)
    if always_valid:
        env["PEBBLE_VA_ALWAYS_VALID"] = "1"
    if chain_length is not None:
        env["PEBBLE_CHAIN_LENGTH"] = str(chain_length)
    if alternate_roots is not None:
        env["PEBBLE_ALTERNATE_ROOTS"] = str(alternate_roots)
    env.update(extra_env or {})

    dns = _start_dns(dns_port, dns_management_port)
    server = Pebble(
        directory_url=f"https://127.0.0.1:{api_port}/dir",
        management_url=f"https://127.0.0.1:{management_port}",
        server_ca=ca.cert_path,
        dns_port=dns_port,
        dns_management_url=f"http://127.0.0.1:{dns_management_port}",
        http_port=http_port,
        tls_port=tls_port,
        config_path=config_path,
        # -strict false: pebble's documented setting for stable client tests.
        argv=[
            binary,
            "-config",
            str(config_path),
            "-dnsserver",
            f"127.0.0.1:{dns_port}",
            "-strict=false",
        ],
        env=env,
    )
    try:
        server.start()
        yield server
    finally:
        server.close()
        dns.stop()
