"""Replicas given other secrets are refused at start-up, with the key named, instead of
serving sign-in loops or assertions nobody can verify (services/agreement.py)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_run import split_config, split_env, split_pki
from tests.support.certs import signing_key_pem
from tests.support.net import free_port
from tests.support.procs import Proc, vallum

pytestmark = pytest.mark.integration

EXIT_CONFIG = 78


class Split:
    def __init__(self, tmp_path: Path) -> None:
        self.pki = split_pki(tmp_path)
        self.ports = {"proxy": free_port(), "authorize": free_port(), "authenticate": free_port()}
        self.config = split_config(
            tmp_path, self.ports, self.pki / "server.pem", self.pki / "server-key.pem"
        )
        self.procs: list[Proc] = []

    def start(self, service: str, wait: bool = True, **env: str) -> Proc:
        proc = vallum(
            "run",
            "--config",
            str(self.config),
            "--services",
            service,
            env={**split_env(self.pki, service), **env},
        )
        self.procs.append(proc)
        if wait:
            proc.wait_for(f"{service} ready:")
        return proc

    @property
    def authorize_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['authorize']}"

    @property
    def authenticate_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['authenticate']}"


@pytest.fixture
def split(tmp_path: Path) -> Iterator[Split]:
    s = Split(tmp_path)
    try:
        yield s
    finally:
        for proc in s.procs:
            proc.stop()


def other_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def refused(proc: Proc) -> str:
    assert proc.wait(30) == EXIT_CONFIG, proc.output
    return proc.output


def test_a_proxy_with_another_cookie_secret_is_refused_naming_the_key(split: Split) -> None:
    split.start("authenticate")
    split.start("authorize")
    output = refused(split.start("proxy", wait=False, COOKIE_SECRET=other_secret()))
    assert f"cookie_secret: authorize at {split.authorize_url} was given another" in output
    assert f"cookie_secret: authenticate at {split.authenticate_url} was given another" in output
    assert "sign in again and again" in output
    assert "proxy ready" not in output
    # The same proxy with the same secrets starts.
    split.start("proxy")


def test_a_proxy_that_publishes_other_signing_keys_is_refused(split: Split, tmp_path: Path) -> None:
    split.start("authenticate")
    split.start("authorize")
    key = tmp_path / "signing.pem"
    key.write_bytes(signing_key_pem())
    output = refused(split.start("proxy", wait=False, SIGNING_KEY_FILE=str(key)))
    assert f"signing_key: authorize at {split.authorize_url} signs with key" in output
    assert "which this service does not publish" in output


def test_an_authenticate_replica_with_another_shared_secret_is_refused(split: Split) -> None:
    split.start("authenticate")
    port = free_port()
    output = refused(
        split.start(
            "authenticate",
            wait=False,
            SHARED_SECRET=other_secret(),
            GRPC_ADDRESS=f"127.0.0.1:{port}",
            DATABROKER_SERVICE_URL=f"{split.authenticate_url},https://127.0.0.1:{port}",
        )
    )
    assert f"shared_secret: authenticate at {split.authenticate_url} was given another" in output


def test_a_peer_that_comes_up_later_with_other_secrets_stops_the_proxy(split: Split) -> None:
    """Services start in any order: a proxy that could not ask at start asks again."""
    proxy = split.start("proxy", COOKIE_SECRET=other_secret())
    split.start("authenticate")
    output = refused(proxy)
    assert "the configuration disagrees with a peer" in output
    assert "cookie_secret: authenticate at" in output
