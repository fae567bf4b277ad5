"""The proxy's metrics. Recorded per request through shared.metrics.local (a dict
update each), so the hot path pays well under a microsecond for all of them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.metrics import buckets, recorder

# What httptools can parse is a fixed list; the label keeps the common ones.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

REQUEST_BUCKETS = (*buckets(0.001, 10), 30.0)
CHECK_BUCKETS = buckets(0.0005, 5)


def method_class(method: str) -> str:
    return method if method in METHODS else "other"


def _request_labels(key: tuple[str, str, int]) -> tuple[str, str, str]:
    route, method, status = key
    return route, method_class(method), str(status)


# Keyed (route label, method, status); label values are made at flush time.
requests = recorder.counter(
    Counter(
        "vallum_proxy_requests_total",
        "Requests the proxy answered, by route, method and status code.",
        ["route", "method", "status"],
    ),
    _request_labels,
)
request_duration = recorder.histogram(
    Histogram(
        "vallum_proxy_request_duration_seconds",
        "From the request head parsed to the response finished, by route.",
        ["route"],
        buckets=REQUEST_BUCKETS,
    )
)
check_duration = recorder.histogram(
    Histogram(
        "vallum_proxy_authorize_check_duration_seconds",
        "From a check queued for authorize to its decision (or its failure).",
        buckets=CHECK_BUCKETS,
    ),
    lambda _: (),
)
upstream_duration = recorder.histogram(
    Histogram(
        "vallum_proxy_upstream_response_duration_seconds",
        "From forwarding a request to the upstream's response head, by route.",
        ["route"],
        buckets=REQUEST_BUCKETS,
    )
)
errors = recorder.counter(
    Counter(
        "vallum_proxy_errors_total",
        "Requests that failed for want of a decision or an upstream, by kind "
        "(authorize-unavailable, upstream-timeout, upstream-connection-refused, ...).",
        ["kind"],
    )
)
