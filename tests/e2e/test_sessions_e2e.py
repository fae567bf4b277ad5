"""Sessions end to end, against the real `oidc-provider`: they survive a full restart
(SQLite and PostgreSQL stores) and an authenticate crash under traffic, a refresh
carries claims changed at the IdP into the next decision, an unreachable IdP is a 502
page and no session, and a cookie that is not one of ours is signed out."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from shared.sessions import HandleCodec
from tests.support.browser import Browser
from tests.support.net import free_port
from tests.support.oidc import OIDCClient, Provider, oidc_provider
from tests.support.postgres import POSTGRES_DSN, require_postgres
from tests.support.procs import child_pid
from tests.support.stack import Upstream, Vallum, all_in_one, route_host, upstream

pytestmark = pytest.mark.e2e

T = TypeVar("T")
COOKIE = "_pomerium"
ALICE = {"login": "alice", "password": "alice-password"}
JSON = {"Accept": "application/json"}
PG_DSN = POSTGRES_DSN
# No refresh during the tests that do not ask for one: the access token outlives them
# (authenticate refreshes 60 s ahead of expiry, so the harness's 60 s default would
# refresh every round).
LONG_TTL = {"access_token": 3600}


# -- helpers --------------------------------------------------------------------------


def client_for(*ports: int) -> OIDCClient:
    """The IdP client of the Vallum stacks listening on `ports`."""
    auths = [route_host("authenticate", port) for port in ports]
    return OIDCClient(
        redirect_uris=tuple(f"{auth}/oauth2/callback" for auth in auths),
        post_logout_redirect_uris=tuple(f"{auth}/.pomerium/signed_out" for auth in auths),
    )


def routes(port: int, app: Upstream) -> list[dict[str, Any]]:
    return [
        {
            "from": route_host("any", port),
            "to": app.url,
            "allow_any_authenticated_user": True,
            "pass_identity_headers": True,
        },
        {
            "from": route_host("staff", port),
            "to": app.url,
            "pass_identity_headers": True,
            "policy": {"allow": {"or": [{"groups": {"has": "staff"}}]}},
        },
    ]


def idp(issuer: str) -> dict[str, Any]:
    return {
        "idp_provider_url": issuer,
        "idp_client_id": "vallum",
        "idp_client_secret": "vallum-test-secret",
        "jwt_claims_headers": ["email", "groups"],
    }


def url(v: Vallum, name: str, path: str = "/echo") -> str:
    return route_host(name, v.port) + path


def netloc(v: Vallum, name: str) -> str:
    return urlsplit(route_host(name, v.port)).netloc


def echoed(response: httpx.Response) -> dict[str, str]:
    """The request headers the upstream saw (the echo app's answer)."""
    return {k.lower(): v for k, v in response.json()["headers"]}


def email_seen(response: httpx.Response) -> str:
    return echoed(response).get("x-pomerium-claim-email", "")


def sign_in(v: Vallum, name: str = "any") -> Browser:
    b = Browser(v.ca)
    got, response = b.navigate(url(v, name), fill=ALICE)
    assert response.status_code == 200, (got, response.status_code, response.text[:500])
    assert got == url(v, name) and email_seen(response) == "alice@example.com"
    assert b.cookies[netloc(v, name)][COOKIE]
    return b


def with_cookie(v: Vallum, value: str, name: str = "any") -> Browser:
    """A fresh browser (new connections) that carries only this session cookie."""
    b = Browser(v.ca)
    b.cookies[netloc(v, name)] = {COOKIE: value}
    return b


def eventually(attempt: Callable[[], T | None], timeout: float, what: str) -> tuple[T, float]:
    """Call `attempt` until it returns something, for at most `timeout` seconds;
    returns it and how long that took."""
    start = time.monotonic()
    while True:
        result = attempt()
        if result is not None:
            return result, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.2)


def assert_gone(pids: dict[str, int]) -> None:
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in pids.values()):
        assert time.monotonic() < deadline, f"children still running after exit: {pids}"
        time.sleep(0.05)


def children(v: Vallum) -> dict[str, int]:
    return {name: child_pid(v.proc, name) for name in ("authenticate", "authorize", "proxy")}


# -- fixtures -------------------------------------------------------------------------


