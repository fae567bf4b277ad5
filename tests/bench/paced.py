"""Latency at a set request rate, for "added p50 at half of (c)'s maximum rate".

Under full load wrk's latency is mostly queueing. Here each of wrk's connections
waits between requests (its Lua `delay()` hook), so that together they send about
the rate asked for; the same rate goes to the direct target and through Vallum, one
after the other, and the difference of the two p50s is what Vallum adds to a request
when it is not saturated. The rate achieved is reported beside the one asked for.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CONNECTIONS = 16
SECONDS = 4


@dataclass(frozen=True)
class Paced:
    rate: float  # asked for, requests/s
    achieved: float
    p50_ms: float
    p99_ms: float


def measure(url: str, rate: float, headers: list[str]) -> Paced:
    pause_ms = CONNECTIONS / rate * 1000
    with tempfile.TemporaryDirectory(prefix="vallum-paced-") as d:
        script = Path(d) / "paced.lua"
        script.write_text(f"function delay()\n  return {pause_ms:.3f}\nend\n")
        argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", "-s", str(script)]
        for header in headers:
            argv += ["-H", header]
        out = subprocess.run(
            [*argv, url], capture_output=True, text=True, check=True, timeout=SECONDS + 30
        ).stdout
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if failed:
        raise RuntimeError(f"{url}: {failed.group(0)}\n{out}")

    def pct(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if m is None:
            raise RuntimeError(f"wrk printed no {label}th percentile:\n{out}")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    achieved = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert achieved, out
    return Paced(rate, float(achieved.group(1)), pct("50"), pct("99"))
