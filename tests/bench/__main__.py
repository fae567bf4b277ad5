"""`make bench`: Vallum's measured costs. Prints Markdown tables and writes them, with
the machine they were measured on, to docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from pathlib import Path

from tests.bench import hotpath, load, memory, micro, rpc, stores, transport

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    return "\n".join(
        [
            f"- CPUs: {os.cpu_count()} (nproc), {model.group(1) if model else 'unknown model'}, "
            f"{platform.machine()}",
            f"- Python: {platform.python_implementation()} {platform.python_version()}",
            f"- kernel: {platform.release()}",
            f"- wrk: {_version(['wrk', '-v'])}; nginx: {_version(['nginx', '-v'])}; "
            f"caddy: {_version(['caddy', 'version'])}",
        ]
    )


def main() -> None:
    micro_table = micro.report()
    hotpath_table = hotpath.report()
    rpc_table = rpc.report()
    transport_table = transport.report()
    stores_table = stores.report()
    memory_tables = memory.report()
    load_table = load.report()
    body = f"""# Vallum benchmarks

Written by `make bench` (tests/bench) on {dt.date.today().isoformat()}; run it again to
measure your machine. Command: `make bench`.

## Machine

{machine()}

## Per-request work inside authorize (micro)

CPU µs per operation, median of 5 timed runs in one process.

{micro_table}

## The hot path's own code, in one process

The proxy's real connection protocol, handler, header processing and exchange with
in-memory transports (no sockets, no TLS; the Check answers ALLOW on the next loop
turn), and authorize's real servicer deciding batches read from and written to the
wire format (no gRPC): what the code costs per request, apart from the kernel, TLS
and gRPC that the load figures below include. Median CPU µs of 5 runs.

{hotpath_table}

## Check round trip and session lookup over mTLS gRPC

The proxy's own CheckClient, in the bench process with the proxy's internal
certificate, against the authorize process of a running all-in-one; requests built as
the proxy builds them, every answer checked to be ALLOW; the signed-in route carries
alice's session handle from the real sign-in flow, so once warm each of its checks is
a session cache hit. A cache miss adds a SessionService.Get to authenticate, timed on
its own with authorize's certificate. Latency is wall clock per call
({rpc.SEQUENTIAL:,} calls one at a time; {rpc.CONCURRENT:,} calls from
{rpc.IN_FLIGHT} concurrent callers); CPU per call is the serving process's user +
system time from /proc over the run, and this process's for the client side.

{rpc_table}

## What one message costs on the Check hop

The same protobuf messages (a batch of one check out, its answer back) between two
processes over TLS on loopback with the project's CA, one message in flight, on
uvloop: over a grpc.aio bidirectional stream, and over a plain TLS stream with a
4-byte length prefix per message ({transport.MESSAGES:,} round trips each, after
{transport.WARMUP} to warm up). Batching divides a message's cost among the checks it
carries; this is that cost.

{transport_table}

## Session stores, in process

`get` of an existing session ({stores.GETS:,} one after another, on uvloop, in the
bench process), after a put: wall µs per get, and this process's CPU (for PostgreSQL
the server's own CPU is not included).

{stores_table}

## Memory

RSS (VmRSS) of each process of the all-in-one (the DEVELOPMENT ONLY demo IdP and app
left out) right after "all services ready", before any request; then, after sign-in
and a 1 MiB warm-up, the proxy's peak RSS (VmHWM reset just before each transfer)
while 1 GiB is downloaded from, then uploaded to, an upstream app through the
signed-in route with httpx.

{memory_tables}

## Side by side under load

wrk on loopback, 1 thread, {load.CONNECTIONS} connections, {load.SECONDS} s per run,
{load.ROUNDS} rounds with the targets alternating; medians of the rounds. TLS targets
use ECDSA P-256 certificates from the project's CA. (c)'s session comes from the real
sign-in flow (demo IdP, alice); wrk sends its `_pomerium` cookie. (d) and (e) make one
HTTP check per request to an auth endpoint in its own nginx process (`/auth` answers
200), the shape of Envoy's ext_authz. CPU per request is each process's user + system
CPU time over the run divided by the requests served; "proxy + auth total" leaves out
the shared upstream. Peak RSS is VmHWM over the whole bench.

{load_table}
"""
    print(body)
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(body)
    print(f"(written to {DOC.relative_to(DOC.parents[1])})")


if __name__ == "__main__":
    main()
