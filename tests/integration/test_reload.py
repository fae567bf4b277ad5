"""Hot reload: a changed config file or SIGHUP applies new routes and policies to the
next request in every service; a config that fails validation is refused, its
problems logged, and the old one keeps serving."""

from __future__ import annotations

import os
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.test_run import split_config, split_env, split_pki
from tests.support.certs import signing_key_pem
from tests.support.net import free_port
from tests.support.procs import vallum
from tests.support.stack import Upstream, Vallum, all_in_one, route_host, upstream

pytestmark = pytest.mark.integration

SERVICES = ("authenticate", "authorize", "proxy")


def public(port: int, name: str, app: Upstream) -> dict[str, Any]:
    return {
        "from": route_host(name, port),
        "to": app.url,
        "allow_public_unauthenticated_access": True,
    }


def private(port: int, name: str, app: Upstream) -> dict[str, Any]:
    return {
        "from": route_host(name, port),
        "to": app.url,
        "policy": {"allow": {"or": [{"email": {"is": "nobody@example.com"}}]}},
    }


@pytest.fixture
def app() -> Iterator[Upstream]:
    with upstream() as up:
        yield up


@pytest.fixture
def stack(tmp_path: Path, app: Upstream) -> Iterator[Vallum]:
    port = free_port()
    with all_in_one(tmp_path, [public(port, "one", app)], port) as v:
        yield v


def rewrite(v: Vallum, change: Any) -> None:
    """Edit the running all-in-one's config file in place (same inode)."""
    assert v.config_path is not None
    config = yaml.safe_load(v.config_path.read_text())
    change(config)
    v.config_path.write_text(yaml.safe_dump(config))


def wait_reloaded(v: Vallum, start: int, *, new_hosts: bool = True) -> None:
    """Every service's line saying so, after output line `start`; with new routes, also
    the proxy's that it uses them (once authorize has them) and the one for the server
    certificate that names their hosts (the supervisor issues it again)."""
    for name in SERVICES:
        v.proc.child_line(name, "configuration reloaded", start=start)
    if new_hosts:
        v.proc.child_line("proxy", "(authorize has them too)", start=start)
        v.proc.child_line("proxy", "server certificates reloaded", start=start)


def status(v: Vallum, name: str, path: str = "/echo") -> int:
    return v.request("GET", f"{name}.localhost", path).status_code


def test_a_changed_file_applies_new_routes_and_policies_to_the_next_request(
    stack: Vallum, app: Upstream
) -> None:
    v = stack
    assert status(v, "one") == 200
    mark = len(v.proc.lines)

    def change(config: dict[str, Any]) -> None:
        # `one` now needs a user; `two` is new.
        config["routes"] = [private(v.port, "one", app), public(v.port, "two", app)]

    rewrite(v, change)
    wait_reloaded(v, mark)
    assert status(v, "one") == 401  # sign-in required, for an API client
    assert status(v, "two") == 200
    line = v.proc.lines[v.proc.child_line("proxy", "configuration reloaded", start=mark)]
    assert "(routes)" in line


