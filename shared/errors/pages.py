"""The error pages the proxy can answer with, one constructor per failure.

Constructors take reason names and the user's own request (host, server name) only,
never an exception, an upstream URL or an internal address: what a page can say is
fixed here, so nothing internal can leak onto it by accident.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.errors.reasons import reason_text

# Names the user typed are shown back; a hostile client could send megabytes.
_MAX_SHOWN = 253


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorPage:
    """One error as the user sees it: what failed, why, what to do, and the request id."""

    status: int
    title: str
    detail: str
    reasons: tuple[str, ...] = ()
    advice: str = ""
    request_id: str = ""
    sign_out_url: str | None = None
    sign_in_url: str | None = None

    def reason_texts(self) -> list[tuple[str, str]]:
        return [(name, reason_text(name)) for name in self.reasons]


def _shown(name: str | None) -> str:
    if not name:
        return "(none)"
    return name if len(name) <= _MAX_SHOWN else name[:_MAX_SHOWN] + "…"


_ASK_OWNER = "quoting the request ID"


def bad_request(request_id: str, reason: str = "bad-request-path") -> ErrorPage:
    return ErrorPage(
        status=400,
        title="Bad request",
        detail="Vallum could not accept this request as it was sent.",
        reasons=(reason,),
        advice="Check the address for typos or stray characters, or go back and follow "
        "the link again.",
        request_id=request_id,
    )


def sign_in_required(request_id: str, *, sign_in_url: str | None = None) -> ErrorPage:
    return ErrorPage(
        status=401,
        title="Sign-in required",
        detail="This app needs to know who you are, and this request has no valid session.",
        reasons=("user-unauthenticated",),
        advice="Sign in, then repeat the request with the session that sign-in gives you.",
        request_id=request_id,
        sign_in_url=sign_in_url,
    )


def forbidden(
    request_id: str, reasons: Iterable[str], *, sign_out_url: str | None = None
) -> ErrorPage:
    return ErrorPage(
        status=403,
        title="Access denied",
        detail="The access policy for this app does not allow this request.",
        reasons=tuple(reasons),
        advice="If you think you should have access, ask the app's owner for it, "
        f"{_ASK_OWNER}. If you signed in with the wrong account, sign out and sign in "
        "with the right one.",
        request_id=request_id,
        sign_out_url=sign_out_url,
    )


def no_route(request_id: str, host: str) -> ErrorPage:
    return ErrorPage(
        status=404,
        title="No such app",
        detail=f"Vallum has no route for {_shown(host)} and this path.",
        reasons=("route-not-found",),
        advice="Check the address. If someone sent you the link, ask them for the right one.",
        request_id=request_id,
    )


def misdirected(request_id: str, host: str, server_name: str | None) -> ErrorPage:
    return ErrorPage(
        status=421,
        title="Wrong site for this connection",
        detail=f"This secure connection was opened for {_shown(server_name)}, but the "
        f"request asks for {_shown(host)}.",
        reasons=("misdirected-request",),
        advice="Open the address again in a new tab. If it keeps happening, something "
        "between you and Vallum is reusing connections across sites.",
        request_id=request_id,
    )


def client_certificate_error(request_id: str, reason: str) -> ErrorPage:
    """495 (nginx's code, as Pomerium uses it): `reason` says missing or which invalid."""
    missing = reason == "client-certificate-required"
    return ErrorPage(
        status=495,
        title="Client certificate required" if missing else "Client certificate not accepted",
        detail="This app only admits devices that present your organisation's client "
        "certificate"
        + (", and none was presented." if missing else ", and the one presented is not valid."),
        reasons=(reason,),
        advice=(
            "Install your organisation's client certificate on this device (your IT team "
            "can provide it), then restart the browser and select it when asked."
            if missing
            else "Select your organisation's current certificate when the browser asks (you "
            "may need to restart the browser to be asked again). If yours has expired or "
            "was revoked, ask your IT team for a new one."
        ),
        request_id=request_id,
    )


def upstream_failure(request_id: str, reason: str) -> ErrorPage:
    """502, or 504 when the app was reached but did not answer in time."""
    if reason == "upstream-timeout":
        return gateway_timeout(request_id)
    return ErrorPage(
        status=502,
        title="The app is not reachable",
        detail="Vallum let you in, but could not get through to the app behind this address.",
        reasons=(reason,),
        advice=f"Try again in a minute. If it keeps failing, tell the app's owner, {_ASK_OWNER}.",
        request_id=request_id,
    )


def authorize_unavailable(request_id: str, reason: str = "authorize-unavailable") -> ErrorPage:
    return ErrorPage(
        status=503,
        title="Access cannot be checked right now",
        detail="Vallum cannot check whether you may use this app at the moment, so it lets "
        "no request through.",
        reasons=(reason,),
        advice=f"Try again in a minute. If it keeps failing, tell your IT team, {_ASK_OWNER}.",
        request_id=request_id,
    )


def gateway_timeout(request_id: str) -> ErrorPage:
    return ErrorPage(
        status=504,
        title="The app did not answer in time",
        detail="Vallum waited for the app behind this address, but it did not answer in time.",
        reasons=("upstream-timeout",),
        advice="Try again; a busy app may answer next time. If it keeps happening, tell the "
        f"app's owner, {_ASK_OWNER}.",
        request_id=request_id,
    )
