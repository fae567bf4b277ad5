"""Scale-out on one machine (issue #10): Vallum split into processes, each on its own
loopback address (tests/support/split.py), 3 proxy replicas behind a round-robin TCP
balancer, 2 authenticate replicas sharing PostgreSQL behind another, one authorize,
and the built-in demo IdP.

- A session made through the balancer (whose sign-in steps land on both authenticate
  replicas) is recognised by every proxy replica, with the same signed assertion.
- Sign-out on one replica signs the user out on all of them, also when the delete
  happens on the authenticate replica authorize does not watch (it reaches authorize
  asynchronously, in milliseconds; the test allows a bounded window and reports it).
- Under load, a proxy replica stopped with SIGTERM answers every request it had (the
  in-flight ones finish); what fails is a request sent on a keep-alive connection
  just as the replica closed it, before any response. One killed with SIGKILL fails
  at most the request each client had in flight on it. Under the retry policy below,
  every request succeeds in both cases, and none is retried twice.
- Under load, an authenticate replica killed with SIGKILL loses no session, requests
  keep succeeding (authorize fails over to the other replica), and sign-in works.
- a response finished while the proxy drains carries `Connection: close`, so a
  keep-alive client takes its next request elsewhere.

The load clients (tests/support/http_load.py) retry a GET whose connection failed
before any response arrived once, 0.1 s later, on a new connection (RFC 9110 section
9.2.2, RFC 9112 section 9.3.1); a retry that fails again is a failed request. The
pause matters after a SIGKILL: the kernel closes the dead process's sockets one by
one, so an immediate retry can still be queued on its listening socket (and reset with
it); 0.1 s later the balancer's connect is refused and it passes over to the next
replica.
"""

from __future__ import annotations

import re
import secrets
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from psycopg import sql

from tests.support.browser import Browser
from tests.support.http_load import Load, Outcome, describe, summary
from tests.support.postgres import POSTGRES_DSN, require_postgres
from tests.support.split import APP_HOST, COOKIE, Service, Split, split_topology
from tests.support.stack import Upstream, upstream

pytestmark = pytest.mark.integration

JSON = {"Accept": "application/json"}
CLIENTS = 16  # concurrent load clients
RETRY_AFTER = 0.1  # seconds; see the retry policy above
# How long a sign-out may take to reach every replica (it takes milliseconds).
STALE_BOUND = 2.0


# -- clients ----------------------------------------------------------------------------


class FreshConnectionBrowser(Browser):
    """A browser that opens a new connection for every request, so each step of a
    sign-in is a new connection to the balancer (and so to the next replica)."""

    def _client(self, authority: str) -> httpx.Client:
        client = self._clients.get(authority)
        if client is None:
            client = self._clients[authority] = httpx.Client(
                verify=self._verify,
                timeout=30,
                follow_redirects=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return client


def sign_in(s: Split, login: str) -> str:
    """Sign in through both balancers (fresh connections each step); the cookie."""
    b = FreshConnectionBrowser(s.ca)
    try:
        target = f"{s.app_origin}/echo"
        where, page = b.navigate(target, fill={"login": login, "password": "demo"})
        assert page.status_code == 200 and where == target, (where, page.text[:500], s.logs())
        return b.cookies[urlsplit(s.app_origin).netloc][COOKIE]
    finally:
        b.close()


def http_client(s: Split, **kw: Any) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(s.ca)), timeout=10, **kw)


