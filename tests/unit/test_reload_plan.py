"""What a reload applies, what needs a restart, and how authorize follows a proxy's
routes while the two reload at different moments (no sockets: the servicer is driven
directly, its session cache filled by hand)."""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import replace
from typing import Any

from services.authorize.active_session import ActiveSession
from services.authorize.authorizer import KEEP_DECIDERS, AuthorizerServicer
from services.authorize.decide import Decider
from services.authorize.session_cache import SessionCache
from shared.config import Config, Source, parse_config
from shared.config.reload import plan, routes_version, watched_paths
from shared.pb import authorize_pb2
from shared.policy.inputs import SessionView
from shared.sessions import HandleCodec

SECRET = base64.b64encode(os.urandom(32)).decode()


def config(*routes: dict[str, Any], **extra: Any) -> Config:
    return parse_config(
        {"shared_secret": SECRET, "cookie_secret": SECRET, "routes": list(routes), **extra},
        {},
        "/",
    )


def route(host: str, **policy: Any) -> dict[str, Any]:
    return {"from": f"https://{host}", "to": "http://127.0.0.1:9", **policy}


OPEN = {"allow_public_unauthenticated_access": True}
ALICE = {"allowed_users": ["alice@example.com"]}


def test_nothing_changed_is_nothing_to_apply() -> None:
    a = config(route("a.example.com", **OPEN))
    step = plan(a, config(route("a.example.com", **OPEN)))
    assert not step.changed and step.needs_restart == ()


def test_routes_and_keys_apply_and_addresses_need_a_restart() -> None:
    old = config(route("a.example.com", **OPEN), address=":8443")
    new = config(route("b.example.com", **OPEN), address=":9443", log_level="debug")
    step = plan(old, new)
    assert set(step.applied) == {"routes", "log_level"}
    assert step.needs_restart == ("address",)
    # The running value is kept for what needs a restart; the rest is the new config.
    assert step.config.address == old.address
    assert step.config.routes == new.routes


def test_a_secret_file_and_its_value_are_named_once() -> None:
    old = config(route("a.example.com", **OPEN))
    new = replace(old, shared_secret=os.urandom(32), shared_secret_file="/etc/s")
    assert plan(old, new).needs_restart == ("shared_secret",)


def test_new_bytes_in_a_watched_certificate_file_are_not_a_change() -> None:
    old = config(route("a.example.com", **OPEN))
    a = replace(old, certificate=Source("/etc/cert.pem", b"one"))
    b = replace(old, certificate=Source("/etc/cert.pem", b"two"))
    assert not plan(a, b).changed
    other = replace(old, certificate=Source("/etc/other.pem", b"two"))
    assert plan(a, other).applied == ("certificate",)


def test_a_signing_key_file_is_compared_by_what_it_holds_and_watched() -> None:
    old = config(route("a.example.com", **OPEN))
    a = replace(old, signing_key=Source("/etc/key.pem", b"one"))
    b = replace(old, signing_key=Source("/etc/key.pem", b"two"))
    assert plan(a, b).applied == ("signing_key",)
    assert "/etc/key.pem" in watched_paths(a)
    assert "/etc/cert.pem" not in watched_paths(
        replace(a, certificate=Source("/etc/cert.pem", b"c"))
    )


def test_the_routes_version_follows_the_routes_only() -> None:
    a = config(route("a.example.com", **OPEN))
    assert routes_version(a) == routes_version(config(route("a.example.com", **OPEN)))
    assert routes_version(a) == routes_version(replace(a, log_level="debug"))
    assert routes_version(a) != routes_version(config(route("a.example.com", **ALICE)))


# -- authorize decides with the routes the proxy matched ----------------------------


def servicer(cfg: Config) -> tuple[AuthorizerServicer, HandleCodec]:
    assert cfg.cookie_secret is not None
    handles = HandleCodec(cfg.cookie_secret)
    cache = SessionCache(None)  # type: ignore[arg-type]  # never fetches: all cached
    view = SessionView(user_id="bob", email="bob@example.com", groups=())
    cache._cache["s1"] = ActiveSession("s1", 1, 2**40, view)
    cache._live = True
    return AuthorizerServicer(Decider(cfg), cache, handles, routes_version(cfg)), handles


def ask(s: AuthorizerServicer, handles: HandleCodec, version: str) -> authorize_pb2.CheckResponse:
    batch = authorize_pb2.CheckBatch()
    check = batch.checks.add(id=1).request
    check.scheme, check.host, check.method, check.path = "https", "a.example.com", "GET", "/"
    check.session_handle = handles.seal("s1", 2**40)
    check.config_version = version
    out = asyncio.run(s.decide_batch(batch))
    return out.results[0].response


OLD, NEW = config(route("a.example.com", **OPEN)), config(route("a.example.com", **ALICE))


def test_a_proxy_behind_is_answered_with_its_own_routes() -> None:
    s, handles = servicer(OLD)
    s.update(Decider(NEW), routes_version(NEW))
    assert ask(s, handles, routes_version(NEW)).outcome == authorize_pb2.DENY
    assert ask(s, handles, routes_version(OLD)).outcome == authorize_pb2.ALLOW
    assert ask(s, handles, "").outcome == authorize_pb2.DENY  # no version: the current


def test_a_proxy_ahead_makes_authorize_catch_up_first() -> None:
    s, handles = servicer(OLD)
    calls = []

    async def catch_up() -> None:
        calls.append(1)
        s.update(Decider(NEW), routes_version(NEW))

    s.catch_up = catch_up
    assert ask(s, handles, routes_version(NEW)).outcome == authorize_pb2.DENY
    assert calls == [1]


def test_a_proxy_ahead_of_a_config_authorize_cannot_read_fails_closed() -> None:
    s, handles = servicer(OLD)

    async def catch_up() -> None:
        return None  # the file on authorize's side has not changed

    s.catch_up = catch_up
    response = ask(s, handles, routes_version(NEW))
    assert response.outcome == authorize_pb2.UNAVAILABLE
    assert list(response.reasons) == ["config-out-of-step"]


def test_only_a_few_old_deciders_are_kept() -> None:
    s, handles = servicer(OLD)
    for n in range(KEEP_DECIDERS + 2):
        cfg = config(route("a.example.com", **OPEN), route(f"x{n}.example.com", **OPEN))
        s.update(Decider(cfg), routes_version(cfg))
    response = ask(s, handles, routes_version(OLD))
    assert response.outcome == authorize_pb2.UNAVAILABLE
