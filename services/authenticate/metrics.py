"""authenticate's metrics: session store latency and sign-ins."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.metrics import buckets, recorder

STORE_BUCKETS = buckets(0.0001, 2.5)

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
