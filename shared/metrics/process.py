"""Metrics in one service process: flush what was recorded, keep the certificate
gauges current and, in a process of its own (no supervisor), serve /metrics.

Under the supervisor the process's metrics go to the shared multiprocess directory
and the supervisor serves them all (shared.metrics.multiproc).
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import REGISTRY, generate_latest

from shared.config import Config
from shared.metrics.certificates import (
    Source,
    internal_certificates,
    keep_fresh,
    server_certificates,
)
from shared.metrics.endpoint import MetricsEndpoint, bind_metrics
from shared.metrics.local import recorder
from shared.rpc import StartupError, internal_tls
from shared.server_tls import CertificateSet


class ProcessMetrics:
    def __init__(self, config: Config, *, serve: bool) -> None:
        self._config = config
        self.endpoint: MetricsEndpoint | None = None
        if serve and config.metrics_address is not None:
            # Bound before the service starts: a taken port stops it with one line.
            self.endpoint = MetricsEndpoint(bind_metrics(config.metrics_address), self._collect)
        self._task: asyncio.Task[None] | None = None

    async def start(self, running: object) -> None:
        """After the service started; `running` is its object (a proxy's has the
        server certificates it serves)."""
        sources: list[Source] = []
        if isinstance(getattr(running, "certificates", None), CertificateSet):
            # Looked up at each refresh: a reload may replace the set.
            sources.append(server_certificates(lambda: running.certificates.leaves()))  # type: ignore[attr-defined]
        with contextlib.suppress(StartupError):
            sources.append(internal_certificates(internal_tls(self._config)))
        self._task = asyncio.create_task(keep_fresh(sources))
        recorder.start()
        if self.endpoint is not None:
            await self.endpoint.start()

    async def stop(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await recorder.stop()  # the last counts, before the process is gone

    async def _collect(self) -> bytes:
        recorder.flush()
        return generate_latest(REGISTRY)
