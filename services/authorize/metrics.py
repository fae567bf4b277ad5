"""authorize's metrics, recorded per check through shared.metrics.local."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

from services.authorize.decide import OUTCOME_NAMES
from shared.errors.reasons import REASON_TEXT
from shared.metrics import buckets, recorder

EVALUATION_BUCKETS = buckets(0.00001, 0.1)
FETCH_BUCKETS = buckets(0.0005, 5)


def _decision_labels(key: tuple[Any, tuple[str, ...]]) -> tuple[str, str]:
    outcome, reasons = key
    # Reason codes come from a fixed list; anything else would be a new series per value.
    known = [r if r in REASON_TEXT else "other" for r in reasons]
    return OUTCOME_NAMES.get(outcome, "unknown"), ",".join(known)


# Keyed (outcome, reasons as a tuple).
decisions = recorder.counter(
    Counter(
        "vallum_authorize_decisions_total",
        "Checks decided, by result (allow, deny, sign-in-required, "
        "invalid-client-certificate, route-not-found, unavailable) and reasons "
        "(the decision's reason codes, comma-separated).",
        ["result", "reason"],
    ),
    _decision_labels,
)
evaluation = recorder.histogram(
    Histogram(
        "vallum_authorize_evaluation_duration_seconds",
        "Policy evaluation and decision assembly of one check (session already at hand).",
        buckets=EVALUATION_BUCKETS,
    ),
    lambda _: (),
)
session_fetch = recorder.histogram(
    Histogram(
        "vallum_authorize_session_fetch_duration_seconds",
        "Session lookups from authenticate (cache misses), by result (found, missing, error).",
        ["result"],
        buckets=FETCH_BUCKETS,
    )
)
