"""One /metrics for the supervisor and all its children.

prometheus_client's multiprocess mode: every child writes its metrics to mmap'd files
in one directory (PROMETHEUS_MULTIPROC_DIR, read by prometheus_client when it is first
imported, so it is in the child's environment from the start), and the supervisor
serves their sum. The directory is private (0700, made fresh at each start, removed at
exit). When a child exits its live-only gauges (certificate expiry) are dropped;
its counters and histograms stay in the sums, so totals never go backwards across a
restart.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from shared.config import Address
from shared.metrics.endpoint import MetricsEndpoint, bind_metrics

ENV = "PROMETHEUS_MULTIPROC_DIR"


class SharedMetrics:
    """The supervisor's side: the directory, the children's environment, /metrics."""

    def __init__(self, address: Address) -> None:
        sock = bind_metrics(address)  # before anything is made: a taken port is fatal
        self.directory = tempfile.mkdtemp(prefix="vallum-metrics-")
        self._registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self._registry, path=self.directory)  # type: ignore[no-untyped-call]
        self.endpoint = MetricsEndpoint(sock, self._collect)

    def child_env(self) -> dict[str, str]:
        return {ENV: self.directory}

    def child_exited(self, pid: int) -> None:
        multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    async def start(self) -> None:
        await self.endpoint.start()

    async def stop(self) -> None:
        await self.endpoint.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    async def _collect(self) -> bytes:
        # Reading every child's files is file I/O: off the loop that relays their logs.
        return await asyncio.to_thread(generate_latest, self._registry)
