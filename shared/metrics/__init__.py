"""Prometheus metrics: cheap recording on the hot path, one /metrics per Vallum.

`local` counts in plain dicts and adds to prometheus_client's metrics once a second
(a labelled prometheus_client observation costs 1-2 µs, several on a multiprocess
file); `endpoint` serves /metrics on `metrics_address`; `multiproc` lets the
supervisor serve its children's metrics together; `certificates` exports expiry
times.
"""

from shared.metrics.local import LocalCounter, LocalHistogram, Recorder, recorder

__all__ = ["LocalCounter", "LocalHistogram", "Recorder", "recorder"]
