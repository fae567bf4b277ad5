"""`make bench`: Vallum's measured costs. Prints Markdown tables and writes them, with
the machine they were measured on, to docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from pathlib import Path

from tests.bench import load, micro

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
    load_table = load.report()
    body = f"""# Vallum benchmarks

Written by `make bench` (tests/bench) on {dt.date.today().isoformat()}; run it again to
measure your machine. Command: `make bench`.

## Machine

{machine()}

## Per-request work inside authorize (micro)

CPU µs per operation, median of 5 timed runs in one process.

{micro_table}

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