@dataclass
class Shared:
    app: Upstream
    op: Provider
    v: Vallum  # SQLite store (the default)
    pg_port: int  # the port of the PostgreSQL test's own stack (same IdP client)
    tmp: Path
    handle: str = field(default="")  # alice's session cookie on `v`, once signed in


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    tmp = tmp_path_factory.mktemp("sessions")
    port, pg_port = free_port(), free_port()
    for sub in ("sqlite", "pg"):
        (tmp / sub).mkdir()
    with (
        upstream() as app,
        oidc_provider(tmp, clients=[client_for(port, pg_port)], ttl=LONG_TTL) as op,
        all_in_one(tmp / "sqlite", routes(port, app), port, **idp(op.issuer)) as v,
    ):
        yield Shared(app, op, v, pg_port, tmp)


@pytest.fixture
def alice(shared: Shared) -> str:
    """Alice's session cookie on the shared stack (signed in once per module)."""
    if not shared.handle:
        b = sign_in(shared.v)
        shared.handle = b.cookies[netloc(shared.v, "any")][COOKIE]
        b.close()
    return shared.handle


def pg_admin() -> psycopg.Connection[Any]:
    return psycopg.connect(require_postgres(), autocommit=True)


# -- 1, 2: a full restart ---------------------------------------------------------------


def restart_keeps_alice_signed_in(v: Vallum) -> None:
    b = sign_in(v)
    cookie = b.cookies[netloc(v, "any")][COOKIE]
    b.close()
    before = children(v)
    assert v.restart() == 0, v.proc.output[-2000:]  # SIGTERM, waited for: a clean exit
    assert_gone(before)
    assert set(children(v).values()).isdisjoint(before.values())
    again = with_cookie(v, cookie)
    response = again.request("GET", url(v, "any"), headers=JSON)
    # Straight to the app: no redirect to sign in, no IdP involved.
    assert response.status_code == 200, response.text[:500]
    assert email_seen(response) == "alice@example.com"
    browser = again.request("GET", url(v, "any"))  # HTML too: the page, not a sign-in
    assert browser.status_code == 200 and email_seen(browser) == "alice@example.com"
    assert len(again.history) == 2
    again.close()


def test_session_survives_a_restart_sqlite(shared: Shared) -> None:
    restart_keeps_alice_signed_in(shared.v)
    assert (shared.v.data / "sessions.db").is_file()


def test_session_survives_a_restart_postgres(shared: Shared) -> None:
    schema = f"vallum_e2e_{secrets.token_hex(6)}"
    with pg_admin() as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            dsn = f"{PG_DSN} options=-csearch_path={schema}"
            config = idp(shared.op.issuer) | {
                "databroker_storage_type": "postgres",
                "databroker_storage_connection_string": dsn,
            }
            port = shared.pg_port
            with all_in_one(shared.tmp / "pg", routes(port, shared.app), port, **config) as v:
                restart_keeps_alice_signed_in(v)
                # The session lives in PostgreSQL, in the test's own schema, and nowhere else.
                assert not (v.data / "sessions.db").exists()
                count = admin.execute(
                    sql.SQL("SELECT count(*) FROM {}.vallum_sessions").format(
                        sql.Identifier(schema)
                    )
                ).fetchone()
                assert count == (1,)
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# -- 3: authenticate killed under traffic ----------------------------------------------


@dataclass
class Traffic:
    """Requests made in a loop until `until`: (monotonic time, status, email or error)."""

    b: Browser
    target: str
    until: float
    seen: list[tuple[float, int, str]] = field(default_factory=list)

    def run(self) -> None:
        while time.monotonic() < self.until:
            at = time.monotonic()
            try:
                r = self.b.request("GET", self.target, headers=JSON)
            except httpx.HTTPError as e:
                self.seen.append((at, 0, f"{type(e).__name__}: {e}"))
                continue
            self.seen.append((at, r.status_code, email_seen(r) if r.status_code == 200 else ""))
            time.sleep(0.01)


