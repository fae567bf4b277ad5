"""Memory: each process's RSS at idle against the 150 MiB target, and the proxy's peak
RSS while 1 GiB streams through it each way, against its idle RSS (target: within
10%).

Idle is right after "all services ready", before any request; the supervisor and
the three services are measured, not the DEVELOPMENT ONLY demo IdP and app. Then alice signs in,
a 1 MiB download warms the proxy's pools, and 1 GiB is downloaded from, then uploaded
to, tests/support/upstream_app through the signed-in route (TLS, identity headers),
the way tests/integration/test_proxy.py streams it. The peak of each transfer is the
kernel's high-water mark (VmHWM, reset through /proc/<pid>/clear_refs just before),
or where that reset is not allowed the highest VmRSS sampled every 20 ms.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.bench.allinone import AllInOne, all_in_one

MIB = 1024 * 1024
GIB = 1024 * MIB
IDLE_TARGET_MIB = 150.0
STREAM_TARGET = 1.10  # peak / idle
IDLE_SETTLE = 1.0  # seconds after ready, so start-up's transient allocations are gone
TRANSFER_TIMEOUT = 300.0
SAMPLE_EVERY = 0.02


def status_mib(pid: int, field: str) -> float:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    if m is None:
        raise RuntimeError(f"/proc/{pid}/status has no {field}")
    return int(m.group(1)) / 1024


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where it is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakRSS:
    """The highest RSS of `pid` while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = status_mib(pid, "VmRSS")
        self.method = "sampled"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.peak = max(self.peak, status_mib(self.pid, "VmRSS"))

    def __enter__(self) -> PeakRSS:
        if reset_peak(self.pid):
            self.method = "VmHWM"
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.method == "VmHWM":
            self.peak = max(self.peak, status_mib(self.pid, "VmHWM"))


@dataclass
class Transfer:
    label: str
    seconds: float
    process: str  # the proxy process that carried it (the one whose RSS grew most)
    idle_mib: float  # that process's RSS at idle
    before_mib: float  # its RSS just before (after sign-in and warm-up)
    peak_mib: float
    method: str


@dataclass
class Result:
    idle_mib: dict[str, float]  # process -> VmRSS at idle
    transfers: list[Transfer]


def _download(client: httpx.Client, url: str, cookie: dict[str, str]) -> None:
    received = 0
    with client.stream("GET", f"{url}?size={GIB}", headers=cookie) as response:
        if response.status_code != 200:
            raise RuntimeError(f"download answered {response.status_code}, not 200")
        for chunk in response.iter_raw():
            received += len(chunk)
    if received != GIB:
        raise RuntimeError(f"download delivered {received} bytes, not {GIB}")


def _upload(client: httpx.Client, url: str, cookie: dict[str, str]) -> None:
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    for _ in range(GIB // MIB):
        digest.update(block)

    def body() -> Iterator[bytes]:
        for _ in range(GIB // MIB):
            yield block

    response = client.post(url, content=body(), headers={**cookie, "Content-Length": str(GIB)})
    expected = {"size": GIB, "sha256": digest.hexdigest()}
    if response.status_code != 200 or response.json() != expected:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:200]}")


def _transfer(
    label: str, proxies: dict[str, int], idle: dict[str, float], move: Callable[[], None]
) -> Transfer:
    # With several proxy workers the kernel picks one per connection: watch them all.
    before = {name: status_mib(pid, "VmRSS") for name, pid in proxies.items()}
    started = time.monotonic()
    with ExitStack() as stack:
        peaks = {name: stack.enter_context(PeakRSS(pid)) for name, pid in proxies.items()}
        move()
    seconds = time.monotonic() - started
    name = max(peaks, key=lambda n: peaks[n].peak - before[n])
    return Transfer(
        label, seconds, name, idle[name], before[name], peaks[name].peak, peaks[name].method
    )


def measure(v: AllInOne) -> Result:
    time.sleep(IDLE_SETTLE)
    idle = {name: status_mib(pid, "VmRSS") for name, pid in v.pids.items()}
    cookie = {"Cookie": f"_pomerium={v.sign_in()}"}
    proxies = v.proxy_pids
    verify = ssl.create_default_context(cafile=str(v.ca))
    with httpx.Client(verify=verify, timeout=TRANSFER_TIMEOUT) as client:
        warm = client.get(f"{v.base_url}/bytes?size={MIB}", headers=cookie)
        if warm.status_code != 200 or len(warm.content) != MIB:
            raise RuntimeError(f"warm-up download answered {warm.status_code}")
        transfers = [
            _transfer(
                "1 GiB download (upstream → proxy → client)",
                proxies,
                idle,
                lambda: _download(client, f"{v.base_url}/bytes", cookie),
            ),
            _transfer(
                "1 GiB upload (client → proxy → upstream)",
                proxies,
                idle,
                lambda: _upload(client, f"{v.base_url}/upload", cookie),
            ),
        ]
    return Result(idle, transfers)


def run() -> Result:
    with all_in_one() as v:
        return measure(v)


def report_tables(result: Result) -> str:
    lines = ["| process | RSS at idle, MiB | target ≤ 150 MiB |", "|---|---|---|"]
    for name, mib in result.idle_mib.items():
        verdict = "met" if mib <= IDLE_TARGET_MIB else "**over**"
        lines.append(f"| {name} | {mib:.1f} | {verdict} |")
    lines.append(f"| all together | {sum(result.idle_mib.values()):.1f} | - |")
    lines += [
        "",
        "| streaming through the proxy | MiB/s | proxy process | RSS idle, MiB "
        "| RSS before, MiB | peak RSS, MiB | peak / idle | peak / before "
        "| target peak ≤ 1.10 x idle | peak read as |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in result.transfers:
        ratio = t.peak_mib / t.idle_mib
        verdict = "met" if ratio <= STREAM_TARGET else "**missed**"
        lines.append(
            f"| {t.label} | {GIB / MIB / t.seconds:,.0f} | {t.process} | {t.idle_mib:.1f} "
            f"| {t.before_mib:.1f} | {t.peak_mib:.1f} | {ratio:.2f} "
            f"| {t.peak_mib / t.before_mib:.2f} | {verdict} | {t.method} |"
        )
    return "\n".join(lines)


def report() -> str:
    return report_tables(run())


if __name__ == "__main__":  # python -m tests.bench.memory
    print(report())
