"""A Vallum all-in-one for the benches that talk to its services directly.

The same stack as load.py's (b)/(c) targets (load.vallum_config: demo IdP, a public
`/public/` route and a signed-in route), in front of tests/support/upstream_app (it
has /bytes and /upload for the memory bench). Everything runs as separate processes;
the bench process only connects to them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.bootstrap import SERVICES, prepare
from shared.config import Config, load_config
from tests.bench.load import sign_in, vallum_config
from tests.support.procs import Proc, children, vallum
from tests.support.stack import upstream

READY_TIMEOUT = 60.0


@dataclass
class AllInOne:
    proc: Proc
    port: int
    config_path: Path
    data: Path
    # "supervisor", "authenticate", "authorize", "proxy" -> pid (demo-* left out);
    # with proxy_workers above 1, "proxy#1", "proxy#2", ... instead of "proxy".
    pids: dict[str, int]

    @property
    def proxy_pids(self) -> dict[str, int]:
        return {name: pid for name, pid in self.pids.items() if service_of(name) == "proxy"}

    @property
    def ca(self) -> Path:
        return self.data / "pki" / "ca.pem"

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """The Host the proxy sees for the bench routes (wrk and httpx send this)."""
        return f"127.0.0.1:{self.port}"

    def sign_in(self) -> str:
        """alice's `_pomerium` cookie value, from the real sign-in flow."""
        return sign_in(self.ca, self.base_url + "/")

    def service_config(self, service: str) -> Config:
        """The config `service`'s child process runs with, internal mTLS material
        included: the supervisor's environment overrides (bootstrap.prepare, which
        reuses what the running supervisor already wrote in data_dir) on top of this
        process's environment, loaded by the same loader the child uses."""
        if service not in SERVICES:
            raise ValueError(f"not a Vallum service: {service}")
        environ = dict(os.environ)
        overrides = prepare(load_config(str(self.config_path), environ))
        return load_config(
            str(self.config_path), {**environ, **overrides[service], "SERVICES": service}
        )


def service_of(process: str) -> str:
    return process.split("#", 1)[0]


def process_name(argv: list[bytes]) -> str | None:
    """`authorize`, or `proxy#2` for a proxy worker; None for what is not a service."""
    if b"--services" not in argv:
        return None
    name = argv[argv.index(b"--services") + 1].decode()
    if name not in SERVICES:
        return None
    if b"--worker" in argv:
        name += "#" + argv[argv.index(b"--worker") + 1].decode()
    return name


@contextmanager
def all_in_one() -> Iterator[AllInOne]:
    with tempfile.TemporaryDirectory(prefix="vallum-bench-") as d, upstream() as app:
        tmp = Path(d)
        config_path, port = vallum_config(tmp, app.port)
        proc = vallum("run", "--config", str(config_path))
        try:
            proc.wait_for("all services ready", timeout=READY_TIMEOUT)
            found = {}
            for pid, argv in children(proc.process.pid).items():
                name = process_name(argv)
                if name is not None:
                    found[name] = pid
            order = sorted(found, key=lambda n: (SERVICES.index(service_of(n)), n))
            pids = {"supervisor": proc.process.pid, **{n: found[n] for n in order}}
            running = {service_of(name) for name in pids}
            missing = [s for s in SERVICES if s not in running]
            if missing:
                raise RuntimeError(f"no child process found for {', '.join(missing)}")
            yield AllInOne(proc, port, config_path, tmp / "data", pids)
        finally:
            proc.stop()