def test_sigkill_of_authenticate_under_traffic(shared: Shared, alice: str) -> None:
    v = shared.v
    start = time.monotonic()
    signed_in = Traffic(with_cookie(v, alice), url(v, "any"), start + 5.0)
    anonymous = Traffic(Browser(v.ca), url(v, "any"), start + 5.0)
    threads = [threading.Thread(target=t.run) for t in (signed_in, anonymous)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    old = child_pid(v.proc, "authenticate")
    mark = len(v.proc.lines)
    os.kill(old, signal.SIGKILL)
    killed_at = time.monotonic()
    v.proc.wait_for("authenticate exited with", timeout=5, start=mark)

    def restarted() -> int | None:
        try:
            pid = child_pid(v.proc, "authenticate")
        except AssertionError:
            return None
        return pid if pid != old else None

    new, _ = eventually(restarted, 10, "the supervisor restarts authenticate")
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)

    # Afterwards the session is still there: nothing was lost with the process.
    def works() -> httpx.Response | None:
        r = signed_in.b.request("GET", url(v, "any"), headers=JSON)
        return r if r.status_code == 200 else None

    after, recovery = eventually(works, 15, "alice's session works again")
    assert email_seen(after) == "alice@example.com"

    statuses = [status for _, status, _ in signed_in.seen]
    # Fail closed, or the right user: never a 500, a transport error, or a sign-in.
    assert set(statuses) <= {200, 503}, signed_in.seen
    assert all(who == "alice@example.com" for _, s, who in signed_in.seen if s == 200)
    assert 200 in statuses[:5], "traffic did not succeed before the kill"
    # A signed-out client needs no session lookup: 401 throughout, never let through.
    assert {status for _, status, _ in anonymous.seen} == {401}, anonymous.seen
    during = [(at, status) for at, status, _ in signed_in.seen if at >= killed_at]
    failed = [at for at, status in during if status != 200]
    outage = (failed[-1] - killed_at) if failed else 0.0
    print(
        f"\nSIGKILL authenticate (pid {old} -> {new}): {len(failed)}/{len(during)} signed-in "
        f"requests in the {signed_in.until - killed_at:.1f}s after the kill failed closed "
        f"with 503 ({100 * len(failed) / max(1, len(during)):.0f}%), the last "
        f"{outage:.1f}s after it; {len(signed_in.seen)} signed-in requests in all, "
        f"{len(anonymous.seen)} anonymous ones all 401; final wait {recovery:.1f}s"
    )
    signed_in.b.close()
    anonymous.b.close()


# -- 6: cookies that are not ours ---------------------------------------------------------


