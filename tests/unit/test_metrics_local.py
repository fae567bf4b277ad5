"""Local counts and histograms add up to what prometheus_client itself would record."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.metrics.local import LocalCounter, LocalHistogram, Recorder

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_counter_labels_are_made_at_flush() -> None:
    registry = CollectorRegistry()
    metric = Counter("t_requests_total", "t", ["route", "status"], registry=registry)
    local: LocalCounter[tuple[str, int]] = LocalCounter(metric, lambda k: (k[0], str(k[1])))
    for _ in range(3):
        local.inc(("a", 200))
    local.inc(("b", 404), 2)
    assert samples(registry) == {}  # nothing until flushed
    local.flush()
    local.flush()  # a second flush adds nothing
    local.inc(("a", 200))
    local.flush()
    got = samples(registry)
    assert got[("t_requests_total", (("route", "a"), ("status", "200")))] == 4
    assert got[("t_requests_total", (("route", "b"), ("status", "404")))] == 2


def test_histogram_flush_equals_observe() -> None:
    values = [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 100.0]
    direct_registry, local_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("t_seconds", "t", ["route"], buckets=BUCKETS, registry=direct_registry)
    metric = Histogram("t_seconds", "t", ["route"], buckets=BUCKETS, registry=local_registry)
    local: LocalHistogram[str] = LocalHistogram(metric)
    for v in values:
        direct.labels("r").observe(v)
        local.observe("r", v)
    local.flush()
    local.observe("r", 0.002)
    direct.labels("r").observe(0.002)
    local.flush()
    assert samples(local_registry) == samples(direct_registry)


def test_histogram_without_labels() -> None:
    registry = CollectorRegistry()
    metric = Histogram("t_check_seconds", "t", buckets=BUCKETS, registry=registry)
    local: LocalHistogram[None] = LocalHistogram(metric, lambda _: ())
    local.observe(None, 0.005)
    local.flush()
    got = samples(registry)
    assert got[("t_check_seconds_count", ())] == 1
    assert got[("t_check_seconds_bucket", (("le", "0.01"),))] == 1
    assert got[("t_check_seconds_bucket", (("le", "0.001"),))] == 0


def test_recorder_flushes_on_its_own_and_at_stop() -> None:
    registry = CollectorRegistry()
    recorder = Recorder()
    counter = recorder.counter(Counter("t_events_total", "t", ["kind"], registry=registry))

    async def run() -> tuple[float, float]:
        recorder.start(every=0.01)
        counter.inc("a")
        await asyncio.sleep(0.05)
        first = samples(registry)[("t_events_total", (("kind", "a"),))]
        counter.inc("a")
        await recorder.stop()
        return first, samples(registry)[("t_events_total", (("kind", "a"),))]

    assert asyncio.run(run()) == (1, 2)
