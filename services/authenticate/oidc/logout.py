"""RP-Initiated Logout 1.0: where to send the browser so the IdP ends its session too."""

from __future__ import annotations

from services.authenticate.oidc.authrequest import with_query


def end_session_url(
    endpoint: str | None,
    *,
    client_id: str,
    id_token_hint: str | None,
    post_logout_redirect_uri: str | None,
    state: str | None,
) -> str | None:
    """None when the provider has no end_session_endpoint: sign-out is then local only."""
    if endpoint is None:
        return None
    # Section 2: client_id lets the IdP check post_logout_redirect_uri when the hint is
    # missing or expired.
    params = [("client_id", client_id)]
    if id_token_hint:
        params.append(("id_token_hint", id_token_hint))
    if post_logout_redirect_uri:
        params.append(("post_logout_redirect_uri", post_logout_redirect_uri))
        if state:
            params.append(("state", state))
    return with_query(endpoint, params)
