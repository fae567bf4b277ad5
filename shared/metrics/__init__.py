"""Prometheus metrics: cheap recording on the hot path, one /metrics per Vallum.

`local` counts in plain dicts and adds to prometheus_client's metrics once a second
(a labelled prometheus_client observation costs 1-2 µs, several on a multiprocess
file); `endpoint` serves /metrics on `metrics_address`; `multiproc` lets the
supervisor serve its children's metrics together; `certificates` exports expiry
times.
"""

from shared.metrics.local import LocalCounter, LocalHistogram, Recorder, recorder

__all__ = ["LocalCounter", "LocalHistogram", "Recorder", "buckets", "recorder"]


def buckets(first: float, last: float) -> tuple[float, ...]:
    """Histogram bounds 1, 2.5, 5 times each power of ten, from `first` to `last`."""
    bounds: list[float] = []
    scale = 10.0**-12
    while scale <= last * 10:
        for step in (1.0, 2.5, 5.0):
            value = float(f"{step * scale:.12g}")
            if first <= value <= last:
                bounds.append(value)
        scale *= 10
    return tuple(bounds)
