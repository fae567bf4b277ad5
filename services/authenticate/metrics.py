"""authenticate's metrics: session store latency and sign-ins."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.metrics import recorder

STORE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
)

# Keyed (operation, store type).
store_duration = recorder.histogram(
    Histogram(
        "vallum_session_store_duration_seconds",
        "Session store operations, by operation (get, put, delete) and store type "
        "(memory, sqlite, postgres); failed operations included.",
        ["operation", "store"],
        buckets=STORE_BUCKETS,
    )
)
sign_ins = recorder.counter(
    Counter(
        "vallum_authenticate_sign_ins_total",
        "OIDC callbacks completed, by result: signed-in, or the failure's reason code "
        "(idp-refused, sign-in-state-invalid, id-token-invalid, idp-unavailable, ...).",
        ["result"],
    )
)
