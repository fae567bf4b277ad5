"""The Check round trip and session lookups over mTLS, against a running all-in-one
(separate processes), from this process.

The client is the proxy's own: a CheckClient over a ServiceChannel with the proxy's
internal certificate (authorize admits no other identity to Check), once over the
check channel (the hot path) and once over the CheckStream RPC it falls back to. Requests are
built the way the proxy's handler builds them: one for the public route, one for
the signed-in route carrying alice's session handle from the real sign-in flow, so
the second is a session cache hit in authorize once warm. A cache miss costs
authorize one SessionService.Get to authenticate; that call is timed on its own,
with authorize's certificate. Every answer must be ALLOW (Get: found): a bench that
timed refusals would measure the wrong path.

Latency is wall clock per call (perf_counter around the await); CPU per call is
user + system time from /proc of the serving process over the run, and of this
process for the client side.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import uvloop

from services.proxy.check_client import CheckClient
from shared.pb import authorize_pb2, session_pb2, session_pb2_grpc
from shared.policy import POLICY_HEADERS
from shared.rpc import ServiceChannel, internal_tls
from shared.sessions import HandleCodec
from tests.bench.allinone import AllInOne, all_in_one
from tests.bench.load import cpu_seconds

SEQUENTIAL = 2_000
CONCURRENT = 20_000
IN_FLIGHT = 64
WARMUP = 200
GET_TIMEOUT = 2.0

# What a browser sends besides Host and Cookie (the cookie never reaches authorize).
BROWSER_HEADERS = (
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-language", "en-US,en;q=0.9"),
)


def sent_headers(host: str) -> list[tuple[str, str]]:
    """The headers the proxy copies into a CheckRequest for a browser's GET: only
    those a policy can read (none of a plain GET's)."""
    headers = [("host", host), *BROWSER_HEADERS]
    return [(n, v) for n, v in headers if n in POLICY_HEADERS]


@dataclass
class Timing:
    label: str
    in_flight: int
    calls: int
    p50_us: float
    p99_us: float
    per_s: float
    server: str  # the process that serves the call
    server_cpu_us: float
    client_cpu_us: float


def check_request(v: AllInOne, path: str, handle: str) -> authorize_pb2.CheckRequest:
    """As services/proxy/handler.py `_check_request` builds it for `GET path` on the
    bench's 127.0.0.1 host (no SNI: wrk and the sign-in client connect by IP)."""
    request = authorize_pb2.CheckRequest(
        request_id="0123456789abcdef",
        scheme="https",
        host=v.host,
        method="GET",
        path=path,
        query="",
        source_ip="127.0.0.1",
        server_name="",
        session_handle=handle,
    )
    for name, value in sent_headers(v.host):
        request.headers.add(name=name, value=value)
    return request


async def timed(
    label: str,
    call: Callable[[], Awaitable[None]],
    *,
    calls: int,
    in_flight: int,
    server: str,
    server_pid: int,
) -> Timing:
    """`calls` calls, `in_flight` at a time (each worker waits for its answer before
    it sends the next), each timed on its own."""
    samples: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            start = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - start)

    shares = [calls // in_flight + int(i < calls % in_flight) for i in range(in_flight)]
    server_before, client_before = cpu_seconds(server_pid), time.process_time()
    wall_before = time.perf_counter()
    await asyncio.gather(*(worker(share) for share in shares))
    wall = time.perf_counter() - wall_before
    done = len(samples)
    server_cpu = cpu_seconds(server_pid) - server_before
    client_cpu = time.process_time() - client_before
    return Timing(
        label,
        in_flight,
        done,
        statistics.median(samples) * 1e6,
        statistics.quantiles(samples, n=100)[98] * 1e6,
        done / wall,
        server,
        server_cpu * 1e6 / done,
        client_cpu * 1e6 / done,
    )


async def measure(v: AllInOne, handle: str) -> list[Timing]:
    proxy = v.service_config("proxy")
    authorize = v.service_config("authorize")
    assert authorize.cookie_secret is not None  # bootstrap writes one
    session_id = HandleCodec(authorize.cookie_secret).open(handle, time.time())

    # As services/proxy/service.py builds its Check client: over the check channel, and
    # again over the CheckStream RPC it falls back to.
    check_channel = ServiceChannel(proxy.authorize_service_url[0], internal_tls(proxy))
    # As services/authorize/session_cache.py reads sessions.
    sessions_channel = ServiceChannel(authorize.databroker_service_url[0], internal_tls(authorize))
    sessions = session_pb2_grpc.SessionServiceStub(sessions_channel.get())
    try:
        requests = {
            "public route": check_request(v, "/public/", ""),
            "signed-in route (session cache hit)": check_request(v, "/", handle),
        }

        def checker(
            client: CheckClient, request: authorize_pb2.CheckRequest
        ) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                response = await client.check(request)
                if response.outcome != authorize_pb2.ALLOW:
                    outcome = authorize_pb2.Outcome.Name(response.outcome)
                    raise RuntimeError(
                        f"Check {request.path} answered {outcome} "
                        f"({', '.join(response.reasons)}), not ALLOW"
                    )

            return call

        async def get() -> None:
            response = await sessions.Get(
                session_pb2.GetRequest(id=session_id, include_tokens=True), timeout=GET_TIMEOUT
            )
            if not response.found:
                raise RuntimeError("SessionService.Get did not find alice's session")

        results: list[Timing] = []
        authorize_pid = v.pids["authorize"]
        for use_channel, transport in ((True, "check channel"), (False, "CheckStream RPC")):
            client = CheckClient(check_channel, use_channel=use_channel)
            client.start()
            try:
                for kind, request in requests.items():
                    call = checker(client, request)
                    # Warm up: the stream, the compiled route, the cached session.
                    await asyncio.gather(*(call() for _ in range(WARMUP)))
                    if client.transport != transport:
                        raise RuntimeError(
                            f"checks went over {client.transport!r}, not {transport}"
                        )
                    for in_flight, calls in ((1, SEQUENTIAL), (IN_FLIGHT, CONCURRENT)):
                        results.append(
                            await timed(
                                f"Check over the {transport}, {kind}",
                                call,
                                calls=calls,
                                in_flight=in_flight,
                                server="authorize",
                                server_pid=authorize_pid,
                            )
                        )
            finally:
                await client.close()
        for _ in range(WARMUP):
            await get()
        results.append(
            await timed(
                "SessionService.Get, what a cache miss adds (authorize's certificate)",
                get,
                calls=SEQUENTIAL,
                in_flight=1,
                server="authenticate",
                server_pid=v.pids["authenticate"],
            )
        )
        return results
    finally:
        await check_channel.close()
        await sessions_channel.close()


def run() -> list[Timing]:
    with all_in_one() as v:
        handle = v.sign_in()
        # uvloop: the loop the proxy's CheckClient runs on in production.
        return uvloop.run(measure(v, handle))


def report_table(results: list[Timing]) -> str:
    lines = [
        "| call | in flight | calls | p50 µs | p99 µs | calls/s | server CPU µs/call "
        "| client CPU µs/call |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.label} | {r.in_flight} | {r.calls:,} | {r.p50_us:,.0f} | {r.p99_us:,.0f} "
            f"| {r.per_s:,.0f} | {r.server} {r.server_cpu_us:,.0f} | {r.client_cpu_us:,.0f} |"
        )
    hit = next(
        r
        for r in results
        if "check channel" in r.label and "cache hit" in r.label and r.in_flight == 1
    )
    get = next(r for r in results if r.label.startswith("SessionService.Get"))
    lines += [
        "",
        f"- session lookup at 1 in flight: a cache hit is inside the signed-in Check "
        f"(p50 {hit.p50_us:,.0f} µs in all); a miss adds one SessionService.Get "
        f"(p50 {get.p50_us:,.0f} µs), so about {hit.p50_us + get.p50_us:,.0f} µs.",
    ]
    return "\n".join(lines)


def report() -> str:
    return report_table(run())


if __name__ == "__main__":  # python -m tests.bench.rpc
    print(report())