def test_sighup_reloads_even_when_the_file_looks_unchanged(stack: Vallum, app: Upstream) -> None:
    """The same size and modification time: only the signal can tell."""
    v = stack
    assert v.config_path is not None
    before = os.stat(v.config_path)
    text = v.config_path.read_text()
    changed = text.replace("one.localhost", "uno.localhost")
    assert len(changed) == len(text) and changed != text
    v.config_path.write_text(changed)
    os.utime(v.config_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(2.5)  # more than two polls: the watcher saw nothing to reload
    assert status(v, "one") == 200
    mark = len(v.proc.lines)
    os.kill(v.proc.process.pid, signal.SIGHUP)  # the supervisor forwards it
    for name in SERVICES:
        v.proc.child_line(name, "SIGHUP: reading the configuration again", start=mark)
    wait_reloaded(v, mark)
    assert status(v, "uno") == 200
    assert status(v, "one") == 404


def test_an_invalid_config_is_refused_with_every_problem_and_the_old_one_keeps_serving(
    stack: Vallum, app: Upstream
) -> None:
    v = stack
    mark = len(v.proc.lines)

    def break_it(config: dict[str, Any]) -> None:
        config["routez"] = []  # a typo
        config["routes"] = [
            public(v.port, "two", app),
            {**private(v.port, "three", app), "policy": {"allow": {"or": [{"emial": {}}]}}},
        ]

    rewrite(v, break_it)
    for name in SERVICES:
        index = v.proc.child_line(name, "the new configuration is refused", start=mark)
        v.proc.child_line(name, "routes[1].policy", start=index)
        own = [line for line in v.proc.lines[index:] if line.startswith(f"{name} ")]
        refusal = "\n".join(own[:6])
        assert "the running one keeps serving" in refusal
        assert "routez" in refusal and "did you mean" in refusal
        assert "routes[1].policy" in refusal
    # The old routes, unchanged.
    assert status(v, "one") == 200
    # Fixing the file applies it.
    mark = len(v.proc.lines)

    def fix(config: dict[str, Any]) -> None:
        del config["routez"]
        config["routes"] = [public(v.port, "two", app)]

    rewrite(v, fix)
    wait_reloaded(v, mark)
    assert status(v, "two") == 200
    assert status(v, "one") == 404


def test_keys_that_need_a_restart_are_named_and_kept_while_the_rest_applies(
    stack: Vallum, app: Upstream
) -> None:
    v = stack
    mark = len(v.proc.lines)
    other_port = free_port()

    def change(config: dict[str, Any]) -> None:
        config["address"] = f"127.0.0.1:{other_port}"
        config["routes"].append(public(v.port, "two", app))

    rewrite(v, change)
    index = v.proc.child_line("proxy", "a restart applies", start=mark)
    assert "address changed" in v.proc.lines[index]
    wait_reloaded(v, mark)
    assert status(v, "two") == 200  # still on the old address, with the new routes


def test_the_jwks_follows_a_reloaded_signing_key(tmp_path: Path, app: Upstream) -> None:
    port = free_port()
    first, second = signing_key_pem(), signing_key_pem()
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(first)
    with all_in_one(
        tmp_path, [public(port, "one", app)], port, signing_key_file=str(key_file)
    ) as v:
        before = kids(v)
        assert len(before) == 1
        mark = len(v.proc.lines)
        key_file.write_bytes(first + second)  # publish the next key too
        wait_reloaded(v, mark, new_hosts=False)
        after = kids(v)
        assert after[0] == before[0] and len(after) == 2


def kids(v: Vallum) -> list[str]:
    jwks = v.request("GET", "one.localhost", "/.well-known/pomerium/jwks.json").json()
    return [key["kid"] for key in jwks["keys"]]


def test_a_proxy_uses_reloaded_routes_only_once_authorize_has_them(
    tmp_path: Path, app: Upstream
) -> None:
    """Split, each service with its own copy of the config (as a ConfigMap reaches pods
    at different moments): the proxy that reloads first keeps serving the previous
    routes, with no request failing closed, and switches when authorize has them."""
    pki = split_pki(tmp_path)
    ports = {"proxy": free_port(), "authorize": free_port(), "authenticate": free_port()}
    base = yaml.safe_load(
        split_config(tmp_path, ports, pki / "server.pem", pki / "server-key.pem").read_text()
    )
    host = f"https://localhost:{ports['proxy']}"
    open_route = {"from": host, "to": app.url, "allow_public_unauthenticated_access": True}
    closed_route = {**open_route, "allow_public_unauthenticated_access": False}
    files = {s: tmp_path / f"{s}.yaml" for s in ("authenticate", "authorize", "proxy")}
    for path in files.values():
        path.write_text(yaml.safe_dump({**base, "routes": [open_route]}))
    procs = []
    try:
        for service, path in files.items():
            proc = vallum(
                "run", "--config", str(path), "--services", service, env=split_env(pki, service)
            )
            proc.wait_for(f"{service} ready:")
            procs.append(proc)
        proxy = procs[2]
        client = httpx.Client(
            verify=ssl.create_default_context(cafile=str(pki / "ca.pem")), timeout=10
        )

        def get() -> int:
            return client.get(f"{host}/echo", headers={"Accept": "application/json"}).status_code

        assert get() == 200
        mark = len(proxy.lines)
        files["proxy"].write_text(yaml.safe_dump({**base, "routes": [closed_route]}))
        proxy.wait_for("configuration reloaded (routes)", start=mark)
        for _ in range(20):  # 2 s: the proxy serves its previous routes, none fails
            assert get() == 200
            time.sleep(0.1)
        assert "(authorize has them too)" not in proxy.output
        files["authorize"].write_text(yaml.safe_dump({**base, "routes": [closed_route]}))
        proxy.wait_for("(authorize has them too)", start=mark)
        assert get() == 403  # a route without a policy lets nobody in
        client.close()
    finally:
        for proc in procs:
            proc.stop()