def forgeries(v: Vallum, handle: str) -> dict[str, str]:
    secret = base64.b64decode((v.data / "secrets" / "cookie_secret").read_text().strip())
    session_id = HandleCodec(secret).open(handle, time.time())
    flipped = list(handle)
    flipped[len(handle) // 2] = "A" if flipped[len(handle) // 2] != "A" else "B"
    return {
        # Alice's real session id, sealed under another deployment's secret.
        "foreign secret": HandleCodec(os.urandom(32)).seal(session_id, int(time.time()) + 3600),
        "truncated": handle[:-10],
        "half": handle[: len(handle) // 2],
        "one character changed": "".join(flipped),
        "random bytes, our prefix": "v1." + base64.urlsafe_b64encode(os.urandom(64)).decode(),
        "random bytes": base64.urlsafe_b64encode(os.urandom(64)).decode().rstrip("="),
    }


def test_tampered_and_foreign_cookies_are_signed_out(shared: Shared, alice: str) -> None:
    v = shared.v
    target = url(v, "any", "/tampered")
    sign_in_page = route_host("authenticate", v.port) + "/.pomerium/sign_in?"
    real = with_cookie(v, alice)
    control = real.request("GET", target, headers=JSON)
    assert control.status_code == 200 and email_seen(control) == "alice@example.com"
    hits = shared.app.hits().get("/tampered", 0)
    for kind, value in forgeries(v, alice).items():
        b = with_cookie(v, value)
        page = b.request("GET", target)  # a browser: off to sign in
        assert page.status_code == 302, (kind, page.status_code, page.text[:300])
        assert page.headers["location"].startswith(sign_in_page), (kind, page.headers)
        api = b.request("GET", target, headers=JSON)  # an API client: 401
        assert api.status_code == 401 and api.json()["status"] == 401, (kind, api.text[:300])
        bearer = Browser(v.ca)
        token = bearer.request(
            "GET", target, headers={**JSON, "Authorization": f"Pomerium {value}"}
        )
        assert token.status_code == 401, (kind, token.text[:300])
        b.close()
        bearer.close()
    # None of them reached the app.
    assert shared.app.hits().get("/tampered", 0) == hits
    real.close()


# -- 4: a refresh carries new claims -------------------------------------------------------


def test_refresh_brings_groups_changed_at_the_idp(tmp_path: Path, shared: Shared) -> None:
    port = free_port()
    with (
        oidc_provider(tmp_path, clients=[client_for(port)], ttl={"access_token": 20}) as op,
        all_in_one(tmp_path, routes(port, shared.app), port, **idp(op.issuer)) as v,
    ):
        b = sign_in(v)
        # On to the staff host (one hand-over through authenticate, no second login):
        # alice is an admin, not staff.
        where, denied = b.navigate(url(v, "staff"))
        assert denied.status_code == 403 and where == url(v, "staff"), denied.text[:300]
        assert b.cookies[netloc(v, "staff")][COOKIE]
        assert op.set_account("alice", groups=["staff"])["groups"] == ["staff"]
        mark = len(b.history)

        def allowed() -> httpx.Response | None:
            r = b.request("GET", url(v, "staff"), headers=JSON)
            assert r.status_code in (200, 403), r.text[:300]
            return r if r.status_code == 200 else None

        response, waited = eventually(allowed, 20, "the refreshed groups admit alice")
        assert echoed(response)["x-pomerium-claim-groups"] == "staff"
        # No sign-in on the way: every request went straight to the staff route.
        assert {urlsplit(str(r.request.url)).path for r in b.history[mark:]} == {"/echo"}
        assert all(r.status_code in (200, 403) for r in b.history[mark:])
        print(f"\nrefresh: groups changed at the IdP took effect after {waited:.1f}s")
        b.close()


# -- 5: the IdP unreachable ------------------------------------------------------------------


def test_idp_unavailable_is_a_502_and_no_session(tmp_path: Path, shared: Shared) -> None:
    op_port, port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{op_port}"  # nothing listens there yet
    sign_in_path = route_host("authenticate", port) + "/.pomerium/sign_in"
    callback = route_host("authenticate", port) + "/oauth2/callback"
    clients = [client_for(port)]
    with all_in_one(tmp_path, routes(port, shared.app), port, **idp(issuer)) as v:

        def no_session(b: Browser) -> None:
            assert COOKIE not in b.cookies.get(netloc(v, "any"), {})
            r = b.request("GET", url(v, "any"), headers=JSON)
            assert r.status_code == 401, r.text[:300]

        # Down before Vallum ever reached it (no discovery document): the sign-in page.
        b = Browser(v.ca)
        where, page = b.navigate(url(v, "any"), fill=ALICE)
        assert page.status_code == 502 and where.startswith(sign_in_path), (where, page.text)
        assert "idp-unavailable" in page.text
        as_json = b.request("GET", where, headers=JSON)
        assert as_json.status_code == 502
        assert as_json.json()["reasons"][0]["name"] == "idp-unavailable"
        no_session(b)
        b.close()

        # Up: sign-in works (nothing was cached, so discovery is tried again at once).
        # Then down between the IdP's login and Vallum's callback: the code exchange.
        (tmp_path / "up1").mkdir()
        (tmp_path / "up2").mkdir()
        with oidc_provider(tmp_path / "up1", clients=clients, port=op_port) as op:
            assert op.issuer == issuer
            b = Browser(v.ca)
            at_callback, _ = b.navigate(url(v, "any"), fill=ALICE, stop_at=callback)
            op.stop()
        failed = b.request("GET", at_callback, headers=JSON)
        assert failed.status_code == 502, failed.text
        assert failed.json()["reasons"][0]["name"] == "idp-unavailable"
        no_session(b)
        b.close()

        # The provider back on the same port: sign-in works again, without restarting Vallum.
        with oidc_provider(tmp_path / "up2", clients=clients, port=op_port):

            def signs_in() -> Browser | None:
                b = Browser(v.ca)
                where, page = b.navigate(url(v, "any"), fill=ALICE)
                if page.status_code == 200 and where == url(v, "any"):
                    return b
                b.close()
                return None

            b, waited = eventually(signs_in, 40, "sign-in works with the IdP back")
            assert email_seen(b.history[-1]) == "alice@example.com"
            print(f"\nIdP back: sign-in worked after {waited:.1f}s")
            b.close()
