"""A real headless Chromium (Debian's `chromium` package) driven by Playwright for Python.

    with chromium(tmp_path, trust=[server_cert_pem]) as context:
        page = context.new_page()
        page.goto("https://any.localhost:<port>/")

`*.localhost` resolves to loopback inside Chromium, so route hosts are opened by name.
The proxy's certificate is trusted by pinning its SubjectPublicKeyInfo
(`--ignore-certificate-errors-spki-list`, honoured only with a `--user-data-dir`, which
a persistent context always has): certificate errors stay fatal for every other key, so
the browser still checks what it would check against a real CA, except the chain.

With `client_certificates`, Playwright itself presents them (Chromium has no certificate
store of its own here): it sends the browser's connections through a proxy in its Node
driver, which opens the TLS connection to a matching origin with the certificate and
verifies the site as Node does (`driver_env` can give it NODE_EXTRA_CA_CERTS). That
proxy resolves names with the system resolver, which (unlike Chromium) does not know
`*.localhost`: such origins use plain `localhost`.

Playwright's browser downloads are never used (`playwright install` cannot reach the
network here): the pip package's driver launches /usr/bin/chromium, which
tests/tools/install.sh installs. Without either a test skips naming what is missing,
or fails under CI=true, where install.sh has run.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509

from shared.pki import spki_sha256_b64

if TYPE_CHECKING:
    from playwright._impl._api_structures import ClientCertificate
    from playwright.sync_api import BrowserContext

CHROMIUM = Path("/usr/bin/chromium")

ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_missing() -> str | None:
    """Why a browser test cannot run here, or None when it can."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"chromium is not installed at {CHROMIUM} (tests/tools/install.sh)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright Python package is not installed (pip install -e '.[dev]')")
    return "; ".join(missing) or None


def require_chromium() -> None:
    """Skip (or fail under CI=true, where nothing may be missing) without the browser."""
    reason = chromium_missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the browser tests cannot run: {reason}")
    pytest.skip(reason)


def spki_pins(pem_files: Sequence[Path]) -> list[str]:
    """The base64 SHA-256 SPKI hash of the first (leaf) certificate in each PEM file."""
    return [spki_sha256_b64(x509.load_pem_x509_certificates(p.read_bytes())[0]) for p in pem_files]


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def chromium(
    tmp_path: Path,
    *,
    trust: Sequence[Path] = (),
    timeout_ms: float = 15_000,
    client_certificates: Sequence[ClientCertificate] = (),
    driver_env: Mapping[str, str] | None = None,
) -> Iterator[BrowserContext]:
    """A fresh profile in `tmp_path/chromium-profile`; `trust` are server certificates
    (PEM) whose keys the browser accepts without a known CA; `client_certificates` are
    Playwright's (origin, pfxPath or certPath/keyPath, passphrase); `driver_env` are
    environment variables for Playwright's driver process only."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    args = list(ARGS)
    pins = spki_pins(trust)
    if pins:
        args.append("--ignore-certificate-errors-spki-list=" + ",".join(pins))
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    manager = sync_playwright()
    with _environment(driver_env or {}):  # the driver starts here and keeps its copy
        playwright = manager.start()
    try:
        # A persistent context: Playwright passes `--user-data-dir` itself and refuses
        # it in `args`.
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=args,
            client_certificates=list(client_certificates) or None,
        )
        context.set_default_timeout(timeout_ms)
        try:
            yield context
        finally:
            context.close()
    finally:
        playwright.stop()
