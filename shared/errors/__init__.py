"""Error pages: every failure a user can see, in words, with a request id.

HTML for browsers, JSON for API clients (negotiate.wants_html tells
which); no stack traces, secrets or internal addresses, by construction (see pages.py).
"""

from shared.errors.pages import (
    ErrorPage,
    authorize_unavailable,
    bad_request,
    client_certificate_error,
    forbidden,
    gateway_timeout,
    misdirected,
    no_route,
    sign_in_required,
    upstream_failure,
)
from shared.errors.reasons import (
    REASON_TEXT,
    client_certificate_reason,
    reason_text,
    verify_failure_kind,
)
from shared.errors.render import (
    CONTENT_SECURITY_POLICY,
    as_html,
    as_json,
    phrase,
    render,
)

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "REASON_TEXT",
    "ErrorPage",
    "as_html",
    "as_json",
    "authorize_unavailable",
    "bad_request",
    "client_certificate_error",
    "client_certificate_reason",
    "forbidden",
    "gateway_timeout",
    "misdirected",
    "no_route",
    "phrase",
    "reason_text",
    "render",
    "sign_in_required",
    "upstream_failure",
    "verify_failure_kind",
]
