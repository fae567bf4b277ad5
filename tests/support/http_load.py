"""Bounded HTTP load for failover tests: concurrent clients, every answer counted.

    load = Load(url=..., headers=..., server_name=..., ca=..., clients=16,
                paths=[...], until=time.monotonic() + 8).start()
    outcomes = load.join()          # one Outcome per request, in the order sent

Each client is a thread with its own httpx client; even-numbered clients keep their
connection alive, odd-numbered ones open a new one for every request. `until` may be
moved while the load runs; the clients stop by themselves when it has passed.

The retry policy, the one an HTTP library applies to an idempotent request (RFC 9110
section 9.2.2, RFC 9112 section 9.3.1): a GET whose connection failed before the
response headers arrived is sent once more, `retry_after` seconds later, on a new
connection. A failure after the response headers is never retried, and a retry that
fails again is a failed request.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx


@dataclass
class Outcome:
    client: int
    path: str
    at: float  # monotonic time the request was first sent
    status: int | None = None  # the final HTTP status, None if the request failed
    email: str = ""  # X-Pomerium-Claim-Email as the upstream (the echo app) saw it
    first_error: str = ""  # a connection failure before any response: retried once
    failed_at: float = 0.0  # when that happened
    error: str = ""  # the final failure, if any


@dataclass
class Load:
    url: str  # scheme://host:port the clients connect to
    headers: Mapping[str, str]
    server_name: str  # the TLS server name (SNI)
    ca: Path
    clients: int
    paths: Sequence[str]  # client i asks for paths[i % len(paths)]
    until: float
    retry_after: float = 0.1
    outcomes: list[list[Outcome]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        verify = ssl.create_default_context(cafile=str(self.ca))
        for i in range(self.clients):
            seen: list[Outcome] = []
            self.outcomes.append(seen)
            thread = threading.Thread(target=self._run, args=(i, seen, verify), daemon=True)
            self.threads.append(thread)
            thread.start()
        return self

    def join(self) -> list[Outcome]:
        for thread in self.threads:
            thread.join(max(30.0, self.until - time.monotonic() + 30.0))
        assert not any(t.is_alive() for t in self.threads), "a load client did not stop"
        return sorted((o for seen in self.outcomes for o in seen), key=lambda o: o.at)

    def _run(self, i: int, seen: list[Outcome], verify: ssl.SSLContext) -> None:
        limits = httpx.Limits(max_keepalive_connections=0) if i % 2 else httpx.Limits()
        path = self.paths[i % len(self.paths)]
        with httpx.Client(verify=verify, timeout=10, limits=limits) as client:
            while time.monotonic() < self.until:
                outcome = Outcome(i, path, time.monotonic())
                try:
                    self._once(client, outcome)
                except _BeforeResponse as e:
                    outcome.first_error = str(e)
                    outcome.failed_at = time.monotonic()
                    time.sleep(self.retry_after)
                    try:  # the retry policy: once, on a new connection
                        self._once(client, outcome)
                    except _BeforeResponse as again:
                        outcome.error = f"retried, failed again: {again}"
                except Exception as e:  # counted, not lost with the thread
                    outcome.error = f"unexpected: {e!r}"
                seen.append(outcome)

    def _once(self, client: httpx.Client, outcome: Outcome) -> None:
        try:
            streaming = client.stream(
                "GET",
                f"{self.url}{outcome.path}",
                headers=dict(self.headers),
                extensions={"sni_hostname": self.server_name},
            )
            response = streaming.__enter__()
        except httpx.TransportError as e:
            raise _BeforeResponse(f"{type(e).__name__}: {e}") from None
        try:
            response.read()
            outcome.status = response.status_code
            if response.status_code == 200:
                headers = {k.lower(): v for k, v in response.json()["headers"]}
                outcome.email = headers.get("x-pomerium-claim-email", "")
        except httpx.TransportError as e:
            outcome.error = f"after the response headers: {type(e).__name__}: {e}"
        finally:
            streaming.__exit__(None, None, None)


class _BeforeResponse(Exception):
    pass


def summary(outcomes: Sequence[Outcome]) -> str:
    statuses: Counter[str] = Counter(
        str(o.status) if o.status is not None else "failed" for o in outcomes
    )
    retried = Counter(o.first_error for o in outcomes if o.first_error)
    return (
        f"{len(outcomes)} requests {dict(statuses)}, {sum(retried.values())} retried "
        f"{dict(retried)}"
    )


def describe(lost: Sequence[Outcome], start: float) -> str:
    """The requests that failed before a response: client, path, when, why."""
    kind = ("keep-alive", "new conn")
    return f"{len(lost)} " + str(
        [
            f"client {o.client} ({kind[o.client % 2]}) {o.path} sent "
            f"@{o.at - start:.2f}s failed @{o.failed_at - start:.2f}s: {o.first_error}"
            for o in lost
        ]
    )