def direct(
    s: Split,
    proxy: Service,
    cookie: str,
    *,
    method: str = "GET",
    path: str = "/echo",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A request straight to one proxy replica (its own address), for the route host."""
    with http_client(s) as client:
        return client.request(
            method,
            f"https://{proxy.ip}:{s.port}{path}",
            headers={
                "Host": f"{APP_HOST}:{s.port}",
                "Cookie": f"{COOKIE}={cookie}",
                **JSON,
                **(headers or {}),
            },
            extensions={"sni_hostname": APP_HOST},
        )


def echoed(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.json()["headers"]}


def identity(s: Split, response: httpx.Response) -> dict[str, Any]:
    """The JWT assertion the app received, verified with the deployment's signing key."""
    private = load_pem_private_key(s.signing_key.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    key = private.public_key()
    token = echoed(response)["x-pomerium-jwt-assertion"]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["ES256"], audience=APP_HOST, issuer=APP_HOST
    )
    return claims


def watched_replica(s: Split) -> Service:
    """The authenticate replica authorize streams session changes from (its log says
    so each time the Watch stream is (re)established)."""
    found = re.findall(r"session changes streaming from https://([0-9.]+):", s.authorize.log())
    assert found, s.authorize.log()
    return next(a for a in s.authenticate if a.ip == found[-1])


def assert_recognised(s: Split, proxy: Service, cookie: str, email: str) -> None:
    r = direct(s, proxy, cookie)
    assert r.status_code == 200, (proxy.name, r.status_code, r.text[:500])
    assert echoed(r)["x-pomerium-claim-email"] == email, proxy.name
    assert identity(s, r)["email"] == email, proxy.name


def load_through_balancer(s: Split, cookie: str, until: float) -> Load:
    """`CLIENTS` clients through the proxy balancer, signed in with `cookie`; a quarter
    of them ask for answers that take a while (surely in flight when a replica stops)."""
    return Load(
        url=f"https://127.0.0.1:{s.port}",
        headers={"Host": f"{APP_HOST}:{s.port}", "Cookie": f"{COOKIE}={cookie}", **JSON},
        server_name=APP_HOST,
        ca=s.ca,
        clients=CLIENTS,
        paths=["/echo"] * (CLIENTS * 3 // 4) + ["/slow?delay=0.3"] * (CLIENTS // 4),
        until=until,
        retry_after=RETRY_AFTER,
    )


def assert_all_alice(outcomes: list[Outcome], email: str, logs: str) -> None:
    bad = [o for o in outcomes if o.status != 200 or o.email != email or o.error]
    assert not bad, (summary(outcomes), bad[:10], logs)


def ports(counts: dict[tuple[str, int], int]) -> dict[str, int]:
    return {ip: n for (ip, _), n in counts.items()}


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    """A PostgreSQL schema of this module's own (dropped after), as a DSN. Without a
    reachable PostgreSQL: skip, or fail under CI=true (install.sh sets one up)."""
    require_postgres()
    schema = f"vallum_scale_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield psycopg.conninfo.make_conninfo(POSTGRES_DSN, options=f"-csearch_path={schema}")
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def app() -> Iterator[Upstream]:
    with upstream() as u:
        yield u


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str, app: Upstream) -> Iterator[Split]:
    tmp: Path = tmp_path_factory.mktemp("split")
    with split_topology(tmp, pg_dsn, app.url) as s:
        yield s


@pytest.fixture(scope="module")
def alice(split: Split) -> str:
    return sign_in(split, "alice")


@pytest.fixture(autouse=True)
def all_running(split: Split) -> None:
    """Each test starts with every replica up (a failed test may leave one stopped)."""
    for service in split.services():
        if service.process is None or service.process.poll() is not None:
            service.start_ready()


# -- the tests ----------------------------------------------------------------------------


def test_a_session_made_through_the_balancer_is_recognised_by_every_proxy(
    split: Split, alice: str
) -> None:
    s = split
    # The sign-in's steps on the authenticate host each took a new connection, so
    # round robin sent them to both replicas: the sign-in state is not per replica.
    assert all(s.auth_lb.connections().get(a.backend, 0) >= 1 for a in s.authenticate), (
        s.auth_lb.connections()
    )
    for proxy in s.proxies:
        assert_recognised(s, proxy, alice, "alice@example.com")
    # Every replica signs the assertion with the one signing_key, and the JWKS of each
    # one publishes it.
    kids = set()
    for proxy in s.proxies:
        jwks = direct(s, proxy, "", path="/.well-known/pomerium/jwks.json").json()
        kids.add(tuple(k["kid"] for k in jwks["keys"]))
    assert len(kids) == 1, kids


def test_sign_out_on_one_replica_signs_out_on_all(split: Split) -> None:
    s = split
    bob = sign_in(s, "bob")
    for proxy in s.proxies:
        assert_recognised(s, proxy, bob, "bob@example.com")
    # The sign-out lands on the authenticate replica authorize does NOT stream session
    # changes from: the delete reaches authorize through PostgreSQL's LISTEN/NOTIFY and
    # the other replica's Watch stream.
    watched = watched_replica(s)
    other = next(a for a in s.authenticate if a is not watched)
    s.auth_lb.remove(watched.backend)
    mark = len(other.log())
    try:
        out = direct(
            s,
            s.proxies[0],
            bob,
            method="POST",
            path="/.pomerium/sign_out",
            headers={"Accept": "text/html", "Sec-Fetch-Site": "same-origin"},
        )
        assert out.status_code == 303, out.text[:300]
        assert f"{COOKIE}=" in out.headers["set-cookie"], out.headers
        assert "max-age=0" in out.headers["set-cookie"].lower(), out.headers
        b = Browser(s.ca)
        where, page = b.navigate(out.headers["location"])
        b.close()
        assert page.status_code == 200 and where.endswith("/.pomerium/signed_out"), (where, page)
        assert "signed out session" in other.log()[mark:], other.log()[mark:]
    finally:
        s.auth_lb.add(watched.backend)
    signed_out_at = time.monotonic()
    # Each replica, with the old cookie: signed out. The change reaches authorize's
    # cache asynchronously (commit, NOTIFY, the other replica's Watch stream), so a
    # request racing it may still pass; allow that window, bounded, and report it.
    stale = {}
    for proxy in s.proxies:
        stale[proxy.name] = 0
        while (api := direct(s, proxy, bob)).status_code == 200:
            stale[proxy.name] += 1
            assert time.monotonic() - signed_out_at < STALE_BOUND, (stale, s.authorize.log())
        assert api.status_code == 401, (proxy.name, api.status_code, api.text[:300])
        page = direct(s, proxy, bob, headers={"Accept": "text/html"})
        assert page.status_code == 302, (proxy.name, page.status_code)
        assert page.headers["location"].startswith(f"{s.auth_origin}/.pomerium/sign_in?")
    print(
        f"\nsign-out via {s.proxies[0].name} and {other.name} (authorize watches "
        f"{watched.name}): signed out on all {len(s.proxies)} replicas "
        f"{1000 * (time.monotonic() - signed_out_at):.0f} ms after the sign-out page; "
        f"answers still allowed meanwhile: {stale}"
    )


def test_a_response_finished_while_draining_closes_its_connection(split: Split, alice: str) -> None:
    """RFC 9112 section 9.6: a server that is about to close a persistent connection says
    so in the last response, so the client does not send another request on it."""
    s = split
    proxy = s.proxies[2]
    answer: list[httpx.Response] = []
    with http_client(s) as client:

        def get(path: str) -> httpx.Response:
            return client.get(
                f"https://{proxy.ip}:{s.port}{path}",
                headers={"Host": f"{APP_HOST}:{s.port}", "Cookie": f"{COOKIE}={alice}", **JSON},
                extensions={"sni_hostname": APP_HOST},
            )

        assert get("/echo").status_code == 200  # the connection, kept alive
        slow = threading.Thread(target=lambda: answer.append(get("/slow?delay=1")))
        slow.start()
        time.sleep(0.3)
        proxy.send(signal.SIGTERM)
        slow.join(10)
        try:
            assert proxy.wait(15) == 0
            # The request in flight was answered: the stop waited for it.
            assert answer and answer[0].status_code == 200, answer
            assert answer[0].headers.get("connection") == "close", answer[0].headers
        finally:
            if proxy.process is not None and proxy.process.poll() is not None:
                proxy.start_ready()


def test_proxy_replicas_stopped_and_killed_under_load(split: Split, alice: str) -> None:
    s = split
    term, kill, survivor = s.proxies
    start = time.monotonic()
    load = load_through_balancer(s, alice, until=start + 30.0).start()
    time.sleep(2.5)
    refused_before = s.proxy_lb.refused()
    term_at = time.monotonic()
    term.send(signal.SIGTERM)  # graceful
    # It drains (up to its 10 s grace), and exits cleanly; then, with two replicas
    # left, the next one is killed, so that the two stops' failures do not overlap.
    assert term.wait(15) == 0, term.log()[-3000:]
    drained = time.monotonic() - term_at
    assert "requests still running after" not in term.log(), term.log()[-3000:]
    time.sleep(1.0)
    kill_at = time.monotonic()
    kill.send(signal.SIGKILL)
    load.until = kill_at + 2.5
    outcomes = load.join()
    assert kill.wait(5) == -9

    # A failure belongs to the stop it followed (a request may have started before).
    lost_term = [o for o in outcomes if o.first_error and term_at <= o.failed_at < kill_at]
    lost_kill = [o for o in outcomes if o.first_error and o.failed_at >= kill_at]
    # The requests the stopped replica had in flight were answered while it drained.
    answered = term.log().rsplit("proxy stopping", 1)[1].count("status=200")
    report = (
        f"\nproxy replicas under load ({CLIENTS} clients, {time.monotonic() - start:.1f}s): "
        f"{term.name} drained in {drained:.2f}s, answering {answered} requests meanwhile; "
        f"{summary(outcomes)}; before SIGTERM "
        f"{summary([o for o in outcomes if o.at < term_at])}; retried after SIGTERM "
        f"{term.name}: {describe(lost_term, start)}; retried after SIGKILL {kill.name}: "
        f"{describe(lost_kill, start)}; balancer connections "
        f"{ports(s.proxy_lb.connections())}, refused {ports(s.proxy_lb.refused())}"
    )
    print(report)
    # Every request got its answer from the app, for alice: with SIGTERM or SIGKILL,
    # a request whose connection failed before the response was retried once (the
    # policy above) and the retry succeeded.
    assert_all_alice(outcomes, "alice@example.com", report + s.logs())
    assert all(o.failed_at >= term_at for o in outcomes if o.first_error), report
    # Each client lost at most its one in-flight request to each stop.
    assert len(lost_term) <= CLIENTS and len(lost_kill) <= CLIENTS, report
    assert len({o.client for o in lost_term}) == len(lost_term), report
    assert len({o.client for o in lost_kill}) == len(lost_kill), report
    # New connections found the stopped replicas refusing and went to the next one.
    refused = s.proxy_lb.refused()
    assert refused.get(term.backend, 0) > refused_before.get(term.backend, 0), report
    assert refused.get(kill.backend, 0) > 0, report
    assert survivor.process is not None and survivor.process.poll() is None

    # Back to three replicas; the session is valid on every one.
    term.start_ready()
    kill.start_ready()
    for proxy in s.proxies:
        assert_recognised(s, proxy, alice, "alice@example.com")


def test_authenticate_replica_killed_under_load(split: Split, alice: str) -> None:
    s = split
    # Kill the replica authorize uses now (its Watch stream and its session lookups).
    victim = watched_replica(s)
    survivor = next(a for a in s.authenticate if a is not victim)
    mark = len(s.authorize.log())
    start = time.monotonic()
    load = load_through_balancer(s, alice, until=start + 6.0).start()
    time.sleep(2.0)
    killed_at = time.monotonic()
    victim.send(signal.SIGKILL)
    outcomes = load.join()
    assert victim.wait(5) == -9
    after = [o for o in outcomes if o.at >= killed_at]
    failover = [
        line
        for line in s.authorize.log()[mark:].splitlines()
        if "unavailable" in line or "streaming from" in line or "lost" in line
    ]
    report = (
        f"\n{victim.name} SIGKILLed under load ({CLIENTS} clients): before "
        f"{summary([o for o in outcomes if o.at < killed_at])}; after {summary(after)}; "
        f"authorize: {failover}"
    )
    print(report)
    # No session lost (it lives in PostgreSQL), and requests kept succeeding.
    assert after, report
    assert_all_alice(outcomes, "alice@example.com", report + s.logs())
    # authorize moved to the surviving replica, for lookups and for change events.
    assert watched_replica(s) is survivor, report

    # Sign-in still works: the authenticate balancer passes over the dead replica.
    refused = s.auth_lb.refused().get(victim.backend, 0)
    bob = sign_in(s, "bob")
    assert s.auth_lb.refused().get(victim.backend, 0) > refused
    for proxy in s.proxies:
        assert_recognised(s, proxy, bob, "bob@example.com")
        assert_recognised(s, proxy, alice, "alice@example.com")
    assert survivor.process is not None and survivor.process.poll() is None
